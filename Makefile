# Philotes worker. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/philotes-worker
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: help run build test lint unit race s3-server charts chart-readme bench soak docker e2e demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# One go build for both binaries, so their packages compile once. -gcflags=all=-l (no inlining) halves a cold build
# (arrow-go's generic kernels dominate it) and costs the worker a little speed that a quick start does not need.
run: ## quick start: PostgreSQL, the worker and a load for 60 s, a live status, then every row checked in the lake (ARGS="-duration 2m")
	@d=$$(mktemp -d -t philotes-run-XXXXXX); trap 'rm -rf "$$d"' EXIT; \
	echo "building the worker and the quick start (about 1.5 min on a fresh machine, seconds after)..."; \
	$(GO) build -gcflags=all=-l -ldflags="-s -w" -o "$$d/" ./cmd/philotes-worker ./bench/quickstart && \
	"$$d/quickstart" -worker-bin "$$d/philotes-worker" $(ARGS)

build: ## build bin/philotes-worker (static, CGO-free)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN) ./cmd/philotes-worker

test: lint unit race charts ## everything CI runs: lint, unit + integration tests on a real PostgreSQL, the race detector, chart checks

lint: ## gofmt and go vet on every module
	@out=$$(gofmt -l cmd internal bench test); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/charts && $(GO) vet ./...
	cd test/e2e && $(GO) vet -tags e2e ./...

unit: s3-server ## Go tests of the worker (they start their own PostgreSQL and S3 server)
	$(GO) test -count=1 -timeout 20m ./...

race: s3-server ## the worker's packages under the race detector (about 1.5 min)
	$(GO) test -race -count=1 -timeout 20m ./internal/... ./cmd/...

s3-server: ## build the tests' S3 server (Versity S3 Gateway) into ~/.cache/philotes once (about 2.5 min cold)
	bash test/e2e/tools/build.sh versitygw

charts: ## helm lint (Helm 3 and 4), README freshness, chart render + schema tests, alert rule tests (promtool)
	bash scripts/chart-check.sh

chart-readme: ## regenerate the chart READMEs from values.yaml
	bash scripts/chart-check.sh --fix-readme

bench: ## throughput against pg_recvlogical on 1,000,000 rows (ARGS="-rows 100000" for a quick run)
	bash bench/run.sh $(ARGS)

soak: ## long-run trends (memory, snapshots, metadata, commit time) and burst scaling, 30 min (SOAK_ARGS="-duration 3m" for a quick run)
	bash bench/soak.sh $(SOAK_ARGS)

e2e: ## end-to-end: real control plane, KEDA, Prometheus, PostgreSQL on loopback (first run builds the tools: ~50 min on 2 cores)
	bash scripts/e2e.sh

demo: ## live autoscaling demo: real chart and worker under a load burst; KEEP=1 keeps the stack running
	bash scripts/e2e-demo.sh

docker: ## build the container image (needs a container engine)
	docker build -t philotes-worker:$(VERSION) .

clean: ## remove build output
	rm -rf bin e2e-report
