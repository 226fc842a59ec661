/*
 * luo_floor: the kernel-only floor of a live update's blackout (docs/vm.md).
 *
 * The real-kernel bench measures luod carrying example VMMs across a kexec.
 * This program does the least the kernel allows for the same memory, with
 * no daemon, no protocol and no Node, so the bench can say how much of the
 * blackout luod adds:
 *
 *   boot 0  luo_floor preserve --sizes 64M,128M,256M --kernel BZIMAGE
 *                              --initrd FILE --cmdline TEXT
 *           memfds of those sizes filled with luokit's data pattern, the next
 *           kernel loaded (kexec_file_load: KHO data only travels that way;
 *           done before the blackout, as luod's LOAD is), then the blackout:
 *           one session per memfd (floor-1, floor-2, ...), PRESERVE_FD at
 *           token 1, reboot(LINUX_REBOOT_CMD_KEXEC). The session fds are still
 *           open in this process when the kernel goes away.
 *   boot 1  luo_floor restore --sizes 64M,128M,256M
 *           RETRIEVE_SESSION and RETRIEVE_FD for each, every byte compared
 *           with the pattern, FINISH.
 *
 * Each step prints `LUOKIT-PHASE path=floor boot=N phase=NAME` on stdout (the
 * serial console in the guest); the host stamps the lines with its own clock,
 * which, unlike the guest's, survives the kexec. Results:
 * `LUOKIT-RESULT kind=floor name=floor-N bytes=B verified=0|1 [error=...]`.
 *
 * The ioctls below are written from include/uapi/linux/liveupdate.h's
 * definitions (7.2): every command is _IO(0xBA, nr) and takes a struct whose
 * first field is its own size, so the kernel can tell versions apart.
 *
 * The data pattern is src/example-vmm/pattern.ts's, byte for byte: one 64 MiB
 * chunk of xorshift32 words (seed 0x2545f491), and on every 4 KiB page a
 * 16-byte header `u32 0x424f554c, u32 chunk index, u64 file offset of the
 * page` (little-endian, as on x86).
 *
 * Built by test/vm/run.ts with `gcc -static -O2`; not part of luokit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <linux/reboot.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- /dev/liveupdate (include/uapi/linux/liveupdate.h) ---------------- */

#include "../../../native/include/luokit/liveupdate.h"

#define TOKEN 1
#define MAX_FILES 16

/* ---- the data pattern (src/example-vmm/pattern.ts) ---------------------- */

#include "pattern.h"

/* ---- output ------------------------------------------------------------ */

static const char *boot = "0";

/* One marker line with a single write(2): it reaches the console whole. */
static void marker(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t ignored = write(STDOUT_FILENO, line, n);
	(void)ignored;
}

static void phase(const char *name)
{
	marker("LUOKIT-PHASE path=floor boot=%s phase=%s", boot, name);
}

static void die(const char *what)
{
	int err = errno;
	marker("LUOKIT-FLOOR-ERROR boot=%s error=%s: %s: %s", boot, what, strerrorname_np(err) ? strerrorname_np(err) : "E?", strerror(err));
	exit(1);
}

/* ---- arguments --------------------------------------------------------- */

static int parse_sizes(const char *text, unsigned long long *sizes)
{
	int n = 0;
	const char *p = text;
	while (*p) {
		char *end;
		unsigned long long v = strtoull(p, &end, 10);
		if (end == p || n == MAX_FILES)
			return -1;
		switch (*end) {
		case 'K': v <<= 10; end++; break;
		case 'M': v <<= 20; end++; break;
		case 'G': v <<= 30; end++; break;
		default: break;
		}
		if (v == 0 || v % PATTERN_PAGE != 0)
			return -1;
		sizes[n++] = v;
		if (*end == ',')
			end++;
		else if (*end != '\0')
			return -1;
		p = end;
	}
	return n;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: luo_floor preserve --sizes 64M,128M --kernel BZIMAGE --initrd FILE --cmdline TEXT\n"
		"       luo_floor restore --sizes 64M,128M\n"
		"       luo_floor pattern --sizes 1M   (the data pattern on stdout)\n");
	exit(2);
}

