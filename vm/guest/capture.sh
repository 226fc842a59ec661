#!/bin/sh
# The capture part of the real-kernel bench in the guest (docs/vm.md, test/vm/capture.ts):
#
# boot 0: the guest program preserves a known set of sessions through luokit's real backend,
#         writes what it preserved to $LUOKIT_OUT/capture-expected.json and runs the kexec
#         itself (holding the sessions while the kernel goes away);
# boot 1: the host has already dumped the guest's memory (QMP stop, dump-guest-memory, cont)
#         when this kernel's early console printed its banner, before the kernel's KHO and
#         LUO early init free the radix tree and luo_ser (docs/vm.md); here, before anything
#         opens /dev/liveupdate, copies debugfs kho/in (the root FDT and every
#         sub_fdts/NAME) to $LUOKIT_OUT/kho-in/, prints LUOKIT-CAPTURE, and waits for the
#         host's go ($LUOKIT_OUT/dump-taken: `ok` or why the dump failed); then the program
#         retrieves everything and checks it.
#
# Environment (from the runner's job file): LUOKIT_CAPTURE_PROGRAM (the command that runs
# test/vm/guest-capture.ts), LUOKIT_CAPTURE_WAIT (seconds to wait for the dump, default
# 300), LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
BOOT=${LUOKIT_BOOT:-0}
OUT=${LUOKIT_OUT:?}
PROGRAM=${LUOKIT_CAPTURE_PROGRAM:?}
WAIT=${LUOKIT_CAPTURE_WAIT:-300}

case "$BOOT" in
  0)
    eval "exec $PROGRAM preserve"
    ;;
  1)
    IN=/sys/kernel/debug/kho/in
    if [ ! -f "$IN/fdt" ]; then
      echo "LUOKIT-CAPTURE-PROBLEM boot=1 no $IN/fdt: this kernel did not boot from a KHO handover"
      exit 1
    fi
    mkdir -p "$OUT/kho-in/sub_fdts"
    cp "$IN/fdt" "$OUT/kho-in/fdt" || exit 1
    for f in "$IN"/sub_fdts/*; do
      if [ -f "$f" ]; then cp "$f" "$OUT/kho-in/sub_fdts/" || exit 1; fi
    done
    sync
    echo "LUOKIT-CAPTURE boot=1 fdt=$OUT/kho-in/fdt subtrees=$(ls "$OUT/kho-in/sub_fdts" | tr '\n' ',')"
    waited=0
    while [ ! -e "$OUT/dump-taken" ]; do
      if [ "$waited" -ge "$((WAIT * 5))" ]; then
        echo "LUOKIT-CAPTURE-PROBLEM boot=1 the host took no memory dump within $WAIT s"
        exit 1
      fi
      sleep 0.2
      waited=$((waited + 1))
    done
    echo "LUOKIT-CAPTURE-RESUMED boot=1 dump=$(cat "$OUT/dump-taken")"
    eval "exec $PROGRAM verify"
    ;;
  *)
    echo "capture.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
