#!/bin/sh
# `luoctl qualify`'s workload in the guest (src/qualify/real.ts; docs/qualify.md): everything
# live-updated at once, by ONE kexec (luod's), from boot 0 on kernel A into boot 1 on kernel B.
# Each part is optional (its variable unset: not run); the host records which ran.
#
# boot 0 (A), in this order, because /dev/liveupdate has one opener at a time and luod opens
# it during its update: what does not go through luod is set up first and left holding.
#   1. LUOKIT_SELFTESTS: the kernel's own selftests: `liveupdate` (no kexec), then stage 1 of
#      every kexec test in LUOKIT_KEXEC_TESTS (each forks a holder for its sessions and exits);
#   2. LUOKIT_SCENARIOS: the scenario suite's two-stage scenarios (a Node program,
#      LUOKIT_SCENARIO_MODE=qualify): their before-kexec stages, then the program keeps
#      holding their sessions (scenarios.boot0.json written);
#   3. luod (real /dev/liveupdate); LUOKIT_COUNTER_IMAGE: a QEMU VM through luo-qemu (the
#      counter guest under nested TCG, its RAM a memfd luo-qemu owns), started now;
#   4. one example VMM per size in LUOKIT_SIZES, each memfd filled with the data pattern in a
#      session of its own (vmm-lib.sh), then the QEMU VM run until its CMOS clock changed
#      LUOKIT_QEMU_EDGES times;
#   5. `luoctl load B --force` (the gate's verdict kept in load.json), `luoctl update`: luod's
#      barrier, luod-internal, kexec_file_load, reboot. Everything above crosses this kexec.
# boot 1 (B): luod, the VMMs (--claim) and the same luo-qemu command at once (the VMs first:
#   their blackout is the one that matters); once every VMM verified its bytes and the counter
#   ran LUOKIT_QEMU_EDGES more seconds: stage 2 of every kexec selftest, the scenarios'
#   after-kexec stages, the kernel's log, luod's status; luo-qemu and luod stopped.
# A failure in boot 0 ends the run before the kexec (LUOKIT-QUALIFY-FAILED); in boot 1 every
# part runs whatever another did, so the record has every check's evidence.
#
# Console markers: LUOKIT-RESULT kind=selftest|scenario ..., LUOKIT-VMM boot=1 id=ID result=JSON,
# LUOKIT-PHASE path=luod|qemu|qualify boot=N phase=..., LUOKIT-CLOCK, LUOKIT-QEMU-EXIT boot=1 status=S,
# LUOKIT-QUALIFY-FAILED boot=N part=PART reason=... Logs and outputs go to the output share.
# Environment: LUOKIT_GUEST_BIN (dist/), LUOKIT_SIZES, LUOKIT_SELFTESTS, LUOKIT_KEXEC_TESTS,
# LUOKIT_SCENARIOS, LUOKIT_COUNTER_IMAGE, LUOKIT_QEMU_RAM, LUOKIT_QEMU_EDGES, LUOKIT_QEMU_WAIT,
# LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BIN=${LUOKIT_GUEST_BIN:?}
OUT=${LUOKIT_OUT:?}
SIZES=${LUOKIT_SIZES:?}
BOOT=${LUOKIT_BOOT:-0}
SOCK=/run/luod/luod.sock
ST=${LUOKIT_SELFTESTS:-}
TESTS=${LUOKIT_KEXEC_TESTS:-luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files}
SCENARIOS=${LUOKIT_SCENARIOS:-}
COUNTER=${LUOKIT_COUNTER_IMAGE:-}
RAM=${LUOKIT_QEMU_RAM:-32M}
EDGES=${LUOKIT_QEMU_EDGES:-4}
WAIT=${LUOKIT_QEMU_WAIT:-240}
ID=qvm-1
IMG=$OUT/counter.img
SERIAL=$OUT/serial.boot$BOOT.txt
LUOD_PID=""
LQ_PID=""
PART=setup
# The selftests' output goes to files only: the console is a 115200-baud serial line.
QUIET=1

failed() {
  echo "LUOKIT-QUALIFY-FAILED boot=$BOOT part=$PART reason=$*"
  if [ "$BOOT" = 0 ]; then
    [ -z "$LQ_PID" ] || kill "$LQ_PID" 2>/dev/null
    exit 1
  fi
  return 1
}

phase() {
  echo "LUOKIT-PHASE path=qualify boot=$BOOT phase=$1"
}

# luoctl, start_luod, wait_for; start_vmms_filled, start_vmms_claiming; start_luo_qemu, wait_edges,
# clock_samples; run_selftest.
. "$DIR/luod-lib.sh"
. "$DIR/vmm-lib.sh"
. "$DIR/luo-qemu-lib.sh"
. "$DIR/selftest-lib.sh"

