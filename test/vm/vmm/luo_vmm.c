/*
 * luo_vmm: a native VMM for the real-kernel bench's luod path (docs/vm.md).
 *
 * Real VMMs (QEMU, cloud-hypervisor) are native programs. In the next kernel the
 * example VMM (src/example-vmm, Node) starts on the same two emulated CPUs as luod,
 * so the bench measured Node starts competing with luod rather than luod. This
 * program does, in C and over luod's real protocol (docs/protocol.md, the plumbing in
 * test/c-client/luo_wire.h), what the example VMM does there with
 * `--fill --verify pattern`:
 *
 *   boot 0  luo_vmm --id ID --mem SIZE --fill --verify pattern [--tick-ms MS]
 *                   [--pages-per-tick N] [--timeline FILE] [--socket PATH]
 *           guest RAM a memfd filled with luokit's data pattern (test/vm/floor/pattern.h);
 *           a vCPU (a timer in this one thread) rewrites random pages with their own
 *           pattern bytes and stamps a generation counter into page 0; HELLO, SUBSCRIBE.
 *           START_PRESERVATION: PRESERVE_FD of the RAM (token 1) while the vCPU runs,
 *           pause it (`paused` on the timeline), a sealed device-state memfd (token 2:
 *           id, update, size, generation, paused_at), READY. KEXEC: the kernel goes away
 *           with this process. ABORTED: resume, RESUMED, close the sessions.
 *   boot 1  luo_vmm --id ID --mem SIZE --claim [...]
 *           connect (retrying until luod listens), CLAIM, RETRIEVE_FD the device state and
 *           the RAM, FINISH, page 0 checked against the recorded generation, resume the vCPU
 *           (`resumed` on the timeline: the blackout ends), RESUMED with paused_at and
 *           resumed_at (docs/protocol.md); then, the guest running, every byte of pages
 *           1.. compared with the pattern, a chunk at a time with vCPU ticks between. One
 *           JSON line on stdout: {"id", "verified", "bytes", "blackout_ms",
 *           "recorded_blackout_ms", "update", "generation", "verify":"pattern", "verify_ms"}.
 *
 * Logs are JSON lines on stderr ({"vmm":ID,"msg":...}); the guest job waits for
 * "subscribed". Timeline lines are the example VMM's: {"vmm_phase":"paused"|"resumed",
 * "id","update","at"}, one write(2) each. Built static by test/vm/update.ts; not part of
 * luokit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../../native/include/luokit/liveupdate.h"
#include "../../c-client/luo_wire.h"
#include "../floor/pattern.h"

#define RAM_TOKEN 1
#define STATE_TOKEN 2
#define STATE_FORMAT "luokit-luo-vmm/1"
#define HEADER_MAGIC "LUOVMM01"
#define VERIFY_CHUNK (4u << 20)

static const char *vm_id = "vm";
static int claim_mode;

static void logline(const char *msg, const char *extra)
{
	char out[1024];
	int n = snprintf(out, sizeof(out), "{\"vmm\":\"%s\",\"msg\":\"%s\"%s%s}\n", vm_id, msg, extra ? "," : "",
			 extra ? extra : "");
	if (n > 0) {
		ssize_t ignored = write(STDERR_FILENO, out, n < (int)sizeof(out) ? (size_t)n : sizeof(out));
		(void)ignored;
	}
}

static void vlog_error(const char *fmt, va_list ap)
{
	char text[512], extra[700];
	vsnprintf(text, sizeof(text), fmt, ap);
	for (char *p = text; *p; p++)
		if (*p == '"' || *p == '\\')
			*p = '\'';
	snprintf(extra, sizeof(extra), "\"error\":\"%s\"", text);
	logline("error", extra);
	/* After the reboot a verdict is owed: an unverified one, never none. */
	if (claim_mode)
		printf("{\"id\":\"%s\",\"verified\":false,\"bytes\":0,\"verify\":\"pattern\",\"error\":\"%s\"}\n", vm_id,
		       text);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog_error(fmt, ap);
	va_end(ap);
	exit(claim_mode ? 1 : 2);
}

static void note(const char *fmt, ...)
{
	char text[512], extra[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	for (char *p = text; *p; p++)
		if (*p == '"' || *p == '\\')
			*p = '\'';
	snprintf(extra, sizeof(extra), "\"note\":\"%s\"", text);
	logline("note", extra);
}

/* ---- the guest: RAM and its vCPU ------------------------------------------ */

struct guest {
	int ram;
	unsigned long long size;
	unsigned long long generation;
	int running;
	/* Pattern pages only once the pattern is built (after the reboot: by the check). */
	int patterned;
	double tick_ms, next_tick;
	int pages_per_tick;
	uint32_t rng;
	uint8_t header[PATTERN_PAGE];
	uint8_t page[PATTERN_PAGE];
};

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, off + (off_t)done);
		if (n <= 0)
			die("pwrite: %s", strerror(errno));
		done += (size_t)n;
	}
}

