# syntax=docker/dockerfile:1
# blaze-worker, CPU build: glibc (the tokenizers' C++ and candle's kernels) on distroless cc,
# user 65532. Built for x86-64-v3 (AVX2, FMA, F16C) as .cargo/config.toml documents: the floor
# of the server CPUs Blaze targets; pass --build-arg TARGET_CPU=x86-64 for older ones.
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t ghcr.io/blaze-ai/blaze-worker:0.1.0 .
# GPU build: docker/worker-cuda.Dockerfile.

# Debian 12 (bookworm) on both sides, so the binary's glibc is the runtime's.
FROM rust:1.95.0-bookworm AS build
ARG TARGET_CPU=x86-64-v3
ENV RUSTFLAGS="-C target-cpu=${TARGET_CPU}"
WORKDIR /src
# Manifests first, sources after: the registry and target caches survive source changes.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p blaze-worker --bin blaze-worker \
    && install -D target/release/blaze-worker /out/blaze-worker

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="blaze-worker" \
      org.opencontainers.image.description="Blaze inference worker (CPU, x86-64-v3)" \
      org.opencontainers.image.source="https://github.com/blaze-ai/blaze" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/blaze-worker /usr/local/bin/blaze-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/blaze-worker"]
