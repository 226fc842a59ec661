// SPDX-License-Identifier: Apache-2.0
/*
 * luofuzz: the differential fuzzer of luokit's emulated kernel (issue 12,
 * docs/emulator.md). A seeded generator of LUO + memfd operation sequences
 * that prints a canonical trace: each operation, its arguments, its outcome
 * (the value, or the errno's name) and what it left (sizes, seals, content
 * digests); never an fd number or an address.
 *
 * The same seeds run on a real kernel (test/vm, statically linked, on
 * /dev/liveupdate, across a real kexec) and under libluoemu.so on the
 * emulated kernel (test/differential.test.ts, across an emulated kexec); the
 * two traces must be identical line by line.
 *
 *   luofuzz [--ops N] stage1 SEED...   per seed, stage 1; then a holder process
 *                                      keeps the sessions each seed left open
 *                                      (its pid on stderr and in
 *                                      $LUOFUZZ_HOLDER_FILE) until it is killed
 *                                      or the kexec
 *   luofuzz [--ops N] stage2 SEED...   per seed, stage 2: in the next kernel
 *   luofuzz [--ops N] single SEED...   stage 1 only, everything closed at the end
 *
 * Every seed uses its own session names and tokens (derived from the seed),
 * so seeds do not meet each other's sessions. Exit status 0 whatever the
 * outcomes; 2 when the program itself could not go on (a line "fatal ...").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/falloc.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef RWF_APPEND
#define RWF_APPEND 0x00000010
#endif

#include "../../native/include/luokit/liveupdate.h"

#define PAGE 4096L
#define MIB (1024L * 1024L)
/* No file grows beyond this: the 2 MiB boundaries at 2 and 4 MiB are inside. */
#define MAX_FILE (5 * MIB)
#define NSESS 4
#define NFILE 6
#define NNAME 8
#define NTOKEN 6

/* ---- the random stream: splitmix64, the same on every machine ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A number in [0, n). */
static long below(long n)
{
	return n <= 0 ? 0 : (long)(rnd() % (uint64_t)n);
}

/* ---- the trace ---- */

static unsigned long cur_seed;
static int cur_stage;
static int op_no;
static char line[8192];
static size_t line_len;

static void add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add(const char *fmt, ...)
{
	va_list ap;

	if (line_len >= sizeof(line) - 1)
		return;
	va_start(ap, fmt);
	line_len += (size_t)vsnprintf(line + line_len, sizeof(line) - line_len, fmt, ap);
	va_end(ap);
	if (line_len > sizeof(line) - 1)
		line_len = sizeof(line) - 1;
}

static void begin(const char *op)
{
	line_len = 0;
	add("%lu.%d #%d %s", cur_seed, cur_stage, op_no, op);
}

static void end(void)
{
	printf("%s\n", line);
	fflush(stdout);
}

static const char *errname(int err)
{
	const char *n = strerrorname_np(err);

	return n ? n : "E?";
}

/* " = ok N" or " = ENAME". */
static void result(long ret, int err)
{
	if (ret >= 0)
		add(" = ok %ld", ret);
	else
		add(" = %s", errname(err));
}

static void fatal(const char *what)
{
	printf("fatal %s %s\n", what, errname(errno));
	fflush(stdout);
	exit(2);
}

/* FNV-1a 64 of the bytes. */
static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void hex(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		add("%02x", p[i]);
}

/* ---- the objects of one seed ---- */


static int device = -1;
static int sessions[NSESS];
static int files[NFILE];
/* Linked tmpfs files: their path, unlinked at the end of the seed. */
static char linked[NFILE][128];
static unsigned char names[NNAME][64];
static size_t name_len[NNAME];
/* Sessions a seed's stage 1 keeps for the kexec (in the holder). */
static int kept[4096];
static int nkept;

static unsigned char *buf;

static uint64_t token_of(long k)
{
	/* k 0 is token 0 (valid for the kernel); others are the seed's own. */
	return k == 0 ? 0 : (uint64_t)cur_seed * 64 + (uint64_t)k;
}