/* Page 0 as the vCPU last wrote it: magic, generation (u64 LE), id (the example VMM's layout). */
static void header_page(uint8_t *page, unsigned long long generation)
{
	memset(page, 0, PATTERN_PAGE);
	memcpy(page, HEADER_MAGIC, 8);
	for (int i = 0; i < 8; i++)
		page[8 + i] = (uint8_t)(generation >> (8 * i));
	strncpy((char *)page + 16, vm_id, 48);
}

/* The pattern's bytes of the page at `offset` (the body is the same in every chunk). */
static void pattern_page(unsigned long long offset, uint8_t *out)
{
	memcpy(out, (const uint8_t *)pattern + offset % PATTERN_CHUNK, PATTERN_PAGE);
	uint32_t w[4] = { PATTERN_MAGIC, (uint32_t)(offset / PATTERN_CHUNK), (uint32_t)offset,
			  (uint32_t)(offset >> 32) };
	memcpy(out, w, sizeof(w));
}

/* One vCPU step: random pages rewritten with their own pattern bytes, then page 0's counter. */
static void tick(struct guest *g)
{
	unsigned long long pages = g->size / PATTERN_PAGE;
	for (int i = 0; g->patterned && i < g->pages_per_tick && pages > 1; i++) {
		g->rng ^= g->rng << 13;
		g->rng ^= g->rng >> 17;
		g->rng ^= g->rng << 5;
		unsigned long long off = (1 + g->rng % (pages - 1)) * PATTERN_PAGE;
		pattern_page(off, g->page);
		pwrite_all(g->ram, g->page, PATTERN_PAGE, (off_t)off);
	}
	g->generation++;
	header_page(g->header, g->generation);
	pwrite_all(g->ram, g->header, PATTERN_PAGE, 0);
}

/* Run the ticks that are due; returns ms until the next one (-1 when paused). */
static int run_vcpu(struct guest *g)
{
	if (!g->running)
		return -1;
	double now = now_ms();
	if (now >= g->next_tick) {
		tick(g);
		g->next_tick = now + g->tick_ms;
	}
	return (int)(g->next_tick - now) + 1;
}

static void resume(struct guest *g)
{
	g->running = 1;
	g->next_tick = now_ms() + g->tick_ms;
}

static void fill(struct guest *g)
{
	pattern_init();
	for (unsigned long long off = 0; off < g->size; off += PATTERN_CHUNK) {
		size_t len = g->size - off < PATTERN_CHUNK ? (size_t)(g->size - off) : PATTERN_CHUNK;
		pwrite_all(g->ram, pattern_chunk((long long)(off / PATTERN_CHUNK)), len, (off_t)off);
	}
	g->patterned = 1;
}

/* ---- the timeline ------------------------------------------------------- */

static int timeline_fd = -1;

static void timeline(const char *phase, const char *update)
{
	if (timeline_fd < 0)
		return;
	char out[512];
	int n = snprintf(out, sizeof(out), "{\"vmm_phase\":\"%s\",\"id\":\"%s\",\"update\":\"%s\",\"at\":%lld}\n", phase,
			 vm_id, update, wall_ms());
	if (n > 0 && n < (int)sizeof(out)) {
		ssize_t ignored = write(timeline_fd, out, (size_t)n);
		(void)ignored;
	}
}

/* ---- boot 0: preserve ----------------------------------------------------- */

/* Wait for the socket (luod may start after this VMM) up to `timeout_ms`, then HELLO. */
static void attach(struct conn *c, const char *path, double timeout_ms)
{
	char code[64];
	connect_retry(c, path, timeout_ms);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"HELLO\",\"versions\":[1],\"client\":\"luo_vmm/%s\",\"seq\":\"hello\"}\n",
		 vm_id);
	conn_send(c, cmd);
	if (wait_reply(c, NULL, NULL, code, sizeof(code), NULL) != 1)
		die("HELLO failed: %s", code);
}

