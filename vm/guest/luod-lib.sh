# Sourced by the guest jobs that run luod (luod-update.sh, qemu-update.sh, qualify.sh), once
# BIN (dist/), SOCK, OUT and BOOT are set and `failed REASON` is defined: luoctl against that
# luod, luod started on the real /dev/liveupdate the same way in every job, and wait_for. BIN is a luokit dist/:
# the bench's own build, or the installed luokit for `luoctl qualify`.

luoctl() {
  node "$BIN/cli/luoctl-bin.cjs" --socket "$SOCK" "$@"
}

start_luod() {
  mkdir -p /run/luod
  # The guest's / is the host's, read-only: the update records go to the output share, or
  # to LUOD_RECORDS (optional) when the job copies them there itself.
  # LUOD_NODE_FLAGS (optional, word-split): node's own flags, for investigations (--cpu-prof ...).
  node ${LUOD_NODE_FLAGS:-} "$BIN/daemon/luod-bin.cjs" --socket "$SOCK" --timeline /dev/console --claim-timeout 300 --records "${LUOD_RECORDS:-$OUT/records}" \
    >"$OUT/luod.boot$BOOT.log" 2>&1 &
  LUOD_PID=$!
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds; `failed`
# on the timeout, or when luod (once started) has exited. Returns 1 where `failed` returns.
wait_for() {
  limit=$(($1 * 10))
  what=$2
  shift 2
  n=0
  until "$@"; do
    n=$((n + 1))
    if [ "$n" -ge "$limit" ]; then
      failed "timeout waiting for $what"
      return 1
    fi
    if [ -n "${LUOD_PID:-}" ] && ! kill -0 "$LUOD_PID" 2>/dev/null; then
      failed "luod exited (see luod.boot$BOOT.log)"
      return 1
    fi
    sleep 0.1
  done
}
