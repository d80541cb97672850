#!/usr/bin/env bash
# Installs the chart tooling with `go install` (needs only Go, git and the Go module proxy):
#   Helm 3, Helm 4 and helm-docs, each into $PHILOTES_TOOLS/<name>-<version>/bin.
# Tools already present are reused. Prints one line per tool; with --print-env it also prints
# shell assignments HELM3=..., HELM4=..., HELM_DOCS=... for `eval`.
set -euo pipefail

HELM3_VERSION="${HELM3_VERSION:-v3.22.0}"
HELM4_VERSION="${HELM4_VERSION:-v4.3.1}"
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-v1.14.2}"
TOOLS_DIR="${PHILOTES_TOOLS:-$HOME/.cache/philotes/tools}"

print_env=false
if [[ "${1:-}" == "--print-env" ]]; then print_env=true; fi

log() { echo "chart-tools: $*" >&2; }

# install NAME VERSION PACKAGE BINARY
install_tool() {
  local name=$1 version=$2 pkg=$3 bin=$4
  local dir="$TOOLS_DIR/$name-$version/bin"
  if [[ -x "$dir/$bin" ]]; then
    log "$name $version: reusing $dir/$bin"
  else
    log "$name $version: go install $pkg@$version (this can take several minutes) ..."
    local start=$SECONDS
    mkdir -p "$dir"
    # A private GOBIN per tool keeps the two `helm` binaries apart. GOFLAGS=-mod=mod guards against a
    # surrounding vendor setting; GOWORK=off keeps a go.work in the caller's tree out of the build.
    GOBIN="$dir" GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$pkg@$version"
    log "$name $version: installed in $((SECONDS - start))s"
  fi
  echo "$dir/$bin"
}

helm3=$(install_tool helm3 "$HELM3_VERSION" helm.sh/helm/v3/cmd/helm helm)
helm4=$(install_tool helm4 "$HELM4_VERSION" helm.sh/helm/v4/cmd/helm helm)
helm_docs=$(install_tool helm-docs "$HELM_DOCS_VERSION" github.com/norwoodj/helm-docs/cmd/helm-docs helm-docs)

"$helm3" version --short >&2
"$helm4" version --short >&2
echo "helm-docs: $helm_docs" >&2

if $print_env; then
  printf 'HELM3=%q\nHELM4=%q\nHELM_DOCS=%q\n' "$helm3" "$helm4" "$helm_docs"
fi
