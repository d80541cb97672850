#!/usr/bin/env bash
# Long-run soak of the real worker binary: memory, snapshots, metadata, files and commit-time trends, then burst
# and writer-scaling comparisons (see bench/soak/main.go).
# Usage: bench/soak.sh [-duration 30m] [-sample 30s] [-tables 3] [-tps 20] [-burst 20000] [-scale-burst 200000]
#                      [-worker-env KEY=VALUE,...] [-worker-bin path] [-s3] [-keep]
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench/soak "$@"
