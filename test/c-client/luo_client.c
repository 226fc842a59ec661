/*
 * A luod client in plain C, written only from docs/protocol.md: the
 * luo-agent flow of one VMM across a live update.
 *
 *   luo_client --socket PATH --id ID [--size BYTES] [--reconnect-timeout S]
 *
 *  1. connect, HELLO, SUBSCRIBE; print "subscribed" on stdout
 *  2. START_PRESERVATION + session fd: preserve a memfd with known content
 *     (LIVEUPDATE_SESSION_PRESERVE_FD, token 1), READY
 *  3. KEXEC, then the connection drops: reconnect until luod answers, CLAIM
 *  4. CLAIM's session fd: RETRIEVE_FD token 1, FINISH: the "VM" resumes;
 *     RESUMED with paused_at (PRESERVE_FD) and resumed_at, wall-clock ms
 *  5. verify every byte (after the resume: not part of the blackout)
 *  6. print one JSON line {"id", "verified", "bytes", "bad_bytes",
 *     "blackout_ms", "recorded_blackout_ms" (RESUMED's reply; null from a luod
 *     without RESUMED)}; exit 0 if verified, 1 otherwise
 *
 * The protocol's plumbing is luo_wire.h, shared with the bench's C VMM.
 *
 * The LUO ioctls go through the real ioctl(2); on the emulated kernel the
 * preload shim (libluoemu.so) carries them to the emulator.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The LUO uAPI: ioctl numbers and argument structs (docs/protocol.md). */
#include "../../native/include/luokit/liveupdate.h"

#include "luo_wire.h"

static const char *client_id = "c-vm";

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "luo_client %s: ", client_id);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "luo_client %s: ", client_id);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- content ---------------------------------------------------------- */

static unsigned char pattern_byte(uint64_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	return (unsigned char)(x ^ (i >> 12));
}

static void fill(int fd, size_t size)
{
	static unsigned char chunk[1 << 16];
	for (size_t off = 0; off < size; off += sizeof(chunk)) {
		size_t n = size - off < sizeof(chunk) ? size - off : sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = pattern_byte(off + i);
		if (pwrite(fd, chunk, n, (off_t)off) != (ssize_t)n)
			die("pwrite: %s", strerror(errno));
	}
}

/* Number of bytes that differ from the pattern (or are missing). */
static size_t check(int fd, size_t size)
{
	static unsigned char chunk[1 << 16];
	size_t bad = 0;
	for (size_t off = 0; off < size; off += sizeof(chunk)) {
		size_t n = size - off < sizeof(chunk) ? size - off : sizeof(chunk);
		ssize_t got = pread(fd, chunk, n, (off_t)off);
		if (got < 0)
			die("pread: %s", strerror(errno));
		for (size_t i = 0; i < n; i++)
			if ((size_t)got <= i || chunk[i] != pattern_byte(off + i))
				bad++;
	}
	return bad;
}

