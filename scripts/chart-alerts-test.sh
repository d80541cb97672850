#!/usr/bin/env bash
# Unit tests of the worker chart's alert rules with promtool (`promtool test rules`):
#   1. renders templates/prometheusrule.yaml with `helm template` (release cdc in namespace data, the labels the
#      tests' series carry) for each scenario below, and extracts the PrometheusRule's rule groups (its spec) into a
#      Prometheus rules file;
#   2. `promtool check rules` on each rules file;
#   3. `promtool test rules` on test/charts/testdata/alerts*_test.yaml, which read those rules files.
# promtool comes from Debian's prometheus package, the one the end-to-end suite runs:
#   bash test/e2e/tools/build.sh prometheus
# With CI=true a missing promtool fails the check; elsewhere the tests are skipped with that hint.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { echo "chart-alerts-test: $*"; }

if ! command -v promtool >/dev/null 2>&1; then
  if [[ "${CI:-}" == true ]]; then
    echo "chart-alerts-test: promtool is missing (CI=true, so this fails): install it with bash test/e2e/tools/build.sh prometheus" >&2
    exit 1
  fi
  step "SKIPPED: promtool not found. Install it (Debian's prometheus package) with: bash test/e2e/tools/build.sh prometheus"
  exit 0
fi

if [[ -z "${HELM4:-}" ]]; then
  eval "$(bash scripts/chart-tools.sh --print-env)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# render NAME [helm args...]: the rule groups of the chart's PrometheusRule as $work/NAME.rules.yaml.
render() {
  local name=$1
  shift
  "$HELM4" template cdc charts/philotes-worker --namespace data \
    --set database.sourceUrl=postgres://philotes@db:5432/app --set prometheusRule.enabled=true "$@" \
    --show-only templates/prometheusrule.yaml >"$work/$name.manifest.yaml"
  # The manifest ends with `spec:` and the groups indented below it: drop everything up to spec and one level of
  # indentation, which leaves `groups:` at the top, a rules file.
  awk 'found { sub(/^  /, ""); print } /^spec:$/ { found = 1 }' "$work/$name.manifest.yaml" >"$work/$name.rules.yaml"
  if ! grep -q '^groups:' "$work/$name.rules.yaml"; then
    echo "chart-alerts-test: no rule groups in the rendered PrometheusRule ($name):" >&2
    cat "$work/$name.manifest.yaml" >&2
    exit 1
  fi
  step "$name: promtool check rules"
  promtool check rules "$work/$name.rules.yaml"
}

step "$(promtool --version 2>&1 | head -1)"
# Defaults: a fixed Deployment, no autoscaler.
render alerts
# A release that can sleep at zero replicas (KEDA, minReplicaCount 0, woken by the PostgreSQL trigger).
render alerts-zero --set worker.iceberg.warehouse=s3://lake/wh --set keda.enabled=true --set keda.minReplicaCount=0 \
  --set keda.postgresql.enabled=true --set keda.postgresql.host=db --set keda.postgresql.database=app \
  --set keda.postgresql.user=keda --set keda.postgresql.password=x

cp test/charts/testdata/alerts*_test.yaml "$work/"
step "promtool test rules test/charts/testdata/alerts*_test.yaml"
(cd "$work" && promtool test rules alerts*_test.yaml)
step "alert rule tests passed"
