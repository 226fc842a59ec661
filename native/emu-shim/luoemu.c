// SPDX-License-Identifier: Apache-2.0
/*
 * libluoemu.so: an LD_PRELOAD shim that points unmodified, dynamically linked
 * programs at luokit's emulated kernel instead of /dev/liveupdate.
 *
 * The contract is docs/emulator.md ("Wire protocol" and "Using it from C").
 * In short, when $LUOKIT_EMU_STATE names an emulator's state directory:
 *
 *   open("/dev/liveupdate")     connects to $LUOKIT_EMU_STATE/device.sock and
 *                               reads the emulator's one handshake reply;
 *   ioctl(fd, ...)              on an emulator fd (an AF_UNIX SOCK_SEQPACKET
 *                               socket whose peer is the pid in emu.pid) sends
 *                               one request message and reads one reply;
 *   ftruncate/fallocate/...     on an unlinked shmem file first ask
 *                               $LUOKIT_EMU_STATE/query.sock whether the file
 *                               is preserved with its size frozen (EPERM).
 *
 * Everything else, and everything when $LUOKIT_EMU_STATE is unset, goes to
 * the real libc functions found with dlsym(RTLD_NEXT).
 *
 * The caller's ioctl argument is read and written with process_vm_readv/
 * process_vm_writev on our own pid, so a bad pointer gives EFAULT as the
 * kernel's copy_from_user() would, never a crash in the shim. errno is left
 * untouched on success, as after a system call.
 */
#define _GNU_SOURCE
/* The wrappers below define open() and friends themselves: no fortify inlines. */
#undef _FORTIFY_SOURCE

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include "../include/luokit/liveupdate.h"

#define EXPORT __attribute__((visibility("default")))

/* ---------------------------------------------------------------------- */
/* Protocol constants (docs/emulator.md, "Wire protocol")                 */
/* ---------------------------------------------------------------------- */

#define LUOEMU_MAGIC 0x454f554cu /* "LUOE" little-endian */
#define LUOEMU_VERSION 1u

#define KIND_IOCTL 1u
#define KIND_FROZEN_QUERY 2u
#define KIND_SYNC 3u

/*
 * Request flags. The argument is sent as the longest readable prefix of
 * min(size, 4096) bytes; what lies beyond the bytes sent, up to `size`, is
 * summarised the way the kernel's check_zeroed_user() would find it, reading
 * in address order:
 *   TAIL_NONZERO  a non-zero byte comes before any unreadable one;
 *   ARG_FAULT     an unreadable byte comes first (also: fewer than
 *                 min(size, 4096) bytes could be sent);
 *   neither       all zero and readable.
 * ARG_NULL means even the u32 size could not be read (NULL or unmapped):
 * get_user() fails. FD_INVALID: PRESERVE_FD named an fd fget() would refuse
 * (not open, or O_PATH); nothing is attached then.
 */
#define FLAG_ARG_NULL 0x1u
#define FLAG_TAIL_NONZERO 0x2u
#define FLAG_FD_INVALID 0x4u
#define FLAG_ARG_FAULT 0x8u

#define MAX_ARG 4096u /* argument bytes one message carries */
#define REQ_HEADER 20u
#define REPLY_HEADER 16u

/* Every LUO struct that carries an fd (in or out) has it at offset 4. */
#define LUO_FD_OFFSET offsetof(struct luo_fd_arg, fd)

#define DEVICE_PATH "/dev/liveupdate"
#define DEVICE_SOCKET "device.sock"
#define QUERY_SOCKET "query.sock"
#define PID_FILE "emu.pid"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/* A FROZEN_QUERY must not hang a resize forever if the emulator is stuck. */
#define QUERY_TIMEOUT_MS 10000

/* VFS-generic ioctls newer than some libc headers: _IOR(0x15, 0|1, ...). */
#ifndef FS_IOC_GETFSUUID
#define FS_IOC_GETFSUUID 0x80111500u
#endif
#ifndef FS_IOC_GETFSSYSFSPATH
#define FS_IOC_GETFSSYSFSPATH 0x80811501u
#endif

/* ---------------------------------------------------------------------- */
/* The real libc functions                                                */
/* ---------------------------------------------------------------------- */

/* The fortify entry points are declared by glibc only under _FORTIFY_SOURCE. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*ftruncate64_fn)(int, off64_t);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*fallocate64_fn)(int, int, off64_t, off64_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);
typedef int (*posix_fallocate64_fn)(int, off64_t, off64_t);
typedef int (*close_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off64_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off64_t, int);
typedef ssize_t (*sendfile_fn)(int, int, off_t *, size_t);
typedef ssize_t (*copy_file_range_fn)(int, off64_t *, int, off64_t *, size_t, unsigned int);
typedef ssize_t (*splice_fn)(int, off64_t *, int, off64_t *, size_t, unsigned int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*close_range_fn)(unsigned int, unsigned int, int);
typedef void (*closefrom_fn)(int);
typedef pid_t (*waitpid_fn)(pid_t, int *, int);
typedef pid_t (*wait4_fn)(pid_t, int *, int, struct rusage *);
typedef int (*waitid_fn)(idtype_t, id_t, siginfo_t *, int);

/*
 * dlsym(RTLD_NEXT) once per symbol, on first use: another library's
 * constructor may call open() before ours runs. Races only repeat the lookup.
 */
static void *real_symbol(void **slot, const char *name)
{
	void *fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (fn == NULL) {
		fn = dlsym(RTLD_NEXT, name);
		if (fn != NULL)
			__atomic_store_n(slot, fn, __ATOMIC_RELEASE);
	}
	return fn;
}

