#!/bin/sh
# The blackout floor in the guest (docs/vm.md): luokit's minimal C program
# (test/vm/floor/luo_floor.c, built static by the runner) preserves memfds of the
# same sizes and pattern as the luod run's VMMs and kexecs itself; the next boot
# retrieves and verifies them. No Node, no luod: what the kernel alone costs.
#
# Environment (from the runner's job file): LUOKIT_FLOOR (the binary), LUOKIT_SIZES
# (64M,128M,...), LUOKIT_SHMEM_THP (optional), LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
FLOOR=${LUOKIT_FLOOR:?}
SIZES=${LUOKIT_SIZES:?}
case "${LUOKIT_BOOT:-0}" in
  0)
    . "$DIR/next-boot.sh" || {
      echo "LUOKIT-KEXEC-FAILED boot=$BOOT reason=$NEXT_ERROR"
      exit 1
    }
    . "$DIR/shmem-thp.sh" || {
      echo "LUOKIT-FLOOR-ERROR boot=0 reason=$THP_ERROR"
      exit 1
    }
    # Returns only when something failed (it printed LUOKIT-FLOOR-ERROR).
    "$FLOOR" preserve --sizes "$SIZES" --kernel "$KERNEL" --initrd /sys/firmware/initrd --cmdline "$CMDLINE"
    echo "LUOKIT-KEXEC-FAILED boot=0 reason=luo_floor-returned status=$?"
    exit 1
    ;;
  1)
    "$FLOOR" restore --sizes "$SIZES"
    status=$?
    # After the blackout and its checks, not during: Node's own start in the next kernel,
    # which a Node luod cannot start faster than (docs/vm.md, "luod-ready").
    . "$DIR/node-probe.sh"
    node_probe floor 1
    exit "$status"
    ;;
  *)
    echo "floor.sh: nothing to do in boot $LUOKIT_BOOT" >&2
    exit 1
    ;;
esac
