// SPDX-License-Identifier: Apache-2.0
/*
 * emu-parity: an unmodified C program under libluoemu.so, for
 * test/emu-parity.test.ts. Each scenario does what a program would do on
 * the real kernel and prints one "key value" line per observation, ending
 * with "done SCENARIO". What each line must say is the real kernel's
 * behaviour (docs/emulator.md; the facts in issue 12).
 *
 * The same program, statically linked, runs on the real kernel in the bench
 * (test/vm/difffuzz.ts): every scenario's lines must be the same there.
 *
 * Usage: emu-parity SCENARIO
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
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

#include "../../native/include/luokit/liveupdate.h"

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
static const char *outcome(long ret, int err)
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
	struct luo_session_arg arg = { .size = sizeof(arg), .fd = -1 };

	strncpy(arg.name, name, sizeof(arg.name) - 1);
	if (ioctl(dev, LUO_CREATE_SESSION, &arg) < 0)
		die("CREATE_SESSION");
	return arg.fd;
}

static int preserve(int session, int fd, uint64_t token)
{
	struct luo_fd_arg arg = { .size = sizeof(arg), .fd = fd, .token = token };

	return ioctl(session, LUO_PRESERVE_FD, &arg);
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

static long size_of(int fd)
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

/*
 * close_range() over a session fd releases it before it returns, as close()
 * does: F_SEAL_WRITE right after must work.
 */
static void close_range_unpins(void)
{
	int dev = open_device(), late = 0, late_from = 0;

	for (int round = 0; round < 50; round++) {
		int session = create_session(dev, "close-range");
		int file = memfd_of(2 * PAGE, MFD_ALLOW_SEALING);

		if (preserve(session, file, 1) < 0)
			die("PRESERVE_FD");
		if (close_range((unsigned)session, (unsigned)session, 0) < 0)
			die("close_range");
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0)
			late++;
		close(file);
	}
	say("busy_after_close_range", "%d", late);
	/* closefrom(): everything from the session's fd up (it is the highest fd). */
	for (int round = 0; round < 20; round++) {
		int file = memfd_of(2 * PAGE, MFD_ALLOW_SEALING);
		int session = create_session(dev, "closefrom");

		if (session < file)
			die("session below file");
		if (preserve(session, file, 1) < 0)
			die("PRESERVE_FD");
		closefrom(session);
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0)
			late_from++;
		close(file);
	}
	say("busy_after_closefrom", "%d", late_from);
	close(dev);
}

/*
 * A child holding a session is killed by SIGKILL (no destructor runs): by
 * the time waitpid() returns, its session is released.
 */
static void kill_unpins(void)
{
	int late = 0;

	for (int round = 0; round < 30; round++) {
		int file = memfd_of(2 * PAGE, MFD_ALLOW_SEALING), status, ready[2];
		pid_t child;
		char c;

		if (pipe(ready) < 0)
			die("pipe");
		child = fork();
		if (child < 0)
			die("fork");
		if (child == 0) {
			int dev = open_device();
			int session = create_session(dev, "kill-unpins");

			close(dev);
			if (preserve(session, file, 1) < 0)
				_exit(3);
			if (write(ready[1], "r", 1) != 1)
				_exit(4);
			for (;;)
				pause();
		}
		close(ready[1]);
		if (read(ready[0], &c, 1) != 1)
			die("child not ready");
		close(ready[0]);
		kill(child, SIGKILL);
		if (waitpid(child, &status, 0) < 0 || !WIFSIGNALED(status))
			die("child");
		if (fcntl(file, F_ADD_SEALS, F_SEAL_WRITE) < 0)
			late++;
		close(file);
	}
	say("busy_after_kill", "%d", late);
}

/*
 * F_SEAL_FUTURE_WRITE and a preserved memfd: sealed before PRESERVE_FD (no
 * writable mapping can exist any more, yet the pages are pinned) and added
 * after it. Then F_SEAL_WRITE meets the pinned pages.
 */