int main(int argc, char **argv)
{
	const char *path = getenv("LUOD_SOCKET");
	size_t size = 1 << 20;
	double reconnect_ms = 60000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc)
			client_id = argv[++i];
		else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
			size = strtoull(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--reconnect-timeout") == 0 && i + 1 < argc)
			reconnect_ms = atof(argv[++i]) * 1000;
		else
			die("usage: luo_client --socket PATH --id ID [--size BYTES] [--reconnect-timeout S]");
	}
	if (!path)
		path = "/run/luod/liveupdate.sock";
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct conn c;
	char code[64], cmd[512];
	struct session_event ev = { 0 };

	/* 1. HELLO, SUBSCRIBE */
	if (conn_open(&c, path) < 0)
		die("connect %s: %s", path, strerror(errno));
	conn_send(&c, "{\"cmd\":\"HELLO\",\"versions\":[1],\"client\":\"luo_client.c\",\"seq\":1}\n");
	if (wait_reply(&c, NULL, NULL, code, sizeof(code), &ev) != 1)
		die("HELLO failed: %s", code);
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"SUBSCRIBE\",\"id\":\"%s\",\"seq\":2}\n", client_id);
	conn_send(&c, cmd);
	if (wait_reply(&c, NULL, NULL, code, sizeof(code), &ev) != 1)
		die("SUBSCRIBE failed: %s", code);
	printf("subscribed\n");

	/* 2. START_PRESERVATION */
	while (!ev.got_start) {
		int fds[MAX_FDS], nfds;
		int r = conn_read_line(&c, line, fds, &nfds);
		if (r <= 0)
			die("luod went away before START_PRESERVATION");
		char event[64];
		if (json_string(line, "event", event, sizeof(event)) && strcmp(event, "START_PRESERVATION") == 0) {
			ev.got_start = 1;
			json_string(line, "update", ev.update, sizeof(ev.update));
			memcpy(ev.fds, fds, sizeof(int) * nfds);
			ev.nfds = nfds;
		} else {
			close_all(fds, nfds);
		}
	}
	if (ev.nfds != 1)
		die("START_PRESERVATION carried %d fds, expected 1", ev.nfds);
	int session = ev.fds[0];
	note("START_PRESERVATION %s: session fd %d", ev.update, session);

	int memfd = memfd_create("c-client-ram", MFD_CLOEXEC);
	if (memfd < 0)
		die("memfd_create: %s", strerror(errno));
	if (ftruncate(memfd, (off_t)size) < 0)
		die("ftruncate: %s", strerror(errno));
	fill(memfd, size);
	struct luo_fd_arg preserve = { .size = sizeof(preserve), .fd = memfd, .token = 1 };
	if (ioctl(session, LUO_PRESERVE_FD, &preserve) < 0) {
		snprintf(cmd, sizeof(cmd), "{\"cmd\":\"FAILED\",\"update\":\"%s\",\"reason\":\"PRESERVE_FD: %s\",\"seq\":3}\n",
			 ev.update, strerror(errno));
		conn_send(&c, cmd);
		die("PRESERVE_FD: %s", strerror(errno));
	}
	/* The "VM" is paused from here (its memory preserved) to its resume in the next kernel. */
	long long paused_at = wall_ms();

	/* READY; keep the session fd open until the end of the update */
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"READY\",\"update\":\"%s\",\"seq\":3}\n", ev.update);
	conn_send(&c, cmd);
	if (wait_reply(&c, NULL, NULL, code, sizeof(code), &ev) != 1)
		die("READY failed: %s", code);

	/* 3. KEXEC, then EOF */
	for (;;) {
		int fds[MAX_FDS], nfds;
		int r = conn_read_line(&c, line, fds, &nfds);
		close_all(fds, nfds);
		if (r <= 0)
			break;
		char event[64];
		if (json_string(line, "event", event, sizeof(event))) {
			if (strcmp(event, "KEXEC") == 0)
				ev.got_kexec = 1;
			if (strcmp(event, "ABORTED") == 0)
				die("update aborted: %s", line);
		}
	}
	conn_close(&c);
	close(session);
	close(memfd);
	if (!ev.got_kexec)
		die("the connection dropped without KEXEC");
	note("KEXEC seen, connection dropped: reconnecting");

	/* 4. reconnect, CLAIM */
	int claimed[MAX_FDS], nclaimed = 0;
	for (int attempt = 0;; attempt++) {
		connect_retry(&c, path, reconnect_ms);
		snprintf(cmd, sizeof(cmd), "{\"cmd\":\"CLAIM\",\"id\":\"%s\",\"seq\":1}\n", client_id);
		conn_send(&c, cmd);
		int r = wait_reply(&c, claimed, &nclaimed, code, sizeof(code), NULL);
		if (r == 1)
			break;
		conn_close(&c);
		if (r == 0 && strcmp(code, "ENOENT") != 0)
			die("CLAIM refused: %s", code);
		if (attempt > 100)
			die("CLAIM kept failing");
		usleep(100 * 1000);
	}
	if (nclaimed != 1)
		die("CLAIM carried %d fds, expected 1", nclaimed);
	char update[128];
	if (!json_string(line, "update", update, sizeof(update)))
		die("CLAIM's reply names no update: %s", line);
	int incoming = claimed[0];

	struct luo_fd_arg retrieve = { .size = sizeof(retrieve), .fd = -1, .token = 1 };
	if (ioctl(incoming, LUO_RETRIEVE_FD, &retrieve) < 0)
		die("RETRIEVE_FD: %s", strerror(errno));
	struct luo_finish_arg finish = { .size = sizeof(finish), .reserved = 0 };
	if (ioctl(incoming, LUO_FINISH, &finish) < 0)
		die("FINISH: %s", strerror(errno));
	close(incoming);

	/* 5. The memory is back: the "VM" resumes, and says so (RESUMED: its blackout). */
	long long resumed_at = wall_ms();
	snprintf(cmd, sizeof(cmd),
		 "{\"cmd\":\"RESUMED\",\"id\":\"%s\",\"update\":\"%s\",\"paused_at\":%lld,\"resumed_at\":%lld,\"seq\":2}\n",
		 client_id, update, paused_at, resumed_at);
	conn_send(&c, cmd);
	char recorded[32] = "null";
	int r = wait_reply(&c, NULL, NULL, code, sizeof(code), NULL);
	double blackout;
	if (r == 1 && json_number(line, "blackout_ms", &blackout))
		snprintf(recorded, sizeof(recorded), "%.0f", blackout);
	else if (r == 0 && strcmp(code, "ENOTSUP") == 0)
		note("this luod does not record RESUMED (ENOTSUP)");
	else
		die("RESUMED: %s", r == 0 ? code : "luod went away");
	conn_close(&c);

	/* 6. The test's check, after the resume: every byte. */
	struct stat st;
	if (fstat(retrieve.fd, &st) < 0)
		die("fstat: %s", strerror(errno));
	size_t bad = (size_t)st.st_size == size ? check(retrieve.fd, size) : size;
	close(retrieve.fd);

	printf("{\"id\":\"%s\",\"verified\":%s,\"bytes\":%lld,\"bad_bytes\":%zu,\"blackout_ms\":%lld,"
	       "\"recorded_blackout_ms\":%s}\n",
	       client_id, bad == 0 ? "true" : "false", (long long)st.st_size, bad, resumed_at - paused_at, recorded);
	return bad == 0 ? 0 : 1;
}
