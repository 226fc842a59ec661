// SPDX-License-Identifier: Apache-2.0
/*
 * emu-parity: an unmodified C program under libluoemu.so, for
 * test/emu-parity.test.ts. Each scenario does what a program would do on
 * the real kernel and prints one "key value" line per observation, ending
 * with "done SCENARIO". What each line must say is the real kernel's
 * behaviour (docs/emulator.md; the facts in issue 12).
 *
 * Usage: emu-parity SCENARIO
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/falloc.h>

/* The LUO uAPI (include/uapi/linux/liveupdate.h in Linux 7.2), restated. */
#define CREATE_SESSION 0xba00u
#define RETRIEVE_SESSION 0xba01u
#define PRESERVE_FD 0xba40u
#define RETRIEVE_FD 0xba41u
#define FINISH 0xba42u
#define GET_NAME 0xba43u

struct session_arg {
	uint32_t size;
	int32_t fd;
	char name[64];
};

struct fd_arg {
	uint32_t size;
	int32_t fd;
	uint64_t token;
};

#define PAGE 4096

static void say(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* "ok N" or the errno's name. */
__attribute__((unused)) static const char *outcome(long ret, int err)
{
	static char buf[64];

	if (ret >= 0) {
		snprintf(buf, sizeof(buf), "ok %ld", ret);
		return buf;
	}
	snprintf(buf, sizeof(buf), "%s", strerrorname_np(err) ? strerrorname_np(err) : "E?");
	return buf;
}

#define REPORT(key, call)                                 \
	do {                                              \
		long r_ = (long)(call);                   \
		int e_ = errno;                           \
		say((key), "%s", outcome(r_, e_));        \
	} while (0)

static void die(const char *what)
{
	printf("fatal %s %s\n", what, strerrorname_np(errno));
	exit(2);
}

static int open_device(void)
{
	int fd = open("/dev/liveupdate", O_RDWR);

	if (fd < 0)
		die("open /dev/liveupdate");
	return fd;
}

static int create_session(int dev, const char *name)
{
	struct session_arg arg = { .size = sizeof(arg), .fd = -1 };

	strncpy(arg.name, name, sizeof(arg.name) - 1);
	if (ioctl(dev, CREATE_SESSION, &arg) < 0)
		die("CREATE_SESSION");
	return arg.fd;
}

static int preserve(int session, int fd, uint64_t token)
{
	struct fd_arg arg = { .size = sizeof(arg), .fd = fd, .token = token };

	return ioctl(session, PRESERVE_FD, &arg);
}

/* A memfd of `size` bytes, each byte (offset % 251). */
static int memfd_of(size_t size, unsigned flags)
{
	int fd = memfd_create("parity", flags);
	unsigned char buf[PAGE];

	if (fd < 0)
		die("memfd_create");
	for (size_t done = 0; done < size;) {
		size_t n = size - done < sizeof(buf) ? size - done : sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = (unsigned char)((done + i) % 251);
		if (pwrite(fd, buf, n, (off_t)done) != (ssize_t)n)
			die("pwrite");
		done += n;
	}
	return fd;
}

__attribute__((unused)) static long size_of(int fd)
{
	struct stat st;

	return fstat(fd, &st) < 0 ? -1 : (long)st.st_size;
}

/*
 * Closing a session unpreserves its memfd before close() returns: adding
 * F_SEAL_WRITE right after must work (EBUSY while preserved). Many rounds,
 * so a release seen late by the emulator shows up.
 */
static void close_unpins(void)
{
	int dev = open_device(), busy = 0, late = 0;

	for (int round = 0; round < 200; round++) {
		char name[32];
		int session, file;

		snprintf(name, sizeof(name), "close-%d", round);
		session = create_session(dev, name);
		file = memfd_of(2 * PAGE, MFD_ALLOW_SEALING);
		if (preserve(session, file, 1) < 0)
			die("PRESERVE_FD");
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EBUSY)
			busy++;
		close(session);
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0)
			late++;
		close(file);
	}
	say("busy_while_preserved", "%d", busy);
	say("busy_after_close", "%d", late);
	close(dev);
}

/*
 * A child that preserved a memfd exits: by the time wait() returns, its
 * session is released, and the parent can seal the memfd.
 */
static void exit_unpins(void)
{
	int late = 0;

	for (int round = 0; round < 50; round++) {
		int file = memfd_of(2 * PAGE, MFD_ALLOW_SEALING), status;
		pid_t child = fork();

		if (child < 0)
			die("fork");
		if (child == 0) {
			int dev = open_device();
			int session = create_session(dev, "exit-unpins");

			if (preserve(session, file, 1) < 0)
				_exit(3);
			exit(0); /* the session fd is still open */
		}
		if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			die("child");
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0)
			late++;
		close(file);
	}
	say("busy_after_exit", "%d", late);
}

int main(int argc, char **argv)
{
	const char *scenario = argc > 1 ? argv[1] : "";

	if (strcmp(scenario, "close-unpins") == 0)
		close_unpins();
	else if (strcmp(scenario, "exit-unpins") == 0)
		exit_unpins();
	else {
		fprintf(stderr, "unknown scenario %s\n", scenario);
		return 2;
	}
	say("done", "%s", scenario);
	return 0;
}