/*
 * The seed's names: 0-3 a prefix unique to the seed then odd bytes (any
 * byte but NUL), 4 the longest (63 bytes), 5 empty, 6 64 bytes with no NUL,
 * 7 a name nobody creates. Drawn from their own stream, so both stages and
 * every kernel get the same bytes.
 */
static void make_names(void)
{
	static const unsigned char odd[] = { 0x01, 0x7f, 0x80, 0xff, 0xc3, 0xa9, ' ', '/', '\n', '%', '\\', 0xfe };
	uint64_t saved = rng_state;

	rng_state = 0x6e616d6573ULL ^ ((uint64_t)cur_seed << 20);
	for (int k = 0; k < NNAME; k++) {
		unsigned char *n = names[k];
		int len = snprintf((char *)n, 64, "fz%lu.%d.", cur_seed, k);

		memset(n + len, 0, (size_t)(64 - len));
		if (k <= 4) {
			int extra = k == 4 ? 63 - len : (int)below(12);

			for (int i = 0; i < extra; i++)
				n[len++] = odd[below((long)sizeof(odd))];
		} else if (k == 5) {
			len = 0;
			memset(n, 0, 64);
		} else if (k == 6) {
			while (len < 64)
				n[len++] = 'x';
		}
		name_len[k] = (size_t)len;
	}
	rng_state = saved;
}

static int free_slot(const int *slots, int n)
{
	for (int i = 0; i < n; i++)
		if (slots[i] < 0)
			return i;
	return -1;
}

static int pick(const int *slots, int n)
{
	int used[16], m = 0;

	for (int i = 0; i < n; i++)
		if (slots[i] >= 0)
			used[m++] = i;
	/* Sometimes an empty slot: the call meets a closed fd (EBADF). */
	if (m == 0 || below(16) == 0)
		return (int)below(n);
	return used[below(m)];
}

static long size_of(int fd)
{
	struct stat st;

	return fstat(fd, &st) < 0 ? -1 : (long)st.st_size;
}

/* size, position, mode bits, seals, and the content's digest. */
static void describe(int fd)
{
	struct stat st;
	long size;
	off_t pos;
	int seals;
	uint64_t h = 0xcbf29ce484222325ULL;

	if (fstat(fd, &st) < 0) {
		add(" [fstat %s]", errname(errno));
		return;
	}
	size = (long)st.st_size;
	pos = lseek(fd, 0, SEEK_CUR);
	seals = fcntl(fd, F_GET_SEALS);
	add(" [size %ld pos %ld mode %04o seals ", size, (long)pos, (unsigned)(st.st_mode & 07777));
	if (seals < 0)
		add("%s", errname(errno));
	else
		add("0x%x", seals);
	for (long done = 0; done < size;) {
		long n = size - done < MAX_FILE ? size - done : MAX_FILE;
		ssize_t r = pread(fd, buf, (size_t)n, done);

		if (r <= 0) {
			add(" read %s", r < 0 ? errname(errno) : "short");
			break;
		}
		h = fnv(buf, (size_t)r, h);
		done += r;
	}
	add(" fnv %016llx]", (unsigned long long)h);
}

static void after_write(int fd)
{
	long s = size_of(fd);

	if (s < 0)
		add(" [size %s]", errname(errno));
	else
		add(" [size %ld]", s);
}

/* Fill buf[0, n) with bytes drawn from the stream. */
static void fill(long n)
{
	unsigned char b = (unsigned char)rnd();
	unsigned char step = (unsigned char)(rnd() | 1);

	for (long i = 0; i < n; i++, b = (unsigned char)(b + step))
		buf[i] = b;
}

