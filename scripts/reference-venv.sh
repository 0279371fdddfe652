#!/usr/bin/env bash
# The independent reference implementations of the embedding and diffusion models the worker
# serves: sentence-transformers and diffusers on PyTorch (CPU), in a virtual environment of
# its own at .dev/reference-venv (git-ignored; about 5.5 GB, as PyPI's torch wheel brings CUDA
# libraries it does not use here). scripts/reference-embeddings.py runs in it: it made the
# reference vectors under crates/blaze-worker/tests/data/, and `make bench-worker` times it
# beside the worker; scripts/reference-diffusion.py made the reference images under
# crates/blaze-worker/tests/data/diffusion/. Pinned to the versions the checked-in data were
# made with. Idempotent and quiet; prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.dev/reference-venv
if ! "$venv/bin/python" -c "import sentence_transformers, diffusers" 2>/dev/null; then
    echo "installing torch, sentence-transformers and diffusers into $venv (a few minutes, once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        torch==2.15.0 sentence-transformers==6.3.0 transformers==5.25.0 tokenizers==0.23.3 \
        safetensors==0.8.0 numpy==2.4.6 diffusers==0.42.1 pillow==13.0.0 >/dev/null
fi
echo "$venv/bin/python"
