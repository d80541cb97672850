#!/usr/bin/env bash
# Checks the Helm charts under charts/:
#   1. installs (or reuses) Helm 3, Helm 4 and helm-docs via scripts/chart-tools.sh;
#   2. builds the umbrella's file:// dependency offline with both Helm versions;
#   3. helm lint --strict on both charts with both Helm versions (defaults and the umbrella's values files);
#   4. fails when a chart README.md is not what helm-docs generates from values.yaml and README.md.gotmpl
#      (--fix-readme regenerates them instead);
#   5. runs the Go chart tests: cd test/charts && go test ./...
#   6. runs the alert rules' promtool unit tests (scripts/chart-alerts-test.sh; promtool from Debian's prometheus
#      package, `bash test/e2e/tools/build.sh prometheus`; skipped without it unless CI=true).
# Needs only Go, git and the Go module proxy (and promtool for step 6).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

fix_readme=false
if [[ "${1:-}" == "--fix-readme" ]]; then fix_readme=true; fi

eval "$(bash scripts/chart-tools.sh --print-env)"

step() { echo "chart-check: $*"; }
start=$SECONDS

# A scratch copy keeps the built dependency archive out of the working tree.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r charts "$work/charts"

# The worker chart refuses to render without the source database (database.sourceUrl or database.existingSecret).
src=(--set database.sourceUrl=postgres://philotes@db:5432/app)
umbrella_src=(--set philotes-worker.database.sourceUrl=postgres://philotes@db:5432/app)
for helm in "$HELM3" "$HELM4"; do
  v=$("$helm" version --short)
  # Keep each Helm's caches and repository config out of $HOME's defaults: no repositories are needed.
  export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"
  rm -f "$work"/charts/philotes/charts/*.tgz
  step "$v: helm dependency build charts/philotes (offline, file://../philotes-worker)"
  "$helm" dependency build "$work/charts/philotes" --skip-refresh
  step "$v: helm lint --strict charts/philotes-worker"
  "$helm" lint --strict "$work/charts/philotes-worker" "${src[@]}"
  for f in values.yaml values-dev.yaml values-production.yaml; do
    step "$v: helm lint --strict charts/philotes -f $f"
    "$helm" lint --strict "$work/charts/philotes" -f "$work/charts/philotes/$f" "${umbrella_src[@]}"
  done
  step "$v: helm template (both charts; the worker's with the dashboard, the alerts and a NetworkPolicy)"
  "$helm" template cdc "$work/charts/philotes-worker" "${src[@]}" --set keda.enabled=true \
    --set worker.iceberg.warehouse=s3://philotes-lake/warehouse --set grafanaDashboard.enabled=true \
    --set prometheusRule.enabled=true --set networkPolicy.enabled=true --set networkPolicy.restrictEgress=true >/dev/null
  "$helm" template cdc "$work/charts/philotes" -f "$work/charts/philotes/values-production.yaml" >/dev/null
done

step "README freshness (helm-docs)"
docs="$work/docs"
cp -r charts "$docs"
"$HELM_DOCS" --chart-search-root "$docs" --skip-version-footer --log-level warning
stale=()
for chart in philotes-worker philotes; do
  if ! cmp -s "$docs/$chart/README.md" "charts/$chart/README.md"; then
    stale+=("charts/$chart/README.md")
    if $fix_readme; then
      cp "$docs/$chart/README.md" "charts/$chart/README.md"
      step "regenerated charts/$chart/README.md"
    else
      diff -u "charts/$chart/README.md" "$docs/$chart/README.md" | head -40 || true
    fi
  fi
done
if ((${#stale[@]} > 0)) && ! $fix_readme; then
  echo "chart-check: stale: ${stale[*]}. Run scripts/chart-check.sh --fix-readme and commit the result." >&2
  exit 1
fi

step "go vet and go test in test/charts"
(cd test/charts && GOWORK=off go vet ./... && GOWORK=off go test -count=1 ./...)

step "alert rules: promtool test rules"
HELM4="$HELM4" bash scripts/chart-alerts-test.sh

step "all chart checks passed in $((SECONDS - start))s"
