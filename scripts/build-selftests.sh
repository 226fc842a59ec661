#!/bin/sh
# Build the kernel's own LUO selftests, unmodified and dynamically linked (so that
# LD_PRELOAD=libluoemu.so can point them at luokit's emulated kernel), from Debian's
# linux-source package:
#
#   ~/.cache/luokit/selftests/<version>/liveupdate            the 15-test kselftest_harness suite
#   ~/.cache/luokit/selftests/<version>/luo_kexec_simple     the kexec tests (stage 1/2),
#   ~/.cache/luokit/selftests/<version>/luo_multi_session    each linked with luo_test_utils.c
#   ~/.cache/luokit/selftests/<version>/luo_stress_sessions
#   ~/.cache/luokit/selftests/<version>/luo_stress_files
#
# Nothing from the kernel lands in the repository: sources and binaries stay in the cache.
# The source comes from scripts/fetch-kernel-source.sh when it is not there yet.
# Rebuilds only when a source file, the compiler or this script changed; prints the
# output directory on stdout.
#
# Needs: make, a C compiler (gcc; `make headers` also builds two small host tools with it),
# glibc headers, and for the first fetch apt-get, dpkg-deb, xz-utils and
# debian-archive-keyring (no rsync, flex or bison: only `make headers` runs in the kernel tree).
# Debian/Ubuntu: apt-get install gcc make libc6-dev xz-utils debian-archive-keyring
#
# Environment: LINUX_SOURCE_VERSION (default 7.2), LUOKIT_CACHE (default ~/.cache/luokit), CC.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
VERSION=${LINUX_SOURCE_VERSION:-7.2}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
KSRC="$CACHE/src/linux-source-$VERSION"
OUT="$CACHE/selftests/$VERSION"
CC=${CC:-gcc}
PROGRAMS="liveupdate luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files"

die() {
  echo "build-selftests: $*" >&2
  exit 1
}

for tool in make "$CC" sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (Debian/Ubuntu: apt-get install gcc make libc6-dev coreutils)"
done

if [ ! -f "$KSRC/tools/testing/selftests/liveupdate/liveupdate.c" ]; then
  echo "build-selftests: fetching linux-source-$VERSION into $CACHE/src" >&2
  LINUX_SOURCE_VERSION=$VERSION LUOKIT_CACHE=$CACHE "$ROOT/scripts/fetch-kernel-source.sh" >&2
fi
SELFTESTS="$KSRC/tools/testing/selftests"
TESTDIR="$SELFTESTS/liveupdate"
[ -f "$TESTDIR/liveupdate.c" ] || die "$TESTDIR/liveupdate.c is missing: linux-source-$VERSION has no LUO selftests"

mkdir -p "$OUT"
# Two test runs may build at once: one builds, the other waits and finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUT/.lock"
  flock 9
fi

# Everything the binaries depend on, so a changed source (or compiler) rebuilds them.
fingerprint() {
  {
    echo "version=$VERSION"
    "$CC" --version | head -n 1
    cat "$0"
    cat "$TESTDIR"/*.c "$TESTDIR"/*.h "$SELFTESTS/kselftest.h" "$SELFTESTS/kselftest_harness.h" \
      "$KSRC/include/uapi/linux/liveupdate.h"
  } | sha256sum | cut -d' ' -f1
}
want=$(fingerprint)
stamp="$OUT/.fingerprint"
built=1
for p in $PROGRAMS; do
  [ -x "$OUT/$p" ] || built=0
done
if [ "$built" = 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$OUT"
  exit 0
fi

# The kernel's sanitised uAPI headers (<linux/liveupdate.h> is newer than the libc's),
# built out of tree so the source stays pristine: what the selftests Makefile calls
# KHDR_INCLUDES.
KBUILD="$OUT/kbuild"
mkdir -p "$KBUILD"
echo "build-selftests: make headers (linux-source-$VERSION)" >&2
make -s -C "$KSRC" O="$KBUILD" headers >&2 || die "make headers failed in $KSRC"
HDR="$KBUILD/usr/include"
[ -f "$HDR/linux/liveupdate.h" ] || die "make headers did not produce linux/liveupdate.h"

# The flags of tools/testing/selftests/liveupdate/Makefile and lib.mk, compiled here
# instead of with that Makefile because it writes its objects into the source tree.
CFLAGS="-D_GNU_SOURCE= -I$SELFTESTS -isystem $HDR -Wall -O2 -Wno-unused-function"
OBJ="$OUT/obj"
rm -rf "$OBJ"
mkdir -p "$OBJ"
echo "build-selftests: compiling $PROGRAMS" >&2
# shellcheck disable=SC2086 # CFLAGS is a flag list
"$CC" $CFLAGS -c "$TESTDIR/luo_test_utils.c" -o "$OBJ/luo_test_utils.o"
for p in $PROGRAMS; do
  # shellcheck disable=SC2086
  "$CC" $CFLAGS -c "$TESTDIR/$p.c" -o "$OBJ/$p.o"
  # shellcheck disable=SC2086
  "$CC" $CFLAGS "$OBJ/$p.o" "$OBJ/luo_test_utils.o" -o "$OBJ/$p"
done
for p in $PROGRAMS; do
  mv -f "$OBJ/$p" "$OUT/$p"
done
rm -rf "$OBJ"
echo "$want" >"$stamp"
echo "build-selftests: built $PROGRAMS in $OUT" >&2
echo "$OUT"
