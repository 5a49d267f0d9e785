#!/usr/bin/env bash
# Slow-client attacks against ringserve with slowhttptest (Debian), while a normal client keeps
# fetching the page: the normal client must be served promptly throughout.
#
# Usage: scripts/slowloris.sh [SECONDS_PER_ATTACK]   (default 20; loopback only; ~1 minute per
#        server and run)
# Runs ringserve, then lighttpd as the reference, under the same attacks (SERVERS="ringserve
# ringserve-epoll lighttpd" picks others; ONLY_SLOWREAD=1 skips the slow-headers attack;
# RUNS=5 repeats the whole set, servers interleaved), and reports the normal client's fetches:
# how many failed, p50, p90 and the worst, per run and, with several runs, over all of them.
# Not part of scripts/test.sh: it takes minutes and needs slowhttptest.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
port=18099
url="http://127.0.0.1:${port}"

if ! command -v slowhttptest >/dev/null || ! command -v lighttpd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q slowhttptest lighttpd
    systemctl stop lighttpd >/dev/null 2>&1 || true
fi
bin="${CARGO_TARGET_DIR:-target}/release/ringserve"
cargo build --release -q -p ringserve

root="$(mktemp -d)"
work="$(mktemp -d)"
cleanup() { if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$root" "$work"; }
trap cleanup EXIT
printf '<!DOCTYPE html><title>probe</title><p>hello</p>\n' > "$root/index.html"
head -c $((4 * 1024 * 1024)) /dev/urandom > "$root/big.bin"

ulimit -n 20000
# The server on CPU 0, the attack and the probe on CPU 1, as in every measurement here.
start_server() {
    case "$1" in
        ringserve | ringserve-epoll)
            local engine=auto
            [ "$1" = ringserve-epoll ] && engine=epoll
            taskset -c 0 "$bin" --root "$root" --addr "127.0.0.1:${port}" --threads 1 \
                --engine "$engine" --header-timeout 5 --send-timeout 5 > "$work/server.log" &
            ;;
        lighttpd)
            printf '%s\n' "server.document-root = \"$root\"" 'server.bind = "127.0.0.1"' \
                "server.port = $port" 'server.max-fds = 20000' 'server.max-connections = 10000' \
                'server.max-read-idle = 5' 'server.max-write-idle = 5' \
                "server.errorlog = \"$work/lighttpd-error.log\"" 'index-file.names = ("index.html")' \
                'mimetype.assign = (".html" => "text/html", ".bin" => "application/octet-stream")' \
                > "$work/lighttpd.conf"
            taskset -c 0 lighttpd -D -f "$work/lighttpd.conf" > "$work/server.log" 2>&1 &
            ;;
        *) echo "slowloris.sh: unknown server $1" >&2; exit 2 ;;
    esac
    server=$!
    sleep 0.5
}

# Fetches the page every 0.25 s for $1 seconds; prints one time_total per line.
probe() {
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        taskset -c 1 curl -s -o /dev/null -w '%{http_code} %{time_total} %{time_connect}\n' --max-time 5 "$url/" || echo "000 5"
        sleep 0.25
    done
}

summarize() {
    sort -k2 -g "$1" | awk -v name="$2" '
        { n++; t[n] = $2; if ($1 != "200") bad++ }
        END {
            p90 = int(n * 0.9 + 0.999); if (p90 < 1) p90 = 1
            printf "%s: %d fetches, %d failed, p50 %.1f ms, p90 %.1f ms, max %.1f ms\n",
                   name, n, bad, t[int((n + 1) / 2)] * 1000, t[p90] * 1000, t[n] * 1000
            if (bad > 0 || t[n] > 1.0) exit 1
        }'
}

status=0
runs="${RUNS:-1}"
for run in $(seq "$runs"); do
for name in ${SERVERS:-ringserve lighttpd}; do
[ "$runs" -gt 1 ] && echo "==> run $run of $runs"
start_server "$name"
if [ "${ONLY_SLOWREAD:-}" != 1 ]; then
echo "==> $name, slowloris (slow headers): 1000 connections, a header line every 2 s, ${secs} s"
taskset -c 1 slowhttptest -H -c 1000 -r 500 -i 2 -l "$secs" -u "$url/" -p 3 > "$work/slowloris.txt" 2>&1 &
attack=$!
sleep 2
probe $((secs - 3)) > "$work/probe-slowloris.txt"
wait "$attack" || true
grep -E "connected|closed|service available" "$work/slowloris.txt" | tail -4 || true
summarize "$work/probe-slowloris.txt" "$name: normal client during slowloris" \
    || { [ "$name" = lighttpd ] || status=1; }
fi

echo "==> $name, slow read: 1000 connections reading 16 bytes every 3 s from a 4 MiB file, ${secs} s"
taskset -c 1 slowhttptest -X -c 1000 -r 500 -w 512 -y 1024 -n 3 -z 16 -k 3 -l "$secs" -u "$url/big.bin" -p 3 \
    > "$work/slowread.txt" 2>&1 &
attack=$!
sleep 2
probe $((secs - 3)) > "$work/probe-slowread.txt"
wait "$attack" || true
grep -E "connected|closed|service available" "$work/slowread.txt" | tail -4 || true
summarize "$work/probe-slowread.txt" "$name: normal client during slow read" \
    || { [ "$name" = lighttpd ] || status=1; }
cat "$work/probe-slowread.txt" >> "$work/all-slowread-$name.txt"

kill -0 "$server" 2>/dev/null || { echo "$name died during the attacks"; exit 1; }
echo "$name still running; open descriptors now: $(ls /proc/$server/fd | wc -l)"
kill "$server"; wait "$server" 2>/dev/null || true
server=
sleep 1
done
done
if [ "$runs" -gt 1 ]; then
    echo "==> slow read, all $runs runs"
    for name in ${SERVERS:-ringserve lighttpd}; do
        summarize "$work/all-slowread-$name.txt" "$name: normal client during slow read, $runs runs" || true
    done
fi
exit $status
