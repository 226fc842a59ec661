#!/bin/sh
# A real QEMU VM across a real kernel live update through luod, in the guest (docs/vm.md,
# docs/qemu.md): QEMU inside the bench guest (the host's qemu-system-x86_64, seen through
# the read-only share), running the counter guest (native/counter-guest/counter.S) under
# nested TCG, with its guest RAM a memfd luo-qemu owns.
#
# boot 0: luod (real /dev/liveupdate, --timeline on the console), then
#         `luo-qemu --id qvm-1 --ram $RAM -- qemu-system-x86_64 ... -serial file:serial.boot0.txt`
#         (cold boot: nothing to claim); once the counter has run for a few seconds of its
#         CMOS clock, the guest's clock samples, `luoctl load` and `luoctl update` (luod's
#         barrier: luo-qemu preserves the RAM memfd, stops QEMU, saves the device state,
#         READY; then the real kexec).
# boot 1: luod and the SAME luo-qemu command (only the serial file differs) at once:
#         luo-qemu waits for luod's socket (luod listens once it recovered), claims qvm-1,
#         loads the device state into a fresh QEMU and continues the guest. Once the counter
#         ran a few more CMOS seconds: the clock samples, luod's status, luo-qemu stopped
#         (SIGTERM: QEMU quits), luod stopped.
#
# The host (test/vm/qemu-update.ts) reads the two serial files: the counter must go on with
# no banner (no guest reboot) and the same RAM sum, and the guest's own clocks give its pause.
#
# Console markers (the host stamps each with its own time):
#   LUOKIT-PHASE path=qemu boot=N phase=qemu-EVENT   a luo-qemu log event (subscribed, saved,
#                                                     kexec, claimed, qemu-start, continued)
#   LUOKIT-CLOCK boot=N realtime=S.NNNNNNNNN         this kernel's CLOCK_REALTIME, which the
#                                                     nested QEMU's CMOS clock follows: the host
#                                                     measures how far it stepped across the kexec
#   LUOKIT-QEMU-EXIT boot=1 status=S                 luo-qemu's exit status after SIGTERM
#   LUOKIT-QEMU-FAILED boot=N reason=...             the job gave up
# Logs go to the output share: luod.bootN.log, luo-qemu.bootN.log, serial.bootN.txt.
# Environment: LUOKIT_GUEST_BIN (dist/: the bins of luod, luoctl, luo-qemu), LUOKIT_COUNTER_IMAGE,
# LUOKIT_QEMU_RAM, LUOKIT_QEMU_EDGES (CMOS second changes to see on each side),
# LUOKIT_QEMU_WAIT (seconds, per wait), LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BIN=${LUOKIT_GUEST_BIN:?}
OUT=${LUOKIT_OUT:?}
RAM=${LUOKIT_QEMU_RAM:-32M}
EDGES=${LUOKIT_QEMU_EDGES:-4}
WAIT=${LUOKIT_QEMU_WAIT:-240}
BOOT=${LUOKIT_BOOT:-0}
SOCK=/run/luod/luod.sock
ID=qvm-1
# The floppy image is opened read-write: a copy on the writable share, the same path in both boots.
IMG=$OUT/counter.img
SERIAL=$OUT/serial.boot$BOOT.txt
LUOD_PID=""
LQ_PID=""

failed() {
  echo "LUOKIT-QEMU-FAILED boot=$BOOT reason=$*"
  [ -z "$LQ_PID" ] || kill "$LQ_PID" 2>/dev/null
  exit 1
}

# luoctl, start_luod, wait_for.
. "$DIR/luod-lib.sh"

# start_luo_qemu, edges, wait_edges, clock_samples.
. "$DIR/luo-qemu-lib.sh"

case "$BOOT" in
  0)
    . "$DIR/next-boot.sh" || failed "$NEXT_ERROR"
    cp "${LUOKIT_COUNTER_IMAGE:?}" "$IMG" || failed "cannot copy the counter guest image"
    start_luod
    wait_for 120 "luod's socket" test -S "$SOCK"
    start_luo_qemu
    wait_edges "$SERIAL" "$EDGES" || exit 1
    clock_samples
    luoctl load "$KERNEL" --initrd /sys/firmware/initrd --cmdline "$CMDLINE" --json >"$OUT/load.json" ||
      failed "luoctl load exited $? ($(cat "$OUT/load.json"))"
    luoctl update --timeout 120s --json >"$OUT/update.json"
    failed "luoctl update exited $? without a reboot: $(cat "$OUT/update.json")"
    ;;
  1)
    start_luod
    start_luo_qemu
    # The serial file of boot 1 holds only what the guest printed after it continued.
    wait_edges "$SERIAL" "$EDGES" || exit 1
    clock_samples
    luoctl status --json >"$OUT/luod-status.boot1.json" || echo "LUOKIT-QEMU-FAILED boot=1 reason=luoctl status exited $?"
    # SIGTERM: luo-qemu quits QEMU through QMP, unsubscribes, and exits.
    kill "$LQ_PID"
    wait "$LQ_PID"
    echo "LUOKIT-QEMU-EXIT boot=1 status=$?"
    kill "$LUOD_PID"
    wait "$LUOD_PID"
    exit 0
    ;;
  *)
    echo "qemu-update.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
