# Sourced by the guest jobs that run a QEMU VM through luo-qemu (qemu-update.sh, qualify.sh),
# once they set BIN, OUT, BOOT, SOCK, RAM, WAIT, ID, IMG, SERIAL and define failed(): the
# luo-qemu command (the same in both boots but for the serial file), the counter guest's
# CMOS second changes, and this kernel's wall clock samples. Sets LQ_PID.

# The same command in both boots but for the serial file. Its log goes through a FIFO to a
# reader that keeps it on the share and puts its events on the console as phase marks.
start_luo_qemu() {
  fifo=/run/luo-qemu.log.fifo
  rm -f "$fifo"
  mkfifo "$fifo" || failed "mkfifo $fifo"
  (
    while IFS= read -r line; do
      printf '%s\n' "$line" >>"$OUT/luo-qemu.boot$BOOT.log"
      case "$line" in
        *'"event":"'*)
          event=${line#*\"event\":\"}
          event=${event%%\"*}
          case "$event" in
            qemu-*) ;;
            *) event=qemu-$event ;;
          esac
          echo "LUOKIT-PHASE path=qemu boot=$BOOT phase=$event"
          ;;
      esac
    done <"$fifo"
  ) &
  node "$BIN/cli/luo-qemu-bin.cjs" --id "$ID" --ram "$RAM" --socket "$SOCK" --state-dir /run/luo-qemu --luod-timeout 300 -- \
    qemu-system-x86_64 -accel tcg,tb-size=32 -nodefaults -nographic -display none \
    -drive "file=$IMG,format=raw,if=floppy" -serial "file:$SERIAL" \
    >"$OUT/luo-qemu.boot$BOOT.out" 2>"$fifo" &
  LQ_PID=$!
}

# How many times the counter guest's CMOS clock (R=) changed in FILE.
edges() {
  n=$(grep -ao 'R=[0-9]*' "$1" 2>/dev/null | uniq | wc -l)
  [ "$n" -gt 0 ] && n=$((n - 1))
  echo "$n"
}

# wait_edges FILE N: until the counter printed N changes of its CMOS second into FILE; on a
# timeout, or luo-qemu or luod gone, calls failed (the job's own) and returns 1.
wait_edges() {
  limit=$((WAIT * 10))
  k=0
  until [ "$(edges "$1")" -ge "$2" ]; do
    k=$((k + 1))
    if [ "$k" -ge "$limit" ]; then
      failed "timeout: the counter guest printed $(edges "$1") CMOS second changes into $(basename "$1") in ${WAIT}s, waiting for $2"
      return 1
    fi
    if ! kill -0 "$LQ_PID" 2>/dev/null; then
      failed "luo-qemu exited (see luo-qemu.boot$BOOT.log)"
      return 1
    fi
    if ! kill -0 "$LUOD_PID" 2>/dev/null; then
      failed "luod exited (see luod.boot$BOOT.log)"
      return 1
    fi
    sleep 0.1
  done
}

# This kernel's wall clock, a few samples: the host takes the one least delayed.
clock_samples() {
  for _ in 1 2 3 4 5 6; do
    echo "LUOKIT-CLOCK boot=$BOOT realtime=$(date +%s.%N)"
  done
}

