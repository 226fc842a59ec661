/*
 * The LUO uAPI as luokit's C programs use it: the /dev/liveupdate ioctl numbers
 * and their argument structs, written by luokit from the facts of the kernel's
 * include/uapi/linux/liveupdate.h (Linux 7.2 and 7.3). One owner on the C side,
 * so that the emulator's shim, its probe, the differential fuzzer, the parity
 * scenarios, the C client and the real-kernel floor cannot drift apart;
 * src/uapi/ioctl.ts and src/uapi/structs.ts are its TypeScript twin, and
 * test/uapi-c-header.test.ts checks that the two say the same.
 *
 * Every command is _IO(0xBA, nr): no direction or size bits, because each
 * struct starts with its own size (the kernel tells versions apart by it).
 * Device commands are at nr 0x00.., session commands at 0x40...
 */
#ifndef LUOKIT_LIVEUPDATE_H
#define LUOKIT_LIVEUPDATE_H

#include <stdint.h>

#define LUO_IOCTL_TYPE 0xBAu
/* A session name's field, NUL included. */
#define LUO_NAME_LEN 64
#define LUO_IOCTL(nr) ((LUO_IOCTL_TYPE << 8) | (nr))

/* On /dev/liveupdate. */
#define LUO_CREATE_SESSION LUO_IOCTL(0x00u)
#define LUO_RETRIEVE_SESSION LUO_IOCTL(0x01u)
/* On a session fd. */
#define LUO_PRESERVE_FD LUO_IOCTL(0x40u)
#define LUO_RETRIEVE_FD LUO_IOCTL(0x41u)
#define LUO_FINISH LUO_IOCTL(0x42u)
#define LUO_GET_NAME LUO_IOCTL(0x43u) /* since 7.2 */

/* CREATE_SESSION and RETRIEVE_SESSION: the name in, the session fd out. */
struct luo_session_arg {
	uint32_t size;
	int32_t fd;
	char name[LUO_NAME_LEN];
};

/* PRESERVE_FD (a file in) and RETRIEVE_FD (a file out), by token. */
struct luo_fd_arg {
	uint32_t size;
	int32_t fd;
	uint64_t token __attribute__((aligned(8)));
};

/* FINISH: nothing but the size (reserved must be zero). */
struct luo_finish_arg {
	uint32_t size;
	uint32_t reserved;
};

/* GET_NAME: the session's name out (reserved must be zero). */
struct luo_get_name_arg {
	uint32_t size;
	uint32_t reserved;
	char name[LUO_NAME_LEN];
};

_Static_assert(sizeof(struct luo_session_arg) == 72, "luo_session_arg layout");
_Static_assert(sizeof(struct luo_fd_arg) == 16, "luo_fd_arg layout");
_Static_assert(sizeof(struct luo_finish_arg) == 8, "luo_finish_arg layout");
_Static_assert(sizeof(struct luo_get_name_arg) == 72, "luo_get_name_arg layout");

#endif
