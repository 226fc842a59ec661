#!/bin/sh
# Build the kernel's LUO selftests, unmodified and statically linked, for the real-kernel
# bench's guest (docs/vm.md), from Debian's linux-source-VERSION as vm/build-kernel.sh
# extracted it:
#
#   vm/build-selftests.sh VERSION     prints the output directory on stdout
#
#   ~/.cache/luokit/vm-selftests/VERSION/{liveupdate,luo_kexec_simple,luo_multi_session,
#                                         luo_stress_sessions,luo_stress_files}
#
# Both source layouts: 7.2 (luo_test_utils.c next to the tests) and 7.3 (lib/lu_utils.c,
# lib/include/libliveupdate.h). scripts/build-selftests.sh builds the dynamically linked
# 7.2 binaries the emulator's LD_PRELOAD shim needs; it does not know the 7.3 layout.
# Rebuilds only when a source file, the compiler or this script changed.
#
# Needs make, gcc and the static C library (Debian: libc6-dev). Exit status: 0 built or
# reused; 1 the build failed; 3 infrastructure (no source: run vm/build-kernel.sh VERSION).
set -eu

VERSION=${1:-7.2}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
KSRC="$CACHE/src/linux-source-$VERSION"
OUT="$CACHE/vm-selftests/$VERSION"
CC=${CC:-gcc}
PROGRAMS="liveupdate luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files"
SELFTESTS="$KSRC/tools/testing/selftests"
TESTDIR="$SELFTESTS/liveupdate"

log() { echo "build-selftests: $*" >&2; }
die() {
  log "$*"
  exit 1
}
infra() {
  log "INFRASTRUCTURE: $*"
  exit 3
}

[ -f "$TESTDIR/liveupdate.c" ] || infra "$TESTDIR/liveupdate.c is missing (run vm/build-kernel.sh $VERSION first)"
for tool in make "$CC" sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || infra "'$tool' is missing (Debian: apt-get install gcc make libc6-dev)"
done

if [ -f "$TESTDIR/lib/lu_utils.c" ]; then
  UTILS="$TESTDIR/lib/lu_utils.c"
  UTILS_INC="-I$TESTDIR/lib/include"
elif [ -f "$TESTDIR/luo_test_utils.c" ]; then
  UTILS="$TESTDIR/luo_test_utils.c"
  UTILS_INC=""
else
  die "neither lib/lu_utils.c (7.3) nor luo_test_utils.c (7.2) in $TESTDIR"
fi

mkdir -p "$OUT"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUT/.lock"
  flock 9
fi

want=$(
  {
    echo "version=$VERSION"
    "$CC" --version | head -n 1
    cat "$0"
    find "$TESTDIR" -name '*.[ch]' | LC_ALL=C sort | xargs cat
    cat "$SELFTESTS/kselftest.h" "$SELFTESTS/kselftest_harness.h" "$KSRC/include/uapi/linux/liveupdate.h"
  } | sha256sum | cut -d' ' -f1
)
built=1
for p in $PROGRAMS; do
  [ -x "$OUT/$p" ] || built=0
done
if [ "$built" = 1 ] && [ "$(cat "$OUT/.fingerprint" 2>/dev/null)" = "$want" ]; then
  echo "$OUT"
  exit 0
fi

# The kernel's sanitised uAPI headers (the selftests' KHDR_INCLUDES), out of tree.
KBUILD="$OUT/kbuild"
mkdir -p "$KBUILD"
log "make headers (linux-source-$VERSION)"
make -s -C "$KSRC" O="$KBUILD" headers >&2 || die "make headers failed in $KSRC"
HDR="$KBUILD/usr/include"
[ -f "$HDR/linux/liveupdate.h" ] || die "make headers did not produce linux/liveupdate.h"

# The flags of the selftests' Makefile and lib.mk, plus -static.
CFLAGS="-D_GNU_SOURCE= -I$SELFTESTS $UTILS_INC -isystem $HDR -Wall -O2 -Wno-unused-function"
OBJ="$OUT/obj"
rm -rf "$OBJ"
mkdir -p "$OBJ"
log "compiling $PROGRAMS (static)"
# shellcheck disable=SC2086 # CFLAGS is a flag list
"$CC" $CFLAGS -c "$UTILS" -o "$OBJ/utils.o" || die "compiling $(basename "$UTILS") failed"
for p in $PROGRAMS; do
  # shellcheck disable=SC2086
  "$CC" $CFLAGS -c "$TESTDIR/$p.c" -o "$OBJ/$p.o" || die "compiling $p.c failed"
  # shellcheck disable=SC2086
  "$CC" -static "$OBJ/$p.o" "$OBJ/utils.o" -o "$OBJ/$p" || die "linking $p (static) failed (Debian: libc6-dev)"
done
for p in $PROGRAMS; do
  mv -f "$OBJ/$p" "$OUT/$p"
done
rm -rf "$OBJ"
echo "$want" >"$OUT/.fingerprint"
log "built $PROGRAMS in $OUT"
echo "$OUT"
