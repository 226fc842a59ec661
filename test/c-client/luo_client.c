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
 *  4. CLAIM's session fd: RETRIEVE_FD token 1, verify every byte, FINISH
 *  5. print one JSON line {"id":..., "verified":..., "bytes":...}; exit 0 if
 *     verified, 1 otherwise
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

#define MAX_LINE (64 * 1024)
#define MAX_FDS 16

/* The LUO uAPI: ioctl numbers and argument structs (docs/protocol.md). */
#include "../../native/include/luokit/liveupdate.h"

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

/* ---- lines with fds --------------------------------------------------- */

/*
 * fds ride on the first byte of their line. One recvmsg() may return the
 * tail of fd-less lines followed by the line carrying fds (the kernel glues
 * fd-less data in front of a message with fds, then stops after it), so the
 * fds of a chunk belong to the line holding the chunk's last byte.
 */
struct fd_mark {
	size_t at; /* buffer offset of the chunk's last byte */
	int fds[MAX_FDS];
	int nfds;
};

struct conn {
	int sock;
	char buf[2 * MAX_LINE + 2];
	size_t len;
	struct fd_mark marks[8];
	int nmarks;
};

static int conn_open(struct conn *c, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	memset(c, 0, sizeof(*c));
	c->sock = s;
	return 0;
}

static void conn_close(struct conn *c)
{
	for (int m = 0; m < c->nmarks; m++)
		for (int i = 0; i < c->marks[m].nfds; i++)
			close(c->marks[m].fds[i]);
	c->nmarks = 0;
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
}

/* One line per sendmsg(); luod expects no fds from clients. */
static void conn_send(struct conn *c, const char *line)
{
	size_t len = strlen(line), done = 0;
	while (done < len) {
		ssize_t n = send(c->sock, line + done, len - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("send: %s", strerror(errno));
		}
		done += (size_t)n;
	}
}

/*
 * Read the next line into `out` (NUL-terminated, without '\n') and its fds.
 * Returns 1 for a line, 0 at EOF, -1 on error.
 */
static int conn_read_line(struct conn *c, char *out, int *fds, int *nfds)
{
	*nfds = 0;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t line_len = (size_t)(nl - c->buf);
			memcpy(out, c->buf, line_len);
			out[line_len] = '\0';
			/* fds whose mark lies in this line are its fds */
			int keep = 0;
			for (int m = 0; m < c->nmarks; m++) {
				if (c->marks[m].at <= line_len) {
					for (int i = 0; i < c->marks[m].nfds; i++) {
						if (*nfds < MAX_FDS)
							fds[(*nfds)++] = c->marks[m].fds[i];
						else
							close(c->marks[m].fds[i]);
					}
				} else {
					c->marks[keep] = c->marks[m];
					c->marks[keep].at -= line_len + 1;
					keep++;
				}
			}
			c->nmarks = keep;
			memmove(c->buf, nl + 1, c->len - line_len - 1);
			c->len -= line_len + 1;
			return 1;
		}
		if (c->len > MAX_LINE) {
			errno = E2BIG;
			return -1;
		}
		char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct iovec iov = { c->buf + c->len, sizeof(c->buf) - c->len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 0;
		if (mh.msg_flags & MSG_CTRUNC) {
			errno = EMSGSIZE;
			return -1;
		}
		struct fd_mark mark = { .at = c->len + (size_t)n - 1 };
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			int count = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < count; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (mark.nfds < MAX_FDS)
					mark.fds[mark.nfds++] = fd;
				else
					close(fd);
			}
		}
		c->len += (size_t)n;
		if (mark.nfds > 0) {
			if (c->nmarks == (int)(sizeof(c->marks) / sizeof(c->marks[0]))) {
				errno = EPROTO;
				return -1;
			}
			c->marks[c->nmarks++] = mark;
		}
	}
}

/* ---- just enough JSON ------------------------------------------------- */

