#!/bin/sh
# A full live update through luod on the real kernel, in the guest (docs/vm.md).
#
# boot 0: luod (real /dev/liveupdate, its phase marks on the console with --timeline),
#         one example VMM per size in LUOKIT_SIZES (vm-1, vm-2, ...; guest RAM a memfd
#         filled with luokit's data pattern, its vCPU rewriting pages of it; --verify pattern:
#         checked after the reboot as the floor checks it), `luoctl load` of the
#         next kernel (this initramfs again, luokit.boot+1), then `luoctl update`: luod's
#         barrier, its state in luod-internal, kexec_file_load'ed kernel, reboot. Nothing
#         after the update returns unless the update failed.
# boot 1: luod (it recovers from luod-internal, then listens) and, at the same time, the VMMs
#         again with the same ids and --claim: each claims its session once luod listens,
#         resumes its guest, then compares every byte with the pattern, and prints one JSON
#         line, echoed as LUOKIT-VMM boot=1 id=ID result=JSON (the host's time of the last one
#         is "all memory verified"). Then luod's status (its whole timeline) to the output share.
# Every VMM puts its own pause (boot 0) and resume (boot 1) on the console (--timeline): the
# blackout runs from the first pause to the last resume (test/vm/blackout.ts).
#
# Logs go to the output share ($LUOKIT_OUT): luod.bootN.log, ID.bootN.log; the console
# carries only markers (it is a 115200-baud serial line).
# Environment: LUOKIT_GUEST_BIN (dist/: the bins of luod, luoctl, the example VMM), LUOKIT_SIZES (64M,128M,...),
# LUOKIT_SHMEM_THP (optional), LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
# LUOKIT_LOAD_FORCE=1 loads the next kernel whatever the gate says (the gate's verdict is in
# load.json). `luoctl qualify` runs the same luod and VMMs (vmm-lib.sh) inside its fuller
# workload (qualify.sh).
# Boot 1 also keeps the kernel's log (dmesg.boot1.txt): what KHO and LUO said of the handover.
# LUOKIT_NATIVE_VMM (optional): a native VMM with the example VMM's options (the bench's C VMM,
# test/vm/vmm/luo_vmm.c) instead of the example VMM: real VMMs are native programs, and Node
# starting three times in the next kernel competes with luod for the CPUs.
# LUOKIT_EARLY_HOLDER=1 (optional): in boot 1, start luod's fd holder process beside luod
# (as an init system would), so that its Node start overlaps luod's instead of following
# luod's restore; luod finds it listening and uses it as it would one it started itself.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BIN=${LUOKIT_GUEST_BIN:?}
OUT=${LUOKIT_OUT:?}
SIZES=${LUOKIT_SIZES:?}
BOOT=${LUOKIT_BOOT:-0}
SOCK=/run/luod/luod.sock
FORCE=""
[ -z "${LUOKIT_LOAD_FORCE:-}" ] || FORCE=--force

failed() {
  echo "LUOKIT-UPDATE-FAILED boot=$BOOT reason=$*"
  exit 1
}

# luoctl, start_luod, wait_for.
. "$DIR/luod-lib.sh"

# start_vmms_filled, start_vmms_claiming (they use wait_for).
. "$DIR/vmm-lib.sh"

