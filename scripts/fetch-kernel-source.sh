#!/bin/sh
# Fetch Debian sid's linux-source-7.2 into ~/.cache/luokit/src/ without touching the host's apt config.
set -eu
VERSION=${LINUX_SOURCE_VERSION:-7.2}
CACHE=${LUOKIT_CACHE:-$HOME/.cache/luokit}
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/download" "$CACHE/src"
cat > "$APT/sid.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_private() {
  apt-get -o Dir::Etc::SourceList="$APT/sid.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache::Archives="$APT/archives" "$@"
}
apt_private update
cd "$APT/download"
rm -f linux-source-"$VERSION"_*.deb
apt_private download "linux-source-$VERSION"
rm -rf "$APT/pkg"
dpkg-deb -x linux-source-"$VERSION"_*.deb "$APT/pkg"
rm -rf "$CACHE/src/linux-source-$VERSION"
tar -xf "$APT/pkg/usr/src/linux-source-$VERSION.tar.xz" -C "$CACHE/src"
echo "$CACHE/src/linux-source-$VERSION"
