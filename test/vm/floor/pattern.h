/*
 * luokit's data pattern in C (src/example-vmm/pattern.ts, byte for byte), for the
 * real-kernel bench's C programs: the floor (luo_floor.c) and the C VMM
 * (test/vm/vmm/luo_vmm.c). One 64 MiB chunk of xorshift32 words (seed
 * 0x2545f491), and on every 4 KiB page a 16-byte header `u32 0x424f554c, u32
 * chunk index, u64 file offset of the page` (little-endian, as on x86).
 */
#ifndef LUOKIT_PATTERN_H
#define LUOKIT_PATTERN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PATTERN_CHUNK (64u << 20)
#define PATTERN_PAGE 4096u
#define PATTERN_MAGIC 0x424f554cu
#define PATTERN_SEED 0x2545f491u

static uint32_t *pattern;	/* one chunk: the xorshift words, headers stamped for `stamped` */
static long long stamped = -1;

static void pattern_init(void)
{
	pattern = malloc(PATTERN_CHUNK);
	if (!pattern) {
		perror("luo_floor: malloc");
		exit(2);
	}
	uint32_t x = PATTERN_SEED;
	for (size_t i = 0; i < PATTERN_CHUNK / 4; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pattern[i] = x;
	}
}

/* The bytes of chunk `index` (every page's header stamped for it). */
static const uint8_t *pattern_chunk(long long index)
{
	if (stamped != index) {
		for (size_t page = 0; page < PATTERN_CHUNK / PATTERN_PAGE; page++) {
			uint64_t offset = (uint64_t)index * PATTERN_CHUNK + page * PATTERN_PAGE;
			uint32_t *w = pattern + page * (PATTERN_PAGE / 4);
			w[0] = PATTERN_MAGIC;
			w[1] = (uint32_t)index;
			w[2] = (uint32_t)offset;
			w[3] = (uint32_t)(offset >> 32);
		}
		stamped = index;
	}
	return (const uint8_t *)pattern;
}

#endif