#define DEFINE_REAL(type, name)                                   \
	static type real_##name(void)                             \
	{                                                         \
		static void *slot;                                \
		return (type)real_symbol(&slot, #name);           \
	}

DEFINE_REAL(open_fn, open)
DEFINE_REAL(open_fn, open64)
DEFINE_REAL(openat_fn, openat)
DEFINE_REAL(openat_fn, openat64)
DEFINE_REAL(open2_fn, __open_2)
DEFINE_REAL(open2_fn, __open64_2)
DEFINE_REAL(openat2_fn, __openat_2)
DEFINE_REAL(openat2_fn, __openat64_2)
DEFINE_REAL(ioctl_fn, ioctl)
DEFINE_REAL(ftruncate_fn, ftruncate)
DEFINE_REAL(ftruncate64_fn, ftruncate64)
DEFINE_REAL(fallocate_fn, fallocate)
DEFINE_REAL(fallocate64_fn, fallocate64)
DEFINE_REAL(posix_fallocate_fn, posix_fallocate)
DEFINE_REAL(posix_fallocate64_fn, posix_fallocate64)
DEFINE_REAL(close_fn, close)
DEFINE_REAL(write_fn, write)
DEFINE_REAL(pwrite_fn, pwrite)
DEFINE_REAL(pwrite_fn, pwrite64)
DEFINE_REAL(writev_fn, writev)
DEFINE_REAL(pwritev_fn, pwritev64)
DEFINE_REAL(pwritev2_fn, pwritev64v2)
DEFINE_REAL(sendfile_fn, sendfile)
DEFINE_REAL(copy_file_range_fn, copy_file_range)
DEFINE_REAL(splice_fn, splice)
DEFINE_REAL(dup2_fn, dup2)
DEFINE_REAL(dup3_fn, dup3)
DEFINE_REAL(close_range_fn, close_range)
DEFINE_REAL(closefrom_fn, closefrom)
DEFINE_REAL(waitpid_fn, waitpid)
DEFINE_REAL(wait4_fn, wait4)
DEFINE_REAL(waitid_fn, waitid)

/* A symbol the next library does not have: fail like a missing system call. */
#define MISSING(ret)              \
	do {                      \
		errno = ENOSYS;   \
		return (ret);     \
	} while (0)

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */
/* ---------------------------------------------------------------------- */

/* The shim's own closes: never the interposed close() below (no SYNC, no recursion). */
static int raw_close(int fd)
{
	close_fn real = real_close();

	return real != NULL ? real(fd) : (int)syscall(SYS_close, fd);
}

static void put_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The state directory, or NULL when the shim is switched off. */
static const char *state_dir(void)
{
	const char *dir = getenv("LUOKIT_EMU_STATE");

	return dir != NULL && dir[0] != '\0' ? dir : NULL;
}

/* "$dir/name" into a sockaddr_un; ENAMETOOLONG if it does not fit. */
static int socket_address(struct sockaddr_un *addr, const char *dir, const char *name)
{
	size_t dlen = strlen(dir), nlen = strlen(name);

	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (dlen + 1 + nlen + 1 > sizeof(addr->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(addr->sun_path, dir, dlen);
	addr->sun_path[dlen] = '/';
	memcpy(addr->sun_path + dlen + 1, name, nlen + 1);
	return 0;
}

/*
 * A new SOCK_SEQPACKET connection to "$dir/name", or -1 with errno. `type_flags`
 * is SOCK_CLOEXEC and/or SOCK_NONBLOCK (a non-blocking connect() to a full
 * backlog fails with EAGAIN instead of waiting).
 */
static int connect_to(const char *dir, const char *name, int type_flags)
{
	struct sockaddr_un addr;
	int fd, err;

	if (socket_address(&addr, dir, name) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | type_flags, 0);
	if (fd < 0)
		return -1;
	/* An AF_UNIX connect() interrupted while the backlog is full has not connected: retry. */
	while (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno == EINTR)
			continue;
		err = errno;
		raw_close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* Milliseconds on CLOCK_MONOTONIC. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until fd is ready for `events`, however often signals interrupt us:
 * forever if timeout_ms < 0, else fail with ETIMEDOUT after that long.
 */
static int wait_for(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t deadline = timeout_ms < 0 ? 0 : now_ms() + timeout_ms;

	for (;;) {
		int left = -1, n;

		if (timeout_ms >= 0) {
			int64_t remaining = deadline - now_ms();

			left = remaining > 0 ? (int)remaining : 0;
		}
		n = poll(&p, 1, left);
		if (n > 0)
			return 0;
		if (n == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

/* ---------------------------------------------------------------------- */
/* Reading and writing the caller's memory without faulting               */
/* ---------------------------------------------------------------------- */

static size_t page_size(void)
{
	static size_t cached;
	size_t size = __atomic_load_n(&cached, __ATOMIC_RELAXED);

	if (size == 0) {
		long ps = sysconf(_SC_PAGESIZE);

		size = ps > 0 ? (size_t)ps : 4096;
		__atomic_store_n(&cached, size, __ATOMIC_RELAXED);
	}
	return size;
}

/*
 * Copy len bytes between our buffer and the caller's address `addr` (which
 * may be anything): process_vm_readv/writev on our own pid, or, where those
 * are unavailable (seccomp, ENOSYS), a pipe, since write()/read() also report
 * EFAULT instead of faulting. Returns 0, or -1 if any byte is inaccessible.
 * len must be at most one page (a pipe holds at least that much).
 */
static int copy_chunk(void *buf, uintptr_t addr, size_t len, int to_caller)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)addr, .iov_len = len };
	int pipefd[2], ok = 0;
	ssize_t n;

	if (len == 0)
		return 0;
	if (addr + len < addr)
		return -1; /* wraps around the address space */

	n = to_caller ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
		      : process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (n >= 0)
		return (size_t)n == len ? 0 : -1;
	if (errno != ENOSYS && errno != EPERM)
		return -1;

	/* Non-blocking: a pipe squeezed by pipe-user-pages-soft must fail, not hang. */
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	if (to_caller) {
		do
			n = write(pipefd[1], buf, len);
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)len) {
			do
				n = read(pipefd[0], (void *)addr, len);
			while (n < 0 && errno == EINTR);
			ok = n == (ssize_t)len;
		}
	} else {
		do
			n = write(pipefd[1], (const void *)addr, len);
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)len) {
			do
				n = read(pipefd[0], buf, len);
			while (n < 0 && errno == EINTR);
			ok = n == (ssize_t)len;
		}
	}
	raw_close(pipefd[0]);
	raw_close(pipefd[1]);
	return ok ? 0 : -1;
}

/* Bytes from addr to the end of its page: faults are page-granular. */
static size_t to_page_end(uintptr_t addr, size_t len)
{
	size_t room = page_size() - (addr & (page_size() - 1));

	return len < room ? len : room;
}

/*
 * Read up to len bytes from the caller's addr into buf, page by page,
 * stopping at the first inaccessible page. Returns how many bytes were read.
 */
static size_t read_prefix(unsigned char *buf, uintptr_t addr, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t chunk = to_page_end(addr + done, len - done);

		if (copy_chunk(buf + done, addr + done, chunk, 0) < 0)
			break;
		done += chunk;
	}
	return done;
}

enum tail_state { TAIL_ZERO, TAIL_NONZERO, TAIL_FAULT };

/*
 * Scan len bytes at the caller's addr the way the kernel's check_zeroed_user()
 * does: in address order, stopping at the first non-zero byte or the first
 * inaccessible one, whichever comes first.
 */
static enum tail_state scan_tail(uintptr_t addr, uint64_t len)
{
	unsigned char page[4096];
	uint64_t done = 0;

	while (done < len) {
		size_t want = len - done < sizeof(page) ? (size_t)(len - done) : sizeof(page);
		size_t chunk = to_page_end(addr + done, want);

		if (copy_chunk(page, addr + done, chunk, 0) < 0)
			return TAIL_FAULT;
		for (size_t i = 0; i < chunk; i++)
			if (page[i] != 0)
				return TAIL_NONZERO;
		done += chunk;
	}
	return TAIL_ZERO;
}

/* Write len bytes to the caller's addr; like copy_to_user(), bytes before a fault stay written. */
static int write_caller(uintptr_t addr, const unsigned char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t chunk = to_page_end(addr + done, len - done);

		if (copy_chunk((void *)(buf + done), addr + done, chunk, 1) < 0)
			return -1;
		done += chunk;
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Messages                                                               */
/* ---------------------------------------------------------------------- */

/*
 * sendmsg() one whole message with at most one fd attached; EPIPE and friends
 * become EIO. A non-blocking socket is waited on (timeout_ms < 0: forever).
 */
static int send_message(int sock, const unsigned char *msg, size_t len, int fd, int timeout_ms)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&control, 0, sizeof(control));
	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = control.buf;
		mh.msg_controllen = sizeof(control.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	for (;;) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);

		if (n >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			/* The caller made the fd non-blocking (O_NONBLOCK, FIONBIO); the kernel would not care. */
			if (wait_for(sock, POLLOUT, timeout_ms) < 0)
				return -1;
			continue;
		}
		if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
			errno = EIO; /* the emulator is gone, or this fd died in an emulated kexec */
		return -1;
	}
}

/*
 * recvmsg() one reply into buf (cap bytes) and check its header. Returns its
 * length, with *fd_out the one fd attached (or -1); or -1 with errno EIO for
 * EOF, a reset connection or a malformed reply (any fds received are closed).
 * A reply longer than cap is accepted truncated only if allow_truncation.
 * A non-blocking socket is waited on (timeout_ms < 0: forever).
 */
