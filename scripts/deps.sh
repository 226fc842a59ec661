#!/bin/sh
# The Debian packages luokit's test suites need, listed once: `npm test` runs
# `scripts/deps.sh test` before anything else, `npm run test:vm` runs
# `scripts/deps.sh vm`, and .ci/run installs with it. A fresh machine then
# needs no step the README does not show.
#
#   scripts/deps.sh test|vm          check; as root, install what is missing (apt-get);
#                                    otherwise stop with the one apt-get line that installs it
#   scripts/deps.sh --list test|vm   print the tier's packages, one line
#
# test: the main suite. dtc cross-checks the FDT codec; gcc and libc6-dev build the
#   preload shim; make and gcc build the kernel's selftests, from Debian's linux-source
#   (fetched with apt-get: xz-utils, debian-archive-keyring); chromium renders
#   `luoctl report --html` headless (test/cli-report.test.ts); QEMU runs real VMs under
#   luo-qemu, and binutils (as, ld) builds their counter guest (test/qemu.test.ts); bzip2,
#   zstd, lz4 and lzop make kernel images with every compression the kernel offers, from a
#   real vmlinux, for `luoctl kernel-info` (test/kernel-image.test.ts); etcd-server is
#   the coordination engine of the fleet tests (test/fleet-*.test.ts), which start a private
#   etcd of their own on loopback ports (test/support/etcd.ts), never the packaged service.
# vm: the real-kernel tier (docs/vm.md), on top of test: a static busybox and
#   kexec-tools for the guest; flex, bison, libelf-dev, cpio and bc build the LUO kernels;
#   e2fsprogs (mke2fs) makes the guest's local disk (test/vm/guest-disk.ts).
#
# Each entry is PROBE:PACKAGE, PROBE a command on PATH, an absolute file, or `-` to ask dpkg.
set -eu

TEST="dtc:device-tree-compiler cc:gcc /usr/include/stdio.h:libc6-dev make:make xz:xz-utils
  chromium:chromium /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring
  qemu-system-x86_64:qemu-system-x86 as:binutils bzip2:bzip2 zstd:zstd lz4:lz4 lzop:lzop
  etcd:etcd-server"
VM="$TEST kexec:kexec-tools flex:flex bison:bison cpio:cpio bc:bc
  /usr/include/gelf.h:libelf-dev -:busybox-static /usr/sbin/mke2fs:e2fsprogs"

usage() {
  echo "usage: scripts/deps.sh [--list] test|vm" >&2
  exit 2
}

list=false
if [ "${1:-}" = --list ]; then
  list=true
  shift
fi
case "${1:-}" in
  test) entries=$TEST ;;
  vm) entries=$VM ;;
  *) usage ;;
esac

if $list; then
  names=""
  for entry in $entries; do names="$names ${entry#*:}"; done
  echo "${names# }"
  exit 0
fi

present() {
  probe=${1%%:*}
  case "$probe" in
    -) dpkg-query -W -f='${Status}' "${1#*:}" 2>/dev/null | grep -q 'ok installed' ;;
    /*) [ -e "$probe" ] ;;
    *) command -v "$probe" >/dev/null 2>&1 ;;
  esac
}

missing() {
  need=""
  for entry in $entries; do
    present "$entry" || need="$need ${entry#*:}"
  done
  echo "${need# }"
}

need=$(missing)
if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ]; then
    sudo=""
    command -v sudo >/dev/null 2>&1 && sudo="sudo "
    echo "luokit: the $1 suite needs Debian packages that are not installed: $need" >&2
    echo "Install them, then run the same command again:" >&2
    echo "  ${sudo}apt-get install -y $need" >&2
    exit 1
  fi
  echo "luokit: installing what the $1 suite needs: $need" >&2
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
  # Debian's etcd-server starts a system etcd on port 2379 when installed; the fleet tests
  # start their own, so one that this script installed is stopped and left disabled.
  case " $need " in
    *" etcd-server "*) command -v systemctl >/dev/null 2>&1 && systemctl disable --now etcd >/dev/null 2>&1 || true ;;
  esac
  still=$(missing)
  if [ -n "$still" ]; then
    echo "luokit: still missing after apt-get install: $still" >&2
    exit 1
  fi
fi

# Installing kexec-tools asks the host to load a kexec kernel at shutdown: a test machine must not.
if [ "$1" = vm ] && [ "$(id -u)" = 0 ] && [ -f /etc/default/kexec ]; then
  sed -i 's/^LOAD_KEXEC=.*/LOAD_KEXEC=false/' /etc/default/kexec
fi
