#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has Python and torch but no Node, into
# one folder (default .gpu-carry/, gitignored) to carry there next to the repository:
#   node.xz        this machine's Node binary, stripped, xz-compressed
#   ferry.tar.xz   dist/ (the built server and scripts) and the production packages the server and a
#                  python replica load; not onnxruntime, transformers.js, node-llama-cpp (and their
#                  native builds), the Kubernetes and S3 clients: imported only by other flavors,
#                  runtimes or stores, and most of node_modules' size
#   bin/bwrap      bubblewrap, for a machine without it (it links libselinux, libcap, libpcre2)
# Run after `npx tsc -p tsconfig.json`, from the repository root or anywhere: scripts/gpu-pack.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-carry}
[ -f dist/scripts/gpu-check.js ] || { echo "build first: npx tsc -p tsconfig.json" >&2; exit 1; }
rm -rf "$DIR"
mkdir -p "$DIR/bin"
cp "$(command -v node)" "$DIR/node"
strip "$DIR/node" 2>/dev/null || true
xz -T0 -6 "$DIR/node"
cp "$(command -v bwrap)" "$DIR/bin/bwrap"
# Top-level package folders of the production dependency tree, minus the large ones named above.
EXCLUDE='^node_modules/(onnxruntime-(node|web|common)|@huggingface|node-llama-cpp|@node-llama-cpp|@img|sharp|@kubernetes|@aws-sdk|@aws-crypto|@smithy|@reflink)(/|$)'
npm ls --omit=dev --all --parseable 2>/dev/null \
  | sed -n "s|^$PWD/||p" | grep '^node_modules/' \
  | sed -E 's#^(node_modules/(@[^/]+/)?[^/]+).*#\1#' | sort -u | grep -Ev "$EXCLUDE" > "$DIR/packages.txt"
tar -cJf "$DIR/ferry.tar.xz" --exclude='*.map' --exclude='dist/test' --exclude='dist/ui' dist $(cat "$DIR/packages.txt")
du -b "$DIR"/node.xz "$DIR"/ferry.tar.xz "$DIR"/bin/bwrap
du -sb "$DIR"
