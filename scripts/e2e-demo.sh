#!/usr/bin/env bash
# The live autoscaling demo: brings the local stack up (building the tools the
# first time, with progress), installs charts/philotes-worker with the real
# worker, writes a burst of source rows, prints a live status line, writes
# e2e-report/demo.{csv,svg} and tears down. KEEP=1 keeps the stack running
# (kubeconfig and kubectl command printed) until Ctrl-C.
#
#   scripts/e2e-demo.sh [-rows N] [-rate N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/test/e2e/tools/build.sh"
mkdir -p "$root/bin"
(cd "$root" && CGO_ENABLED=0 go build -o bin/philotes-worker ./cmd/philotes-worker)

cd "$root/test/e2e"
keep=()
[[ "${KEEP:-}" == 1 ]] && keep=(-keep)
exec go run ./cmd/demo -worker "$root/bin/philotes-worker" -chart "$root/charts/philotes-worker" \
	-report "$root/e2e-report" "${keep[@]}" "$@"
