/*
 * radix-walk: the C baseline of bench/radix.ts. Walks a KHO radix tree (kho-v4, see
 * src/abi/kho-radix.ts) in a memory image where byte pa is physical address pa, doing
 * what src/abi's walkRadixTreeRuns does, with the same checks:
 *   - node pointers page aligned, every node page read once (a page reached twice is a
 *     cycle or a shared node), every read inside the image;
 *   - keys with no order bit at or below bit 52 refused;
 *   - bitmap leaves scanned as src/abi scans them: a full leaf compared at once, others a
 *     64-bit word at a time through its transitions (the bits where runs start or end),
 *     consecutive blocks of one order merged into runs across words and leaves; per run,
 *     the same accumulation as the TypeScript visitor in bench/radix.ts (blocks and runs
 *     per order, a checksum).
 * Nodes are read with pread() as src/abi reads them from a SparseFileMemory: tables one
 * page each, leaves at consecutive addresses up to 64 at a time.
 *
 * Usage: radix-walk IMAGE ROOT_PA [REPEAT]
 * Prints one JSON line: {"ns":[wall per repeat],"cpu_ns":[CPU per repeat],
 * "orders":[[order,blocks,runs],...],"checksum":N}
 *
 * Built by the benchmark with `cc -O2`; not shipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
#define TABLE_ENTRIES 512u
#define ORDER0_LOG2 52u
#define ROOT_LEVEL 5
#define BITMAP_BITS 32768u
#define MAX_ORDER 53

static int fd;
static uint64_t image_size;

static uint64_t order_blocks[MAX_ORDER];
static uint64_t order_runs[MAX_ORDER];
static uint32_t checksum;

static int run_order = -1;
static uint8_t full_leaf[PAGE_SIZE];
static uint64_t run_first, run_blocks;

/* Open-addressing set of node pages already visited. */
static uint64_t *seen;
static size_t seen_cap, seen_len;

static void die(const char *what, uint64_t pa, const char *why) {
	fprintf(stderr, "radix-walk: %s at pa 0x%" PRIx64 ": %s\n", what, pa, why);
	exit(1);
}

static int seen_insert(uint64_t pa) {
	if ((seen_len + 1) * 2 > seen_cap) {
		size_t cap = seen_cap ? seen_cap * 2 : 1024;
		uint64_t *grown = calloc(cap, sizeof *grown);
		if (!grown) die("seen set", pa, "out of memory");
		for (size_t i = 0; i < seen_cap; i++) {
			uint64_t v = seen[i];
			if (!v) continue;
			size_t h = (size_t)((v >> 12) * 0x9e3779b97f4a7c15ull) & (cap - 1);
			while (grown[h]) h = (h + 1) & (cap - 1);
			grown[h] = v;
		}
		free(seen);
		seen = grown;
		seen_cap = cap;
	}
	/* pa 0 is never a node (the root is checked non-zero, children are non-zero). */
	size_t h = (size_t)((pa >> 12) * 0x9e3779b97f4a7c15ull) & (seen_cap - 1);
	while (seen[h]) {
		if (seen[h] == pa) return 0;
		h = (h + 1) & (seen_cap - 1);
	}
	seen[h] = pa;
	seen_len++;
	return 1;
}

static void visit(int order, uint64_t first, uint64_t blocks) {
	order_blocks[order] += blocks;
	order_runs[order]++;
	checksum = checksum * 31u + (uint32_t)first + (uint32_t)blocks * 7u + (uint32_t)order;
}

static inline void add(int order, uint64_t first, uint64_t blocks) {
	if (order == run_order && first == run_first + run_blocks) {
		run_blocks += blocks;
		return;
	}
	if (run_blocks) visit(run_order, run_first, run_blocks);
	run_order = order;
	run_first = first;
	run_blocks = blocks;
}

/* Reads `len` bytes at `pa`; 0 on success, else the reason. */
static const char *read_at(uint64_t pa, void *buf, size_t len) {
	if (pa > image_size || image_size - pa < len) return "not readable: past the end of memory";
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(pa + done));
		if (n <= 0) return n == 0 ? "unexpected end of file" : strerror(errno);
		done += (size_t)n;
	}
	return 0;
}

