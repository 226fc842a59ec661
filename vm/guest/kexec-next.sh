#!/bin/sh
# Live-update into the next boot (runs inside the guest, chrooted into the host's /):
# load the next kernel with kexec_file_load (-s: KHO data only travels that way), the same
# initramfs again (/sys/firmware/initrd, kept by retain_initrd), and this boot's command
# line with luokit.boot incremented; then kexec -e. Returns only when the kexec failed.
#
# LUOKIT_KERNELS: the bzImage of each boot, space-separated (boot N uses the Nth, the last
# one repeats). Whatever holds live update sessions must stay alive while this runs.
set -u
. "$(dirname -- "$0")/next-boot.sh" || {
  echo "LUOKIT-KEXEC-FAILED boot=$BOOT reason=$NEXT_ERROR"
  exit 1
}
if ! kexec -s -l "$KERNEL" --initrd=/sys/firmware/initrd --append="$CMDLINE"; then
  echo "LUOKIT-KEXEC-FAILED boot=$BOOT reason=kexec-load-failed kernel=$KERNEL"
  exit 1
fi
sync
echo "LUOKIT-KEXEC boot=$BOOT next=$NEXT kernel=$KERNEL uptime=$(cut -d' ' -f1 /proc/uptime)"
kexec -e
echo "LUOKIT-KEXEC-FAILED boot=$BOOT reason=kexec-e-returned status=$?"
exit 1