/* An offset and a length for a write into a file of size `size`, some straddling EOF or 2 MiB. */
static void write_span(long size, long *pos, long *len)
{
	switch (below(6)) {
	case 0: /* small, anywhere up to a little past EOF */
		*pos = below(size + 2 * PAGE + 1);
		*len = 1 + below(3 * PAGE);
		break;
	case 1: /* straddling EOF */
		*pos = size - below(2 * PAGE + 1);
		if (*pos < 0)
			*pos = 0;
		*len = size - *pos + 1 + below(2 * PAGE);
		break;
	case 2: /* inside the size */
		*pos = below(size + 1);
		*len = size - *pos;
		if (*len == 0)
			*len = 1;
		else
			*len = 1 + below(*len);
		break;
	case 3: /* across a 2 MiB boundary */
		*pos = (1 + below(2)) * 2 * MIB - below(3 * PAGE);
		*len = 1 + below(6 * PAGE);
		break;
	case 4: /* big, from the start */
		*pos = 0;
		*len = 1 + below(5 * MIB / 2);
		break;
	default: /* page-aligned */
		*pos = below(size / PAGE + 2) * PAGE;
		*len = (1 + below(4)) * PAGE;
		break;
	}
	if (*pos + *len > MAX_FILE)
		*len = MAX_FILE - *pos;
	if (*len <= 0) {
		*pos = 0;
		*len = 1;
	}
}

/* ---- operations ---- */

static void op_open_device(void)
{
	int fd = open("/dev/liveupdate", O_RDWR);
	int err = errno;

	begin("open-device");
	add(device >= 0 ? " (held)" : "");
	result(fd < 0 ? -1 : 0, err);
	end();
	if (fd >= 0) {
		if (device >= 0)
			close(fd);
		else
			device = fd;
	}
}

static void op_close_device(void)
{
	int r = close(device);
	int err = errno;

	begin("close-device");
	result(r, err);
	end();
	device = -1;
}

/* CREATE_SESSION or RETRIEVE_SESSION by name k of the pool (-1: drawn). */
static void op_session_named(unsigned request, long k)
{
	int slot = free_slot(sessions, NSESS);
	struct luo_session_arg arg = { .size = sizeof(arg), .fd = -1 };
	int r, err;

	if (slot < 0)
		return;
	if (k < 0)
		k = below(4) == 0 ? below(NNAME) : below(5);
	memcpy(arg.name, names[k], 64);
	r = ioctl(device, request, &arg);
	err = errno;
	begin(request == LUO_CREATE_SESSION ? "create" : "retrieve");
	add(" S%d name%ld", slot, k);
	result(r, err);
	end();
	if (r >= 0)
		sessions[slot] = arg.fd;
}

static void op_get_name(void)
{
	int s = pick(sessions, NSESS);
	struct luo_get_name_arg arg = { .size = sizeof(arg) };
	int r, err;

	memset(arg.name, 0xaa, sizeof(arg.name));
	r = ioctl(sessions[s], LUO_GET_NAME, &arg);
	err = errno;
	begin("get-name");
	add(" S%d", s);
	result(r, err);
	if (r >= 0) {
		size_t n = strnlen((const char *)arg.name, 64);

		add(" ");
		hex((const unsigned char *)arg.name, n);
		for (int k = 0; k < NNAME; k++)
			if (n == name_len[k] && memcmp(arg.name, names[k], n) == 0)
				add(" (name%d)", k);
	}
	end();
}

static void op_preserve(void)
{
	int s = pick(sessions, NSESS);
	int f = pick(files, NFILE);
	long k = below(NTOKEN);
	struct luo_fd_arg arg = { .size = sizeof(arg), .fd = files[f], .token = token_of(k) };
	int r, err;

	r = ioctl(sessions[s], LUO_PRESERVE_FD, &arg);
	err = errno;
	begin("preserve");
	add(" S%d F%d token%ld", s, f, k);
	result(r, err);
	end();
}

static void retrieve_fd_token(int s, long k, int slot)
{
	struct luo_fd_arg arg = { .size = sizeof(arg), .fd = -1, .token = token_of(k) };
	int r, err;

	r = ioctl(sessions[s], LUO_RETRIEVE_FD, &arg);
	err = errno;
	begin("retrieve-fd");
	add(" S%d token%ld F%d", s, k, slot);
	result(r, err);
	if (r >= 0) {
		files[slot] = arg.fd;
		linked[slot][0] = 0;
		describe(arg.fd);
	}
	end();
}

