# syntax=docker/dockerfile:1
# blaze-worker, CUDA build (`--features cuda`): built on the CUDA devel image, run on the CUDA
# runtime image (cuBLAS, cuRAND; the driver comes from the node), user 65532. Not yet built or
# tested in CI. CUDA_COMPUTE_CAP picks the GPU generation candle's kernels are compiled for
# (90: H100/H200, 89: L4/L40S, 80: A100).
#   docker build -f docker/worker-cuda.Dockerfile -t ghcr.io/blaze-ai/blaze-worker:0.1.0-cuda .

FROM nvidia/cuda:12.6.3-devel-ubuntu24.04 AS build
ARG RUST_VERSION=1.95.0
ARG CUDA_COMPUTE_CAP=90
ARG TARGET_CPU=x86-64-v3
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    RUSTFLAGS="-C target-cpu=${TARGET_CPU}" \
    CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:${PATH}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p blaze-worker --bin blaze-worker --features cuda \
    && install -D target/release/blaze-worker /out/blaze-worker

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="blaze-worker" \
      org.opencontainers.image.description="Blaze inference worker (CUDA)" \
      org.opencontainers.image.source="https://github.com/blaze-ai/blaze" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}-cuda"
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/blaze-worker /usr/local/bin/blaze-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/blaze-worker"]
