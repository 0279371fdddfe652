#!/usr/bin/env bash
# `make bench-operator`: the operator reconciling N BlazeEngines (default 1,000, replicas 0 so
# no model process starts) on the development control plane: prints the time until every
# engine's status describes its generation and the operator's peak memory. Both run as release
# builds; BLAZE_BIN_DIR picks prebuilt binaries instead.
set -euo pipefail
cd "$(dirname "$0")/.."

engines="${1:-1000}"
PACKAGES="-p blaze -p blaze-operator"
source scripts/dev-background.sh
start_dev 127.0.71.1-127.0.71.254
RUST_LOG=warn "$BLAZE_BIN_DIR/blaze-operator" bench --engines "$engines"