static void op_retrieve_fd(void)
{
	int s = pick(sessions, NSESS);
	int slot = free_slot(files, NFILE);
	long k = below(NTOKEN);

	if (slot < 0)
		return;
	retrieve_fd_token(s, k, slot);
}

static void op_finish(void)
{
	int s = pick(sessions, NSESS);
	struct luo_finish_arg arg = { .size = sizeof(arg) };
	int r = ioctl(sessions[s], LUO_FINISH, &arg);
	int err = errno;

	begin("finish");
	add(" S%d", s);
	result(r, err);
	end();
}

static void op_close_session(void)
{
	int s = pick(sessions, NSESS);
	int r = close(sessions[s]);
	int err = errno;

	begin("close-session");
	add(" S%d", s);
	result(r, err);
	end();
	sessions[s] = -1;
}

/*
 * An ioctl with odd arguments on the device or a session: a command in or
 * out of range, with direction bits, a NULL argument, a short, long or
 * faulting size. A new session fd it returns is kept (or closed).
 */
static void op_raw_ioctl(void)
{
	static const unsigned cmds[] = { LUO_CREATE_SESSION, LUO_RETRIEVE_SESSION, 0xba02, 0xba3f, LUO_PRESERVE_FD,
					 LUO_RETRIEVE_FD, LUO_FINISH, LUO_GET_NAME, 0xba44, 0xbb00, 0xc048ba00, 0x4048ba43,
					 0x8010ba41, 0x5401 };
	static const uint32_t sizes[] = { 0, 4, 8, 15, 16, 24, 72, 80, 4096, 5000, 0xffffffffu };
	static unsigned char arg[8192] __attribute__((aligned(8)));
	int on_device = below(2) == 0;
	int s = pick(sessions, NSESS);
	int target = on_device ? device : sessions[s];
	unsigned cmd = cmds[below((long)(sizeof(cmds) / sizeof(cmds[0])))];
	uint32_t size = sizes[below((long)(sizeof(sizes) / sizeof(sizes[0])))];
	int null_arg = below(8) == 0;
	int tail = below(3) == 0;
	int f = pick(files, NFILE);
	long k = below(NNAME);
	int r, err;
	int32_t got;

	memset(arg, 0, sizeof(arg));
	memcpy(arg, &size, 4);
	/* As for a session or fd struct: the fd, then a name or a token. */
	if (cmd == LUO_PRESERVE_FD || cmd == LUO_RETRIEVE_FD) {
		uint64_t t = token_of(below(NTOKEN));
		int32_t fd = files[f];

		memcpy(arg + 4, &fd, 4);
		memcpy(arg + 8, &t, 8);
	} else {
		int32_t minus = -1;

		memcpy(arg + 4, &minus, 4);
		memcpy(arg + 8, names[k], 64);
	}
	if (tail)
		arg[72 + below(64)] = 1;
	r = ioctl(target, cmd, null_arg ? NULL : arg);
	err = errno;
	begin("ioctl");
	if (on_device)
		add(" D");
	else
		add(" S%d", s);
	add(" 0x%x size %u%s%s", cmd, size, null_arg ? " NULL" : "", tail ? " tail" : "");
	result(r, err);
	end();
	memcpy(&got, arg + 4, 4);
	if (r >= 0 && !null_arg && (cmd & 0xffff) <= LUO_RETRIEVE_SESSION + 0u && got >= 0 &&
	    (cmd & 0xffff) >= LUO_CREATE_SESSION) {
		int slot = free_slot(sessions, NSESS);

		if (slot >= 0)
			sessions[slot] = got;
		else
			close(got);
	} else if (r >= 0 && !null_arg && (cmd & 0xffff) == LUO_RETRIEVE_FD && got >= 0) {
		int slot = free_slot(files, NFILE);

		if (slot >= 0) {
			files[slot] = got;
			linked[slot][0] = 0;
		} else {
			close(got);
		}
	}
}

static void op_session(unsigned request)
{
	op_session_named(request, -1);
}

