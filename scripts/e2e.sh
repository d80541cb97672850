#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e): builds the tools it needs the first
# time (tens of minutes on 2 cores, with progress; cached under
# ~/.cache/philotes afterwards), builds the worker, then runs the tests.
#
#   scripts/e2e.sh                 # everything
#   scripts/e2e.sh -run TestSmoke  # extra arguments go to `go test`
#
# PHILOTES_E2E_KEEP=1 keeps each test's stack folder (logs, data) for inspection.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

start=$(date +%s)
"$root/test/e2e/tools/build.sh"
echo "e2e: tools ready after $(($(date +%s) - start))s" >&2

mkdir -p "$root/bin"
(cd "$root" && CGO_ENABLED=0 go build -o bin/philotes-worker ./cmd/philotes-worker)
export PHILOTES_WORKER_BIN="$root/bin/philotes-worker"

cd "$root/test/e2e"
go test -tags e2e -count=1 -timeout 40m -v "$@" ./...
echo "e2e: done after $(($(date +%s) - start))s" >&2
