# Sourced by the guest jobs that run the kernel's own LUO selftests (selftests.sh, qualify.sh),
# once they set ST (the directory of the static binaries), OUT and BOOT.
# run_selftest NAME STAGE ARGS...: the program's output to $OUT/NAME.bootN.txt (and, indented,
# on the console: QUIET=1 leaves it off), its exit status as one marker:
#   LUOKIT-RESULT kind=selftest name=NAME stage=STAGE status=EXIT-STATUS
run_selftest() {
  name=$1
  stage=$2
  shift 2
  log="$OUT/$name.boot$BOOT.txt"
  echo "LUOKIT-RUN kind=selftest name=$name stage=$stage"
  "$ST/$name" "$@" >"$log" 2>&1
  status=$?
  [ -n "${QUIET:-}" ] || sed "s/^/  [$name] /" "$log"
  echo "LUOKIT-RESULT kind=selftest name=$name stage=$stage status=$status"
}
