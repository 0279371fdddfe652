# syntax=docker/dockerfile:1
# blaze-router: a static (musl) binary on distroless static (CA certificates, user 65532).
# Build from the repository root:
#   docker build -f docker/router.Dockerfile -t ghcr.io/blaze-ai/blaze-router:0.1.0 .

FROM rust:1.95.0-bookworm AS build
# musl-tools: the C compiler for mimalloc and ring when targeting musl.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Manifests first, sources after: the registry and target caches survive source changes.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p blaze-router --bin blaze-router \
    && install -D target/x86_64-unknown-linux-musl/release/blaze-router /out/blaze-router

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="blaze-router" \
      org.opencontainers.image.description="The Blaze data-plane proxy in front of inference workers" \
      org.opencontainers.image.source="https://github.com/blaze-ai/blaze" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/blaze-router /usr/local/bin/blaze-router
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/blaze-router"]
