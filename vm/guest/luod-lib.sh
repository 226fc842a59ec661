# Sourced by the guest jobs that run luod (luod-update.sh, qemu-update.sh), once BIN
# (dist/), SOCK, OUT and BOOT are set: luoctl against that luod, and luod
# started on the real /dev/liveupdate the same way in every job. BIN is a luokit dist/:
# the bench's own build, or the installed luokit for `luoctl qualify`.

luoctl() {
  node "$BIN/cli/luoctl-bin.cjs" --socket "$SOCK" "$@"
}

start_luod() {
  mkdir -p /run/luod
  # The guest's / is the host's, read-only: the update records go to the output share.
  # LUOD_NODE_FLAGS (optional, word-split): node's own flags, for investigations (--cpu-prof ...).
  node ${LUOD_NODE_FLAGS:-} "$BIN/daemon/luod-bin.cjs" --socket "$SOCK" --timeline /dev/console --claim-timeout 300 --records "$OUT/records" \
    >"$OUT/luod.boot$BOOT.log" 2>&1 &
  LUOD_PID=$!
}
