#!/usr/bin/env bash
# Does a cache miss on a cold disk stall the worker? Ten connections fetch one cached page while
# fifty others request paths of the 200,000-file large tree (scripts/compare.sh makes it) right
# after the page cache and dentries are dropped; prints the cached page's latency and both
# groups' request counts. Server on CPU 0 (one worker), both load generators on CPU 1. Needs
# root (drop_caches).
#
# Usage: scripts/cold-miss.sh [BINARY...]   (default: target/release/ringserve)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringserve -p loadgen
root=target/compare/large
paths=target/compare/large-paths.txt
if [ ! -f "$root/.made-200000" ]; then
    python3 -c 'import sys; sys.path.insert(0, "scripts"); import compare; compare.make_large_root(200_000, 50_000)'
fi
loadgen=target/release/loadgen
port=18190
for binary in "${@:-target/release/ringserve}"; do
    sync
    echo 3 > /proc/sys/vm/drop_caches
    taskset -c 0 "$binary" --threads 1 --keepalive-requests 100000000 --root "$root" \
        --addr "127.0.0.1:$port" >/dev/null 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null' EXIT
    sleep 0.5
    curl -s -o /dev/null "http://127.0.0.1:$port/index.html"
    taskset -c 1 "$loadgen" -t1 -c50 -d5s --paths-file "$paths" "http://127.0.0.1:$port/" \
        > target/compare/cold-miss.out 2>&1 &
    misses=$!
    hot=$(taskset -c 1 "$loadgen" -t1 -c10 -d5s "http://127.0.0.1:$port/index.html" 2>&1)
    wait "$misses"
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "== $binary"
    echo "cached page: $(echo "$hot" | grep -E ' p50 ' | sed 's/^ *//')"
    echo "cached page: $(echo "$hot" | grep -E 'requests in' | sed 's/^ *//')"
    echo "cached page: $(echo "$hot" | grep -E 'Status:' | sed 's/^ *//')"
    echo "cold paths:  $(grep -E 'requests in' target/compare/cold-miss.out | sed 's/^ *//')"
    echo "cold paths:  $(grep -E 'Status:' target/compare/cold-miss.out | sed 's/^ *//')"
done
