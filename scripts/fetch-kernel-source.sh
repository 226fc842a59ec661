#!/bin/sh
# Fetch and extract Debian's linux-source-VERSION into the cache, without touching the
# host's apt configuration (a private sources list, lists and archive directories):
#
#   scripts/fetch-kernel-source.sh [VERSION]      VERSION: 7.2 (default, suite sid) or 7.3 (experimental)
#
#   ~/.cache/luokit/src/linux-source-VERSION/               the extracted tree (never in the repo)
#   ~/.cache/luokit/src/linux-source-VERSION.version        the Debian package version (7.2.13-1)
#   ~/.cache/luokit/src/linux-source-VERSION.tree-version   the tree's own version, to tell a stale stamp
#
# Reuses an extracted tree whose stamps agree; prints the tree's path on stdout, progress on
# stderr. Shared by scripts/build-selftests.sh and vm/build-kernel.sh.
#
# Exit status: 0 ready; 3 infrastructure (apt-get, dpkg-deb, xz or debian-archive-keyring
# missing; the package cannot be fetched). Environment: LINUX_SOURCE_VERSION (when no
# argument), LUOKIT_CACHE (default ~/.cache/luokit), LUOKIT_KERNEL_SUITE (override the suite).
set -eu

VERSION=${1:-${LINUX_SOURCE_VERSION:-7.2}}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
KSRC="$CACHE/src/linux-source-$VERSION"
APT="$CACHE/apt-vm"

log() { echo "fetch-kernel-source: $*" >&2; }
infra() {
  log "INFRASTRUCTURE: $*"
  exit 3
}

case "$VERSION" in
  7.3) SUITE=experimental ;;
  *) SUITE=sid ;;
esac
SUITE=${LUOKIT_KERNEL_SUITE:-$SUITE}

# The upstream version the extracted tree says it is (7.2.13, 7.3.0-rc7), from its Makefile.
tree_version() {
  sed -n -e 's/^VERSION = \(.*\)/\1/p' -e 's/^PATCHLEVEL = \(.*\)/.\1/p' -e 's/^SUBLEVEL = \(.*\)/.\1/p' \
    -e 's/^EXTRAVERSION = \(.*\)/\1/p' "$KSRC/Makefile" 2>/dev/null | head -n 4 | tr -d '\n '
}

if [ -f "$KSRC/Makefile" ] && [ -s "$KSRC.version" ] &&
  [ "$(cat "$KSRC.tree-version" 2>/dev/null)" = "$(tree_version)" ]; then
  echo "$KSRC"
  exit 0
fi

for tool in apt-get dpkg-deb tar xz; do
  command -v "$tool" >/dev/null 2>&1 || infra "'$tool' is needed to fetch linux-source-$VERSION (Debian: apt-get install apt dpkg xz-utils)"
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] ||
  infra "debian-archive-keyring is needed to fetch linux-source-$VERSION"

apt_private() {
  # As root, apt would hand the download to the _apt user, who cannot write under ~root.
  sandbox=""
  [ "$(id -u)" != 0 ] || sandbox="-o APT::Sandbox::User=root"
  # shellcheck disable=SC2086 # $sandbox is empty or one option pair
  apt-get -o Dir::Etc::SourceList="$APT/debian.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache::Archives="$APT/archives" \
    -o Dir::Cache="$APT/cache" $sandbox "$@"
}

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/cache" "$APT/download" "$CACHE/src"
# Two runs may fetch at once: one fetches, the other waits and finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$APT/.lock"
  flock 9
  if [ -f "$KSRC/Makefile" ] && [ -s "$KSRC.version" ] &&
    [ "$(cat "$KSRC.tree-version" 2>/dev/null)" = "$(tree_version)" ]; then
    echo "$KSRC"
    exit 0
  fi
fi
cat >"$APT/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid experimental
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
log "fetching linux-source-$VERSION from Debian $SUITE (private apt config in $APT)"
apt_private -qq update >&2 || infra "apt-get update (private config, suites sid experimental) failed"
rm -f "$APT/download/linux-source-${VERSION}"_*.deb
(cd "$APT/download" && apt_private -qq download "linux-source-$VERSION/$SUITE") >&2 ||
  infra "linux-source-$VERSION is not downloadable from Debian $SUITE"
deb=$(ls "$APT/download/linux-source-${VERSION}"_*.deb)
rm -rf "$APT/pkg" "$KSRC" "$KSRC.version" "$KSRC.tree-version"
dpkg-deb -x "$deb" "$APT/pkg"
log "extracting $(basename "$deb")"
tar -xf "$APT/pkg/usr/src/linux-source-$VERSION.tar.xz" -C "$CACHE/src"
rm -rf "$APT/pkg"
tree_version >"$KSRC.tree-version"
dpkg-deb -f "$deb" Version >"$KSRC.version"
rm -f "$deb"
echo "$KSRC"