/* A new file: a memfd (flags vary), an O_TMPFILE, an unlinked or a linked tmpfs file. */
static void op_new_file(void)
{
	static const unsigned mflags[] = { 0, MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_NOEXEC_SEAL,
					   MFD_EXEC | MFD_ALLOW_SEALING };
	static const char *const mnames[] = { "0", "cloexec", "sealing", "noexec-seal", "exec-sealing" };
	int slot = free_slot(files, NFILE);
	long kind = below(8);
	int fd, err;

	if (slot < 0)
		return;
	linked[slot][0] = 0;
	begin("new");
	if (kind < 5) {
		fd = memfd_create("luofuzz", mflags[kind]);
		err = errno;
		add(" F%d memfd %s", slot, mnames[kind]);
	} else if (kind == 5) {
		fd = open("/dev/shm", O_TMPFILE | O_RDWR, 0600);
		err = errno;
		add(" F%d tmpfile", slot);
	} else {
		snprintf(linked[slot], sizeof(linked[slot]), "/dev/shm/luofuzz-%d-%lu-%d-%d", (int)getpid(),
			 cur_seed, cur_stage, op_no);
		fd = open(linked[slot], O_RDWR | O_CREAT | O_EXCL, 0600);
		err = errno;
		if (kind == 6 && fd >= 0) {
			unlink(linked[slot]);
			linked[slot][0] = 0;
		}
		add(" F%d tmpfs %s", slot, kind == 6 ? "unlinked" : "linked");
	}
	result(fd < 0 ? -1 : 0, err);
	end();
	if (fd >= 0)
		files[slot] = fd;
	else
		linked[slot][0] = 0;
}

static void close_file(int f)
{
	if (files[f] >= 0)
		close(files[f]);
	files[f] = -1;
	if (linked[f][0]) {
		/* Another slot may share it (dup): unlink only the last one. */
		unlink(linked[f]);
		linked[f][0] = 0;
	}
}

static void op_close_file(void)
{
	int f = pick(files, NFILE);
	int r = close(files[f]);
	int err = errno;

	begin("close-file");
	add(" F%d", f);
	result(r, err);
	end();
	files[f] = -1;
	if (linked[f][0]) {
		unlink(linked[f]);
		linked[f][0] = 0;
	}
}

static void op_dup(void)
{
	int f = pick(files, NFILE);
	int slot = free_slot(files, NFILE);
	int fd, err;

	if (slot < 0)
		return;
	fd = fcntl(files[f], F_DUPFD, 0);
	err = errno;
	begin("dup");
	add(" F%d F%d", f, slot);
	result(fd < 0 ? -1 : 0, err);
	end();
	if (fd >= 0) {
		files[slot] = fd;
		linked[slot][0] = 0;
	}
}

static void op_write(void)
{
	static const char *const kinds[] = { "write", "pwrite", "writev", "pwritev", "pwritev2", "append-write",
					     "pwritev2-append" };
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	long pos, len;
	int kind = (int)below(7);
	struct iovec iov[3];
	int niov;
	ssize_t r;
	int err;

	if (size < 0)
		size = 0;
	write_span(size, &pos, &len);
	fill(len);
	/* Up to three pieces for the vectored calls. */
	niov = 1 + (int)below(3);
	{
		long a = niov > 1 ? below(len + 1) : len;
		long b = niov > 2 ? below(len - a + 1) : len - a;

		iov[0].iov_base = buf;
		iov[0].iov_len = (size_t)a;
		iov[1].iov_base = buf + a;
		iov[1].iov_len = (size_t)b;
		iov[2].iov_base = buf + a + b;
		iov[2].iov_len = (size_t)(len - a - b);
		if (niov == 1)
			iov[0].iov_len = (size_t)len;
		else if (niov == 2)
			iov[1].iov_len = (size_t)(len - a);
	}
	begin(kinds[kind]);
	add(" F%d", f);
	switch (kind) {
	case 0:
		add(" at %ld len %ld", (long)lseek(fd, pos, SEEK_SET), len);
		r = write(fd, buf, (size_t)len);
		break;
	case 1:
		add(" at %ld len %ld", pos, len);
		r = pwrite(fd, buf, (size_t)len, pos);
		break;
	case 2:
		add(" at %ld len %ld iov %d", (long)lseek(fd, pos, SEEK_SET), len, niov);
		r = writev(fd, iov, niov);
		break;
	case 3:
		add(" at %ld len %ld iov %d", pos, len, niov);
		r = pwritev(fd, iov, niov, pos);
		break;
	case 4:
		add(" at %ld len %ld iov %d", pos, len, niov);
		r = pwritev2(fd, iov, niov, pos, 0);
		break;
	case 5: {
		/* A second open file description with O_APPEND (through /proc/self/fd). */
		char path[64];
		int afd;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		afd = fd < 0 ? -1 : open(path, O_WRONLY | O_APPEND);
		add(" len %ld", len);
		if (afd < 0) {
			r = -1;
			errno = fd < 0 ? EBADF : errno;
		} else {
			r = write(afd, buf, (size_t)len);
			err = errno;
			close(afd);
			errno = err;
		}
		break;
	}
	default:
		add(" len %ld iov %d", len, niov);
		r = pwritev2(fd, iov, niov, -1, RWF_APPEND);
		break;
	}
	err = errno;
	result(r, err);
	if (fd >= 0) {
		after_write(fd);
		if (kind == 0 || kind == 2)
			add(" pos %ld", (long)lseek(fd, 0, SEEK_CUR));
	}
	end();
}

