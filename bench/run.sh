#!/usr/bin/env bash
# Throughput of the worker against pg_recvlogical on the same slot workload (see bench/cdc/main.go).
# Usage: bench/run.sh [-rows 1000000] [-tx 100] [-batch 5000] [-processors 2] [-skip-sink]
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench/cdc "$@"
