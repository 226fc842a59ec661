#!/bin/sh
# Sourced by the update and floor jobs in boot 0, before guest RAM is filled: with
# LUOKIT_SHMEM_THP set (never, within_size, always...), memfds get shmem transparent huge
# pages by that policy, as production hosts back guest memory. Preserved in 2 MiB folios,
# the next kernel's KHO restore reserves 512x fewer blocks (docs/vm.md, the kexec phase).
# Sets THP_ERROR and returns 1 when the policy cannot be set.
if [ -n "${LUOKIT_SHMEM_THP:-}" ]; then
  THP_CONTROL=/sys/kernel/mm/transparent_hugepage/shmem_enabled
  if ! echo "$LUOKIT_SHMEM_THP" >"$THP_CONTROL" 2>/dev/null; then
    THP_ERROR="cannot-set-shmem-thp-$LUOKIT_SHMEM_THP"
    return 1
  fi
  echo "LUOKIT-THP boot=${LUOKIT_BOOT:-0} shmem_enabled=$(cat "$THP_CONTROL")"
fi