# The scenario program: its markers on the console, its errors in a file.
run_scenarios() {
  LUOKIT_SCENARIO_MODE=qualify node "$SCENARIOS" 2>"$OUT/scenarios.boot$BOOT.log"
}

case "$BOOT" in
  0)
    . "$DIR/next-boot.sh" || failed "$NEXT_ERROR"
    # A kernel without LUO cannot be qualified here: say what is missing.
    if [ ! -e /dev/liveupdate ]; then
      echo "LUOKIT-INFRA boot=0 reason=no /dev/liveupdate: this kernel has no LUO (CONFIG_LIVEUPDATE) or ignored liveupdate=on"
      exit 125
    fi
    if [ -n "$ST" ]; then
      PART=selftests
      run_selftest liveupdate single
      for t in $TESTS; do
        run_selftest "$t" 1 -s 1
      done
      phase selftests-held
    fi
    if [ -n "$SCENARIOS" ]; then
      PART=scenarios
      run_scenarios &
      SC_PID=$!
      k=0
      until [ -f "$OUT/scenarios.boot0.json" ]; do
        k=$((k + 1))
        [ "$k" -lt 3000 ] || failed "timeout: the scenarios' before-kexec stages did not finish in 300 s"
        kill -0 "$SC_PID" 2>/dev/null || failed "the scenario program exited (see scenarios.boot0.log)"
        sleep 0.1
      done
      # The results are written before the program says it holds; give it that moment.
      sleep 1
      kill -0 "$SC_PID" 2>/dev/null || failed "the scenario program exited after its stages (see scenarios.boot0.log)"
      phase scenarios-held
    fi
    PART=luod
    start_luod
    wait_for 120 "luod's socket" test -S "$SOCK"
    # The QEMU VM boots (SeaBIOS, under nested TCG: the longest step of boot 0) while the
    # VMMs fill their RAM.
    if [ -n "$COUNTER" ]; then
      PART=qemu
      cp "$COUNTER" "$IMG" || failed "cannot copy the counter guest image"
      start_luo_qemu
    fi
    PART=luod
    start_vmms_filled
    echo "LUOKIT-PHASE path=luod boot=0 phase=subscribed"
    if [ -n "$COUNTER" ]; then
      PART=qemu
      wait_edges "$SERIAL" "$EDGES"
      clock_samples
      phase qemu-running
    fi
    PART=update
    luoctl load "$KERNEL" --initrd /sys/firmware/initrd --cmdline "$CMDLINE" --force --json >"$OUT/load.json" ||
      failed "luoctl load exited $? ($(cat "$OUT/load.json"))"
    luoctl update --timeout 120s --json >"$OUT/update.json"
    failed "luoctl update exited $? without a reboot: $(cat "$OUT/update.json")"
    ;;
  1)
    PART=luod
    start_luod
    echo "LUOKIT-PHASE path=luod boot=1 phase=vmms-start"
    start_vmms_claiming
    if [ -n "$COUNTER" ]; then
      PART=qemu
      start_luo_qemu
    fi
    PART=luod
    wait_for 120 "luod's socket" test -S "$SOCK"
    for pid in $PIDS; do wait "$pid"; done
    echo "LUOKIT-PHASE path=luod boot=1 phase=vmms-done"
    if [ -n "$COUNTER" ]; then
      PART=qemu
      # The serial file of boot 1 holds only what the guest printed after it continued.
      wait_edges "$SERIAL" "$EDGES" && clock_samples
      phase qemu-running
    fi
    # luod opened /dev/liveupdate to restore and closed it: the others may open it now.
    if [ -n "$ST" ]; then
      PART=selftests
      for t in $TESTS; do
        run_selftest "$t" 2 -s 2
      done
    fi
    if [ -n "$SCENARIOS" ]; then
      PART=scenarios
      run_scenarios || failed "the scenario program exited $?"
    fi
    # After the VMs are back, not before: the kernel's log is evidence, not blackout.
    dmesg >"$OUT/dmesg.boot1.txt" 2>&1
    PART=luod
    luoctl status --json >"$OUT/luod-status.boot1.json" || failed "luoctl status exited $?"
    if [ -n "$LQ_PID" ]; then
      # SIGTERM: luo-qemu quits QEMU through QMP, unsubscribes, and exits.
      kill "$LQ_PID"
      wait "$LQ_PID"
      echo "LUOKIT-QEMU-EXIT boot=1 status=$?"
    fi
    kill "$LUOD_PID"
    wait "$LUOD_PID"
    exit 0
    ;;
  *)
    echo "qualify.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