static ssize_t receive_reply(int sock, unsigned char *buf, size_t cap, uint16_t kind, int allow_truncation,
			     int timeout_ms, int *fd_out)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh;
	struct cmsghdr *c;
	int fds[16], nfds = 0, bad;
	ssize_t n;

	*fd_out = -1;
	for (;;) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = control.buf;
		mh.msg_controllen = sizeof(control.buf);
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (wait_for(sock, POLLIN, timeout_ms) < 0)
				return -1;
			continue;
		}
		if (errno == ECONNRESET || errno == ENOTCONN || errno == EPIPE)
			errno = EIO;
		return -1;
	}

	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (nfds < (int)(sizeof(fds) / sizeof(fds[0])))
				fds[nfds++] = fd;
			else
				raw_close(fd);
		}
	}

	bad = n < (ssize_t)REPLY_HEADER /* includes EOF: 0 bytes */
	      || (mh.msg_flags & MSG_CTRUNC) || ((mh.msg_flags & MSG_TRUNC) && !allow_truncation) || nfds > 1;
	if (!bad)
		bad = get_u32(buf) != LUOEMU_MAGIC || get_u16(buf + 4) != LUOEMU_VERSION ||
		      get_u16(buf + 6) != kind ||
		      (!(mh.msg_flags & MSG_TRUNC) && REPLY_HEADER + (size_t)get_u32(buf + 12) > (size_t)n);
	if (bad) {
		for (int i = 0; i < nfds; i++)
			raw_close(fds[i]);
		errno = EIO;
		return -1;
	}
	*fd_out = nfds == 1 ? fds[0] : -1;
	return n;
}

/* The s32 result of a reply; anything that is not a return value or -errno is a protocol error. */
static int reply_result(const unsigned char *reply, int32_t *result)
{
	uint32_t raw = get_u32(reply + 8);
	int32_t value;

	memcpy(&value, &raw, sizeof(value));
	if (value < -4095)
		return -1;
	*result = value;
	return 0;
}

static void put_request_header(unsigned char *msg, uint16_t kind, uint32_t request, uint32_t flags,
			       uint32_t arg_len)
{
	put_u32(msg, LUOEMU_MAGIC);
	put_u16(msg + 4, LUOEMU_VERSION);
	put_u16(msg + 6, kind);
	put_u32(msg + 8, request);
	put_u32(msg + 12, flags);
	put_u32(msg + 16, arg_len);
}

/* ---------------------------------------------------------------------- */
/* Recognising emulator fds                                               */
/* ---------------------------------------------------------------------- */

static pid_t cached_emulator_pid; /* 0: not read yet */

/* Parse emu.pid ("1234\n"); 0 if missing or malformed. */
static pid_t read_emulator_pid(const char *dir)
{
	char path[PATH_MAX], text[32];
	size_t dlen = strlen(dir);
	ssize_t n;
	long pid = 0;
	int fd;
	open_fn op = real_open();

	if (op == NULL || dlen + sizeof("/" PID_FILE) > sizeof(path))
		return 0;
	memcpy(path, dir, dlen);
	memcpy(path + dlen, "/" PID_FILE, sizeof("/" PID_FILE));
	fd = op(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	do
		n = read(fd, text, sizeof(text) - 1);
	while (n < 0 && errno == EINTR);
	raw_close(fd);
	if (n <= 0)
		return 0;
	for (ssize_t i = 0; i < n && text[i] >= '0' && text[i] <= '9'; i++) {
		pid = pid * 10 + (text[i] - '0');
		if (pid > INT_MAX)
			return 0;
	}
	return (pid_t)pid;
}

/*
 * Is fd an emulator fd: an AF_UNIX SOCK_SEQPACKET socket whose peer is the
 * emulator? The emulator's pid is cached and re-read when a peer does not
 * match it (the emulator may have been restarted). Clobbers errno.
 */
static int is_emulator_fd(int fd)
{
	const char *dir = state_dir();
	struct ucred cred;
	socklen_t len;
	int value;
	pid_t emulator;

	if (dir == NULL || fd < 0)
		return 0;
	len = sizeof(value);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) < 0 || value != SOCK_SEQPACKET)
		return 0;
	len = sizeof(value);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) < 0 || value != AF_UNIX)
		return 0;
	len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0)
		return 0;
	/* Our own socketpair: never an emulator fd (even inside the emulator, if it inherited the shim). */
	if (cred.pid == getpid())
		return 0;
	emulator = __atomic_load_n(&cached_emulator_pid, __ATOMIC_RELAXED);
	if (emulator != cred.pid) {
		emulator = read_emulator_pid(dir);
		__atomic_store_n(&cached_emulator_pid, emulator, __ATOMIC_RELAXED);
	}
	return emulator > 0 && emulator == cred.pid;
}

/* ---------------------------------------------------------------------- */
/* open("/dev/liveupdate")                                                */
/* ---------------------------------------------------------------------- */

/* Block thread cancellation for the duration of an emulated call (no fd or lock may leak). */
struct no_cancel {
	int old;
};

static void cancel_off(struct no_cancel *nc)
{
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc->old);
}

static void cancel_restore(struct no_cancel *nc)
{
	int ignored;

	pthread_setcancelstate(nc->old, &ignored);
}

/*
 * The emulator process itself, should it have inherited LD_PRELOAD: the shim
 * must stay out of its way, or it would wait on its own event loop.
 */
static int we_are_the_emulator(const char *dir)
{
	return read_emulator_pid(dir) == getpid();
}

/* Is this an open() the shim answers? Then the state directory, else NULL. */
static const char *device_open_dir(const char *path, int flags)
{
	const char *dir;

	/*
	 * open() is declared nonnull, yet open(NULL) must still fail with EFAULT
	 * (in the real call), not crash here: hide the pointer from the optimiser.
	 */
	__asm__("" : "+r"(path));
	if (path == NULL || strcmp(path, DEVICE_PATH) != 0)
		return NULL;
	/* O_PATH never reaches a driver's open(): leave it to the real file system. */
	if (flags & O_PATH)
		return NULL;
	dir = state_dir();
	if (dir == NULL || we_are_the_emulator(dir))
		return NULL;
	return dir;
}

/*
 * The emulated open: what open(2) does on an existing character device whose
 * driver is the emulator. Returns the new fd, or -1 with errno.
 */
static int device_open(const char *dir, int flags)
{
	unsigned char reply[REPLY_HEADER + 64];
	struct no_cancel nc;
	int32_t result;
	int sock, extra, err;
	ssize_t n;

	/* Path-walk and flag errors come before the driver is involved. */
	if ((flags & O_CREAT) && (flags & O_DIRECTORY)) {
		errno = EINVAL;
		return -1;
	}
	if (flags & O_DIRECTORY) { /* includes O_TMPFILE */
		errno = ENOTDIR;
		return -1;
	}
	if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
		errno = EEXIST;
		return -1;
	}

	cancel_off(&nc);
	sock = connect_to(dir, DEVICE_SOCKET, (flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0);
	if (sock < 0) {
		/* No emulator listening: as if this host had no /dev/liveupdate. */
		if (errno == ECONNREFUSED || errno == ENOENT)
			errno = ENOENT;
		cancel_restore(&nc);
		return -1;
	}
	/* The emulator answers every connection with one reply: 0, -EBUSY or -EIO. */
	n = receive_reply(sock, reply, sizeof(reply), KIND_IOCTL, 1, -1, &extra);
	if (n >= 0 && extra >= 0) {
		raw_close(extra); /* a handshake carries no fd */
		n = -1;
		errno = EIO;
	}
	if (n >= 0 && reply_result(reply, &result) < 0) {
		n = -1;
		errno = EIO;
	}
	if (n >= 0 && result < 0) {
		n = -1;
		errno = -result;
	}
	if (n >= 0 && (flags & O_NONBLOCK) && fcntl(sock, F_SETFL, O_NONBLOCK) < 0)
		n = -1;
	if (n < 0) {
		err = errno;
		raw_close(sock);
		errno = err;
		sock = -1;
	}
	cancel_restore(&nc);
	return sock;
}

/* mode is an open() argument only with O_CREAT or O_TMPFILE. */
#define NEEDS_MODE(flags) (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE)