static void session_name(struct luo_session_arg *arg, int i)
{
	memset(arg, 0, sizeof(*arg));
	arg->size = sizeof(*arg);
	arg->fd = -1;
	snprintf((char *)arg->name, sizeof(arg->name), "floor-%d", i + 1);
}

/* ---- boot 0 ------------------------------------------------------------ */

static int preserve(int n, const unsigned long long *sizes, const char *kernel, const char *initrd,
		    const char *cmdline)
{
	int memfd[MAX_FILES], session[MAX_FILES];

	/* Before the blackout: the VMs' memory exists and is written, the next kernel is loaded. */
	phase("fill");
	pattern_init();
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "floor-ram-%d", i + 1);
		memfd[i] = memfd_create(name, 0);
		if (memfd[i] < 0)
			die("memfd_create");
		if (ftruncate(memfd[i], (off_t)sizes[i]) < 0)
			die("ftruncate");
		for (unsigned long long off = 0; off < sizes[i]; off += PATTERN_CHUNK) {
			size_t len = sizes[i] - off < PATTERN_CHUNK ? sizes[i] - off : PATTERN_CHUNK;
			const uint8_t *bytes = pattern_chunk((long long)(off / PATTERN_CHUNK));
			for (size_t done = 0; done < len;) {
				ssize_t w = pwrite(memfd[i], bytes + done, len - done, (off_t)(off + done));
				if (w <= 0)
					die("pwrite");
				done += (size_t)w;
			}
		}
	}
	phase("load");
	int kfd = open(kernel, O_RDONLY | O_CLOEXEC);
	if (kfd < 0)
		die("open kernel");
	int ifd = open(initrd, O_RDONLY | O_CLOEXEC);
	if (ifd < 0)
		die("open initrd");
	if (syscall(SYS_kexec_file_load, kfd, ifd, strlen(cmdline) + 1, cmdline, 0UL) < 0)
		die("kexec_file_load");
	close(kfd);
	close(ifd);
	phase("loaded");

	/* The blackout starts: from here on the "VMs" would be stopped. */
	phase("preserve");
	int dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die("open /dev/liveupdate");
	for (int i = 0; i < n; i++) {
		struct luo_session_arg s;
		session_name(&s, i);
		if (ioctl(dev, LUO_CREATE_SESSION, &s) < 0)
			die("CREATE_SESSION");
		session[i] = s.fd;
		struct luo_fd_arg f = { .size = sizeof(f), .fd = memfd[i], .token = TOKEN };
		if (ioctl(session[i], LUO_PRESERVE_FD, &f) < 0)
			die("PRESERVE_FD");
		close(memfd[i]); /* the session holds the file now */
	}
	/* Sessions outlive the device fd; another agent could open it now. */
	close(dev);
	phase("preserved");
	phase("kexec");
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, NULL);
	die("reboot(LINUX_REBOOT_CMD_KEXEC)");
	return 1;
}

/* ---- boot 1 ------------------------------------------------------------ */

static int verify(int fd, unsigned long long size, char *why, size_t why_len)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		snprintf(why, why_len, "fstat: %s", strerror(errno));
		return 0;
	}
	if ((unsigned long long)st.st_size != size) {
		snprintf(why, why_len, "size %lld, expected %llu", (long long)st.st_size, size);
		return 0;
	}
	uint8_t *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		snprintf(why, why_len, "mmap: %s", strerror(errno));
		return 0;
	}
	int ok = 1;
	for (unsigned long long off = 0; off < size && ok; off += PATTERN_CHUNK) {
		size_t len = size - off < PATTERN_CHUNK ? size - off : PATTERN_CHUNK;
		const uint8_t *want = pattern_chunk((long long)(off / PATTERN_CHUNK));
		if (memcmp(map + off, want, len) != 0) {
			size_t i = 0;
			while (map[off + i] == want[i])
				i++;
			snprintf(why, why_len, "first difference at byte %llu", off + i);
			ok = 0;
		}
	}
	munmap(map, size);
	return ok;
}