/* sendfile, copy_file_range or splice into a file from a source memfd or a pipe. */
static void op_copy_in(void)
{
	static const char *const kinds[] = { "sendfile", "copy_file_range", "splice" };
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	long pos, len;
	int kind = (int)below(3);
	int src = memfd_create("luofuzz-src", 0);
	ssize_t r;
	int err;

	if (src < 0)
		fatal("memfd_create source");
	if (size < 0)
		size = 0;
	write_span(size, &pos, &len);
	if (kind == 2 && len > 65536)
		len = 1 + below(65536);
	fill(len);
	if (pwrite(src, buf, (size_t)len, 0) != len)
		fatal("pwrite source");
	begin(kinds[kind]);
	add(" F%d at %ld len %ld", f, pos, len);
	if (kind == 0) {
		off_t in_off = 0;

		if (fd >= 0)
			lseek(fd, pos, SEEK_SET);
		r = sendfile(fd, src, &in_off, (size_t)len);
	} else if (kind == 1) {
		off64_t in_off = 0, out_off = pos;

		r = copy_file_range(src, &in_off, fd, &out_off, (size_t)len, 0);
	} else {
		int p[2];
		off64_t out_off = pos;

		if (pipe(p) < 0)
			fatal("pipe");
		fcntl(p[1], F_SETPIPE_SZ, 65536);
		if (write(p[1], buf, (size_t)len) != len)
			fatal("write pipe");
		r = splice(p[0], NULL, fd, &out_off, (size_t)len, 0);
		err = errno;
		close(p[0]);
		close(p[1]);
		errno = err;
	}
	err = errno;
	close(src);
	result(r, err);
	if (fd >= 0)
		after_write(fd);
	end();
}

static void op_mmap_write(void)
{
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	long at, len;
	unsigned char *map;
	int err;

	if (size <= 0)
		return;
	at = below(size);
	len = 1 + below(size - at < 3 * PAGE ? size - at : 3 * PAGE);
	map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = errno;
	begin("mmap-write");
	add(" F%d at %ld len %ld", f, at, len);
	if (map == MAP_FAILED) {
		result(-1, err);
	} else {
		fill(len);
		memcpy(map + at, buf, (size_t)len);
		munmap(map, (size_t)size);
		result(0, 0);
	}
	after_write(fd);
	end();
}

static void op_truncate(void)
{
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	long to;
	int r, err;

	switch (below(5)) {
	case 0:
		to = 0;
		break;
	case 1:
		to = size;
		break;
	case 2:
		to = size + 1 + below(3 * PAGE);
		break;
	case 3:
		to = size > 0 ? below(size) : 0;
		break;
	default:
		to = below(MAX_FILE);
		break;
	}
	r = ftruncate(fd, to);
	err = errno;
	begin("ftruncate");
	add(" F%d to %ld", f, to);
	result(r, err);
	if (fd >= 0)
		after_write(fd);
	end();
}