#define VA_MODE(flags, last, mode)                            \
	do {                                                  \
		(mode) = 0;                                   \
		if (NEEDS_MODE(flags)) {                      \
			va_list ap;                           \
			va_start(ap, last);                   \
			(mode) = (mode_t)va_arg(ap, unsigned int); \
			va_end(ap);                           \
		}                                             \
	} while (0)

EXPORT int open(const char *path, int flags, ...)
{
	const char *dir;
	open_fn real = real_open();
	mode_t mode;

	VA_MODE(flags, flags, mode);
	if ((dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
	const char *dir;
	open_fn real = real_open64();
	mode_t mode;

	VA_MODE(flags, flags, mode);
	if ((dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	const char *dir;
	openat_fn real = real_openat();
	mode_t mode;

	VA_MODE(flags, flags, mode);
	/* The path is absolute, so dirfd plays no part (as in openat(2)). */
	if ((dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	const char *dir;
	openat_fn real = real_openat64();
	mode_t mode;

	VA_MODE(flags, flags, mode);
	if ((dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(dirfd, path, flags, mode);
}

/*
 * The _FORTIFY_SOURCE entry points: open() without a mode. With O_CREAT or
 * O_TMPFILE the real one aborts the program ("invalid open call"), so those
 * calls go to it whatever the path.
 */
EXPORT int __open_2(const char *path, int flags)
{
	const char *dir;
	open2_fn real = real___open_2();

	if (!NEEDS_MODE(flags) && (dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(path, flags);
}

EXPORT int __open64_2(const char *path, int flags)
{
	const char *dir;
	open2_fn real = real___open64_2();

	if (!NEEDS_MODE(flags) && (dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(path, flags);
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	const char *dir;
	openat2_fn real = real___openat_2();

	if (!NEEDS_MODE(flags) && (dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(dirfd, path, flags);
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	const char *dir;
	openat2_fn real = real___openat64_2();

	if (!NEEDS_MODE(flags) && (dir = device_open_dir(path, flags)) != NULL)
		return device_open(dir, flags);
	if (real == NULL)
		MISSING(-1);
	return real(dirfd, path, flags);
}

/* ---------------------------------------------------------------------- */
/* ioctl                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * One request/reply exchange at a time, process-wide: two threads must not
 * read each other's replies on a shared fd, and the message buffers below are
 * shared. Held across fork() so the child never inherits it locked.
 */
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int in_exchange; /* a signal handler re-entering the shim on this thread */
static unsigned char request_buf[REQ_HEADER + MAX_ARG];
static unsigned char reply_buf[REPLY_HEADER + MAX_ARG];

static void before_fork(void)
{
	pthread_mutex_lock(&exchange_lock);
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&exchange_lock);
}

static void after_fork_child(void)
{
	/* The pthread_atfork() idiom: the child's only thread is the one that locked it. */
	pthread_mutex_unlock(&exchange_lock);
}

__attribute__((constructor)) static void luoemu_init(void)
{
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/*
 * The ioctls do_vfs_ioctl() answers itself, before (and instead of) the
 * driver, for a non-regular file. On the emulator's socket the VFS gives the
 * same answers, so these go to the real ioctl. FIONREAD is not here: on a
 * non-regular file it reaches the driver.
 */
static int vfs_generic_request(uint32_t request)
{
	switch (request) {
	case FIOCLEX:
	case FIONCLEX:
	case FIONBIO:
	case FIOQSIZE:
	case FIFREEZE:
	case FITHAW:
	case FS_IOC_FIEMAP:
	case FIGETBSZ:
	case FICLONE:
	case FICLONERANGE:
	case FIDEDUPERANGE:
	case FS_IOC_GETFSUUID:
	case FS_IOC_GETFSSYSFSPATH:
		return 1;
	default:
		return 0;
	}
}

/*
 * FIOASYNC: LUO's files have no ->fasync, so turning O_ASYNC on (or off, if
 * fcntl(F_SETFL) had set it) fails with ENOTTY, while asking for the current
 * state succeeds. On the socket it would succeed, so the shim answers.
 */
static int emulate_fioasync(int fd, uintptr_t arg)
{
	unsigned char raw[sizeof(int)];
	int on, fl;

	if (copy_chunk(raw, arg, sizeof(raw), 0) < 0) {
		errno = EFAULT;
		return -1;
	}
	memcpy(&on, raw, sizeof(on));
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	if ((on != 0) != ((fl & O_ASYNC) != 0)) {
		errno = ENOTTY;
		return -1;
	}
	return 0;
}

/* Is fd usable for fget(): open, and not an O_PATH fd? (PRESERVE_FD's EBADF) */
static int fd_is_open(int fd)
{
	int fl;

	if (fd < 0)
		return 0;
	fl = fcntl(fd, F_GETFL);
	return fl >= 0 && !(fl & O_PATH);
}

/* One IOCTL exchange; called with exchange_lock held. Returns the result or -1 with errno. */
static int forward_ioctl(int fd, uint32_t request, uintptr_t arg)
{
	uint32_t flags = 0, size = 0;
	size_t arg_len = 0;
	int attach = -1, received = -1;
	int32_t result;
	ssize_t n;

	/* The argument: its u32 size, then min(size, 4096) bytes (at least the 4 of the size). */
	if (arg == 0 || read_prefix(request_buf + REQ_HEADER, arg, sizeof(size)) < sizeof(size)) {
		flags |= FLAG_ARG_NULL;
	} else {
		size_t want;

		memcpy(&size, request_buf + REQ_HEADER, sizeof(size)); /* the caller's own byte order */
		want = size < sizeof(size) ? sizeof(size) : (size < MAX_ARG ? size : MAX_ARG);
		arg_len = sizeof(size) + read_prefix(request_buf + REQ_HEADER + sizeof(size), arg + sizeof(size),
						       want - sizeof(size));
		if (arg_len < want) {
			flags |= FLAG_ARG_FAULT;
		} else if (size > MAX_ARG) {
			switch (scan_tail(arg + MAX_ARG, (uint64_t)size - MAX_ARG)) {
			case TAIL_NONZERO:
				flags |= FLAG_TAIL_NONZERO;
				break;
			case TAIL_FAULT:
				flags |= FLAG_ARG_FAULT;
				break;
			case TAIL_ZERO:
				break;
			}
		}
	}

	/* PRESERVE_FD hands the named file to the emulator, as fget() hands it to LUO. */
	if (request == LUO_PRESERVE_FD && arg_len >= LUO_FD_OFFSET + sizeof(int32_t)) {
		int32_t named;

		memcpy(&named, request_buf + REQ_HEADER + LUO_FD_OFFSET, sizeof(named));
		if (fd_is_open(named))
			attach = named;
		else
			flags |= FLAG_FD_INVALID;
	}

	put_request_header(request_buf, KIND_IOCTL, request, flags, (uint32_t)arg_len);
	if (send_message(fd, request_buf, REQ_HEADER + arg_len, attach, -1) < 0)
		return -1;
	n = receive_reply(fd, reply_buf, sizeof(reply_buf), KIND_IOCTL, 0, -1, &received);
	if (n < 0)
		return -1;
	if (reply_result(reply_buf, &result) < 0) {
		if (received >= 0)
			raw_close(received);
		errno = EIO;
		return -1;
	}
	if (result < 0) {
		/* The kernel copies nothing back on failure. */
		if (received >= 0)
			raw_close(received);
		errno = -result;
		return -1;
	}

	{
		size_t reply_len = get_u32(reply_buf + 12);
		size_t copy = (flags & FLAG_ARG_NULL) ? 0 : (size < reply_len ? size : reply_len);

		if (received >= 0) {
			int32_t number = received;

			/* The kernel writes the new fd into the struct it copies back. */
			if (copy < LUO_FD_OFFSET + sizeof(number)) {
				raw_close(received);
				errno = EIO;
				return -1;
			}
			memcpy(reply_buf + REPLY_HEADER + LUO_FD_OFFSET, &number, sizeof(number));
		}
		if (write_caller(arg, reply_buf + REPLY_HEADER, copy) < 0) {
			/* As the kernel: the new file is released (fput) and the ioctl fails. */
			if (received >= 0)
				raw_close(received);
			errno = EFAULT;
			return -1;
		}
	}
	return result;
}

EXPORT int ioctl(int fd, unsigned long request, ...)
{
	ioctl_fn real = real_ioctl();
	uint32_t cmd = (uint32_t)request; /* the system call takes an unsigned int */
	struct no_cancel nc;
	void *arg;
	va_list ap;
	int saved = errno, ret;

	/* Like glibc's own ioctl, take the third argument whether or not one was passed. */
	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (!vfs_generic_request(cmd) && is_emulator_fd(fd)) {
		if (cmd == FIOASYNC) {
			ret = emulate_fioasync(fd, (uintptr_t)arg);
		} else if (in_exchange) {
			errno = EDEADLK; /* from a signal handler that interrupted an exchange */
			return -1;
		} else {
			cancel_off(&nc);
			pthread_mutex_lock(&exchange_lock);
			in_exchange = 1;
			ret = forward_ioctl(fd, cmd, (uintptr_t)arg);
			in_exchange = 0;
			pthread_mutex_unlock(&exchange_lock);
			cancel_restore(&nc);
		}
		if (ret >= 0)
			errno = saved;
		return ret;
	}
	errno = saved;
	if (real == NULL)
		MISSING(-1);
	return real(fd, request, arg);
}

/* ---------------------------------------------------------------------- */
/* ftruncate, fallocate, posix_fallocate on preserved memfds              */
/* ---------------------------------------------------------------------- */

/*
 * Ask the emulator whether fd's file is preserved with its size frozen:
 * 1 yes, 0 no or no answer (unreachable emulator: the call goes ahead).
 */
static int frozen_query(const char *dir, int fd)
{
	unsigned char msg[REQ_HEADER], reply[REPLY_HEADER + 64];
	int sock, extra, frozen = 0;
	int32_t result;

	sock = connect_to(dir, QUERY_SOCKET, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (sock < 0)
		return 0;
	put_request_header(msg, KIND_FROZEN_QUERY, 0, 0, 0);
	if (send_message(sock, msg, sizeof(msg), fd, QUERY_TIMEOUT_MS) == 0 &&
	    receive_reply(sock, reply, sizeof(reply), KIND_FROZEN_QUERY, 1, QUERY_TIMEOUT_MS, &extra) >= 0) {
		if (extra >= 0)
			raw_close(extra);
		frozen = reply_result(reply, &result) == 0 && result == 1;
	}
	raw_close(sock);
	return frozen;
}

/*
 * Would a size change on fd reach shmem's MAPPING_FROZEN check, and is the
 * file frozen? Only then does the shim fail the call with EPERM; every
 * earlier error (bad fd, read-only fd, bad length, other file systems) is
 * left to the real call, which fails without side effects. new_size >= 0
 * is an ftruncate() to that size (a no-op size is allowed); -1 a fallocate().
 * Preserves errno.
 */
static int size_change_frozen(int fd, int64_t new_size)
{
	const char *dir = state_dir();
	struct statfs sfs;
	struct stat st;
	struct no_cancel nc;
	int saved = errno, fl, frozen = 0;

	if (dir == NULL)
		return 0;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_RDONLY)
		goto out;
	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != TMPFS_MAGIC)
		goto out;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0)
		goto out;
	if (new_size >= 0 && new_size == (int64_t)st.st_size)
		goto out; /* shmem_setattr() only refuses a size that changes */
	if (we_are_the_emulator(dir))
		goto out;
	cancel_off(&nc);
	frozen = frozen_query(dir, fd);
	cancel_restore(&nc);
out:
	errno = saved;
	return frozen;
}

/* The fallocate() arguments vfs_fallocate() and shmem_fallocate() accept before the frozen check. */
static int fallocate_reaches_shmem(int mode, int64_t offset, int64_t len)
{
	if (offset < 0 || len <= 0 || offset > INT64_MAX - len)
		return 0;
	return mode == 0 || mode == FALLOC_FL_KEEP_SIZE || mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}

EXPORT int ftruncate(int fd, off_t length)
{
	ftruncate_fn real = real_ftruncate();

	if (length >= 0 && size_change_frozen(fd, (int64_t)length)) {
		errno = EPERM;
		return -1;
	}
	if (real == NULL)
		MISSING(-1);
	return real(fd, length);
}

EXPORT int ftruncate64(int fd, off64_t length)
{
	ftruncate64_fn real = real_ftruncate64();

	if (length >= 0 && size_change_frozen(fd, (int64_t)length)) {
		errno = EPERM;
		return -1;
	}
	if (real == NULL)
		MISSING(-1);
	return real(fd, length);
}

EXPORT int fallocate(int fd, int mode, off_t offset, off_t len)
{
	fallocate_fn real = real_fallocate();

	if (fallocate_reaches_shmem(mode, offset, len) && size_change_frozen(fd, -1)) {
		errno = EPERM;
		return -1;
	}
	if (real == NULL)
		MISSING(-1);
	return real(fd, mode, offset, len);
}

EXPORT int fallocate64(int fd, int mode, off64_t offset, off64_t len)
{
	fallocate64_fn real = real_fallocate64();

	if (fallocate_reaches_shmem(mode, offset, len) && size_change_frozen(fd, -1)) {
		errno = EPERM;
		return -1;
	}
	if (real == NULL)
		MISSING(-1);
	return real(fd, mode, offset, len);
}

/* posix_fallocate() reports errors as its return value and leaves errno alone. */
EXPORT int posix_fallocate(int fd, off_t offset, off_t len)
{
	posix_fallocate_fn real = real_posix_fallocate();

	if (fallocate_reaches_shmem(0, offset, len) && size_change_frozen(fd, -1))
		return EPERM;
	return real != NULL ? real(fd, offset, len) : ENOSYS;
}

EXPORT int posix_fallocate64(int fd, off64_t offset, off64_t len)
{
	posix_fallocate64_fn real = real_posix_fallocate64();

	if (fallocate_reaches_shmem(0, offset, len) && size_change_frozen(fd, -1))
		return EPERM;
	return real != NULL ? real(fd, offset, len) : ENOSYS;
}

/* ---------------------------------------------------------------------- */
/* Writes into preserved memfds: the size is frozen for every write path  */
/* ---------------------------------------------------------------------- */

/*
 * What shmem does with a write that would grow a file whose mapping is
 * frozen (mm/shmem.c shmem_write_begin(), mm/filemap.c
 * generic_perform_write(), Linux 7.2): the write goes in pieces that end at
 * each multiple of the mapping's largest folio size (2 MiB: shmem mappings
 * always allow large folios, and PMD order 9 with THP), and each piece is
 * refused (EPERM) before anything is copied if it would end beyond the size.
 * So a write of `count` bytes at `pos` keeps:
 *   count                          if pos + count <= size,
 *   floor(size, 2 MiB) - pos       if that is positive (a short write),
 *   nothing: EPERM                 otherwise.
 * Errors the kernel finds first (bad fd, read-only fd, bad iovec, rlimit)
 * are left to the real call. When some bytes are kept the real call is made
 * with the count cut to them, so position, content and errors are the
 * kernel's. Uncertain, for the real-kernel check: the 2 MiB piece (the
 * issue's observation says "page by page"; the 7.2 source says the mapping's
 * maximum folio size) and, for sendfile/splice/copy_file_range, the 64 KiB
 * batches of the internal pipe (see splice_limit()).
 * The same check refuses growth of an F_SEAL_GROW file, so a GROW-sealed
 * memfd gets the same pieces (whatever the host kernel's own folio size):
 * seen on 7.2.13 by the differential fuzzer.
 */
#define FROZEN_PIECE ((int64_t)page_size() << 9)
#define RW_MAX_COUNT ((int64_t)(INT_MAX & ~(page_size() - 1)))

struct frozen_target {
	int64_t size; /* i_size */
	int64_t pos;  /* where the write starts */
	int append;   /* O_APPEND (or RWF_APPEND): pos is the size */
};

/*
 * Could fd be a preserved memfd the write would reach: a writable regular
 * file with no links? Fills t (pos: `pos` or the file position; the size if
 * appending). Two or three system calls (fstat, F_GETFL, lseek for the file
 * position): every write of the process pays them, so the rest (filesystem,
 * seals, the emulator) is asked only of a write that would grow the file
 * (refuses_growth()). Preserves errno.
 */
static int frozen_candidate(int fd, int64_t pos, int append_flags, struct frozen_target *t)
{
	struct stat st;
	int saved = errno, fl, ok = 0;

	if (state_dir() == NULL || fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0)
		goto out;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_RDONLY)
		goto out;
	t->size = st.st_size;
	t->append = append_flags < 0 ? (fl & O_APPEND) != 0 : append_flags;
	if (t->append) {
		t->pos = st.st_size;
	} else if (pos >= 0) {
		t->pos = pos;
	} else {
		off_t cur = lseek(fd, 0, SEEK_CUR);

		if (cur < 0)
			goto out;
		t->pos = cur;
	}
	ok = 1;
out:
	errno = saved;
	return ok;
}

/* Is the file frozen (asked only for a write that would grow it)? Preserves errno. */
static int frozen_file(int fd)
{
	const char *dir = state_dir();
	struct no_cancel nc;
	int saved = errno, frozen;

	if (dir == NULL || we_are_the_emulator(dir))
		return 0;
	cancel_off(&nc);
	frozen = frozen_query(dir, fd);
	cancel_restore(&nc);
	errno = saved;
	return frozen;
}

/*
 * Would shmem refuse to grow this candidate: a tmpfs file sealed F_SEAL_GROW
 * (no need to ask), or a preserved one (the emulator says so)? Preserves errno.
 */
static int refuses_growth(int fd)
{
	struct statfs sfs;
	int saved = errno, seals, refused;

	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != TMPFS_MAGIC) {
		errno = saved;
		return 0;
	}
	seals = fcntl(fd, F_GET_SEALS);
	refused = (seals >= 0 && (seals & F_SEAL_GROW)) || frozen_file(fd);
	errno = saved;
	return refused;
}

/* RLIMIT_FSIZE cuts a write short (or refuses it, with SIGXFSZ) before the frozen check. */
static int64_t fsize_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_FSIZE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT64_MAX)
		return INT64_MAX;
	return (int64_t)rl.rlim_cur;
}

/*
 * How many of `count` bytes a write to fd at `pos` (-1: the file position)
 * may go ahead with: count (not frozen, or within the size, or an error the
 * real call reports first), fewer (short), or 0 (EPERM).
 */
static int64_t frozen_write_limit(int fd, int64_t pos, int append_flags, int64_t count)
{
	struct frozen_target t;
	int64_t end, keep, limit;

	if (count <= 0 || !frozen_candidate(fd, pos, append_flags, &t))
		return count;
	if (count > RW_MAX_COUNT)
		count = RW_MAX_COUNT;
	limit = fsize_limit();
	if (t.pos >= limit)
		return count; /* EFBIG and SIGXFSZ from the real call, nothing written */
	end = limit - t.pos < count ? limit : t.pos + count;
	if (end <= t.size || !refuses_growth(fd))
		return count;
	keep = t.size / FROZEN_PIECE * FROZEN_PIECE - t.pos;
	return keep > 0 ? keep : 0;
}

EXPORT ssize_t write(int fd, const void *buf, size_t count)
{
	write_fn real = real_write();
	int64_t keep = frozen_write_limit(fd, -1, -1, (int64_t)(count > SSIZE_MAX ? SSIZE_MAX : count));

	if (real == NULL)
		MISSING(-1);
	if (keep == 0 && count > 0) {
		errno = EPERM;
		return -1;
	}
	return real(fd, buf, (size_t)keep < count ? (size_t)keep : count);
}

static ssize_t frozen_pwrite(pwrite_fn real, int fd, const void *buf, size_t count, int64_t offset)
{
	int64_t keep;

	if (real == NULL)
		MISSING(-1);
	if (offset < 0)
		return real(fd, buf, count, offset); /* EINVAL */
	keep = frozen_write_limit(fd, offset, -1, (int64_t)(count > SSIZE_MAX ? SSIZE_MAX : count));
	if (keep == 0 && count > 0) {
		errno = EPERM;
		return -1;
	}
	return real(fd, buf, (size_t)keep < count ? (size_t)keep : count, offset);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	return frozen_pwrite(real_pwrite(), fd, buf, count, offset);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
	return frozen_pwrite(real_pwrite64(), fd, buf, count, offset);
}

/*
 * The caller's iovec array, read without faulting and cut to `keep` bytes
 * in total. Returns the number of entries to pass, or -1 when the array
 * cannot be read or is invalid (the real call then reports it); *total is
 * the bytes it describes.
 */
static int read_iov(const struct iovec *iov, int iovcnt, struct iovec *out, int64_t *total)
{
	*total = 0;
	if (iovcnt < 0 || iovcnt > IOV_MAX)
		return -1;
	if (iovcnt > 0 && read_prefix((unsigned char *)out, (uintptr_t)iov, sizeof(*iov) * (size_t)iovcnt) !=
				  sizeof(*iov) * (size_t)iovcnt)
		return -1;
	for (int i = 0; i < iovcnt; i++) {
		if (out[i].iov_len > (size_t)SSIZE_MAX || *total > SSIZE_MAX - (int64_t)out[i].iov_len)
			return -1; /* EINVAL */
		*total += (int64_t)out[i].iov_len;
	}
	return iovcnt;
}

/* Cut an iovec array (already copied) to `keep` bytes; returns the new count. */
static int cut_iov(struct iovec *v, int n, int64_t keep)
{
	int i;

	for (i = 0; i < n && keep > 0; i++) {
		if ((int64_t)v[i].iov_len > keep)
			v[i].iov_len = (size_t)keep;
		keep -= (int64_t)v[i].iov_len;
	}
	return i;
}

/* RWF_* flags pwritev2() knows here; anything else goes to the real call. */
#ifndef RWF_NOAPPEND
#define RWF_NOAPPEND 0x00000020
#endif
#define KNOWN_RWF (RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_APPEND | RWF_NOAPPEND)

/*
 * The writev family. `offset` < 0 with `positional` 0: the file position;
 * pwritev2 with offset -1 also means the file position. Returns -2 when the
 * call is to be made unchanged.
 */
static ssize_t frozen_writev(int fd, const struct iovec *iov, int iovcnt, int64_t offset, int flags,
			     ssize_t (*call)(int, const struct iovec *, int, int64_t, int))
{
	static __thread struct iovec copy[IOV_MAX];
	int64_t total, keep;
	int append = -1, n;

	if (flags & ~KNOWN_RWF)
		return call(fd, iov, iovcnt, offset, flags);
	if (flags & RWF_APPEND)
		append = 1;
	else if (flags & RWF_NOAPPEND)
		append = 0;
	n = read_iov(iov, iovcnt, copy, &total);
	if (n < 0 || total == 0)
		return call(fd, iov, iovcnt, offset, flags);
	keep = frozen_write_limit(fd, offset, append, total);
	if (keep >= total)
		return call(fd, iov, iovcnt, offset, flags);
	if (keep == 0) {
		errno = EPERM;
		return -1;
	}
	return call(fd, copy, cut_iov(copy, n, keep), offset, flags);
}

static ssize_t call_writev(int fd, const struct iovec *iov, int n, int64_t offset, int flags)
{
	writev_fn real = real_writev();

	(void)offset;
	(void)flags;
	if (real == NULL)
		MISSING(-1);
	return real(fd, iov, n);
}

static ssize_t call_pwritev(int fd, const struct iovec *iov, int n, int64_t offset, int flags)
{
	pwritev_fn real = real_pwritev64();

	(void)flags;
	if (real == NULL)
		MISSING(-1);
	return real(fd, iov, n, offset);
}

static ssize_t call_pwritev2(int fd, const struct iovec *iov, int n, int64_t offset, int flags)
{
	pwritev2_fn real = real_pwritev64v2();

	if (real == NULL)
		MISSING(-1);
	return real(fd, iov, n, offset, flags);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	return frozen_writev(fd, iov, iovcnt, -1, 0, call_writev);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
	if (offset < 0)
		return call_pwritev(fd, iov, iovcnt, offset, 0); /* EINVAL */
	return frozen_writev(fd, iov, iovcnt, offset, 0, call_pwritev);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t offset)
{
	if (offset < 0)
		return call_pwritev(fd, iov, iovcnt, offset, 0);
	return frozen_writev(fd, iov, iovcnt, offset, 0, call_pwritev);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
{
	if (offset < -1)
		return call_pwritev2(fd, iov, iovcnt, offset, flags);
	return frozen_writev(fd, iov, iovcnt, offset, flags, call_pwritev2);
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off64_t offset, int flags)
{
	if (offset < -1)
		return call_pwritev2(fd, iov, iovcnt, offset, flags);
	return frozen_writev(fd, iov, iovcnt, offset, flags, call_pwritev2);
}

/*
 * sendfile, splice and copy_file_range into a file go through the internal
 * pipe of do_splice_direct() (or the caller's pipe): the output sees one
 * write per batch of at most 64 KiB (16 pipe buffers), each cut by the rule
 * above; the first batch that writes less ends the call. So: whole batches
 * that stay within the size, then up to the last 2 MiB boundary inside the
 * size within the straddling batch. The batch size assumes full page-sized
 * pipe buffers (a page-aligned input): uncertain until checked on the real
 * kernel. `avail` is what the input can give (-1: unknown).
 */
#define SPLICE_BATCH ((int64_t)page_size() * 16)

static int64_t splice_limit(int out, int64_t pos, int64_t count, int64_t avail)
{
	struct frozen_target t;
	int64_t want, end, whole, boundary;

	if (count <= 0 || !frozen_candidate(out, pos, 0, &t))
		return count;
	if (t.append)
		return count; /* EINVAL/EBADF from the real call */
	want = count > RW_MAX_COUNT ? RW_MAX_COUNT : count;
	if (avail >= 0 && avail < want)
		want = avail;
	if (want <= 0)
		return count; /* nothing to copy: the real call returns 0 (or its error) */
	end = t.pos + want;
	if (end <= t.size || !refuses_growth(out))
		return count;
	if (t.pos >= t.size)
		return 0;
	whole = (t.size - t.pos) / SPLICE_BATCH * SPLICE_BATCH;
	boundary = t.size / FROZEN_PIECE * FROZEN_PIECE;
	if (boundary > t.pos + whole)
		whole = boundary - t.pos;
	return whole;
}

/* Bytes a regular input file has from `pos` (-1: its position) on; -1 if unknown. */
static int64_t input_available(int in, const int64_t *pos)
{
	struct stat st;
	int64_t at;
	int saved = errno;

	if (fstat(in, &st) < 0) {
		errno = saved;
		return -1;
	}
	if (S_ISFIFO(st.st_mode)) {
		int queued = 0;

		errno = saved;
		return ioctl(in, FIONREAD, &queued) == 0 ? queued : -1;
	}
	if (!S_ISREG(st.st_mode)) {
		errno = saved;
		return -1;
	}
	at = pos != NULL ? *pos : lseek(in, 0, SEEK_CUR);
	errno = saved;
	if (at < 0)
		return -1;
	return st.st_size > at ? st.st_size - at : 0;
}

EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
	sendfile_fn real = real_sendfile();
	int64_t in_pos, keep;

	if (real == NULL)
		MISSING(-1);
	if (offset != NULL && read_prefix((unsigned char *)&in_pos, (uintptr_t)offset, sizeof(in_pos)) != sizeof(in_pos))
		return real(out, in, offset, count); /* EFAULT */
	keep = splice_limit(out, -1, (int64_t)(count > SSIZE_MAX ? SSIZE_MAX : count),
			    input_available(in, offset != NULL ? &in_pos : NULL));
	if (keep == 0 && count > 0) {
		errno = EPERM;
		return -1;
	}
	return real(out, in, offset, (size_t)keep < count ? (size_t)keep : count);
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *offset, size_t count)
{
	return sendfile(out, in, (off_t *)offset, count);
}

/*
 * shmem has neither copy_file_range nor remap_file_range: vfs_copy_file_range copies
 * through splice only within one superblock and gives EXDEV across two (a memfd and a
 * /dev/shm file), after its argument checks. Observed on 7.2.13 (the differential fuzzer).
 */
static int same_superblock(int a, int b)
{
	struct stat sa, sb;
	int saved = errno;
	int same = fstat(a, &sa) < 0 || fstat(b, &sb) < 0 || sa.st_dev == sb.st_dev;

	errno = saved;
	return same;
}

EXPORT ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t len, unsigned int flags)
{
	copy_file_range_fn real = real_copy_file_range();
	int64_t in_pos, out_pos = -1, keep;

	if (real == NULL)
		MISSING(-1);
	if (flags != 0)
		return real(in, in_off, out, out_off, len, flags); /* EINVAL */
	if ((in_off != NULL && read_prefix((unsigned char *)&in_pos, (uintptr_t)in_off, sizeof(in_pos)) != sizeof(in_pos)) ||
	    (out_off != NULL && read_prefix((unsigned char *)&out_pos, (uintptr_t)out_off, sizeof(out_pos)) != sizeof(out_pos)))
		return real(in, in_off, out, out_off, len, flags); /* EFAULT */
	if (out_off != NULL && out_pos < 0)
		return real(in, in_off, out, out_off, len, flags); /* EINVAL */
	if (!same_superblock(in, out))
		return real(in, in_off, out, out_off, len, flags); /* EXDEV (or 0): nothing is written */
	keep = splice_limit(out, out_pos, (int64_t)(len > SSIZE_MAX ? SSIZE_MAX : len),
			    input_available(in, in_off != NULL ? &in_pos : NULL));
	if (keep == 0 && len > 0) {
		errno = EPERM;
		return -1;
	}
	return real(in, in_off, out, out_off, (size_t)keep < len ? (size_t)keep : len, flags);
}

EXPORT ssize_t splice(int in, off64_t *in_off, int out, off64_t *out_off, size_t len, unsigned int flags)
{
	splice_fn real = real_splice();
	int64_t out_pos = -1, keep;

	if (real == NULL)
		MISSING(-1);
	if (out_off != NULL &&
	    read_prefix((unsigned char *)&out_pos, (uintptr_t)out_off, sizeof(out_pos)) != sizeof(out_pos))
		return real(in, in_off, out, out_off, len, flags); /* EFAULT */
	if (out_off != NULL && out_pos < 0)
		return real(in, in_off, out, out_off, len, flags);
	keep = splice_limit(out, out_pos, (int64_t)(len > SSIZE_MAX ? SSIZE_MAX : len), input_available(in, NULL));
	if (keep == 0 && len > 0) {
		errno = EPERM;
		return -1;
	}
	return real(in, in_off, out, out_off, (size_t)keep < len ? (size_t)keep : len, flags);
}

/* ---------------------------------------------------------------------- */
/* close, dup2, dup3: a release is seen when close() returns              */
/* ---------------------------------------------------------------------- */

/*
 * The kernel releases a LUO file (device: exclusive open dropped; outgoing
 * session: every file unpreserved; retrieved session: implicit FINISH) in the
 * close() of its last fd, before close() returns. The emulator sees that
 * close as EOF on its end of the socket, in its own time; so after closing
 * an emulator fd the shim asks it, on query.sock, to release every
 * connection whose last fd is gone (SYNC) and waits for the answer. Whether
 * this was the last fd (dup, fork, SCM_RIGHTS) is the kernel's to know: the
 * emulator releases only sockets whose peer is really closed. Preserves errno.
 */
static void sync_releases(const char *dir)
{
	unsigned char msg[REQ_HEADER], reply[REPLY_HEADER + 64];
	struct no_cancel nc;
	int sock, extra, saved = errno;

	cancel_off(&nc);
	sock = connect_to(dir, QUERY_SOCKET, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (sock >= 0) {
		put_request_header(msg, KIND_SYNC, 0, 0, 0);
		if (send_message(sock, msg, sizeof(msg), -1, QUERY_TIMEOUT_MS) == 0 &&
		    receive_reply(sock, reply, sizeof(reply), KIND_SYNC, 1, QUERY_TIMEOUT_MS, &extra) >= 0 &&
		    extra >= 0)
			raw_close(extra);
		raw_close(sock);
	}
	cancel_restore(&nc);
	errno = saved;
}

/* Is fd an emulator fd whose close must be synchronised? The state directory if so, else NULL. */
static const char *closing_emulator_fd(int fd)
{
	const char *dir = state_dir();
	int saved = errno, emulated;

	if (dir == NULL || fd < 0)
		return NULL;
	emulated = is_emulator_fd(fd);
	errno = saved;
	return emulated ? dir : NULL;
}

EXPORT int close(int fd)
{
	close_fn real = real_close();
	const char *dir = closing_emulator_fd(fd);
	int ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(fd);
	if (dir != NULL)
		sync_releases(dir);
	return ret;
}

/* dup2()/dup3() onto an open fd close it first, as close() would. */
EXPORT int dup2(int oldfd, int newfd)
{
	dup2_fn real = real_dup2();
	const char *dir = oldfd != newfd ? closing_emulator_fd(newfd) : NULL;
	int ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(oldfd, newfd);
	if (dir != NULL && ret >= 0)
		sync_releases(dir);
	return ret;
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	dup3_fn real = real_dup3();
	const char *dir = oldfd != newfd ? closing_emulator_fd(newfd) : NULL;
	int ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(oldfd, newfd, flags);
	if (dir != NULL && ret >= 0)
		sync_releases(dir);
	return ret;
}

/* Does this process hold an emulator fd numbered in [first, last]? Preserves errno. */
static int holds_emulator_fd(unsigned int first, unsigned int last)
{
	struct dirent *entry;
	DIR *fds;
	int saved = errno, found = 0;

	fds = opendir("/proc/self/fd");
	if (fds == NULL)
		return 1; /* cannot tell: synchronise anyway */
	while (!found && (entry = readdir(fds)) != NULL) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);

		if (*end != '\0' || end == entry->d_name || fd == dirfd(fds) || fd > INT_MAX)
			continue;
		if ((unsigned long)fd >= first && (unsigned long)fd <= last && is_emulator_fd((int)fd))
			found = 1;
	}
	closedir(fds);
	errno = saved;
	return found;
}

/*
 * close_range() and closefrom() close as close() does: a release is seen when they
 * return. (CLOSE_RANGE_CLOEXEC only marks the fds; exec closes them, and the shim of the
 * new program sees those releases at its first request.)
 */
EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	close_range_fn real = real_close_range();
	const char *dir = state_dir();
	int sync, ret;

	if (real == NULL)
		MISSING(-1);
	sync = dir != NULL && first <= last && !(flags & CLOSE_RANGE_CLOEXEC) && holds_emulator_fd(first, last);
	ret = real(first, last, flags);
	if (sync && ret == 0)
		sync_releases(dir);
	return ret;
}

EXPORT void closefrom(int lowfd)
{
	closefrom_fn real = real_closefrom();
	const char *dir = state_dir();
	int sync = dir != NULL && lowfd >= 0 && holds_emulator_fd((unsigned int)lowfd, UINT_MAX);

	if (real != NULL)
		real(lowfd);
	if (sync)
		sync_releases(dir);
}

/*
 * A child that ended (exit or signal) had its files closed by the kernel before its
 * parent could reap it. A child killed by a signal ran no destructor, so the emulator may
 * not have seen its sessions go yet: after reaping a child that ended, the parent
 * synchronises, and its wait() returns after the releases, as on the kernel. (Stopped and
 * continued children, and WNOHANG with nothing to reap, do not synchronise.)
 */
static void reaped(pid_t pid, int status)
{
	const char *dir;

	if (pid <= 0 || !(WIFEXITED(status) || WIFSIGNALED(status)))
		return;
	dir = state_dir();
	if (dir != NULL && !we_are_the_emulator(dir))
		sync_releases(dir);
}

EXPORT pid_t waitpid(pid_t pid, int *wstatus, int options)
{
	waitpid_fn real = real_waitpid();
	int status = 0;
	pid_t ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(pid, wstatus != NULL ? wstatus : &status, options);
	reaped(ret, wstatus != NULL ? *wstatus : status);
	return ret;
}

EXPORT pid_t wait(int *wstatus)
{
	return waitpid(-1, wstatus, 0);
}

EXPORT pid_t wait4(pid_t pid, int *wstatus, int options, struct rusage *usage)
{
	wait4_fn real = real_wait4();
	int status = 0;
	pid_t ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(pid, wstatus != NULL ? wstatus : &status, options, usage);
	reaped(ret, wstatus != NULL ? *wstatus : status);
	return ret;
}

EXPORT pid_t wait3(int *wstatus, int options, struct rusage *usage)
{
	return wait4(-1, wstatus, options, usage);
}

EXPORT int waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)
{
	waitid_fn real = real_waitid();
	int ret;

	if (real == NULL)
		MISSING(-1);
	ret = real(idtype, id, info, options);
	if (ret == 0 && info != NULL && (options & WEXITED) && info->si_pid > 0 &&
	    (info->si_code == CLD_EXITED || info->si_code == CLD_KILLED || info->si_code == CLD_DUMPED)) {
		const char *dir = state_dir();

		if (dir != NULL && !we_are_the_emulator(dir))
			sync_releases(dir);
	}
	return ret;
}

/*
 * exit(): the kernel closes every fd after the program's last destructor,
 * and a parent's wait() returns only once they are released. Close this
 * process's emulator fds here and synchronise once, so whoever waits for us
 * sees the releases. (A process killed by a signal skips this; then the
 * emulator releases its files at the next LUO request or size query.)
 */
__attribute__((destructor)) static void luoemu_fini(void)
{
	const char *dir = state_dir();
	struct dirent *entry;
	DIR *fds;
	int saved = errno, closed = 0;

	if (dir == NULL || we_are_the_emulator(dir))
		return;
	fds = opendir("/proc/self/fd");
	if (fds == NULL)
		return;
	while ((entry = readdir(fds)) != NULL) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);

		if (*end != '\0' || end == entry->d_name || fd == dirfd(fds) || fd > INT_MAX)
			continue;
		if (is_emulator_fd((int)fd)) {
			raw_close((int)fd);
			closed = 1;
		}
	}
	closedir(fds);
	if (closed)
		sync_releases(dir);
	errno = saved;
}