static void send_resumed(struct conn *c, const char *update, long long paused_at, long long resumed_at,
			 char *recorded, size_t recorded_cap)
{
	char cmd[512], code[64];
	snprintf(cmd, sizeof(cmd),
		 "{\"cmd\":\"RESUMED\",\"id\":\"%s\",\"update\":\"%s\",\"paused_at\":%lld,\"resumed_at\":%lld,\"seq\":\"resumed\"}\n",
		 vm_id, update, paused_at, resumed_at);
	conn_send(c, cmd);
	snprintf(recorded, recorded_cap, "null");
	int r = wait_reply(c, NULL, NULL, code, sizeof(code), NULL);
	double ms;
	if (r == 1 && json_number(line, "blackout_ms", &ms))
		snprintf(recorded, recorded_cap, "%.0f", ms);
	else
		note("RESUMED not recorded: %s", r == 0 ? code : "luod went away");
}

static int preserve_fd(int session, int fd, uint64_t token)
{
	struct luo_fd_arg arg = { .size = sizeof(arg), .fd = fd, .token = token };
	return ioctl(session, LUO_PRESERVE_FD, &arg);
}

static int serve(struct guest *g, const char *path, double timeout_ms)
{
	struct conn c;
	char cmd[512], code[64];
	attach(&c, path, timeout_ms);
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"SUBSCRIBE\",\"id\":\"%s\",\"seq\":\"subscribe\"}\n", vm_id);
	conn_send(&c, cmd);
	if (wait_reply(&c, NULL, NULL, code, sizeof(code), NULL) != 1)
		die("SUBSCRIBE failed: %s", code);
	logline("subscribed", NULL);

	char update[128] = "";
	int sessions[MAX_FDS], nsessions = 0, got_kexec = 0;
	long long paused_at = 0;
	for (;;) {
		if (!memchr(c.buf, '\n', c.len)) {
			struct pollfd p = { .fd = c.sock, .events = POLLIN };
			int wait = run_vcpu(g);
			if (poll(&p, 1, wait) < 0 && errno != EINTR)
				die("poll: %s", strerror(errno));
			if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
		}
		int fds[MAX_FDS], nfds;
		int r = conn_read_line(&c, line, fds, &nfds);
		if (r <= 0) {
			if (got_kexec) {
				/* The emulated kernel: this process outlives the kexec; a real one ends it first. */
				logline("kexec: the connection dropped", NULL);
				return 0;
			}
			die("luod went away without KEXEC");
		}
		char event[64];
		if (json_bool(line, "ok") == 0)
			die("luod refused: %s", line);
		if (!json_string(line, "event", event, sizeof(event))) {
			close_all(fds, nfds);
			continue;
		}
		if (strcmp(event, "START_PRESERVATION") == 0) {
			json_string(line, "update", update, sizeof(update));
			if (nfds < 1)
				die("START_PRESERVATION carried no session fd");
			memcpy(sessions, fds, sizeof(int) * nfds);
			nsessions = nfds;
			/* Guest memory first, while the guest still runs; then pause it. */
			if (preserve_fd(sessions[0], g->ram, RAM_TOKEN) < 0)
				die("PRESERVE_FD of the RAM: %s", strerror(errno));
			g->running = 0;
			paused_at = wall_ms();
			timeline("paused", update);
			char state[512];
			int n = snprintf(state, sizeof(state),
					 "{\"format\":\"%s\",\"id\":\"%s\",\"update\":\"%s\",\"size\":%llu,\"page_size\":%u,"
					 "\"generation\":%llu,\"verify\":\"pattern\",\"paused_at\":%lld}",
					 STATE_FORMAT, vm_id, update, g->size, PATTERN_PAGE, g->generation, paused_at);
			int dev = memfd_create("device-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
			if (dev < 0)
				die("memfd_create: %s", strerror(errno));
			pwrite_all(dev, state, (size_t)n, 0);
			if (fcntl(dev, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
				die("F_ADD_SEALS: %s", strerror(errno));
			if (preserve_fd(sessions[0], dev, STATE_TOKEN) < 0)
				die("PRESERVE_FD of the device state: %s", strerror(errno));
			close(dev);
			snprintf(cmd, sizeof(cmd), "{\"cmd\":\"READY\",\"update\":\"%s\",\"seq\":\"ready\"}\n", update);
			conn_send(&c, cmd);
			logline("paused and preserved", NULL);
		} else if (strcmp(event, "KEXEC") == 0) {
			got_kexec = 1;
		} else if (strcmp(event, "ABORTED") == 0) {
			close_all(sessions, nsessions);
			nsessions = 0;
			resume(g);
			if (paused_at) {
				char recorded[32];
				timeline("resumed", update);
				send_resumed(&c, update, paused_at, wall_ms(), recorded, sizeof(recorded));
				paused_at = 0;
			}
			logline("update aborted: resumed", NULL);
		}
		close_all(fds, nfds);
	}
}

/* ---- boot 1: claim, resume, verify ---------------------------------------- */

static int retrieve_fd(int session, uint64_t token)
{
	struct luo_fd_arg arg = { .size = sizeof(arg), .fd = -1, .token = token };
	if (ioctl(session, LUO_RETRIEVE_FD, &arg) < 0)
		die("RETRIEVE_FD token %llu: %s", (unsigned long long)token, strerror(errno));
	return arg.fd;
}

static int claim(struct guest *g, const char *path, double timeout_ms)
{
	struct conn c;
	char cmd[256], code[64], update[128];
	int sessions[MAX_FDS], nsessions = 0;
	attach(&c, path, timeout_ms);
	/* luod may still be restoring the handover right after its start. */
	for (int attempt = 0;; attempt++) {
		snprintf(cmd, sizeof(cmd), "{\"cmd\":\"CLAIM\",\"id\":\"%s\",\"seq\":\"claim\"}\n", vm_id);
		conn_send(&c, cmd);
		int r = wait_reply(&c, sessions, &nsessions, code, sizeof(code), NULL);
		if (r == 1)
			break;
		if (r < 0)
			die("luod went away during CLAIM");
		if (strcmp(code, "ENOENT") != 0 || attempt >= 20)
			die("CLAIM refused: %s", code);
		usleep(100 * 1000);
	}
	if (!json_string(line, "update", update, sizeof(update)))
		die("CLAIM's reply names no update");
	if (nsessions < 1)
		die("CLAIM carried no session");

	int state_fd = retrieve_fd(sessions[0], STATE_TOKEN);
	char state[1024];
	ssize_t n = pread(state_fd, state, sizeof(state) - 1, 0);
	if (n <= 0)
		die("reading the device state: %s", n < 0 ? strerror(errno) : "empty");
	state[n] = '\0';
	close(state_fd);
	char format[64] = "", id[64] = "";
	double size = 0, generation = 0, paused = 0;
	json_string(state, "format", format, sizeof(format));
	json_string(state, "id", id, sizeof(id));
	if (strcmp(format, STATE_FORMAT) != 0 || strcmp(id, vm_id) != 0 || !json_number(state, "size", &size) ||
	    !json_number(state, "generation", &generation) || !json_number(state, "paused_at", &paused))
		die("the device state is not this VMM's: %s", state);
	int ram = retrieve_fd(sessions[0], RAM_TOKEN);
	for (int i = 0; i < nsessions; i++) {
		struct luo_finish_arg fin = { .size = sizeof(fin) };
		if (ioctl(sessions[i], LUO_FINISH, &fin) < 0)
			die("FINISH: %s", strerror(errno));
		close(sessions[i]);
	}
	struct stat st;
	if (fstat(ram, &st) < 0)
		die("fstat: %s", strerror(errno));
	unsigned long long bytes = (unsigned long long)st.st_size;
	/* What cannot be run at all is refused before the resume (the guest stays paused). */
	if (bytes != (unsigned long long)size || bytes != g->size)
		die("RAM is %llu bytes, the device state says %.0f, --mem %llu", bytes, size, g->size);
	uint8_t page0[PATTERN_PAGE], want[PATTERN_PAGE];
	if (pread(ram, page0, PATTERN_PAGE, 0) != PATTERN_PAGE)
		die("reading page 0: %s", strerror(errno));
	g->generation = (unsigned long long)generation;
	if (g->generation == 0) {
		pattern_init();
		memcpy(want, pattern_chunk(0), PATTERN_PAGE);
	} else {
		header_page(want, g->generation);
	}
	if (memcmp(page0, want, PATTERN_PAGE) != 0)
		die("page 0 is not the vCPU's last write (generation %llu)", g->generation);

	close(g->ram);
	g->ram = ram;
	g->patterned = 0; /* page 0 only until the check has built the pattern */
	resume(g);
	long long resumed_at = wall_ms();
	timeline("resumed", update);
	long long blackout_ms = resumed_at - (long long)paused;
	char recorded[32];
	send_resumed(&c, update, (long long)paused, resumed_at, recorded, sizeof(recorded));
	conn_close(&c);

	/* The test's check, after the blackout: pages 1.. against the pattern, the guest running. */
	double verify_start = now_ms();
	if (!pattern)
		pattern_init();
	g->patterned = 1;
	uint8_t *map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, ram, 0);
	if (map == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	char error[160] = "";
	for (unsigned long long from = PATTERN_PAGE; from < bytes && !error[0];) {
		unsigned long long chunk_end = (from / PATTERN_CHUNK + 1) * (unsigned long long)PATTERN_CHUNK;
		unsigned long long to = from + VERIFY_CHUNK;
		if (to > chunk_end)
			to = chunk_end;
		if (to > bytes)
			to = bytes;
		const uint8_t *expect = pattern_chunk((long long)(from / PATTERN_CHUNK)) + from % PATTERN_CHUNK;
		if (memcmp(map + from, expect, to - from) != 0) {
			unsigned long long i = 0;
			while (map[from + i] == expect[i])
				i++;
			snprintf(error, sizeof(error), "first difference at byte %llu", from + i);
		}
		from = to;
		run_vcpu(g);
	}
	munmap(map, bytes);
	double verify_ms = now_ms() - verify_start;
	g->running = error[0] ? 0 : g->running;
	printf("{\"id\":\"%s\",\"verified\":%s,\"bytes\":%llu,\"blackout_ms\":%lld,\"recorded_blackout_ms\":%s,"
	       "\"update\":\"%s\",\"generation\":%llu,\"verify\":\"pattern\",\"verify_ms\":%.0f%s%s%s}\n",
	       vm_id, error[0] ? "false" : "true", bytes, blackout_ms, recorded, update, g->generation, verify_ms,
	       error[0] ? ",\"error\":\"" : "", error, error[0] ? "\"" : "");
	return error[0] ? 1 : 0;
}

/* ---- the command line ----------------------------------------------------- */

static unsigned long long parse_size(const char *text)
{
	char *end;
	unsigned long long v = strtoull(text, &end, 10);
	switch (*end) {
	case 'K': v <<= 10; end++; break;
	case 'M': v <<= 20; end++; break;
	case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end != '\0' || v == 0)
		die("--mem %s: a size such as 64M", text);
	return (v + PATTERN_PAGE - 1) / PATTERN_PAGE * PATTERN_PAGE;
}

static void usage(void)
{
	fprintf(stderr, "usage: luo_vmm --id ID --mem SIZE (--fill --verify pattern | --claim) [--socket PATH]\n"
			"               [--tick-ms MS] [--pages-per-tick N] [--timeline FILE] [--reconnect-timeout S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *path = getenv("LUOD_SOCKET"), *timeline_path = NULL, *mem = "64M", *verify = NULL;
	int fill_ram = 0;
	double reconnect_ms = 120000;
	struct guest g = { .tick_ms = 2, .pages_per_tick = 16, .rng = 0x9e3779b9u };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--fill"))
			fill_ram = 1;
		else if (!strcmp(a, "--claim"))
			claim_mode = 1;
		else if (!v)
			usage();
		else if (!strcmp(a, "--id"))
			vm_id = argv[++i];
		else if (!strcmp(a, "--mem"))
			mem = argv[++i];
		else if (!strcmp(a, "--socket"))
			path = argv[++i];
		else if (!strcmp(a, "--verify"))
			verify = argv[++i];
		else if (!strcmp(a, "--tick-ms"))
			g.tick_ms = atof(argv[++i]);
		else if (!strcmp(a, "--pages-per-tick"))
			g.pages_per_tick = atoi(argv[++i]);
		else if (!strcmp(a, "--timeline"))
			timeline_path = argv[++i];
		else if (!strcmp(a, "--reconnect-timeout"))
			reconnect_ms = atof(argv[++i]) * 1000;
		else
			usage();
	}
	if (!path)
		path = "/run/luod/liveupdate.sock";
	if (g.tick_ms <= 0 || g.pages_per_tick <= 0)
		usage();
	/* The one check this VMM knows: every byte against the pattern, as the floor. */
	if (!claim_mode && (!fill_ram || !verify || strcmp(verify, "pattern") != 0))
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (timeline_path) {
		timeline_fd = open(timeline_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
		if (timeline_fd < 0)
			die("--timeline %s: %s", timeline_path, strerror(errno));
	}
	g.size = parse_size(mem);
	g.ram = memfd_create("guest-ram", MFD_CLOEXEC);
	if (g.ram < 0 || ftruncate(g.ram, (off_t)g.size) < 0)
		die("guest RAM: %s", strerror(errno));
	if (claim_mode)
		return claim(&g, path, reconnect_ms);
	fill(&g);
	resume(&g);
	return serve(&g, path, reconnect_ms);
}
