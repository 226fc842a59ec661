#!/bin/sh
# Build luokit's native parts with the system C compiler:
#   build/native/libluoemu.so   the LD_PRELOAD shim for the emulated kernel (native/emu-shim/)
# Idempotent: rebuilds only when a source, this script or the compiler flags changed.
# Needs: a C compiler (cc, gcc or clang; override with CC=...) and glibc headers
# (Debian/Ubuntu: apt-get install gcc libc6-dev; Fedora: dnf install gcc glibc-devel).
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
SRC="$ROOT/native/emu-shim"
OUT="${LUOKIT_NATIVE_OUT:-$ROOT/build/native}"
CC=${CC:-cc}
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden -U_FORTIFY_SOURCE"
LDFLAGS="-shared -Wl,-z,defs -Wl,-z,now"
LIBS="-ldl -pthread"

if ! command -v "$CC" >/dev/null 2>&1; then
  echo "build-native: no C compiler '$CC' found; install one (e.g. apt-get install gcc libc6-dev) or set CC" >&2
  exit 127
fi

mkdir -p "$OUT"
lib="$OUT/libluoemu.so"
stamp="$OUT/.libluoemu.flags"
flags="$CC $CFLAGS $LDFLAGS $LIBS"

up_to_date() {
  [ -f "$lib" ] && [ -f "$stamp" ] || return 1
  [ "$(cat "$stamp")" = "$flags" ] || return 1
  for f in "$SRC"/*.c "$SRC"/*.h "$ROOT"/native/include/luokit/*.h "$0"; do
    [ -e "$f" ] || continue
    [ "$f" -nt "$lib" ] && return 1
  done
  return 0
}

if up_to_date; then
  exit 0
fi

# Build under a temporary name and rename: a concurrent reader never sees a half-written library.
tmp="$lib.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2086 # the flag lists are meant to split
$CC $CFLAGS $LDFLAGS -o "$tmp" "$SRC/luoemu.c" $LIBS
mv -f "$tmp" "$lib"
printf '%s\n' "$flags" >"$stamp"
echo "build-native: built $lib"
