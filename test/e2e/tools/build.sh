#!/usr/bin/env bash
# Builds the binaries the end-to-end stack runs, from the Go module proxy, into
# $PHILOTES_TOOLS_CACHE (default $HOME/.cache/philotes)/<tool>-<version>/bin/.
# A tool whose binaries are already there is skipped, so a warm run takes a
# second. A cold build takes tens of minutes on 2 cores: it prints which tool it
# is building and the elapsed time every PROGRESS_EVERY seconds (default 30).
#
# Usage: build.sh [etcd|kubernetes|keda|prometheus|versitygw ...]   (default: all)
#
# versitygw (the Versity S3 Gateway, the tests' S3 server) is also needed by make test.
#
# Builds run at nice 19 (NICE=0 to change) because other work shares the cores.
# Prometheus comes from Debian's package (apt-get), not from a build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PHILOTES_TOOLS_CACHE:-$HOME/.cache/philotes}"
progress_every="${PROGRESS_EVERY:-30}"
nice_level="${NICE:-19}"

etcd_version=v3.7.3
kubernetes_version=v1.37.2
keda_version=v2.21.0
# The S3 server's version is defined once, in the Go package that starts it.
versitygw_version="$(sed -n 's/^const Version = "\(v[0-9.]*\)".*/\1/p' "$here/../../s3test/s3test.go")"

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0

log() { printf '%s build.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# build_one NAME MODULE_DIR OUT_DIR LDFLAGS PACKAGE
# Builds PACKAGE inside the wrapper module MODULE_DIR into OUT_DIR/NAME,
# printing progress while it runs, and records the wall time.
build_one() {
	local name="$1" moddir="$2" outdir="$3" ldflags="$4" pkg="$5"
	if [[ -x "$outdir/$name" ]]; then
		log "$name: cached at $outdir/$name"
		return 0
	fi
	mkdir -p "$outdir"
	local buildlog="$cache/logs/$name.log"
	mkdir -p "$cache/logs"
	log "$name: building $pkg (log: $buildlog)"
	local start now next
	start=$(date +%s)
	next=$((start + progress_every))
	if [[ "$moddir" == - ]]; then
		# A module that builds with go install pkg@version (no replace directives): no wrapper needed.
		(mkdir -p "$outdir/.$name.gobin" && GOBIN="$outdir/.$name.gobin" nice -n "$nice_level" go install -v -trimpath -ldflags "$ldflags" "$pkg" &&
			mv "$outdir/.$name.gobin/$name" "$outdir/.$name.tmp" && rmdir "$outdir/.$name.gobin") >"$buildlog" 2>&1 &
	else
		(cd "$moddir" && exec nice -n "$nice_level" go build -v -ldflags "$ldflags" -o "$outdir/.$name.tmp" "$pkg") >"$buildlog" 2>&1 &
	fi
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		# A progress ticker, not synchronisation: wait below collects the exit code.
		sleep 1
		now=$(date +%s)
		if ((now >= next)); then
			next=$((now + progress_every))
			log "$name: $(fmt_secs $((now - start))) elapsed, $(grep -c . "$buildlog" || true) packages compiled so far"
		fi
	done
	if ! wait "$pid"; then
		tail -n 30 "$buildlog" >&2
		log "$name: FAILED after $(fmt_secs $(($(date +%s) - start))); see $buildlog"
		return 1
	fi
	mv "$outdir/.$name.tmp" "$outdir/$name"
	now=$(date +%s)
	log "$name: built in $(fmt_secs $((now - start))) -> $outdir/$name"
	printf '%s\t%s\t%ds\n' "$(date -u +%FT%TZ)" "$name" $((now - start)) >>"$cache/build-times.tsv"
}

build_etcd() {
	build_one etcd "$here/etcd" "$cache/etcd-$etcd_version/bin" "-s -w" \
		github.com/philotes/philotes-worker/test/e2e/tools/etcd
}

build_kubernetes() {
	local v="$kubernetes_version" minor
	minor="$(cut -d. -f2 <<<"$v")"
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	local cmd
	for cmd in kube-apiserver kube-controller-manager; do
		build_one "$cmd" "$here/kubernetes" "$cache/kubernetes-$v/bin" "$ld" "k8s.io/kubernetes/cmd/$cmd"
	done
}

build_keda() {
	local v="$keda_version"
	local ld="-s -w -X github.com/kedacore/keda/v2/version.Version=$v -X github.com/kedacore/keda/v2/version.GitCommit=$v"
	build_one keda-operator "$here/keda" "$cache/keda-$v/bin" "$ld" github.com/kedacore/keda/v2/cmd/operator
	build_one keda-adapter "$here/keda" "$cache/keda-$v/bin" "$ld" github.com/kedacore/keda/v2/cmd/adapter
}

build_versitygw() {
	[[ -n "$versitygw_version" ]] || { log "versitygw: no version found in test/s3test/s3test.go"; return 1; }
	build_one versitygw - "$cache/versitygw-$versitygw_version/bin" "-s -w" \
		"github.com/versity/versitygw/cmd/versitygw@$versitygw_version"
}

# Prometheus from Debian. The package must not start a service: policy-rc.d
# refuses every start while it installs.
build_prometheus() {
	if dpkg -s prometheus >/dev/null 2>&1 && [[ -x /usr/bin/prometheus ]]; then
		log "prometheus: installed ($(dpkg-query -W -f='${Version}' prometheus))"
		return 0
	fi
	local start policy=/usr/sbin/policy-rc.d added=""
	start=$(date +%s)
	log "prometheus: apt-get install prometheus"
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		added=1
	fi
	local rc=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
		>"$cache/logs/prometheus.log" 2>&1 || rc=$?
	[[ -n "$added" ]] && rm -f "$policy"
	# Debian's package may leave its own service running where an init system exists.
	if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
		systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
	fi
	if ((rc != 0)); then
		tail -n 20 "$cache/logs/prometheus.log" >&2
		log "prometheus: install FAILED"
		return 1
	fi
	log "prometheus: installed in $(fmt_secs $(($(date +%s) - start)))"
	printf '%s\t%s\t%ds\n' "$(date -u +%FT%TZ)" prometheus $(($(date +%s) - start)) >>"$cache/build-times.tsv"
}

main() {
	mkdir -p "$cache/logs"
	local tools=("$@")
	((${#tools[@]})) || tools=(etcd kubernetes keda prometheus versitygw)
	# One build at a time per cache: a second caller waits for the first.
	exec 9>"$cache/.build.lock"
	if ! flock -n 9; then
		log "another build holds $cache/.build.lock; waiting for it"
		flock 9
	fi
	local total_start t
	total_start=$(date +%s)
	for t in "${tools[@]}"; do
		case "$t" in
		etcd | kubernetes | keda | prometheus | versitygw) "build_$t" ;;
		*)
			log "unknown tool $t (want etcd, kubernetes, keda, prometheus or versitygw)"
			return 2
			;;
		esac
	done
	log "all done in $(fmt_secs $(($(date +%s) - total_start))); binaries under $cache"
}

main "$@"
