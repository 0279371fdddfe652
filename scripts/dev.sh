#!/usr/bin/env bash
# `make dev`: Blaze on its embedded development control plane. For now that is the API server
# alone, with the Blaze CRDs and the quickstart applied: the engine and router are stored and
# validated, but no pod runs them until the process kubelet and the operator are wired in.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

listen="${BLAZE_DEV_LISTEN:-127.0.0.1:6443}"
state=".dev/state"
kubeconfig="$PWD/.dev/kubeconfig"
mkdir -p .dev

cargo build --release -q -p blaze
bin="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/blaze"
rm -f "$kubeconfig"
"$bin" dev apiserver --listen "$listen" --kubeconfig "$kubeconfig" \
    --data-dir "$state" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM

export KUBECONFIG="$kubeconfig"
deadline=$((SECONDS + 30))
until [[ -s "$kubeconfig" ]] && kubectl get --raw /readyz >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then echo "the API server did not come up within 30 s" >&2; exit 1; fi
    kill -0 "$server" 2>/dev/null || { echo "the API server exited" >&2; exit 1; }
    sleep 0.2
done

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established crd/blazeengines.blaze.ai crd/blazerouters.blaze.ai >/dev/null
kubectl apply --server-side -f manifests/examples/quickstart.yaml

cat <<MSG

Blaze development control plane is up (API server only: workers, routers and the operator
do not run on it yet).

  export KUBECONFIG=$kubeconfig
  kubectl get blaze
  kubectl explain blazeengine.spec.autoscaling

Press Ctrl-C to stop.
MSG
wait "$server"
