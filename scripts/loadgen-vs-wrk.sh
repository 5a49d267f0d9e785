#!/usr/bin/env bash
# loadgen against Debian's wrk as instruments: both drive the same ringserve (one worker pinned
# to CPU 0) from CPU 1, alternately, and the CPU time each driver used is read with
# /usr/bin/time. Prints requests per driver CPU-second and requests/s, medians of the rounds.
#
# Usage: scripts/loadgen-vs-wrk.sh [--rounds N] [--duration SECS]
# Uses the root and wrk's pipelining script that scripts/compare.sh generates (target/compare);
# runs it in quick mode if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
duration=3
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        *) echo "loadgen-vs-wrk.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
pipeline_lua=target/compare/conf/pipeline.lua
[ -d target/compare/root ] && [ -f "$pipeline_lua" ] || scripts/compare.sh --quick >/dev/null
cargo build --release -q -p ringserve -p loadgen

port=18090
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c 0 target/release/ringserve --root target/compare/root --threads 1 \
    --addr "127.0.0.1:$port" --keepalive-requests 100000000 --warm --revalidate-interval 0 >/dev/null &
server=$!
sleep 0.5

# One run of DRIVER on PATH with PIPELINE depth; prints "driver workload requests cpu_seconds".
run() {
    local driver=$1 path=$2 pipeline=$3 out cpu requests
    local url="http://127.0.0.1:$port$path"
    if [ "$driver" = loadgen ]; then
        out=$( { /usr/bin/time -f "CPU %U %S" taskset -c 1 target/release/loadgen -t1 -c100 \
            -d "${duration}s" --pipeline "$pipeline" --json "$url"; } 2>&1 )
        requests=$(grep -v '^CPU' <<<"$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"]["completed"])')
    else
        local script=()
        [ "$pipeline" -gt 1 ] && script=(-s "$pipeline_lua")
        out=$( { /usr/bin/time -f "CPU %U %S" taskset -c 1 wrk -t1 -c100 -d "${duration}s" \
            "${script[@]}" "$url"; } 2>&1 )
        requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    fi
    cpu=$(awk '/^CPU/ { print $2 + $3 }' <<<"$out")
    echo "$driver $path,$pipeline $requests $cpu"
}

for _ in $(seq "$rounds"); do
    for workload in "/small.html 1" "/small.html 16" "/image.jpg 1" "/big.bin 1"; do
        set -- $workload
        run loadgen "$1" "$2"
        run wrk "$1" "$2"
    done
done > "$work/runs"
python3 - "$duration" "$work/runs" <<'PY'
import statistics, sys
duration, runs = float(sys.argv[1]), {}
for line in open(sys.argv[2]):
    driver, workload, requests, cpu = line.split()
    runs.setdefault(workload, {}).setdefault(driver, []).append((int(requests), float(cpu)))
print("| workload | wrk req/CPU-s | loadgen req/CPU-s | ratio | wrk req/s | loadgen req/s |")
print("|---|---|---|---|---|---|")
for workload, drivers in runs.items():
    per_cpu = {d: statistics.median(r / c for r, c in v) for d, v in drivers.items()}
    rate = {d: statistics.median(r / duration for r, _ in v) for d, v in drivers.items()}
    path, depth = workload.split(",")
    name = path + (f", pipelining {depth}" if depth != "1" else "")
    wrk, lg = per_cpu["wrk"], per_cpu["loadgen"]
    print(f"| {name} | {wrk:,.0f} | {lg:,.0f} | {lg / wrk:.2f}x | {rate['wrk']:,.0f} | {rate['loadgen']:,.0f} |")
PY
