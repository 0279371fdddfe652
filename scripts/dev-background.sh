# Sourced by the benchmark scripts: binaries, and a `blaze dev up` in the background that
# stops when the script exits. Sets BLAZE_BIN_DIR, dir (its directory) and KUBECONFIG.
#   start_dev FIRST-LAST   pod addresses for this run (disjoint from other runs)
# BLAZE_BIN_DIR set beforehand picks prebuilt binaries instead of a release build of $PACKAGES.

if [[ -z "${BLAZE_BIN_DIR:-}" ]]; then
    # shellcheck disable=SC2086
    cargo build --release -q $PACKAGES
    target="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    export BLAZE_BIN_DIR="$target/release"
fi

start_dev() {
    dir="$(mktemp -d)"
    "$BLAZE_BIN_DIR/blaze" dev up --dir "$dir" --no-operator --no-examples \
        --listen 127.0.0.1:0 --port 0 --pod-addresses "$1" >"$dir/up.log" 2>&1 &
    up=$!
    trap '"$BLAZE_BIN_DIR/blaze" dev down --dir "$dir" >/dev/null 2>&1; wait $up 2>/dev/null; rm -rf "$dir"' EXIT
    export KUBECONFIG="$dir/kubeconfig"
    local deadline=$((SECONDS + 60))
    until grep -q "control plane ready in" "$dir/up.log" 2>/dev/null; do
        (( SECONDS < deadline )) || { cat "$dir/up.log" >&2; exit 1; }
        sleep 0.1
    done
}
