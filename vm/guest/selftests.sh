#!/bin/sh
# The kernel's own LUO selftests in the guest (docs/vm.md): unmodified, statically linked
# binaries built by scripts/build-selftests.sh --static from the kernel's own source.
#
# boot 0: `liveupdate` (15 tests, no kexec), then stage 1 of every kexec test (each forks a
#         holder for its sessions and exits), then the kexec (vm/guest/kexec-next.sh);
# boot 1: stage 2 of every kexec test, in the kernel the kexec started.
#
# Each program's output goes to $LUOKIT_OUT/<name>.boot<N>.txt and on the console; each
# result is one marker: LUOKIT-RESULT kind=selftest name=NAME stage=S status=EXIT-STATUS.
# The stage is given as `-s N` (7.3 dropped 7.2's `--stage N`; both accept `-s`).
# Environment (from the runner's job file): LUOKIT_SELFTESTS (directory of the binaries),
# LUOKIT_KEXEC_TESTS (names), LUOKIT_KERNELS, LUOKIT_BOOT, LUOKIT_OUT.
set -u
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BOOT=${LUOKIT_BOOT:-0}
ST=${LUOKIT_SELFTESTS:?}
OUT=${LUOKIT_OUT:?}
TESTS=${LUOKIT_KEXEC_TESTS:-luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files}

# run_selftest NAME STAGE ARGS...
. "$DIR/selftest-lib.sh"

case "$BOOT" in
  0)
    run_selftest liveupdate single
    for t in $TESTS; do
      run_selftest "$t" 1 -s 1
    done
    exec sh "$DIR/kexec-next.sh"
    ;;
  1)
    for t in $TESTS; do
      run_selftest "$t" 2 -s 2
    done
    ;;
  *)
    echo "selftests.sh: nothing to do in boot $BOOT" >&2
    exit 1
    ;;
esac
