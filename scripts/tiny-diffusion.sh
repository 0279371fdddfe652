#!/usr/bin/env bash
# Writes a tiny random-weight diffusion pipeline in the diffusers layout (model_index.json,
# unet/, vae/, text_encoder/, tokenizer/, scheduler/) into DIR, for trying the diffusion
# engine without a download:
#   scripts/tiny-diffusion.sh /tmp/tiny-sd [sd|sdxl|turbo] [SEED]
#   blaze-worker --kind diffusion --model file:///tmp/tiny-sd --default-width 64 --default-height 64
# Builds blaze-tiny-diffusion (release) on first use.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 DIR [sd|sdxl|turbo] [SEED]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p blaze-worker --bin blaze-tiny-diffusion
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/blaze-tiny-diffusion" "$@"
