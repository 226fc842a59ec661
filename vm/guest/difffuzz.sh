#!/bin/sh
# The differential fuzzer on the real kernel (docs/vm.md, docs/emulator.md): the statically
# linked test/differential/luofuzz.c, built on the host before the guest starts.
#
# boot 0: the directed scenarios of test/emu-parity/parity.c (LUOKIT_PARITY, one run per
#         scenario of LUOKIT_PARITY_SCENARIOS, output in $LUOKIT_OUT/parity.<scenario>.txt,
#         marker LUOKIT-RESULT kind=parity name=SCENARIO status=S); then stage 1 of every
#         seed on /dev/liveupdate (its holder process keeps the sessions each seed left
#         open), then the kexec (vm/guest/kexec-next.sh);
# boot 1: stage 2 of every seed, in the kernel the kexec started.
#
# Traces go to $LUOKIT_OUT/fuzz.stage<N>.txt; one marker per stage:
# LUOKIT-RESULT kind=difffuzz stage=N status=EXIT-STATUS.
# Environment (from the runner's job file): LUOFUZZ (the binary), LUOFUZZ_ARGS (`--ops N`),
# LUOFUZZ_SEEDS, LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BOOT=${LUOKIT_BOOT:-0}
OUT=${LUOKIT_OUT:?}
FUZZ=${LUOFUZZ:?}

stage() {
  # shellcheck disable=SC2086 # LUOFUZZ_ARGS and LUOFUZZ_SEEDS are word lists
  "$FUZZ" ${LUOFUZZ_ARGS:-} "stage$1" $LUOFUZZ_SEEDS >"$OUT/fuzz.stage$1.txt" 2>"$OUT/fuzz.stage$1.err"
  status=$?
  cat "$OUT/fuzz.stage$1.err"
  echo "LUOKIT-RESULT kind=difffuzz stage=$1 status=$status lines=$(wc -l <"$OUT/fuzz.stage$1.txt")"
}

case "$BOOT" in
  0)
    for s in ${LUOKIT_PARITY_SCENARIOS:-}; do
      "$LUOKIT_PARITY" "$s" >"$OUT/parity.$s.txt" 2>&1
      echo "LUOKIT-RESULT kind=parity name=$s status=$?"
    done
    stage 1
    exec sh "$DIR/kexec-next.sh"
    ;;
  1)
    stage 2
    ;;
  *)
    echo "difffuzz.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
