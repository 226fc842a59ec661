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

# luoctl and start_luod.
. "$DIR/luod-lib.sh"

# The same command in both boots but for the serial file. Its log goes through a FIFO to a
# reader that keeps it on the share and puts its events on the console as phase marks.
start_luo_qemu() {
  fifo=/run/luo-qemu.log.fifo
  rm -f "$fifo"
  mkfifo "$fifo" || failed "mkfifo $fifo"
  (
    while IFS= read -r line; do
      printf '%s\n' "$line" >>"$OUT/luo-qemu.boot$BOOT.log"
      case "$line" in
        *'"event":"'*)
          event=${line#*\"event\":\"}
          event=${event%%\"*}
          case "$event" in
            qemu-*) ;;
            *) event=qemu-$event ;;
          esac
          echo "LUOKIT-PHASE path=qemu boot=$BOOT phase=$event"
          ;;
      esac
    done <"$fifo"
  ) &
  node "$BIN/cli/luo-qemu-bin.cjs" --id "$ID" --ram "$RAM" --socket "$SOCK" --state-dir /run/luo-qemu --luod-timeout 300 -- \
    qemu-system-x86_64 -accel tcg,tb-size=32 -nodefaults -nographic -display none \
    -drive "file=$IMG,format=raw,if=floppy" -serial "file:$SERIAL" \
    >"$OUT/luo-qemu.boot$BOOT.out" 2>"$fifo" &
  LQ_PID=$!
}

# How many times the counter guest's CMOS clock (R=) changed in FILE.
edges() {
  n=$(grep -ao 'R=[0-9]*' "$1" 2>/dev/null | uniq | wc -l)
  [ "$n" -gt 0 ] && n=$((n - 1))
  echo "$n"
}

# wait_edges FILE N: until the counter printed N changes of its CMOS second into FILE.
wait_edges() {
  limit=$((WAIT * 10))
  k=0
  until [ "$(edges "$1")" -ge "$2" ]; do
    k=$((k + 1))
    [ "$k" -lt "$limit" ] || failed "timeout: the counter guest printed $(edges "$1") CMOS second changes into $(basename "$1") in ${WAIT}s, waiting for $2"
    kill -0 "$LQ_PID" 2>/dev/null || failed "luo-qemu exited (see luo-qemu.boot$BOOT.log)"
    kill -0 "$LUOD_PID" 2>/dev/null || failed "luod exited (see luod.boot$BOOT.log)"
    sleep 0.1
  done
}

# This kernel's wall clock, a few samples: the host takes the one least delayed.
clock_samples() {
  for _ in 1 2 3 4 5 6; do
    echo "LUOKIT-CLOCK boot=$BOOT realtime=$(date +%s.%N)"
  done
}

case "$BOOT" in
  0)
    . "$DIR/next-boot.sh" || failed "$NEXT_ERROR"
    cp "${LUOKIT_COUNTER_IMAGE:?}" "$IMG" || failed "cannot copy the counter guest image"
    start_luod
    k=0
    until [ -S "$SOCK" ]; do
      k=$((k + 1))
      [ "$k" -lt 1200 ] || failed "timeout waiting for luod's socket"
      kill -0 "$LUOD_PID" 2>/dev/null || failed "luod exited (see luod.boot$BOOT.log)"
      sleep 0.1
    done
    start_luo_qemu
    wait_edges "$SERIAL" "$EDGES"
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
    wait_edges "$SERIAL" "$EDGES"
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
