// SPDX-License-Identifier: Apache-2.0
/*
 * luoemu-probe: drives libluoemu.so through one scenario per run, for
 * test/emu-shim-protocol.test.ts. The test plays the emulator (a fake one
 * that records every message); this program plays an unmodified C program
 * under LD_PRELOAD, and prints what the libc calls returned, one
 * "key value" line per observation, ending with "done".
 *
 * Usage: luoemu-probe SCENARIO
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/falloc.h>

#include "../../include/luokit/liveupdate.h"

#define DEV "/dev/liveupdate"

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

/* "ret errno" of a call: errno only matters when it failed. */
static void result(const char *key, int ret)
{
	say(key, "%d %d", ret, ret < 0 ? errno : 0);
}

static int cloexec(int fd)
{
	return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

/* The lowest free fd number: shows whether a call leaked an fd. */
static int lowest_free_fd(void)
{
	int fd = dup(0);

	close(fd);
	return fd;
}

static int open_device(void)
{
	int fd = open(DEV, O_RDWR);

	if (fd < 0) {
		say("fatal", "open %d", errno);
		exit(1);
	}
	return fd;
}

static int create_session(int dev, const char *name)
{
	struct luo_session_arg a = { .size = sizeof(a), .fd = -1 };

	snprintf(a.name, sizeof(a.name), "%s", name);
	if (ioctl(dev, LUO_CREATE_SESSION, &a) < 0) {
		say("fatal", "create %d", errno);
		exit(1);
	}
	return a.fd;
}

static int new_memfd(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		say("fatal", "memfd %d", errno);
		exit(1);
	}
	return fd;
}

/* Two pages: the first readable and writable, the second inaccessible. */
static unsigned char *guarded_pages(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *p = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || mprotect(p + ps, ps, PROT_NONE) < 0) {
		say("fatal", "mmap %d", errno);
		exit(1);
	}
	memset(p, 0, ps);
	return p;
}