/* The string value of "key" at the top of a flat object; 0 if absent. */
static int json_string(const char *json, const char *key, char *out, size_t cap)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	const char *p = json;
	while ((p = strstr(p, pattern)) != NULL) {
		p += strlen(pattern);
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != ':')
			continue;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '"')
			return 0;
		p++;
		size_t n = 0;
		while (*p && *p != '"' && n + 1 < cap) {
			if (*p == '\\' && p[1])
				p++;
			out[n++] = *p++;
		}
		out[n] = '\0';
		return 1;
	}
	return 0;
}

/* true / false / -1 (absent) for "key". */
static int json_bool(const char *json, const char *key)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	const char *p = strstr(json, pattern);
	if (!p)
		return -1;
	p += strlen(pattern);
	while (*p == ' ' || *p == ':' || *p == '\t')
		p++;
	if (strncmp(p, "true", 4) == 0)
		return 1;
	if (strncmp(p, "false", 5) == 0)
		return 0;
	return -1;
}

static void close_all(int *fds, int nfds)
{
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

static char line[MAX_LINE + 1];

/*
 * Send a command and wait for its reply, handling events that come first
 * (only KEXEC / ABORTED are expected while waiting; they are remembered).
 * Returns 1 ok, 0 error (code copied), -1 connection gone.
 */
struct session_event {
	int got_start;
	char update[128];
	int fds[MAX_FDS];
	int nfds;
	int got_kexec;
	int got_aborted;
};

static int wait_reply(struct conn *c, int *fds, int *nfds, char *code, size_t code_cap, struct session_event *ev)
{
	for (;;) {
		int lfds[MAX_FDS], lnfds;
		int r = conn_read_line(c, line, lfds, &lnfds);
		if (r <= 0)
			return -1;
		if (json_bool(line, "ok") >= 0) {
			if (json_bool(line, "ok") == 1) {
				if (fds) {
					memcpy(fds, lfds, sizeof(int) * lnfds);
					*nfds = lnfds;
				} else {
					close_all(lfds, lnfds);
				}
				return 1;
			}
			close_all(lfds, lnfds);
			if (code && !json_string(line, "code", code, code_cap))
				snprintf(code, code_cap, "EIO");
			note("error reply: %s", line);
			return 0;
		}
		char event[64];
		if (json_string(line, "event", event, sizeof(event)) && ev) {
			if (strcmp(event, "START_PRESERVATION") == 0) {
				ev->got_start = 1;
				json_string(line, "update", ev->update, sizeof(ev->update));
				memcpy(ev->fds, lfds, sizeof(int) * lnfds);
				ev->nfds = lnfds;
				continue;
			}
			if (strcmp(event, "KEXEC") == 0)
				ev->got_kexec = 1;
			if (strcmp(event, "ABORTED") == 0)
				ev->got_aborted = 1;
		}
		close_all(lfds, lnfds);
	}
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

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void connect_retry(struct conn *c, const char *path, double timeout_ms)
{
	double deadline = now_ms() + timeout_ms;
	while (conn_open(c, path) < 0) {
		if (now_ms() > deadline)
			die("luod did not come back at %s: %s", path, strerror(errno));
		usleep(50 * 1000);
	}
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
	double paused = now_ms();

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
	int incoming = claimed[0];

	struct luo_fd_arg retrieve = { .size = sizeof(retrieve), .fd = -1, .token = 1 };
	if (ioctl(incoming, LUO_RETRIEVE_FD, &retrieve) < 0)
		die("RETRIEVE_FD: %s", strerror(errno));
	struct stat st;
	if (fstat(retrieve.fd, &st) < 0)
		die("fstat: %s", strerror(errno));
	size_t bad = (size_t)st.st_size == size ? check(retrieve.fd, size) : size;
	struct luo_finish_arg finish = { .size = sizeof(finish), .reserved = 0 };
	if (ioctl(incoming, LUO_FINISH, &finish) < 0)
		die("FINISH: %s", strerror(errno));
	close(incoming);
	close(retrieve.fd);
	conn_close(&c);

	printf("{\"id\":\"%s\",\"verified\":%s,\"bytes\":%lld,\"bad_bytes\":%zu,\"blackout_ms\":%.0f}\n", client_id,
	       bad == 0 ? "true" : "false", (long long)st.st_size, bad, now_ms() - paused);
	return bad == 0 ? 0 : 1;
}
