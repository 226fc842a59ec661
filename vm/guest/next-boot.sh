# Sourced by the guest's jobs (vm/guest/*.sh): what the next boot is. Sets
#   NEXT     this boot's number + 1 (LUOKIT_BOOT, from /init);
#   KERNEL   the bzImage for boot NEXT (LUOKIT_KERNELS: one per boot, the last repeats);
#   CMDLINE  this boot's command line with luokit.boot=NEXT.
# Returns non-zero (with NEXT_ERROR set) when there is no kernel.
BOOT=${LUOKIT_BOOT:-0}
NEXT=$((BOOT + 1))
KERNEL=""
_i=0
for _k in ${LUOKIT_KERNELS:-}; do
  [ "$_i" -le "$NEXT" ] && KERNEL=$_k
  _i=$((_i + 1))
done
CMDLINE=$(sed -e "s/luokit\.boot=[0-9]*//g" -e 's/  */ /g' -e 's/ *$//' /proc/cmdline)
CMDLINE="$CMDLINE luokit.boot=$NEXT"
NEXT_ERROR=""
[ -n "$KERNEL" ] || NEXT_ERROR=no-kernel-in-LUOKIT_KERNELS
[ -z "$NEXT_ERROR" ]
