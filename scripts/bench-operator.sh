#!/usr/bin/env bash
# `make bench-operator`: the operator reconciling N BlazeEngines (default 1,000, replicas 0 so
# no model process starts) on the development control plane: prints the time until every
# engine's status describes its generation and the operator's peak memory. Both run as release
# builds; BLAZE_BIN_DIR picks prebuilt binaries instead.
set -euo pipefail
cd "$(dirname "$0")/.."

engines="${1:-1000}"
if [[ -z "${BLAZE_BIN_DIR:-}" ]]; then
    cargo build --release -q -p blaze -p blaze-operator
    target="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    export BLAZE_BIN_DIR="$target/release"
fi
dir="$(mktemp -d)"
"$BLAZE_BIN_DIR/blaze" dev up --dir "$dir" --no-operator --no-examples \
    --listen 127.0.0.1:0 --port 0 --pod-addresses 127.0.71.1-127.0.71.254 >"$dir/up.log" 2>&1 &
up=$!
trap '"$BLAZE_BIN_DIR/blaze" dev down --dir "$dir" >/dev/null 2>&1; wait $up 2>/dev/null; rm -rf "$dir"' EXIT
deadline=$((SECONDS + 60))
until grep -q "control plane ready in" "$dir/up.log" 2>/dev/null; do
    (( SECONDS < deadline )) || { cat "$dir/up.log" >&2; exit 1; }
    sleep 0.1
done
KUBECONFIG="$dir/kubeconfig" RUST_LOG=warn "$BLAZE_BIN_DIR/blaze-operator" bench --engines "$engines"