static void op_fallocate(void)
{
	static const int modes[] = { 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE };
	static const char *const mnames[] = { "0", "keep-size", "punch-hole" };
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	int m = (int)below(3);
	long off, len;
	int r, err;

	if (size < 0)
		size = 0;
	off = below(size + PAGE);
	len = 1 + below(3 * PAGE);
	if (below(4) == 0) {
		off = 0;
		len = size > 0 ? size : PAGE;
	}
	r = fallocate(fd, modes[m], off, len);
	err = errno;
	begin("fallocate");
	add(" F%d %s at %ld len %ld", f, mnames[m], off, len);
	result(r, err);
	if (fd >= 0)
		after_write(fd);
	end();
}

static void op_seal(void)
{
	static const int seals[] = { F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE,
				     F_SEAL_EXEC };
	int f = pick(files, NFILE);
	int fd = files[f];
	int add_seals = seals[below(6)];
	int r, err;

	if (below(4) == 0)
		add_seals |= seals[below(6)];
	r = fcntl(fd, F_ADD_SEALS, add_seals);
	err = errno;
	begin("add-seals");
	add(" F%d 0x%x", f, add_seals);
	result(r, err);
	if (fd >= 0) {
		int now = fcntl(fd, F_GET_SEALS);

		if (now < 0)
			add(" [seals %s]", errname(errno));
		else
			add(" [seals 0x%x]", now);
	}
	end();
}

static void op_lseek(void)
{
	static const int whence[] = { SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE };
	static const char *const wnames[] = { "set", "cur", "end", "data", "hole" };
	int f = pick(files, NFILE);
	int fd = files[f];
	long size = fd >= 0 ? size_of(fd) : 0;
	int w = (int)below(5);
	long off = w == SEEK_SET || w >= 3 ? below(size + 2 * PAGE + 1) : below(2 * PAGE + 1) - PAGE;
	off_t r = lseek(fd, off, whence[w]);
	int err = errno;

	begin("lseek");
	add(" F%d %s %ld", f, wnames[w], off);
	result((long)r, err);
	end();
}

static void op_describe(void)
{
	int f = pick(files, NFILE);

	begin("describe");
	add(" F%d", f);
	if (files[f] < 0)
		add(" closed");
	else
		describe(files[f]);
	end();
}

/* ---- one seed ---- */

static void reset(void)
{
	device = -1;
	for (int i = 0; i < NSESS; i++)
		sessions[i] = -1;
	for (int i = 0; i < NFILE; i++) {
		files[i] = -1;
		linked[i][0] = 0;
	}
}

