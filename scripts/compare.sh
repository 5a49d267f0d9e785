#!/usr/bin/env bash
# Side-by-side benchmark of ringserve (io_uring, epoll and blocking engines) against nginx, lighttpd
# and h2o on this machine: every server pinned to CPU 0 with one worker, the load generator on
# CPU 1, contenders interleaved over several rounds, medians reported. Writes
# target/compare/{results.json,results.md,chart.svg}, and the latency spectra of the small-page
# and page-load-mix rows drawn by `loadgen plot` (latency-*.svg, one line per server).
#
# Usage: scripts/compare.sh [--quick] [--rounds N] [--duration SECS]
# wrk runs beside loadgen on every row with files (a Lua script rotates the page-load mix's
# paths with Accept-Encoding: br, gzip).
#
#   --quick   one round of 1 s runs, 1,000 instead of 10,000 connections (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in nginx lighttpd h2o wrk brotli; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts nginx and lighttpd as services on install; the comparison runs its own.
systemctl stop nginx lighttpd h2o >/dev/null 2>&1 || true

cargo build --release -q -p ringserve -p loadgen
# cargo builds into $CARGO_TARGET_DIR when it is set: run the binaries from there.
target_dir="$(realpath "${CARGO_TARGET_DIR:-target}")"
export RINGSERVE_BIN="$target_dir/release/ringserve" LOADGEN_BIN="$target_dir/release/loadgen"
ulimit -n "$(ulimit -Hn)"
exec python3 scripts/compare.py "$@"
