# Sourced by the guest jobs that run luod (luod-update.sh, qemu-update.sh), once BIN
# (the guest bundles), SOCK, OUT and BOOT are set: luoctl against that luod, and luod
# started on the real /dev/liveupdate the same way in every job. LUOD_JS and LUOCTL_JS,
# when set, are the programs to run instead of the bench's bundles (`luoctl qualify` runs
# the installed luokit: dist/daemon/luod-bin.cjs, dist/cli/luoctl-bin.cjs).

luoctl() {
  node "${LUOCTL_JS:-$BIN/luoctl.mjs}" --socket "$SOCK" "$@"
}

start_luod() {
  mkdir -p /run/luod
  # The guest's / is the host's, read-only: the update records go to the output share.
  node "${LUOD_JS:-$BIN/luod.mjs}" --socket "$SOCK" --timeline /dev/console --claim-timeout 300 --records "$OUT/records" \
    >"$OUT/luod.boot$BOOT.log" 2>&1 &
  LUOD_PID=$!
}
