#!/bin/sh
# Build the real-kernel bench's initramfs (docs/vm.md): a static busybox and vm/guest/init,
# nothing else (Node, the project and kexec-tools come from the host over 9p, so the
# initramfs stays small and the kexec blackout short).
#
#   vm/build-initramfs.sh OUTPUT.cpio.gz
#
# Needs busybox-static (Debian: apt-get install busybox-static), cpio, gzip. Runs without
# root: /init takes /dev/console from devtmpfs. The archive is reproducible (sorted, fixed
# mtimes), so an unchanged guest gives byte-identical output.
# Exit status: 0 built; 3 infrastructure (busybox-static or cpio missing).
set -eu
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
OUT=${1:?usage: build-initramfs.sh OUTPUT.cpio.gz}
BUSYBOX=${LUOKIT_BUSYBOX:-/bin/busybox}

infra() {
  echo "build-initramfs: INFRASTRUCTURE: $*" >&2
  exit 3
}
command -v cpio >/dev/null 2>&1 || infra "cpio is missing (Debian: apt-get install cpio)"
[ -x "$BUSYBOX" ] || infra "$BUSYBOX is missing (Debian: apt-get install busybox-static)"
# A dynamically linked busybox would need its libraries in the initramfs.
if command -v file >/dev/null 2>&1; then
  file -L "$BUSYBOX" | grep -q 'statically linked' ||
    infra "$BUSYBOX is not statically linked (Debian: apt-get install busybox-static)"
elif ! "$BUSYBOX" 2>&1 | head -n 1 | grep -q BusyBox; then
  infra "$BUSYBOX does not run"
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/dev" "$STAGE/proc" "$STAGE/sys" "$STAGE/host" "$STAGE/tmp"
cp "$BUSYBOX" "$STAGE/bin/busybox"
cp "$ROOT/vm/guest/init" "$STAGE/init"
chmod 0755 "$STAGE/init" "$STAGE/bin/busybox"
find "$STAGE" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$OUT")"
(cd "$STAGE" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n -9 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