static void future_write(void)
{
	int dev = open_device(), session = create_session(dev, "future-write");
	int before = memfd_of(3 * PAGE, MFD_ALLOW_SEALING);
	int after = memfd_of(3 * PAGE, MFD_ALLOW_SEALING);
	int empty = memfd_of(0, MFD_ALLOW_SEALING);
	char byte = 1;

	REPORT("before.future_write", fcntl(before, F_ADD_SEALS, F_SEAL_FUTURE_WRITE));
	REPORT("before.preserve", preserve(session, before, 1));
	REPORT("before.write", pwrite(before, &byte, 1, 0));
	REPORT("before.mmap_shared_write",
	       mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, before, 0) == MAP_FAILED ? -1 : 0);
	REPORT("before.seal_write", fcntl(before, F_ADD_SEALS, F_SEAL_WRITE));
	REPORT("before.seals", fcntl(before, F_GET_SEALS));

	REPORT("after.preserve", preserve(session, after, 2));
	REPORT("after.future_write", fcntl(after, F_ADD_SEALS, F_SEAL_FUTURE_WRITE));
	REPORT("after.write", pwrite(after, &byte, 1, 0));
	REPORT("after.seal_write", fcntl(after, F_ADD_SEALS, F_SEAL_WRITE));
	REPORT("after.seals", fcntl(after, F_GET_SEALS));

	REPORT("empty.future_write", fcntl(empty, F_ADD_SEALS, F_SEAL_FUTURE_WRITE));
	REPORT("empty.preserve", preserve(session, empty, 3));
	REPORT("empty.seal_write", fcntl(empty, F_ADD_SEALS, F_SEAL_WRITE));

	close(session);
	REPORT("closed.before.seal_write", fcntl(before, F_ADD_SEALS, F_SEAL_WRITE));
	REPORT("closed.after.seal_write", fcntl(after, F_ADD_SEALS, F_SEAL_WRITE));
	REPORT("closed.before.seals", fcntl(before, F_GET_SEALS));
	close(before);
	close(after);
	close(empty);
	close(dev);
}

/* FNV-1a of the file's bytes, and its size: "size hash". */
static void say_content(const char *key, int fd)
{
	unsigned char buf[65536];
	uint64_t hash = 0xcbf29ce484222325ull;
	off_t at = 0;
	ssize_t n;

	while ((n = pread(fd, buf, sizeof(buf), at)) > 0) {
		for (ssize_t i = 0; i < n; i++)
			hash = (hash ^ buf[i]) * 0x100000001b3ull;
		at += n;
	}
	say(key, "%ld %016llx", size_of(fd), (unsigned long long)hash);
}

#define MIB (1024L * 1024)

/*
 * Every way to write into a preserved memfd of 2 MiB + 1 page. The lines
 * are what the 7.2 source says shmem does (see the shim's "Writes into
 * preserved memfds"); the same program on a real kernel must print them.
 */