static int restore(int n, const unsigned long long *sizes)
{
	int session[MAX_FILES], memfd[MAX_FILES];
	phase("start");
	int dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die("open /dev/liveupdate");
	for (int i = 0; i < n; i++) {
		struct luo_session_arg s;
		session_name(&s, i);
		if (ioctl(dev, LUO_RETRIEVE_SESSION, &s) < 0)
			die("RETRIEVE_SESSION");
		session[i] = s.fd;
		struct luo_fd_arg f = { .size = sizeof(f), .fd = -1, .token = TOKEN };
		if (ioctl(session[i], LUO_RETRIEVE_FD, &f) < 0)
			die("RETRIEVE_FD");
		memfd[i] = f.fd;
	}
	close(dev);
	phase("retrieved");
	pattern_init(); /* the expected bytes: part of verifying */
	int failures = 0;
	char why[128];
	int verified[MAX_FILES];
	for (int i = 0; i < n; i++) {
		why[0] = '\0';
		verified[i] = verify(memfd[i], sizes[i], why, sizeof(why));
		if (!verified[i]) {
			failures++;
			marker("LUOKIT-RESULT kind=floor name=floor-%d bytes=%llu verified=0 error=%s", i + 1, sizes[i],
			       why);
		}
	}
	phase("verified");
	for (int i = 0; i < n; i++) {
		struct luo_finish_arg fin = { .size = sizeof(fin) };
		if (ioctl(session[i], LUO_FINISH, &fin) < 0)
			die("FINISH");
		close(session[i]);
		close(memfd[i]);
		if (verified[i])
			marker("LUOKIT-RESULT kind=floor name=floor-%d bytes=%llu verified=1", i + 1, sizes[i]);
	}
	phase("finished");
	return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *sizes_text = NULL, *kernel = NULL, *initrd = NULL, *cmdline = NULL;
	if (argc < 2)
		usage();
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--sizes"))
			sizes_text = argv[i + 1];
		else if (!strcmp(argv[i], "--kernel"))
			kernel = argv[i + 1];
		else if (!strcmp(argv[i], "--initrd"))
			initrd = argv[i + 1];
		else if (!strcmp(argv[i], "--cmdline"))
			cmdline = argv[i + 1];
		else
			usage();
	}
	if (argc % 2 != 0)
		usage();
	if (getenv("LUOKIT_BOOT"))
		boot = getenv("LUOKIT_BOOT");
	unsigned long long sizes[MAX_FILES];
	int n = sizes_text ? parse_sizes(sizes_text, sizes) : -1;
	if (n <= 0) {
		fprintf(stderr, "luo_floor: --sizes must be 1 to %d sizes, each a multiple of 4K (64M,128M)\n",
			MAX_FILES);
		return 2;
	}
	if (!strcmp(argv[1], "pattern")) {
		/* The pattern of the first size on stdout: the bench's unit test checks it against pattern.ts. */
		pattern_init();
		for (unsigned long long off = 0; off < sizes[0]; off += PATTERN_CHUNK) {
			size_t len = sizes[0] - off < PATTERN_CHUNK ? sizes[0] - off : PATTERN_CHUNK;
			if (fwrite(pattern_chunk((long long)(off / PATTERN_CHUNK)), 1, len, stdout) != len)
				return 1;
		}
		return fflush(stdout) == 0 ? 0 : 1;
	}
	if (!strcmp(argv[1], "preserve")) {
		if (!kernel || !initrd || !cmdline)
			usage();
		return preserve(n, sizes, kernel, initrd, cmdline);
	}
	if (!strcmp(argv[1], "restore"))
		return restore(n, sizes);
	usage();
	return 2;
}
