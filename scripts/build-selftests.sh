#!/bin/sh
# Build the kernel's own LUO selftests, unmodified, from Debian's linux-source package:
#
#   scripts/build-selftests.sh [--static] [VERSION]     prints the output directory on stdout
#
#   ~/.cache/luokit/selftests/VERSION[-static]/{liveupdate,luo_kexec_simple,luo_multi_session,
#                                               luo_stress_sessions,luo_stress_files}
#
# Dynamically linked by default, so that LD_PRELOAD=libluoemu.so can point them at luokit's
# emulated kernel (test/emu-shim-selftest.test.ts); --static for the real-kernel bench's
# guest (docs/vm.md), whose busybox initramfs has no C library. Both source layouts: 7.2
# (luo_test_utils.c next to the tests) and 7.3 (lib/lu_utils.c, lib/include/libliveupdate.h).
#
# Nothing from the kernel lands in the repository: sources and binaries stay in the cache.
# The source comes from scripts/fetch-kernel-source.sh when it is not there yet. Rebuilds
# only when a source file, the compiler or this script changed.
#
# Needs make, a C compiler (gcc; `make headers` also builds two small host tools with it) and
# the C library's headers and static archive (Debian: apt-get install gcc make libc6-dev).
# Exit status: 0 built or reused; 1 the build failed; 3 infrastructure (a tool is missing,
# the source cannot be fetched). Environment: LINUX_SOURCE_VERSION (when no VERSION),
# LUOKIT_CACHE (default ~/.cache/luokit), CC.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
LINK=dynamic
if [ "${1:-}" = "--static" ]; then
  LINK=static
  shift
fi
VERSION=${1:-${LINUX_SOURCE_VERSION:-7.2}}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
KSRC="$CACHE/src/linux-source-$VERSION"
OUT="$CACHE/selftests/$VERSION"
[ "$LINK" = dynamic ] || OUT="$OUT-static"
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

for tool in make "$CC" sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || infra "'$tool' is missing (Debian: apt-get install gcc make libc6-dev coreutils)"
done

status=0
LUOKIT_CACHE=$CACHE sh "$ROOT/scripts/fetch-kernel-source.sh" "$VERSION" >/dev/null || status=$?
[ "$status" = 0 ] || infra "scripts/fetch-kernel-source.sh $VERSION exited $status"
[ -f "$TESTDIR/liveupdate.c" ] || die "$TESTDIR/liveupdate.c is missing: linux-source-$VERSION has no LUO selftests"

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
# Two test runs may build at once: one builds, the other waits and finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUT/.lock"
  flock 9
fi

# Everything the binaries depend on, so a changed source (or compiler) rebuilds them.
want=$(
  {
    echo "version=$VERSION link=$LINK"
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

# The kernel's sanitised uAPI headers (<linux/liveupdate.h> is newer than the libc's), built
# out of tree so the source stays pristine: what the selftests Makefile calls KHDR_INCLUDES.
KBUILD="$CACHE/selftests/kbuild-$VERSION"
mkdir -p "$KBUILD"
log "make headers (linux-source-$VERSION)"
make -s -C "$KSRC" O="$KBUILD" headers >&2 || die "make headers failed in $KSRC"
HDR="$KBUILD/usr/include"
[ -f "$HDR/linux/liveupdate.h" ] || die "make headers did not produce linux/liveupdate.h"

# The flags of tools/testing/selftests/liveupdate/Makefile and lib.mk, compiled here instead
# of with that Makefile because it writes its objects into the source tree.
CFLAGS="-D_GNU_SOURCE= -I$SELFTESTS $UTILS_INC -isystem $HDR -Wall -O2 -Wno-unused-function"
LDFLAGS=""
[ "$LINK" = dynamic ] || LDFLAGS="-static"
OBJ="$OUT/obj"
rm -rf "$OBJ"
mkdir -p "$OBJ"
log "compiling $PROGRAMS ($LINK)"
# shellcheck disable=SC2086 # CFLAGS is a flag list
"$CC" $CFLAGS -c "$UTILS" -o "$OBJ/utils.o" || die "compiling $(basename "$UTILS") failed"
for p in $PROGRAMS; do
  # shellcheck disable=SC2086
  "$CC" $CFLAGS -c "$TESTDIR/$p.c" -o "$OBJ/$p.o" || die "compiling $p.c failed"
  # shellcheck disable=SC2086
  "$CC" $LDFLAGS "$OBJ/$p.o" "$OBJ/utils.o" -o "$OBJ/$p" || die "linking $p ($LINK) failed (Debian: libc6-dev)"
done
for p in $PROGRAMS; do
  mv -f "$OBJ/$p" "$OUT/$p"
done
rm -rf "$OBJ"
echo "$want" >"$OUT/.fingerprint"
log "built $PROGRAMS ($LINK) in $OUT"
echo "$OUT"