static void writes(void)
{
	const long size = 2 * MIB + PAGE;
	int dev = open_device(), session = create_session(dev, "writes");
	int file = memfd_of((size_t)size, MFD_ALLOW_SEALING), appender, src, pipefd[2];
	char fdpath[64];
	static char data[3 * MIB];
	struct iovec iov[2];
	off64_t in_off, out_off;
	off_t off;

	memset(data, 0x5a, sizeof(data));
	REPORT("preserve", preserve(session, file, 1));
	say_content("content.before", file);

	REPORT("pwrite.inside", pwrite(file, data, 100, PAGE));
	REPORT("pwrite.last_byte", pwrite(file, data, 1, size - 1));
	REPORT("pwrite.at_eof", pwrite(file, data, 1, size));
	REPORT("pwrite.past_eof", pwrite(file, data, 1, size + PAGE));
	REPORT("pwrite.zero_past_eof", pwrite(file, data, 0, size + PAGE));
	REPORT("pwrite.straddle_small", pwrite(file, data, 2 * PAGE, size - PAGE));
	REPORT("pwrite.straddle_boundary", pwrite(file, data, 3 * PAGE, 2 * MIB - PAGE));
	REPORT("pwrite.straddle_from_zero", pwrite(file, data, (size_t)size + 1, 0));
	REPORT("pwrite.bad_offset", pwrite(file, data, 1, -1));

	REPORT("lseek.before_eof", lseek(file, size - 100, SEEK_SET));
	REPORT("write.straddle", write(file, data, 200));
	REPORT("lseek.after", lseek(file, 0, SEEK_CUR));
	REPORT("lseek.boundary", lseek(file, 2 * MIB - 10, SEEK_SET));
	REPORT("write.straddle_boundary", write(file, data, PAGE + 20));
	REPORT("lseek.after_short", lseek(file, 0, SEEK_CUR));
	REPORT("lseek.past_eof", lseek(file, size + 3 * PAGE, SEEK_SET));
	REPORT("write.past_eof", write(file, data, 10));
	REPORT("lseek.after_refused", lseek(file, 0, SEEK_CUR));
	REPORT("lseek.inside", lseek(file, 10, SEEK_SET));
	REPORT("write.inside", write(file, data, 10));

	iov[0] = (struct iovec){ .iov_base = data, .iov_len = PAGE };
	iov[1] = (struct iovec){ .iov_base = data, .iov_len = 2 * PAGE };
	REPORT("pwritev.straddle_boundary", pwritev(file, iov, 2, 2 * MIB - PAGE));
	REPORT("pwritev.past_eof", pwritev(file, iov, 2, size));
	REPORT("pwritev2.append", pwritev2(file, iov, 1, 0, RWF_APPEND));
	REPORT("pwritev2.inside", pwritev2(file, iov, 1, 0, 0));
	REPORT("lseek.for_writev", lseek(file, 2 * MIB - PAGE, SEEK_SET));
	REPORT("writev.straddle_boundary", writev(file, iov, 2));
	REPORT("pwritev2.position", pwritev2(file, iov, 2, -1, 0));

	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", file);
	appender = open(fdpath, O_WRONLY | O_APPEND);
	if (appender < 0)
		die("reopen O_APPEND");
	REPORT("append.write", write(appender, data, 1));
	REPORT("append.pwrite", pwrite(appender, data, 1, 0));
	REPORT("append.pwritev2_noappend", pwritev2(appender, iov, 1, 0, RWF_NOAPPEND));
	REPORT("append.sendfile", sendfile(appender, file, NULL, 1));
	close(appender);

	src = memfd_create("source", 0);
	if (src < 0 || pwrite(src, data, sizeof(data), 0) != (ssize_t)sizeof(data))
		die("source");
	REPORT("lseek.for_sendfile", lseek(file, 2 * MIB - 2 * PAGE, SEEK_SET));
	off = 0;
	REPORT("sendfile.straddle_boundary", sendfile(file, src, &off, 4 * PAGE));
	say("sendfile.source_offset", "%ld", (long)off);
	REPORT("lseek.for_sendfile_eof", lseek(file, size, SEEK_SET));
	off = 0;
	REPORT("sendfile.at_eof", sendfile(file, src, &off, PAGE));
	say("sendfile.source_offset_refused", "%ld", (long)off);
	off = 0;
	REPORT("lseek.for_sendfile_inside", lseek(file, 0, SEEK_SET));
	REPORT("sendfile.inside", sendfile(file, src, &off, 3 * PAGE));

	in_off = 0;
	out_off = size - 10;
	REPORT("copy_file_range.straddle", copy_file_range(src, &in_off, file, &out_off, 100, 0));
	say("copy_file_range.offsets", "%ld %ld", (long)in_off, (long)out_off);
	in_off = 0;
	out_off = 2 * MIB - PAGE;
	REPORT("copy_file_range.straddle_boundary", copy_file_range(src, &in_off, file, &out_off, 3 * PAGE, 0));
	say("copy_file_range.offsets_boundary", "%ld %ld", (long)in_off, (long)out_off);
	in_off = 0;
	out_off = 0;
	REPORT("copy_file_range.inside", copy_file_range(src, &in_off, file, &out_off, PAGE, 0));

	/* Non-blocking: a splice that took more than it should must not leave the next one waiting. */
	if (pipe2(pipefd, O_NONBLOCK) < 0)
		die("pipe");
	REPORT("pipe.fill", write(pipefd[1], data, 2 * PAGE));
	out_off = size - PAGE;
	REPORT("splice.straddle", splice(pipefd[0], NULL, file, &out_off, 2 * PAGE, SPLICE_F_NONBLOCK));
	out_off = 0;
	REPORT("splice.inside", splice(pipefd[0], NULL, file, &out_off, PAGE, SPLICE_F_NONBLOCK));
	close(pipefd[0]);
	close(pipefd[1]);
	/* An input with nothing left: nothing to copy, 0 (not EPERM), even past the size. */
	off = sizeof(data);
	REPORT("lseek.for_sendfile_empty", lseek(file, size - 10, SEEK_SET));
	REPORT("sendfile.empty_source", sendfile(file, src, &off, PAGE));
	in_off = sizeof(data);
	out_off = size - 10;
	REPORT("copy_file_range.empty_source", copy_file_range(src, &in_off, file, &out_off, PAGE, 0));
	close(src);

	REPORT("ftruncate.grow", ftruncate(file, size + PAGE));
	REPORT("fallocate", fallocate(file, 0, 0, PAGE));
	say_content("content.after", file);

	close(session);
	REPORT("pwrite.after_close", pwrite(file, data, 1, size));
	say_content("content.unfrozen", file);
	close(file);
	close(dev);
}

