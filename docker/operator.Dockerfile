# syntax=docker/dockerfile:1
# blaze-operator: a static (musl) binary on distroless static, which carries CA certificates
# and the nonroot user 65532. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/blaze-ai/blaze-operator:0.1.0 .

FROM rust:1.95.0-bookworm AS build
# musl-tools: the C compiler for ring's assembly when targeting musl.
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
        -p blaze-operator --bin blaze-operator \
    && install -D target/x86_64-unknown-linux-musl/release/blaze-operator /out/blaze-operator

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="blaze-operator" \
      org.opencontainers.image.description="Reconciles BlazeEngines and BlazeRouters into GPU-scheduled workloads" \
      org.opencontainers.image.source="https://github.com/blaze-ai/blaze" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/blaze-operator /usr/local/bin/blaze-operator
USER 65532:65532
# /metrics, /livez, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/blaze-operator"]
CMD ["run"]