case "$BOOT" in
  0)
    . "$DIR/next-boot.sh" || failed "$NEXT_ERROR"
    # A kernel without LUO cannot be qualified or tested here: say what is missing.
    if [ ! -e /dev/liveupdate ]; then
      echo "LUOKIT-INFRA boot=0 reason=no /dev/liveupdate: this kernel has no LUO (CONFIG_LIVEUPDATE) or ignored liveupdate=on"
      exit 125
    fi
    . "$DIR/shmem-thp.sh" || failed "$THP_ERROR"
    start_luod
    wait_for 120 "luod's socket" test -S "$SOCK"
    # The gate on the real kernel (#16): an image that cannot read this kernel's handover
    # (Debian's stock kernel, without KHO) is refused before anything is loaded or preserved.
    if [ -n "${LUOKIT_GATE_REFUSE:-}" ]; then
      if luoctl load "$LUOKIT_GATE_REFUSE" --initrd /sys/firmware/initrd --cmdline "$CMDLINE" --json \
        >"$OUT/gate-refused.json"; then
        failed "the gate loaded $LUOKIT_GATE_REFUSE"
      fi
      echo "LUOKIT-PHASE path=luod boot=0 phase=gate-refused"
    fi
    # One VMM at a time (vmm-lib.sh says why).
    start_vmms_filled
    echo "LUOKIT-PHASE path=luod boot=0 phase=subscribed"
    luoctl load "$KERNEL" --initrd /sys/firmware/initrd --cmdline "$CMDLINE" $FORCE --json >"$OUT/load.json" ||
      failed "luoctl load exited $? ($(cat "$OUT/load.json"))"
    luoctl update --timeout 120s --json >"$OUT/update.json"
    failed "luoctl update exited $? without a reboot: $(cat "$OUT/update.json")"
    ;;
  1)
    # luod and the VMMs start at once: a VMM's own start (Node, its bundle) overlaps luod's,
    # and it CLAIMs as soon as luod listens (the client library retries the connect).
    # LUOKIT_CPU_PROF=1 (investigations): V8 CPU profiles of boot 1's Node processes (luod,
    # the holder) in $OUT/cpu-prof, written when they exit.
    # (Node refuses --cpu-prof in NODE_OPTIONS: start_luod puts LUOD_NODE_FLAGS on its command line.)
    [ -z "${LUOKIT_CPU_PROF:-}" ] || LUOD_NODE_FLAGS="${LUOD_NODE_FLAGS:-} --cpu-prof --cpu-prof-dir=$OUT/cpu-prof"
    # luod first, as an init system would start it: everything in this boot waits for it
    # (the job's own commands are execs over the 9p share, slow in a fresh boot under TCG).
    # Its update record goes to the guest's tmpfs, copied to the output share once the VMs
    # run: a host's records directory is a local disk, and the share's fsync (9p, cache=none,
    # under TCG) took 0.3 to 2 s, which the claims wait for (docs/operations.md).
    LUOD_RECORDS=/run/luod/records
    start_luod
    if [ -n "${LUOKIT_EARLY_HOLDER:-}" ]; then
      # Its own session, as luod starts it: a signal to the job's group does not reach it.
      # (start_luod made /run/luod; luod uses this holder if it listens in time, else starts one.)
      setsid node ${LUOD_NODE_FLAGS:-} "$BIN/daemon/holder-bin.cjs" --socket "$SOCK.holder" </dev/null >/dev/null 2>&1 &
      # When it listens, for the report's reader (docs/vm.md): polled twice a second.
      (
        n=0
        until [ -S "$SOCK.holder" ] || [ "$n" -ge 120 ]; do
          sleep 0.5
          n=$((n + 1))
        done
        echo "LUOKIT-PHASE path=luod boot=1 phase=holder-listening"
      ) &
    fi
    echo "LUOKIT-PHASE path=luod boot=1 phase=vmms-start"
    start_vmms_claiming
    wait_for 120 "luod's socket" test -S "$SOCK"
    for pid in $PIDS; do wait "$pid"; done
    echo "LUOKIT-PHASE path=luod boot=1 phase=vmms-done"
    # After the VMs are back, not before: the kernel's log is evidence, not blackout.
    dmesg >"$OUT/dmesg.boot1.txt" 2>&1
    luoctl status --json >"$OUT/luod-status.boot1.json" || echo "LUOKIT-UPDATE-FAILED boot=1 reason=luoctl status exited $?"
    kill "$LUOD_PID"
    wait "$LUOD_PID"
    # Once luod has stopped: every write of the record is done.
    cp -r "$LUOD_RECORDS" "$OUT/" || echo "LUOKIT-UPDATE-FAILED boot=1 reason=cannot copy luod's records to the output share"
    exit 0
    ;;
  *)
    echo "luod-update.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
