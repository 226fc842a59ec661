#!/bin/sh
# Build (or reuse) a small LUO-capable x86_64 kernel from Debian's linux-source package
# for the real-kernel bench (docs/vm.md):
#
#   vm/build-kernel.sh [VERSION]        VERSION: 7.2 (default, suite sid) or 7.3 (suite experimental)
#
# prints the cached bzImage's path on stdout; progress goes to stderr.
#
#   ~/.cache/luokit/src/linux-source-VERSION/                 Debian's source, extracted (never in the repo)
#   ~/.cache/luokit/kbuild/PKGVER/                             the out-of-tree build (make O=...), kept
#   ~/.cache/luokit/kernels/PKGVER-HASH/{bzImage,config,info}  the result, reused when present
#
# PKGVER is the Debian package's version (7.2.13-1); HASH covers vm/kernel.config, the compiler
# and this recipe's revision, so editing the fragment rebuilds. The recipe: `make tinyconfig`,
# the fragment applied with scripts/config, `make olddefconfig` three times (re-applying the
# fragment before each pass: some options only appear once their dependencies are on), every
# option of the fragment verified in the final .config, `make -j2 bzImage`.
#
# The source comes from scripts/fetch-kernel-source.sh (a private apt configuration: the host's
# apt sources are not touched) when it is not extracted yet.
#
# Exit status: 0 built or reused; 1 the build failed (a config option did not stick, a compile
# error); 3 infrastructure (a build tool is missing, the package cannot be fetched).
#
# Environment: LUOKIT_CACHE (default ~/.cache/luokit), LUOKIT_JOBS (default 2),
# LUOKIT_KERNEL_SUITE (override the Debian suite), LUOKIT_KERNEL_CONFIG (another fragment).
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
VERSION=${1:-7.2}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
JOBS=${LUOKIT_JOBS:-2}
FRAGMENT=${LUOKIT_KERNEL_CONFIG:-$ROOT/vm/kernel.config}
KSRC="$CACHE/src/linux-source-$VERSION"
# Bump when the recipe changes in a way that changes the kernel (not for comments).
RECIPE=1

log() { echo "build-kernel: $*" >&2; }
die() {
  log "$*"
  exit 1
}
infra() {
  log "INFRASTRUCTURE: $*"
  exit 3
}

case "$VERSION" in
  7.2) SUITE=sid ;;
  7.3) SUITE=experimental ;;
  *) SUITE=sid ;;
esac
SUITE=${LUOKIT_KERNEL_SUITE:-$SUITE}

[ -f "$FRAGMENT" ] || die "config fragment $FRAGMENT is missing"

# --- Build tools (Debian: apt-get install flex bison libelf-dev cpio bc gcc make) -------------
missing=""
for tool in make gcc flex bison bc cpio perl sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
# objtool (always built for x86_64) needs libelf's headers.
[ -f /usr/include/gelf.h ] || [ -f /usr/include/libelf/gelf.h ] || missing="$missing libelf-dev(gelf.h)"
[ -z "$missing" ] || infra "missing build tools:$missing (Debian: apt-get install flex bison libelf-dev cpio bc gcc make xz-utils)"

# --- The source: Debian's linux-source-VERSION, fetched through a private apt configuration ----
status=0
LUOKIT_CACHE=$CACHE LUOKIT_KERNEL_SUITE=$SUITE sh "$ROOT/scripts/fetch-kernel-source.sh" "$VERSION" >/dev/null || status=$?
[ "$status" = 0 ] || infra "scripts/fetch-kernel-source.sh $VERSION exited $status"
PKGVER=$(cat "$KSRC.version" 2>/dev/null || true)
[ -n "$PKGVER" ] || infra "cannot tell the package version of $KSRC"

HASH=$(
  {
    echo "recipe=$RECIPE"
    gcc --version | head -n 1
    cat "$FRAGMENT"
  } | sha256sum | cut -c1-12
)
KEY="$PKGVER-$HASH"
OUT="$CACHE/kernels/$KEY"
# One build tree per source version, whatever the config: after a fragment change, make
# rebuilds only what the change touches.
KB="$CACHE/kbuild/$PKGVER"
mkdir -p "$CACHE/kernels" "$CACHE/kbuild"

# Two runs may want a kernel of this version at once (and share its build tree): one
# builds, the other waits and reuses the result.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/kbuild/.$PKGVER.lock"
  flock 9
fi
if [ -s "$OUT/bzImage" ] && [ -s "$OUT/info" ]; then
  log "reusing $OUT/bzImage"
  echo "$OUT/bzImage"
  exit 0
fi

started=$(date +%s)
mkdir -p "$KB"
MAKE="make -s -C $KSRC O=$KB ARCH=x86_64"
log "configuring linux-source-$VERSION ($PKGVER) in $KB: tinyconfig + $(basename "$FRAGMENT")"
$MAKE tinyconfig >&2 || die "make tinyconfig failed"

# CONFIG_X=y / =m / =value / "string", and "# CONFIG_X is not set", as scripts/config calls.
apply_fragment() {
  sed -n -e 's/^CONFIG_\([A-Za-z0-9_]*\)=\(.*\)$/\1 \2/p' -e 's/^# CONFIG_\([A-Za-z0-9_]*\) is not set$/\1 n/p' "$FRAGMENT" |
    while read -r name value; do
      case "$value" in
        y) echo "--enable $name" ;;
        m) echo "--module $name" ;;
        n) echo "--disable $name" ;;
        \"*) echo "--set-str $name $(echo "$value" | sed 's/^"\(.*\)"$/\1/')" ;;
        *) echo "--set-val $name $value" ;;
      esac
    done | xargs "$KSRC/scripts/config" --file "$KB/.config"
}
for pass in 1 2 3; do
  apply_fragment
  $MAKE olddefconfig >&2 || die "make olddefconfig (pass $pass) failed"
done

# Every option of the fragment must have stuck; say which did not, and stop.
bad=""
for line in $(sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)$/\1/p' "$FRAGMENT"); do
  grep -qxF "$line" "$KB/.config" || bad="$bad $line(got: $(grep -E "^(# )?${line%%=*}[= ]" "$KB/.config" || echo absent))"
done
for name in $(sed -n -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' "$FRAGMENT"); do
  if grep -q "^$name=" "$KB/.config"; then bad="$bad $name-off(got: $(grep "^$name=" "$KB/.config"))"; fi
done
[ -z "$bad" ] || die "these options of $FRAGMENT did not end up in the .config:$bad"
log "config verified: every option of $(basename "$FRAGMENT") is set"

log "make -j$JOBS bzImage (about 6 minutes on 2 cores)"
$MAKE -j"$JOBS" bzImage >&2 || die "make bzImage failed (build directory: $KB)"
[ -s "$KB/arch/x86/boot/bzImage" ] || die "make bzImage produced no $KB/arch/x86/boot/bzImage"

tmp="$OUT.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$KB/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$KB/.config" "$tmp/config"
release=$(cat "$KB/include/config/kernel.release" 2>/dev/null || echo unknown)
cat >"$tmp/info" <<INFO
version=$VERSION
package=linux-source-$VERSION
package_version=$PKGVER
suite=$SUITE
release=$release
config_hash=$HASH
fragment=$FRAGMENT
build_seconds=$(($(date +%s) - started))
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
INFO
rm -rf "$OUT"
mv "$tmp" "$OUT"
log "built $OUT/bzImage ($(wc -c <"$OUT/bzImage") bytes, $release) in $(($(date +%s) - started)) s"
echo "$OUT/bzImage"
