# Sourced by the guest jobs that run example VMMs through luod (luod-update.sh, qualify.sh),
# once they set BIN, OUT, SOCK and SIZES (64M,128M,...) and define wait_for SECONDS WHAT CMD...:
# one example VMM per size, vm-1, vm-2, ... (guest RAM a memfd filled with luokit's data
# pattern, its vCPU rewriting pages of it; --verify pattern: checked after the reboot).

# Light vCPUs: three VMMs on two emulated CPUs must leave luod room to work.
VCPU="--tick-ms 10 --pages-per-tick 4"
# Each VMM's pause and resume, as they happen, for the host to stamp.
MARKS="--timeline /dev/console"
# The VMM program (word-split: the guest's paths have no spaces). LUOKIT_NATIVE_VMM (optional):
# a native VMM with the example VMM's options (the bench's C VMM, test/vm/vmm/luo_vmm.c): real
# VMMs are native programs, and Node starting three times in the next kernel competes with luod.
VMM="node $BIN/example-vmm/vmm-bin.cjs"
[ -z "${LUOKIT_NATIVE_VMM:-}" ] || VMM=$LUOKIT_NATIVE_VMM

subscribed() {
  grep -q '"msg":"subscribed"' "$OUT/$1.boot0.log" 2>/dev/null
}

# Boot 0: one VMM at a time, each once the one before has filled its RAM and subscribed:
# VMMs filling at once interleave their page allocations, and the next kernel's KHO restore
# cost grows with the number of discontiguous preserved ranges (docs/vm.md, the kexec
# phase). The floor fills its memfds one after another too.
start_vmms_filled() {
  i=0
  for size in $(echo "$SIZES" | tr , ' '); do
    i=$((i + 1))
    $VMM --id "vm-$i" --mem "$size" --fill --verify pattern $VCPU $MARKS --socket "$SOCK" \
      >"$OUT/vm-$i.boot0.out" 2>"$OUT/vm-$i.boot0.log" &
    wait_for 300 "vm-$i to subscribe" subscribed "vm-$i"
  done
}

# Boot 1: the VMMs again with the same ids and --claim, all at once: each claims its session
# once luod listens, resumes its guest, compares every byte with the pattern, and prints one
# JSON line, echoed as LUOKIT-VMM boot=1 id=ID result=JSON. Sets PIDS (wait for them).
# ${LUOKIT_VMM_NICE} (default 0) lowers the VMMs' priority, so that luod, on which every VMM
# waits, gets the CPUs first.
start_vmms_claiming() {
  PIDS=""
  i=0
  for size in $(echo "$SIZES" | tr , ' '); do
    i=$((i + 1))
    (
      nice -n "${LUOKIT_VMM_NICE:-0}" $VMM --id "vm-$i" --mem "$size" --claim $VCPU $MARKS --socket "$SOCK" \
        2>"$OUT/vm-$i.boot1.log" | while IFS= read -r line; do
        echo "LUOKIT-VMM boot=1 id=vm-$i result=$line"
      done
    ) &
    PIDS="$PIDS $!"
  done
}
