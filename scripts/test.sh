#!/usr/bin/env bash
# The one test command. On a fresh Debian 12 machine it installs what is missing (Chromium for
# the browser test; GoAccess, nginx and the Prometheus client library for the access-log and
# metrics tests; rustfmt and clippy; compare.sh installs lighttpd, h2o, wrk and brotli), then
# runs: format check, clippy (warnings are errors), every unit and integration
# test of the workspace, the headless-browser test, and the comparison script in quick mode
# (only to check that it works; its numbers come from full runs).
#
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v goaccess >/dev/null 2>&1 || missing+=(goaccess)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=(python3-prometheus-client)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Debian starts nginx as a service on install; the tests run their own.
    as_root systemctl stop nginx >/dev/null 2>&1 || true
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        echo "==> installing rust component ${component}"
        rustup component add "${component}"
    fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test (unit, integration, browser)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
RINGSERVE_REQUIRE_BROWSER=1 RINGSERVE_REQUIRE_TOOLS=1 cargo test --workspace 2>&1 | tee "$log"

echo "==> scripts/compare.sh --quick (checks the comparison runs end to end)"
scripts/compare.sh --quick > target/compare-quick.log 2>&1 || { tail -30 target/compare-quick.log; exit 1; }
tail -16 target/compare-quick.log

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
