#!/usr/bin/env bash
# The worker on a GPU: a random-weight llama of Llama 3.2 1B's shape (written on the spot, no
# download) served by the CUDA build of blaze-worker in bf16, measured at 1, 16 and 64
# concurrent streams, with the time to first token of the first request after the worker
# reported ready; then Hugging Face transformers on the same model and GPU, when the reference
# environment is there (scripts/reference-venv.sh, whose PyPI torch wheel runs on CUDA).
#
#   scripts/build-cuda.sh && scripts/gpu-bench.sh
#   DEVICE=cpu SHAPE=tiny STREAMS=1,4 scripts/gpu-bench.sh    # the same steps on a CPU
#
# Settings (environment): WORKER (default target/release/blaze-worker, the CUDA build),
# DEVICE (cuda), DTYPE (bf16), SHAPE (1b or tiny), STREAMS (1,16,64), TOKENS (128 per
# request), ROUNDS (2, medians), REFERENCE (1: run transformers when its environment exists,
# 0: never). The benchmark's client and the model writer are built here without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER=${WORKER:-target/release/blaze-worker}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
SHAPE=${SHAPE:-1b}
STREAMS=${STREAMS:-1,16,64}
TOKENS=${TOKENS:-128}
ROUNDS=${ROUNDS:-2}
REFERENCE=${REFERENCE:-1}
MODEL=$PWD/.dev/gpu-bench/llama-$SHAPE-$DTYPE

die() { echo "gpu-bench: $*" >&2; exit 1; }
say() { echo "gpu-bench: $*" >&2; }

[ -x "$WORKER" ] || die "$WORKER is missing: build the CUDA worker with scripts/build-cuda.sh (or set WORKER)"
cargo build --release -q -p blaze-worker --bin blaze-random-llama --bin blaze-serving-bench
if [ ! -f "$MODEL/model.safetensors" ]; then
    say "writing the $SHAPE model ($DTYPE) into $MODEL"
    target/release/blaze-random-llama "$MODEL.tmp" "$SHAPE" "$DTYPE" >/dev/null
    mv "$MODEL.tmp" "$MODEL"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
log=$(mktemp)
max_batch=$(tr ',' '\n' <<<"$STREAMS" | sort -n | tail -1)
RUST_LOG=${RUST_LOG:-info} "$WORKER" --model "file://$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
    --listen "127.0.0.1:$port" --max-batch-size "$max_batch" >"$log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null; rm -f "$log"' EXIT
started=$SECONDS
until curl -sf "$base/readyz" >/dev/null; do
    kill -0 $worker 2>/dev/null || { cat "$log" >&2; die "the worker stopped before it was ready"; }
    [ $((SECONDS - started)) -lt 900 ] || die "the worker was not ready within 900 s"
    sleep 0.2
done
say "ready in $((SECONDS - started)) s; $(curl -s "$base/v1/models" | python3 -c '
import json, sys
m = json.load(sys.stdin)["data"][0]
b = m.get("blaze") or {}
print("model", m["id"], "on", b.get("device"), "in", b.get("dtype"))' 2>/dev/null || true)"

echo "blaze-worker ($DEVICE, $DTYPE, $SHAPE):"
target/release/blaze-serving-bench --server "$base" --streams "$STREAMS" --tokens "$TOKENS" --rounds "$ROUNDS"
kill $worker 2>/dev/null; wait $worker 2>/dev/null || true

if [ "$REFERENCE" = 1 ] && [ -x .dev/reference-venv/bin/python ]; then
    batches=$(tr ',' '\n' <<<"$STREAMS" | awk '$1 <= 16' | paste -sd,)
    echo "Hugging Face transformers, same model and device:"
    .dev/reference-venv/bin/python scripts/reference-llama.py "$MODEL" --device "$DEVICE" \
        --dtype "$DTYPE" --batches "${batches:-1}" --tokens "$TOKENS"
elif [ "$REFERENCE" = 1 ]; then
    say "no transformers reference: run scripts/reference-venv.sh to add it"
fi