static void run_seed(unsigned long seed, int stage, int ops, int keep)
{
	cur_seed = seed;
	cur_stage = stage;
	make_names();
	reset();
	rng_state = (uint64_t)seed * 0x100000001b3ULL + (uint64_t)stage;
	printf("seed %lu stage %d\n", seed, stage);
	fflush(stdout);
	/* Most sequences start with the device. */
	op_no = 0;
	if (below(8) != 0)
		op_open_device();
	/* Stage 2 mostly starts by retrieving the seed's sessions (those stage 1 kept come back). */
	if (stage == 2 && below(4) != 0) {
		for (long k = 0; k < 5; k++)
			op_session_named(LUO_RETRIEVE_SESSION, k);
		/* And their files: every token of every session (content, size, seals, position). */
		for (int sl = 0; sl < NSESS; sl++) {
			for (long t = 0; t < NTOKEN && sessions[sl] >= 0; t++) {
				int fslot = free_slot(files, NFILE);

				if (fslot < 0)
					break;
				retrieve_fd_token(sl, t, fslot);
				if (files[fslot] >= 0 && below(2) == 0) {
					begin("close-file");
					add(" F%d", fslot);
					result(close(files[fslot]), errno);
					end();
					files[fslot] = -1;
				}
			}
		}
	}
	for (op_no = 1; op_no <= ops; op_no++) {
		long w = below(100);

		/* Without a session or a file most operations are EBADF: make one first, mostly. */
		if (free_slot(sessions, NSESS) == 0 && sessions[1] < 0 && sessions[2] < 0 && sessions[3] < 0 &&
		    below(3) != 0)
			w = device < 0 ? 0 : 7;
		else if (free_slot(files, NFILE) == 0 && files[1] < 0 && below(2) != 0)
			w = 44;
		if (w < 4)
			op_open_device();
		else if (w < 6)
			op_close_device();
		else if (w < 13)
			op_session(stage == 2 && below(3) != 0 ? LUO_RETRIEVE_SESSION : LUO_CREATE_SESSION);
		else if (w < 16)
			op_get_name();
		else if (w < 26)
			op_preserve();
		else if (w < (stage == 2 ? 34 : 28))
			op_retrieve_fd();
		else if (w < 36)
			op_finish();
		else if (w < 40)
			op_close_session();
		else if (w < 44)
			op_raw_ioctl();
		else if (w < 52)
			op_new_file();
		else if (w < 55)
			op_close_file();
		else if (w < 57)
			op_dup();
		else if (w < 72)
			op_write();
		else if (w < 77)
			op_copy_in();
		else if (w < 80)
			op_mmap_write();
		else if (w < 85)
			op_truncate();
		else if (w < 89)
			op_fallocate();
		else if (w < 94)
			op_seal();
		else if (w < 96)
			op_lseek();
		else
			op_describe();
	}
	/* The end: every file described and closed; the sessions kept for the kexec or closed. */
	for (int f = 0; f < NFILE; f++) {
		if (files[f] < 0)
			continue;
		begin("end-file");
		add(" F%d", f);
		describe(files[f]);
		end();
		close_file(f);
	}
	for (int s = 0; s < NSESS; s++) {
		if (sessions[s] < 0)
			continue;
		if (keep && below(4) != 0 && nkept < (int)(sizeof(kept) / sizeof(kept[0]))) {
			begin("keep-session");
			add(" S%d", s);
			end();
			kept[nkept++] = sessions[s];
		} else {
			op_no++;
			begin("close-session");
			add(" S%d", s);
			result(close(sessions[s]), errno);
			end();
		}
		sessions[s] = -1;
	}
	if (device >= 0)
		close(device);
	device = -1;
}

int main(int argc, char **argv)
{
	int ops = 60;
	int i = 1;
	int stage;

	if (i + 1 < argc && strcmp(argv[i], "--ops") == 0) {
		ops = atoi(argv[i + 1]);
		i += 2;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: luofuzz [--ops N] stage1|stage2|single SEED...\n");
		return 64;
	}
	if (strcmp(argv[i], "stage1") == 0)
		stage = 1;
	else if (strcmp(argv[i], "stage2") == 0)
		stage = 2;
	else if (strcmp(argv[i], "single") == 0)
		stage = 0;
	else {
		fprintf(stderr, "luofuzz: unknown mode %s\n", argv[i]);
		return 64;
	}
	buf = malloc(MAX_FILE);
	if (!buf)
		fatal("malloc");
	for (i++; i < argc; i++)
		run_seed(strtoul(argv[i], NULL, 10), stage == 0 ? 1 : stage, ops, stage == 1);
	if (stage == 1) {
		/* The holder: keeps the sessions across the kexec (LUO preserves open sessions). */
		pid_t pid;

		fflush(stdout);
		pid = fork();
		if (pid < 0)
			fatal("fork");
		if (pid == 0) {
			int null = open("/dev/null", O_RDWR);

			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			setsid();
			for (;;)
				pause();
		}
		fprintf(stderr, "luofuzz: holder pid %d keeps %d sessions\n", (int)pid, nkept);
		if (getenv("LUOFUZZ_HOLDER_FILE")) {
			FILE *h = fopen(getenv("LUOFUZZ_HOLDER_FILE"), "w");

			if (!h)
				fatal("LUOFUZZ_HOLDER_FILE");
			fprintf(h, "%d\n", (int)pid);
			fclose(h);
		}
		printf("holder keeps %d sessions\n", nkept);
	}
	return 0;
}