/*
 * What the differential fuzzer found (docs/emulator.md), one deterministic
 * case each: holes of a preserved memfd, copy_file_range across
 * superblocks, growth of an F_SEAL_GROW memfd.
 */
static void fuzz_found(void)
{
	int dev = open_device(), session = create_session(dev, "fuzz-found");
	int sparse = memfd_create("sparse", 0), falloc = memfd_create("falloc", 0);
	int shm = open("/dev/shm", O_TMPFILE | O_RDWR, 0600), src, grow;
	static char data[700000];
	off64_t in_off, out_off;
	off_t off;

	memset(data, 0x33, sizeof(data));
	/* A page written, two holes; fallocated but never written pages. */
	if (sparse < 0 || falloc < 0 || shm < 0 || ftruncate(sparse, 3 * PAGE) < 0 ||
	    pwrite(sparse, data, PAGE, 0) != PAGE || fallocate(falloc, 0, 0, 2 * PAGE) < 0 ||
	    ftruncate(falloc, 3 * PAGE) < 0)
		die("files");
	REPORT("sparse.hole_before", lseek(sparse, 0, SEEK_HOLE));
	REPORT("falloc.data_before", lseek(falloc, 0, SEEK_DATA));
	REPORT("sparse.preserve", preserve(session, sparse, 1));
	REPORT("falloc.preserve", preserve(session, falloc, 2));
	REPORT("sparse.hole_after", lseek(sparse, 0, SEEK_HOLE));
	REPORT("sparse.data_after", lseek(sparse, 2 * PAGE, SEEK_DATA));
	REPORT("falloc.data_after", lseek(falloc, 0, SEEK_DATA));
	REPORT("falloc.hole_after", lseek(falloc, 0, SEEK_HOLE));
	say_content("sparse.content", sparse);

	/* A memfd into a /dev/shm file: two superblocks. */
	src = memfd_of(3 * PAGE, 0);
	if (pwrite(shm, data, PAGE, 0) != PAGE)
		die("shm");
	REPORT("shm.preserve", preserve(session, shm, 3));
	in_off = 0;
	out_off = 0;
	REPORT("xdev.copy_file_range_inside", copy_file_range(src, &in_off, shm, &out_off, 100, 0));
	in_off = 0;
	out_off = PAGE - 10;
	REPORT("xdev.copy_file_range_straddle", copy_file_range(src, &in_off, shm, &out_off, 100, 0));
	in_off = 3 * PAGE;
	REPORT("xdev.copy_file_range_empty", copy_file_range(src, &in_off, shm, &out_off, 100, 0));
	close(src);

	/* F_SEAL_GROW, not preserved: shmem refuses growth in 2 MiB pieces, as for a frozen file. */
	grow = memfd_of(23875, MFD_ALLOW_SEALING);
	src = memfd_create("source", 0);
	if (src < 0 || pwrite(src, data, sizeof(data), 0) != (ssize_t)sizeof(data))
		die("source");
	REPORT("grow.seal", fcntl(grow, F_ADD_SEALS, F_SEAL_GROW));
	in_off = 0;
	out_off = 0;
	REPORT("grow.copy_file_range", copy_file_range(src, &in_off, grow, &out_off, sizeof(data), 0));
	off = 0;
	REPORT("grow.lseek", lseek(grow, 0, SEEK_SET));
	REPORT("grow.sendfile", sendfile(grow, src, &off, 70000));
	REPORT("grow.pwrite", pwrite(grow, data, 30000, 0));
	REPORT("grow.pwrite_inside", pwrite(grow, data, 20000, 0));
	say_content("grow.content", grow);
	close(src);
	close(grow);

	close(session);
	close(sparse);
	close(falloc);
	close(shm);
	close(dev);
}

int main(int argc, char **argv)
{
	const char *scenario = argc > 1 ? argv[1] : "";

	if (strcmp(scenario, "close-unpins") == 0)
		close_unpins();
	else if (strcmp(scenario, "exit-unpins") == 0)
		exit_unpins();
	else if (strcmp(scenario, "writes") == 0)
		writes();
	else if (strcmp(scenario, "close-range-unpins") == 0)
		close_range_unpins();
	else if (strcmp(scenario, "kill-unpins") == 0)
		kill_unpins();
	else if (strcmp(scenario, "future-write") == 0)
		future_write();
	else if (strcmp(scenario, "fuzz-found") == 0)
		fuzz_found();
	else {
		fprintf(stderr, "unknown scenario %s\n", scenario);
		return 2;
	}
	say("done", "%s", scenario);
	return 0;
}
