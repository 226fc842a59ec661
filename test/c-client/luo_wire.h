/*
 * The wire of docs/protocol.md for luokit's C programs (test/c-client/luo_client.c,
 * test/vm/vmm/luo_vmm.c): lines with fds (SCM_RIGHTS on a line's first byte), just
 * enough JSON, and a command's reply with the events that come before it. Written
 * only from docs/protocol.md, as the C client itself.
 *
 * A program including this defines die() and note() (its own prefix on stderr).
 */
#ifndef LUOKIT_LUO_WIRE_H
#define LUOKIT_LUO_WIRE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (64 * 1024)
#define MAX_FDS 16

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
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


/* The number value of "key" in a flat object; 0 if absent. */
static int json_number(const char *json, const char *key, double *out)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	const char *p = strstr(json, pattern);
	if (!p)
		return 0;
	p += strlen(pattern);
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != ':')
		return 0;
	p++;
	char *end;
	double v = strtod(p, &end);
	if (end == p)
		return 0;
	*out = v;
	return 1;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Wall-clock epoch milliseconds: RESUMED's paused_at and resumed_at. */
static long long wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connect until luod answers (it is restarting after the kexec), or die at the timeout. */
static void connect_retry(struct conn *c, const char *path, double timeout_ms)
{
	double deadline = now_ms() + timeout_ms;
	while (conn_open(c, path) < 0) {
		if (now_ms() > deadline)
			die("luod did not come back at %s: %s", path, strerror(errno));
		usleep(50 * 1000);
	}
}

#endif
