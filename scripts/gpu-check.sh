#!/usr/bin/env bash
# The GPU check (docs/gpu.md): brings up Node and Ferry from the folder scripts/gpu-pack.sh made,
# when this machine has no Node, then runs dist/scripts/gpu-check.js, which writes its report into
# the --out folder. Every other argument goes to gpu-check.js (--cpu-only, --python, --seconds,
# --sandbox).
#   scripts/gpu-check.sh [--carry DIR] --out DIR [gpu-check.js arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --carry) CARRY=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
NODE=$(command -v node || true)
if [ -f "$CARRY/node.xz" ]; then
  # A directory every user can traverse: replicas run as the replica user and exec this binary.
  mkdir -p -m 0755 /tmp/ferry-node
  xz -dc "$CARRY/node.xz" > /tmp/ferry-node/node
  chmod 0755 /tmp/ferry-node/node
  NODE=/tmp/ferry-node/node
fi
[ -n "$NODE" ] || { echo "no node on PATH and no $CARRY/node.xz (scripts/gpu-pack.sh makes it)" >&2; exit 1; }
if [ -f "$CARRY/ferry.tar.xz" ]; then
  tar -xJf "$CARRY/ferry.tar.xz"
fi
command -v bwrap >/dev/null || export PATH="$PWD/$CARRY/bin:$PATH"
echo "node $("$NODE" --version) at $NODE; bwrap $(command -v bwrap || echo missing); python3 $(command -v python3 || echo missing)"
exec "$NODE" dist/scripts/gpu-check.js "${ARGS[@]}"
