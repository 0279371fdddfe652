#!/usr/bin/env bash
# `make bench-dev`: how long `blaze dev up` takes to a ready control plane, and the memory of
# the control plane process (API server, scheduler, controllers, kubelet) running N pods
# (default 50) of a small test binary. Prints the figures; leaves nothing running.
# BLAZE_BIN_DIR picks prebuilt binaries instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

pods="${1:-50}"
PACKAGES="-p blaze -p blaze-devnode --bins"
source scripts/dev-background.sh
start_dev 127.0.70.1-127.0.70.254
grep -o "control plane ready in [0-9.]* s" "$dir/up.log"
start=$(date +%s.%N)
kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench, namespace: default}
spec:
  replicas: $pods
  selector: {matchLabels: {app: bench}}
  strategy: {rollingUpdate: {maxSurge: "100%"}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      containers:
        - name: app
          image: blaze-devnode-testapp
          args: ["--listen=\$(POD_IP):8080"]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 2}
YAML
deadline=$((SECONDS + 300))
until [[ "$(kubectl get deploy bench -o jsonpath='{.status.readyReplicas}')" == "$pods" ]]; do
    (( SECONDS < deadline )) || { echo "$pods pods not ready within 300 s" >&2; exit 1; }
    sleep 0.2
done
ready=$pods
printf '%s pods ready in %.1f s\n' "$ready" "$(echo "$(date +%s.%N) - $start" | bc)"
sleep 5
rss=$(awk '/VmRSS/ {print $2}' /proc/$up/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$up/status)
printf 'control plane memory with %s pods: RSS %.1f MiB (peak %.1f MiB)\n' \
    "$ready" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)"