static void enter(uint64_t pa, const char *what, void *page) {
	if (pa % PAGE_SIZE) die(what, pa, "not page aligned");
	if (!seen_insert(pa)) die(what, pa, "reached a second time (cycle or shared node)");
	const char *why = read_at(pa, page, PAGE_SIZE);
	if (why) die(what, pa, why);
}

/* Not in the seen set yet (the set is only added to in enter/mark). */
static int seen_contains(uint64_t pa) {
	if (!seen_cap) return 0;
	size_t h = (size_t)((pa >> 12) * 0x9e3779b97f4a7c15ull) & (seen_cap - 1);
	while (seen[h]) {
		if (seen[h] == pa) return 1;
		h = (h + 1) & (seen_cap - 1);
	}
	return 0;
}

static int bit_length(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

static void scan_leaf(const uint64_t *words, uint64_t leaf_pa, uint64_t prefix) {
	if (prefix == 0 || prefix >= (1ull << (ORDER0_LOG2 + 1))) {
		/* Mixed or invalid orders: bit by bit. */
		for (uint32_t bit = 0; bit < BITMAP_BITS; bit++) {
			if (!(words[bit / 64] >> (bit % 64) & 1)) continue;
			uint64_t key = prefix | bit;
			int order_bit = bit_length(key) - 1;
			if (order_bit < 0 || order_bit > (int)ORDER0_LOG2) die("kho-radix-leaf", leaf_pa, "key encodes no page order");
			add((int)ORDER0_LOG2 - order_bit, key - (1ull << order_bit), 1);
		}
		return;
	}
	int order_bit = bit_length(prefix) - 1;
	int order = (int)ORDER0_LOG2 - order_bit;
	uint64_t leaf_first = prefix - (1ull << order_bit);
	/* Carry a run open at the end of the previous leaf into this one, if adjacent. */
	int64_t carried = -1;
	if (run_blocks) {
		if (run_order == order && run_first + run_blocks == leaf_first) carried = (int64_t)run_first;
		else visit(run_order, run_first, run_blocks);
		run_blocks = 0;
	}
	int64_t open = -1;
	if (!memcmp(words, full_leaf, PAGE_SIZE)) {
		/* A full leaf only extends or opens a run. */
		open = carried >= 0 ? carried : (int64_t)leaf_first;
	} else {
		/* Transitions: bits where a run starts or ends. */
		int64_t start = carried >= 0 ? 0 : -1;
		int64_t carried_first = carried;
		uint64_t previous = carried >= 0;
		for (uint32_t w = 0; w < PAGE_SIZE / 8; w++) {
			uint64_t v = words[w];
			uint64_t t = v ^ ((v << 1) | previous);
			previous = v >> 63;
			if (!t) continue;
			uint64_t base = (uint64_t)w * 64;
			do {
				int64_t bit = (int64_t)(base + __builtin_ctzll(t));
				t &= t - 1;
				if (start < 0) {
					start = bit;
				} else {
					uint64_t first = carried_first >= 0 ? (uint64_t)carried_first : leaf_first + start;
					visit(order, first, leaf_first + bit - first);
					carried_first = -1;
					start = -1;
				}
			} while (t);
		}
		if (start >= 0) open = carried_first >= 0 ? carried_first : (int64_t)(leaf_first + start);
	}
	if (open >= 0) {
		run_order = order;
		run_first = (uint64_t)open;
		run_blocks = leaf_first + BITMAP_BITS - (uint64_t)open;
	}
}

static void walk_leaf(uint64_t leaf_pa, uint64_t prefix) {
	uint64_t words[PAGE_SIZE / 8];
	enter(leaf_pa, "kho-radix-leaf", words);
	scan_leaf(words, leaf_pa, prefix);
}

/* As src/abi: leaves at consecutive addresses are read with one pread (up to LEAF_BATCH). */
#define LEAF_BATCH 64
static uint64_t batch[LEAF_BATCH][PAGE_SIZE / 8];

static void walk_leaves(const uint64_t *table, uint64_t prefix) {
	uint32_t i = 0;
	while (i < TABLE_ENTRIES) {
		uint64_t first = table[i];
		if (!first) {
			i++;
			continue;
		}
		uint32_t n = 0;
		while (n < LEAF_BATCH && i + n < TABLE_ENTRIES) {
			uint64_t pa = table[i + n];
			if (pa != first + (uint64_t)n * PAGE_SIZE || pa % PAGE_SIZE || seen_contains(pa)) break;
			n++;
		}
		if (n <= 1) {
			walk_leaf(first, prefix | ((uint64_t)i << 15));
			i++;
			continue;
		}
		if (read_at(first, batch, (size_t)n * PAGE_SIZE)) {
			for (uint32_t k = 0; k < n; k++) walk_leaf(first + (uint64_t)k * PAGE_SIZE, prefix | ((uint64_t)(i + k) << 15));
		} else {
			for (uint32_t k = 0; k < n; k++) {
				uint64_t pa = first + (uint64_t)k * PAGE_SIZE;
				seen_insert(pa);
				scan_leaf(batch[k], pa, prefix | ((uint64_t)(i + k) << 15));
			}
		}
		i += n;
	}
}

static void walk_table(uint64_t table_pa, int level, uint64_t prefix) {
	uint64_t table[TABLE_ENTRIES];
	enter(table_pa, "kho-radix-node", table);
	if (level == 1) {
		walk_leaves(table, prefix);
		return;
	}
	unsigned shift = (unsigned)(level - 1) * 9 + 15;
	for (uint32_t i = 0; i < TABLE_ENTRIES; i++) {
		uint64_t child = table[i];
		if (!child) continue;
		uint64_t child_prefix = prefix | ((uint64_t)i << shift);
		if (level == 1) walk_leaf(child, child_prefix);
		else walk_table(child, level - 1, child_prefix);
	}
}

static uint64_t now_ns(clockid_t clock) {
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: radix-walk IMAGE ROOT_PA [REPEAT]\n");
		return 2;
	}
	uint64_t root = strtoull(argv[2], NULL, 0);
	memset(full_leaf, 0xff, sizeof full_leaf);
	int repeat = argc > 3 ? atoi(argv[3]) : 1;
	uint64_t *cpu = calloc((size_t)(repeat > 0 ? repeat : 1), sizeof *cpu);
	printf("{\"ns\":[");
	for (int r = 0; r < repeat; r++) {
		memset(order_blocks, 0, sizeof order_blocks);
		memset(order_runs, 0, sizeof order_runs);
		checksum = 0;
		run_order = -1;
		run_first = run_blocks = 0;
		free(seen);
		seen = NULL;
		seen_cap = seen_len = 0;

		uint64_t t0 = now_ns(CLOCK_MONOTONIC);
		uint64_t c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
		fd = open(argv[1], O_RDONLY | O_CLOEXEC);
		if (fd < 0) die("image", 0, strerror(errno));
		struct stat st;
		if (fstat(fd, &st) < 0) die("image", 0, strerror(errno));
		image_size = (uint64_t)st.st_size;
		if (!root) die("kho-radix-node", 0, "the preserved-memory-map root is zero");
		walk_table(root, ROOT_LEVEL, 0);
		if (run_blocks) visit(run_order, run_first, run_blocks);
		close(fd);
		cpu[r] = now_ns(CLOCK_PROCESS_CPUTIME_ID) - c0;
		uint64_t t1 = now_ns(CLOCK_MONOTONIC);
		printf("%s%" PRIu64, r ? "," : "", t1 - t0);
	}
	printf("],\"cpu_ns\":[");
	for (int r = 0; r < repeat; r++) printf("%s%" PRIu64, r ? "," : "", cpu[r]);
	printf("],\"orders\":[");
	int firstOut = 1;
	for (int o = 0; o < MAX_ORDER; o++) {
		if (!order_runs[o]) continue;
		printf("%s[%d,%" PRIu64 ",%" PRIu64 "]", firstOut ? "" : ",", o, order_blocks[o], order_runs[o]);
		firstOut = 0;
	}
	printf("],\"checksum\":%" PRIu32 "}\n", checksum);
	return 0;
}
