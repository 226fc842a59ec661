# Sourced by guest jobs: node_probe PATH BOOT times Node's own start (`node -e 1`) in this
# boot, twice: the first with the page cache as a kexec left it (cold: nothing has run node
# in this boot yet), the second warm. Marks on the console, stamped by the host as all marks
# are: phase=node-probe, node-cold, node-warm (test/vm/blackout.ts: the report's Node start).
node_probe() {
  echo "LUOKIT-PHASE path=$1 boot=$2 phase=node-probe"
  node -e 1
  echo "LUOKIT-PHASE path=$1 boot=$2 phase=node-cold"
  node -e 1
  echo "LUOKIT-PHASE path=$1 boot=$2 phase=node-warm"
}
