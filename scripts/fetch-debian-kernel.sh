#!/bin/sh
# Fetch Debian's stock kernel image for ARCH (amd64 or arm64) into the cache, without touching
# the host's apt configuration (a private sources list, lists and archive directories, as
# scripts/fetch-kernel-source.sh does). Used by test/kernel-image-debian.test.ts: Debian's stock
# kernels are real images built without KHO, so `luoctl kernel-info` must say so.
#
#   scripts/fetch-debian-kernel.sh ARCH       prints the image's path on stdout, progress on stderr
#
#   ~/.cache/luokit/debian-kernels/ARCH/vmlinuz-RELEASE   the image (bzImage on amd64, Image.gz on arm64)
#
# Reuses a cached image. Exit status: 0 ready; 3 infrastructure (apt-get, dpkg-deb or
# debian-archive-keyring missing; no network). Environment: LUOKIT_CACHE (default ~/.cache/luokit),
# LUOKIT_DEBIAN_SUITE (default sid).
set -eu

ARCH=${1:-}
case "$ARCH" in
  amd64 | arm64) ;;
  *)
    echo "usage: scripts/fetch-debian-kernel.sh amd64|arm64" >&2
    exit 2
    ;;
esac
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
SUITE=${LUOKIT_DEBIAN_SUITE:-sid}
OUT="$CACHE/debian-kernels/$ARCH"
APT="$CACHE/apt-images"

log() { echo "fetch-debian-kernel: $*" >&2; }
infra() {
  log "INFRASTRUCTURE: $*"
  exit 3
}

cached() {
  for f in "$OUT"/vmlinuz-*; do
    [ -s "$f" ] && echo "$f" && return 0
  done
  return 1
}
cached && exit 0

for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || infra "'$tool' is needed to fetch Debian's $ARCH kernel"
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] ||
  infra "debian-archive-keyring is needed to fetch Debian's $ARCH kernel"

apt_private() {
  sandbox=""
  [ "$(id -u)" != 0 ] || sandbox="-o APT::Sandbox::User=root"
  # shellcheck disable=SC2086 # $sandbox is empty or one option pair
  apt-get -o Dir::Etc::SourceList="$APT/debian.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache::Archives="$APT/archives" \
    -o Dir::Cache="$APT/cache" -o Dir::State::Status=/dev/null -o APT::Architecture="$ARCH" \
    -o APT::Architectures="$ARCH" $sandbox "$@"
}
cache_private() {
  apt-cache -o Dir::Etc::SourceList="$APT/debian.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o Dir::State::Status=/dev/null \
    -o APT::Architecture="$ARCH" -o APT::Architectures="$ARCH" "$@"
}

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/cache" "$OUT"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$APT/.lock"
  flock 9
  cached && exit 0
fi
cat >"$APT/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Architectures: amd64 arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
log "reading Debian $SUITE's $ARCH package list (private apt config in $APT)"
apt_private -qq update >&2 || infra "apt-get update (private config, suite $SUITE) failed"

# The cloud flavour's meta package depends on linux-image-RELEASE, which (in current Debian)
# depends on linux-binary-RELEASE holding /boot/vmlinuz-RELEASE; older layouts hold it directly.
meta="linux-image-cloud-$ARCH"
image=$(cache_private depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$image" ] || infra "$meta has no linux-image dependency in Debian $SUITE"
binary=$(cache_private depends "$image" 2>/dev/null | sed -n 's/^ *Depends: \(linux-binary-[0-9][^ ]*\)$/\1/p' | head -n 1)
pkg=${binary:-$image}
dl="$APT/download"
rm -rf "$dl" && mkdir -p "$dl"
log "downloading $pkg ($ARCH)"
(cd "$dl" && apt_private -qq download "$pkg:$ARCH") >&2 || infra "$pkg is not downloadable from Debian $SUITE"
deb=$(ls "$dl"/*.deb)
dpkg-deb -x "$deb" "$dl/root"
# /usr/lib/modules/RELEASE/vmlinuz (current Debian) or /boot/vmlinuz-RELEASE (older).
vmlinuz=$(ls "$dl/root/usr/lib/modules"/*/vmlinuz "$dl/root/boot"/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || infra "$pkg holds no kernel image (usr/lib/modules/*/vmlinuz or boot/vmlinuz-*)"
case "$vmlinuz" in
  */boot/vmlinuz-*) release=${vmlinuz##*/vmlinuz-} ;;
  *) release=$(basename "$(dirname "$vmlinuz")") ;;
esac
cp "$vmlinuz" "$OUT/vmlinuz-$release.tmp"
mv "$OUT/vmlinuz-$release.tmp" "$OUT/vmlinuz-$release"
rm -rf "$dl"
echo "$OUT/vmlinuz-$release"