static void scenario_open(void)
{
	int a = open(DEV, O_RDWR), b, c, d;

	result("open", a);
	say("open.cloexec", "%d", cloexec(a));
	close(a);
	b = open(DEV, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	result("open.flags", b);
	say("open.flags.cloexec", "%d", cloexec(b));
	say("open.flags.nonblock", "%d", (fcntl(b, F_GETFL) & O_NONBLOCK) != 0);
	close(b);
	c = openat(AT_FDCWD, DEV, O_RDWR);
	result("openat", c);
	close(c);
	d = open64(DEV, O_RDONLY);
	result("open64", d);
	close(d);
}

static void scenario_open_refused(void)
{
	/* The emulator answers the handshake with an error (EBUSY from the test). */
	result("open", open(DEV, O_RDWR));
	say("leak", "%d", lowest_free_fd());
}

static void scenario_open_flags(void)
{
	/* Errors the VFS gives before the driver's open: no connection at all. */
	result("excl", open(DEV, O_RDWR | O_CREAT | O_EXCL, 0600));
	result("directory", open(DEV, O_RDONLY | O_DIRECTORY));
	result("creat-directory", open(DEV, O_RDWR | O_CREAT | O_DIRECTORY, 0600));
	/* O_PATH never reaches a driver: the real file system answers (no /dev/liveupdate here). */
	result("path", open(DEV, O_PATH));
	/* Other paths are not the device. */
	result("other", open("/dev/liveupdate2", O_RDWR));
	{
		int dir = open("/dev", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		const char *volatile null_path = NULL;

		result("relative", openat(dir, "liveupdate", O_RDWR));
		close(dir);
		result("null", open(null_path, O_RDONLY));
	}
}

static void scenario_create(void)
{
	int dev = open_device();
	struct luo_session_arg a = { .size = sizeof(a), .fd = -1 };
	struct luo_session_arg n = { .size = sizeof(n) };
	struct stat st;
	int ret;

	snprintf(a.name, sizeof(a.name), "probe-session");
	ret = ioctl(dev, LUO_CREATE_SESSION, &a);
	result("create", ret);
	say("create.fd", "%d", a.fd);
	say("create.fd.cloexec", "%d", cloexec(a.fd));
	say("create.fd.socket", "%d", fstat(a.fd, &st) == 0 && S_ISSOCK(st.st_mode));
	ret = ioctl(a.fd, LUO_GET_NAME, &n);
	result("get_name", ret);
	say("get_name.name", "%s", n.name);
	say("get_name.size", "%u", n.size);
	close(a.fd);
	close(dev);
}

static void scenario_args(void)
{
	int dev = open_device();
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *g = guarded_pages();
	unsigned char *big;
	uint32_t size;

	/* NULL and unmapped arguments: the size cannot be read. */
	result("null", ioctl(dev, LUO_CREATE_SESSION, NULL));
	result("unmapped", ioctl(dev, LUO_CREATE_SESSION, (void *)8));

	/* A 72-byte struct of which only the first 8 bytes are mapped. */
	size = 72;
	memcpy(g + ps - 8, &size, 4);
	memset(g + ps - 4, 0xab, 4);
	result("partial", ioctl(dev, LUO_CREATE_SESSION, g + ps - 8));

	/* A size beyond 4096: the first 4096 bytes travel, the rest is summarised. */
	big = calloc(1, 8192);
	size = 8192;
	memcpy(big, &size, 4);
	big[100] = 0x5a;
	result("big.zero", ioctl(dev, LUO_CREATE_SESSION, big));
	big[6000] = 1;
	result("big.nonzero", ioctl(dev, LUO_CREATE_SESSION, big));
	free(big);

	/* A size beyond 4096 whose tail runs into an inaccessible page. */
	memset(g, 0, ps);
	size = (uint32_t)ps + 4096;
	memcpy(g, &size, 4);
	result("big.fault", ioctl(dev, LUO_CREATE_SESSION, g));

	/* A size below 4: the 4 bytes of the size itself still travel. */
	size = 2;
	memcpy(g, &size, 4);
	result("tiny", ioctl(dev, LUO_CREATE_SESSION, g));

	/* ioctl(2) takes an unsigned int: the upper bits of the long are dropped. */
	result("upper", ioctl(dev, 0xffffffff0000ba01ul, NULL));

	/* Any request reaches the emulator, which applies the kernel's dispatch. */
	result("tcgets", ioctl(dev, TCGETS, g));
	close(dev);
}

static void scenario_preserve(void)
{
	int dev = open_device();
	int s = create_session(dev, "preserve");
	int mfd = new_memfd("probe", 4096), opath;
	struct luo_fd_arg p = { .size = sizeof(p), .fd = mfd, .token = 0x1122334455667788ull };
	struct stat st;

	fstat(mfd, &st);
	say("memfd.ino", "%lu", (unsigned long)st.st_ino);
	result("preserve", ioctl(s, LUO_PRESERVE_FD, &p));
	p.fd = 987;
	result("preserve.closed", ioctl(s, LUO_PRESERVE_FD, &p));
	p.fd = -1;
	result("preserve.negative", ioctl(s, LUO_PRESERVE_FD, &p));
	opath = open("/tmp", O_PATH | O_CLOEXEC);
	p.fd = opath;
	result("preserve.opath", ioctl(s, LUO_PRESERVE_FD, &p));
	/* A size of 4: the fd field is not part of the argument, so nothing is attached. */
	p.size = 4;
	p.fd = mfd;
	result("preserve.short", ioctl(s, LUO_PRESERVE_FD, &p));
	close(opath);
	close(mfd);
	close(s);
	close(dev);
}

static void scenario_copyback(void)
{
	int dev = open_device();
	int s = create_session(dev, "copyback-session-name-that-is-long");
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char buf[80];
	unsigned char *ro;
	struct luo_session_arg a = { .size = sizeof(a), .fd = -1 };
	int before, ret;

	/* The caller's size (40) is less than the reply's 72 bytes: only 40 come back. */
	memset(buf, 0xee, sizeof(buf));
	memset(buf, 0, 40);
	buf[0] = 40;
	result("short", ioctl(s, LUO_GET_NAME, buf));
	say("short.name", "%.32s", (char *)buf + 8);
	say("short.canary", "%02x%02x", buf[40], buf[71]);

	/* A struct in a read-only page: the session is created, the copy back faults. */
	ro = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	snprintf(a.name, sizeof(a.name), "readonly");
	memcpy(ro, &a, sizeof(a));
	mprotect(ro, ps, PROT_READ);
	before = lowest_free_fd();
	ret = ioctl(dev, LUO_CREATE_SESSION, ro);
	result("readonly", ret);
	say("readonly.leak", "%d", lowest_free_fd() != before);
	munmap(ro, ps);
	close(s);
	close(dev);
}

static void scenario_retrieve(void)
{
	int dev = open_device();
	struct luo_session_arg r = { .size = sizeof(r), .fd = -1 };
	struct luo_fd_arg f = { .size = sizeof(f), .fd = -1, .token = 7 };
	char text[32] = { 0 };

	snprintf(r.name, sizeof(r.name), "incoming");
	result("retrieve_session", ioctl(dev, LUO_RETRIEVE_SESSION, &r));
	result("retrieve_fd", ioctl(r.fd, LUO_RETRIEVE_FD, &f));
	say("retrieve_fd.cloexec", "%d", cloexec(f.fd));
	say("retrieve_fd.read", "%zd", pread(f.fd, text, sizeof(text) - 1, 0));
	say("retrieve_fd.text", "%s", text);
	/* FINISH of 8 bytes. */
	{
		uint32_t fin[2] = { 8, 0 };

		result("finish", ioctl(r.fd, LUO_FINISH, fin));
	}
	close(f.fd);
	close(r.fd);
	close(dev);
}

static void scenario_nonblock(void)
{
	int dev = open(DEV, O_RDWR | O_NONBLOCK);
	int s, on = 1;
	struct luo_session_arg n = { .size = sizeof(n) };

	/* The emulator answers late; a non-blocking fd still gets its reply. */
	s = create_session(dev, "slow");
	say("create.fd", "%d", s >= 0);
	result("fionbio", ioctl(s, FIONBIO, &on));
	say("session.nonblock", "%d", (fcntl(s, F_GETFL) & O_NONBLOCK) != 0);
	result("get_name", ioctl(s, LUO_GET_NAME, &n));
	say("get_name.name", "%s", n.name);
	close(s);
	close(dev);
}

static void scenario_generic(void)
{
	int dev = open_device(), on = 1, off = 0, avail = 0; /* its first u32 is the "size": 0 */

	result("fioclex", ioctl(dev, FIOCLEX));
	say("fioclex.cloexec", "%d", cloexec(dev));
	result("fionclex", ioctl(dev, FIONCLEX));
	say("fionclex.cloexec", "%d", cloexec(dev));
	result("fioasync.off", ioctl(dev, FIOASYNC, &off));
	result("fioasync.on", ioctl(dev, FIOASYNC, &on));
	result("fioasync.fault", ioctl(dev, FIOASYNC, NULL));
	/* FIONREAD on a non-regular file is the driver's: it goes to the emulator. */
	result("fionread", ioctl(dev, FIONREAD, &avail));
	close(dev);
}

static void scenario_gone(void)
{
	int dev = open_device();
	struct luo_session_arg a = { .size = sizeof(a) };

	snprintf(a.name, sizeof(a.name), "x");
	/* The emulator reads the request and hangs up without a reply. */
	result("eof", ioctl(dev, LUO_CREATE_SESSION, &a));
	/* Now the peer is gone: the send itself fails, without SIGPIPE. */
	result("epipe", ioctl(dev, LUO_CREATE_SESSION, &a));
	close(dev);
}

static void scenario_passthrough(void)
{
	int sv[2], avail = -1, null = open("/dev/null", O_RDWR);
	struct termios_like {
		unsigned char bytes[64];
	} t;

	/* A SOCK_SEQPACKET socket whose peer is not the emulator is not an emulator fd. */
	socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
	send(sv[1], "abc", 3, 0);
	result("socketpair.fionread", ioctl(sv[0], FIONREAD, &avail));
	say("socketpair.avail", "%d", avail);
	result("devnull.tcgets", ioctl(null, TCGETS, &t));
	errno = 4321;
	result("devnull.fionbio", ioctl(null, FIONBIO, &(int){ 0 }));
	say("errno.kept", "%d", errno);
	close(sv[0]);
	close(sv[1]);
	close(null);
}

static void scenario_errno(void)
{
	int dev = open_device(), s;
	struct luo_session_arg n = { .size = sizeof(n) };

	s = create_session(dev, "errno");
	errno = 1234;
	result("get_name", ioctl(s, LUO_GET_NAME, &n));
	say("errno.kept", "%d", errno);
	close(s);
	close(dev);
}

static void scenario_frozen(void)
{
	int dev = open_device();
	int s = create_session(dev, "frozen");
	int mfd = new_memfd("frozen", 8192), ro, linked;
	struct luo_fd_arg p = { .size = sizeof(p), .fd = mfd, .token = 1 };
	char path[64];
	struct stat st;

	fstat(mfd, &st);
	say("memfd.ino", "%lu", (unsigned long)st.st_ino);
	/* Not preserved yet: the emulator says "not frozen". */
	result("before", ftruncate(mfd, 4096));
	result("preserve", ioctl(s, LUO_PRESERVE_FD, &p));
	result("ftruncate", ftruncate(mfd, 100));
	result("ftruncate64", ftruncate64(mfd, 100));
	result("ftruncate.same", ftruncate(mfd, 4096)); /* no size change: allowed, no query */
	result("ftruncate.negative", ftruncate(mfd, -1));
	result("fallocate", fallocate(mfd, 0, 0, 10));
	result("fallocate64", fallocate64(mfd, FALLOC_FL_KEEP_SIZE, 0, 10));
	result("fallocate.punch", fallocate(mfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 10));
	result("fallocate.zero", fallocate(mfd, FALLOC_FL_ZERO_RANGE, 0, 10)); /* shmem: EOPNOTSUPP first */
	result("fallocate.badlen", fallocate(mfd, 0, 0, 0));
	errno = 555;
	say("posix_fallocate", "%d", posix_fallocate(mfd, 0, 10));
	say("posix_fallocate64", "%d", posix_fallocate64(mfd, 0, 10));
	say("posix_fallocate.errno", "%d", errno);
	/* A read-only fd fails in the VFS first (EINVAL), without asking. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	result("readonly", ftruncate(ro, 100));
	close(ro);
	/* A linked tmpfs file is not preservable, so never frozen: not asked about. */
	linked = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (linked < 0) {
		say("linked", "skip");
	} else {
		/* O_TMPFILE has no links either: it is asked about (and answered "no"). */
		result("tmpfile", ftruncate(linked, 10));
		close(linked);
	}
	close(mfd);
	close(s);
	close(dev);
}

struct thread_job {
	int dev;
	int index;
	int ok;
};

static void *thread_main(void *opaque)
{
	struct thread_job *job = opaque;
	char name[64];
	int s;

	snprintf(name, sizeof(name), "thread-%d", job->index);
	s = create_session(job->dev, name);
	job->ok = 1;
	for (int i = 0; i < 100; i++) {
		struct luo_session_arg n = { .size = sizeof(n) };

		if (ioctl(s, LUO_GET_NAME, &n) < 0 || strcmp(n.name, name) != 0)
			job->ok = 0;
	}
	close(s);
	return NULL;
}

static void scenario_threads(void)
{
	int dev = open_device(), ok = 1;
	pthread_t threads[8];
	struct thread_job jobs[8];

	for (int i = 0; i < 8; i++) {
		jobs[i] = (struct thread_job){ .dev = dev, .index = i };
		pthread_create(&threads[i], NULL, thread_main, &jobs[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(threads[i], NULL);
		ok &= jobs[i].ok;
	}
	say("threads.ok", "%d", ok);
	close(dev);
}

static void scenario_fork(void)
{
	int dev = open_device();
	int s = create_session(dev, "forked");
	int status;
	pid_t child = fork();

	if (child == 0) {
		struct luo_session_arg n = { .size = sizeof(n) };
		int ret = ioctl(s, LUO_GET_NAME, &n);

		_exit(ret == 0 && strcmp(n.name, "forked") == 0 ? 0 : 1);
	}
	waitpid(child, &status, 0);
	say("child", "%d", WIFEXITED(status) ? WEXITSTATUS(status) : 128);
	close(s);
	close(dev);
}

static void scenario_emulator_itself(void)
{
	/* Pretend to be the emulator (the test restores emu.pid): the shim must stand aside. */
	char path[4096];
	FILE *f;
	int mfd, sv[2], avail = 0;

	snprintf(path, sizeof(path), "%s/emu.pid", getenv("LUOKIT_EMU_STATE"));
	f = fopen(path, "w");
	fprintf(f, "%d\n", getpid());
	fclose(f);
	result("open", open(DEV, O_RDWR));
	mfd = new_memfd("itself", 4096);
	result("ftruncate", ftruncate(mfd, 100));
	close(mfd);
	socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
	result("fionread", ioctl(sv[0], FIONREAD, &avail));
	close(sv[0]);
	close(sv[1]);
}

static const struct {
	const char *name;
	void (*run)(void);
} scenarios[] = {
	{ "open", scenario_open },
	{ "open-refused", scenario_open_refused },
	{ "open-flags", scenario_open_flags },
	{ "create", scenario_create },
	{ "args", scenario_args },
	{ "preserve", scenario_preserve },
	{ "copyback", scenario_copyback },
	{ "retrieve", scenario_retrieve },
	{ "nonblock", scenario_nonblock },
	{ "generic", scenario_generic },
	{ "gone", scenario_gone },
	{ "passthrough", scenario_passthrough },
	{ "errno", scenario_errno },
	{ "frozen", scenario_frozen },
	{ "threads", scenario_threads },
	{ "fork", scenario_fork },
	{ "emulator-itself", scenario_emulator_itself },
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SCENARIO\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		if (strcmp(argv[1], scenarios[i].name) == 0) {
			scenarios[i].run();
			say("done", "%s", argv[1]);
			return 0;
		}
	}
	fprintf(stderr, "unknown scenario %s\n", argv[1]);
	return 2;
}
