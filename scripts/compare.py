#!/usr/bin/env python3
"""Runs the comparison described in scripts/compare.sh (stdlib only)."""

import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

OUT = os.path.abspath("target/compare")
ROOT = os.path.join(OUT, "root")
LARGE_ROOT = os.path.join(OUT, "large")
LARGE_PATHS = os.path.join(OUT, "large-paths.txt")
CONF = os.path.join(OUT, "conf")
LOGS = os.path.join(OUT, "logs")
# compare.sh passes the binaries it built (under $CARGO_TARGET_DIR when that is set).
RINGSERVE = os.path.abspath(os.environ.get("RINGSERVE_BIN", "target/release/ringserve"))
LOADGEN = os.path.abspath(os.environ.get("LOADGEN_BIN", "target/release/loadgen"))
SERVER_CPU, DRIVER_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIX = [("style.css", 24), ("app.js", 180), ("vendor.js", 300), ("index.html", 12),
       ("about.html", 6), ("logo.svg", 9), ("icons.svg", 48), ("font.woff2", 70),
       ("font-bold.woff2", 76), ("hero.webp", 250), ("thumb1.webp", 30), ("thumb2.webp", 41),
       ("data.json", 90), ("config.json", 3), ("theme.css", 60), ("chunk1.js", 120),
       ("chunk2.js", 210), ("print.css", 5), ("manifest.json", 4), ("sprite.svg", 150)]
COMPRESSIBLE = (".css", ".js", ".html", ".svg", ".json")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def make_root():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "mix"))
    rng = random.Random(7)
    with open(os.path.join(ROOT, "small.html"), "w") as f:
        f.write("<!DOCTYPE html><html><head><title>bench</title></head>"
                "<body><p>A small page for benchmarks, about 150 bytes.</p></body></html>\n")
    for name, size in [("image.jpg", 50 * 1024), ("big.bin", 1024 * 1024)]:
        with open(os.path.join(ROOT, name), "wb") as f:
            f.write(rng.randbytes(size))
    words = ["ring", "serve", "static", "file", "const", "function", "return", "div", "class",
             "margin", "color", "value", "index", "buffer", "kernel", "socket"]
    paths = []
    for name, kib in MIX:
        path = os.path.join(ROOT, "mix", name)
        if name.endswith(COMPRESSIBLE):
            text = " ".join(rng.choice(words) for _ in range(kib * 1024 // 6))[: kib * 1024]
            data = text.encode()
        else:
            data = rng.randbytes(kib * 1024)
        with open(path, "wb") as f:
            f.write(data)
        if name.endswith(COMPRESSIBLE):
            with open(path + ".gz", "wb") as f:
                f.write(gzip.compress(data, 9))
            if shutil.which("brotli"):
                subprocess.run(["brotli", "-f", "-q", "9", "-o", path + ".br", path], check=True)
        paths.append("/mix/" + name)
    with open(os.path.join(OUT, "mix-paths.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")


# The large tree: web-like sizes (SPECweb96 classes: 35% under 1 KiB, 50% 1-10 KiB, 14%
# 10-100 KiB, 1% 100 KiB-1 MiB) and extensions, 500 files per directory.
LARGE_SIZE_CLASSES = [(0.35, 100, 1024), (0.50, 1024, 10 * 1024), (0.14, 10 * 1024, 100 * 1024),
                      (0.01, 100 * 1024, 1024 * 1024)]
LARGE_EXTENSIONS = [".html", ".css", ".js", ".png", ".jpg", ".svg", ".json", ".woff2"]


def make_large_root(files, distinct):
    """A tree of `files` files and a paths file naming `distinct` of them once each, plus three
    times as many requests drawn with Zipf-like popularity (alpha 0.8) over those paths."""
    marker = os.path.join(LARGE_ROOT, f".made-{files}")
    if not os.path.exists(marker):
        shutil.rmtree(LARGE_ROOT, ignore_errors=True)
        os.makedirs(LARGE_ROOT)
        rng = random.Random(11)
        block = rng.randbytes(1 << 20)
        with open(os.path.join(LARGE_ROOT, "index.html"), "w") as f:
            f.write("<!DOCTYPE html><title>large tree</title>\n")
        for d in range(files // 500):
            directory = os.path.join(LARGE_ROOT, f"d{d:04}")
            os.mkdir(directory)
            for i in range(500):
                x, size = rng.random(), 100
                for share, low, high in LARGE_SIZE_CLASSES:
                    if x < share:
                        size = rng.randrange(low, high)
                        break
                    x -= share
                ext = LARGE_EXTENSIONS[i % len(LARGE_EXTENSIONS)]
                with open(os.path.join(directory, f"f{i:03}{ext}"), "wb") as f:
                    start = rng.randrange(0, len(block) - size)
                    f.write(block[start:start + size])
        open(marker, "w").close()
    # Read the whole tree once, so the first server measured does not pay for a cold page cache.
    for directory, _, names in os.walk(LARGE_ROOT):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                f.read()
    rng = random.Random(12)
    all_paths = [f"/d{d:04}/f{i:03}{LARGE_EXTENSIONS[i % len(LARGE_EXTENSIONS)]}"
                 for d in range(files // 500) for i in range(500)]
    chosen = rng.sample(all_paths, distinct)
    weights = [1 / (rank + 1) ** 0.8 for rank in range(distinct)]
    lines = chosen + rng.choices(chosen, weights=weights, k=3 * distinct)
    rng.shuffle(lines)
    with open(LARGE_PATHS, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_configs(ports, root=ROOT, suffix=""):
    os.makedirs(CONF, exist_ok=True)
    # For the large tree nginx caches up to 16,384 files, re-checking each once a second, and
    # caches "not found" too. Every file in its cache holds a descriptor, and the descriptor limit
    # here is 20,000 (larger values failed with EMFILE); ringserve keeps small files as bytes
    # with no descriptor, so its default 65,536 entries fit the same limit.
    open_file_cache = ("open_file_cache max=1000;" if not suffix else
                       "open_file_cache max=16384 inactive=60s; open_file_cache_valid 1s; "
                       "open_file_cache_errors on;")
    nginx = f"""worker_processes 1;
worker_rlimit_nofile 20000;
user root;
pid {CONF}/nginx.pid;
error_log {CONF}/nginx-error.log warn;
events {{ worker_connections 19000; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    {open_file_cache}
    gzip_static on;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path {CONF}/nginx-body;
    proxy_temp_path {CONF}/nginx-proxy;
    fastcgi_temp_path {CONF}/nginx-fastcgi;
    uwsgi_temp_path {CONF}/nginx-uwsgi;
    scgi_temp_path {CONF}/nginx-scgi;
    server {{ listen 127.0.0.1:{ports['nginx']}; root {root}; }}
}}
"""
    lighttpd = f"""server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {ports['lighttpd']}
server.max-worker = 0
server.max-fds = 20000
server.max-connections = 10000
server.max-keep-alive-requests = 100000000
server.max-keep-alive-idle = 75
server.errorlog = "{CONF}/lighttpd-error.log"
index-file.names = ("index.html")
include_shell "/usr/share/lighttpd/create-mime.conf.pl"
"""
    h2o = f"""user: root
num-threads: 1
max-connections: 20000
listen:
  host: 127.0.0.1
  port: {ports['h2o']}
error-log: {CONF}/h2o-error.log
pid-file: {CONF}/h2o.pid
file.send-compressed: ON
hosts:
  default:
    paths:
      /:
        file.dir: {root}
"""
    configs = [("nginx", nginx), ("lighttpd", lighttpd), ("h2o", h2o)]
    if "nginx+log" in ports and not suffix:
        # The access-log row: nginx logging to a file with the buffer ringserve uses.
        logged = nginx.replace("access_log off;", f"access_log {LOGS}/nginx.log combined buffer=64k flush=1s;")
        configs.append(("nginx+log", logged.replace(f"127.0.0.1:{ports['nginx']}", f"127.0.0.1:{ports['nginx+log']}")))
    for name, text in configs:
        with open(os.path.join(CONF, f"{name}{suffix}.conf"), "w") as f:
            f.write(text)


def server_commands(ports, root=ROOT, suffix=""):
    # The generated root is small: ringserve fills its file cache at start-up (--warm) and,
    # like nginx's open_file_cache_valid, does not re-check files during a run.
    common = ["--root", root, "--threads", "1", "--keepalive-requests", "100000000",
              "--warm", "--revalidate-interval", "0"]
    if suffix:
        # The large tree: the cache as a user runs it (default bounds), filled on demand, changes
        # seen through inotify.
        common = ["--root", root, "--threads", "1", "--keepalive-requests", "100000000"]
    return {
        "ringserve": [RINGSERVE, "--addr", f"127.0.0.1:{ports['ringserve']}"] + common,
        "ringserve-blocking": [RINGSERVE, "--engine", "blocking", "--addr",
                               f"127.0.0.1:{ports['ringserve-blocking']}"] + common,
        # The same HTTP code on readiness I/O: what io_uring buys is the difference.
        "ringserve-epoll": [RINGSERVE, "--engine", "epoll", "--addr",
                            f"127.0.0.1:{ports['ringserve-epoll']}"] + common,
        "nginx": ["nginx", "-p", CONF, "-c", os.path.join(CONF, f"nginx{suffix}.conf"), "-g", "daemon off;"],
        "lighttpd": ["lighttpd", "-D", "-f", os.path.join(CONF, f"lighttpd{suffix}.conf")],
        "h2o": ["h2o", "-c", os.path.join(CONF, f"h2o{suffix}.conf")],
        # The same two servers writing an access log to a file.
        "ringserve+log": [RINGSERVE, "--addr", f"127.0.0.1:{ports.get('ringserve+log')}",
                          "--access-log", os.path.join(LOGS, "ringserve.log")] + common,
        "nginx+log": ["nginx", "-p", CONF, "-c", os.path.join(CONF, "nginx+log.conf"), "-g", "daemon off;"],
    }


def start(name, cmd, port):
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(CONF, name + ".stderr"), "w"),
                            start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/small.html", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not start; see {CONF}/{name}.stderr")


def group_pids(proc):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == proc.pid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def cpu_ticks(proc):
    total = 0
    for pid in group_pids(proc):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def machine_ticks():
    """Busy ticks of the server's and the driver's cores together (user, nice, system, irq,
    softirq from /proc/stat). On loopback the kernel work of one TCP transfer lands on whichever
    side's context sends or acknowledges, so one process's ticks can shift with the peer's
    behaviour; the two cores together count it all."""
    total = 0
    for line in open("/proc/stat"):
        fields = line.split()
        if fields[0] in (f"cpu{SERVER_CPU}", f"cpu{DRIVER_CPU}"):
            total += sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
    return total


def rss_kib(proc):
    total = 0
    for pid in group_pids(proc):
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def drive(driver, workload, port, duration, conns, label=None, json_out=None):
    url = f"http://127.0.0.1:{port}{workload['path']}"
    if driver == "loadgen":
        cmd = [LOADGEN, "-t", "1", "-c", str(conns), "-d", f"{duration:g}s", "--json", "--timeout", "5s"]
        cmd += ["--label", label] if label else []
        cmd += ["--pipeline", str(workload.get("pipeline", 1))]
        if workload.get("paths"):
            cmd += ["--paths-file", os.path.join(OUT, "mix-paths.txt"), "-H", "Accept-Encoding: br, gzip"]
        if workload.get("paths_file"):
            cmd += ["--paths-file", workload["paths_file"]]
        out = sh(["taskset", "-c", DRIVER_CPU] + cmd + [url])
        if json_out:
            with open(json_out, "w") as f:
                f.write(out)
        r = json.loads(out)
        p99 = dict((str(p), v) for p, v in r["latency"]["percentiles_us"]).get("99.0", 0)
        errors = r["requests"]["errors"] + r["errors"]["verification"] + r["status"]["s4xx"] + r["status"]["s5xx"]
        return {"requests": r["requests"]["completed"], "rps": r["requests_per_sec"],
                "body_bytes_per_sec": r["body_bytes"] / r["duration_secs"], "p99_us": p99, "errors": errors,
                "driver_busy": r["cpu"]["busy_fraction"]}
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{duration:g}s", "--latency"]
    if workload.get("pipeline", 1) > 1:
        cmd += ["-s", os.path.join(CONF, "pipeline.lua")]
    elif workload.get("paths"):
        cmd += ["-s", os.path.join(CONF, "mix.lua")]
    out = sh(["taskset", "-c", DRIVER_CPU] + cmd + [url])
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)] if m else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"requests": requests, "rps": rps, "body_bytes_per_sec": 0, "p99_us": p99, "errors": errors}


def run_large_tree(servers, ports, rounds, duration, quick):
    """The large-tree workload: each server started fresh on the tree per round. Measures time
    from spawn to the first response, idle CPU before any load, then (after a warm-up run)
    requests over the Zipf-like paths file, and RSS at the end."""
    files, distinct = (20_000, 5_000) if quick else (200_000, 50_000)
    print(f"large tree: {files:,} files, {distinct:,} distinct paths requested", flush=True)
    make_large_root(files, distinct)
    write_configs(ports, root=LARGE_ROOT, suffix="-large")
    cmds = server_commands(ports, root=LARGE_ROOT, suffix="-large")
    idle_secs, warm_secs = (2, 1) if quick else (10, 5)
    workload = {"path": "/index.html", "paths_file": LARGE_PATHS}
    runs = []
    for rnd in range(rounds):
        for s in servers:
            started = time.time()
            proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmds[s], stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(CONF, s + "-large.stderr"), "w"),
                                    start_new_session=True)
            first = None
            try:
                while time.time() - started < 60:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{ports[s]}/index.html", timeout=1) as r:
                            if r.status == 200:
                                first = time.time() - started
                                break
                    except OSError:
                        time.sleep(0.002)
                if first is None:
                    raise SystemExit(f"{s} did not serve the large tree; see {CONF}/{s}-large.stderr")
                time.sleep(1)
                before = cpu_ticks(proc)
                time.sleep(idle_secs)
                idle = (cpu_ticks(proc) - before) / CLK_TCK / idle_secs
                drive("loadgen", workload, ports[s], warm_secs, 100)
                before = cpu_ticks(proc)
                result = drive("loadgen", workload, ports[s], duration, 100)
                ticks = cpu_ticks(proc) - before
                result["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / max(result["requests"], 1)
                result.update({"round": rnd, "workload": "large tree", "driver": "loadgen", "server": s,
                               "start_ms": first * 1000, "idle_cpu_pct": idle * 100,
                               "rss_mib": rss_kib(proc) / 1024})
                runs.append(result)
                print(f"round {rnd + 1}/{rounds} large tree {s:<19} first response {first * 1000:7.1f} ms  "
                      f"idle CPU {idle * 100:5.2f}%  {result['rps']:>10,.0f} req/s  "
                      f"{result['cpu_us_per_req']:>6.1f} us/req  RSS {result['rss_mib']:6.1f} MiB  "
                      f"errors {result['errors']}", flush=True)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
    return runs, files, distinct


def spread(runs, workload, driver, server):
    """(max - min) / median of req/s over the rounds of one cell."""
    rps = [r["rps"] for r in runs if (r["workload"], r["driver"], r["server"]) == (workload, driver, server)]
    return (max(rps) - min(rps)) / statistics.median(rps) if len(rps) > 1 and statistics.median(rps) else None


def target_rows(medians, many, runs):
    """The project's targets, each checked against this run's medians (loadgen driver unless a
    row names both)."""
    def m(workload, server, driver="loadgen"):
        return medians.get((workload, driver, server))

    rows = []

    def check(target, workload, measure, goal, at_most=False, unit="x"):
        try:
            value = measure()
        except (TypeError, KeyError, ZeroDivisionError):
            rows.append((workload, target, "not run", "-"))
            return
        met = value <= goal if at_most else value >= goal
        shown = f"{value:.2f}x" if unit == "x" else f"{value:,.2f} {unit}"
        rows.append((workload, target, shown, "yes" if met else "**no**"))

    small, big = "small page", f"{many:,} connections"
    rs, lt, ng = "ringserve", "lighttpd", "nginx"
    check(">= 1.3x lighttpd req/s", small, lambda: m(small, rs)["rps"] / m(small, lt)["rps"], 1.3)
    check(">= 2x nginx req/s", small, lambda: m(small, rs)["rps"] / m(small, ng)["rps"], 2.0)
    check("server CPU per request <= 0.6x lighttpd's", small,
          lambda: m(small, rs)["cpu_us_per_req"] / m(small, lt)["cpu_us_per_req"], 0.6, at_most=True)
    check("p99 <= lighttpd's", small,
          lambda: m(small, rs)["p99_us"] / m(small, lt)["p99_us"], 1.0, at_most=True)
    pipe = "small page, pipeline 16"
    check(">= 8x lighttpd req/s", pipe, lambda: m(pipe, rs)["rps"] / m(pipe, lt)["rps"], 8.0)
    image = "50 KiB image"
    check(">= 1.3x lighttpd req/s", image, lambda: m(image, rs)["rps"] / m(image, lt)["rps"], 1.3)
    mib = "1 MiB file"
    check(">= 1.1x lighttpd GB/s", mib,
          lambda: m(mib, rs)["body_bytes_per_sec"] / m(mib, lt)["body_bytes_per_sec"], 1.1)
    mix = "page-load mix (br/gzip)"
    check(">= 1.3x nginx req/s", mix, lambda: m(mix, rs)["rps"] / m(mix, ng)["rps"], 1.3)
    check("server RSS <= 2 KiB per idle connection", big,
          lambda: m(big, rs)["rss_per_conn_bytes"] / 1024, 2.0, at_most=True, unit="KiB")
    check(">= 0.9x its 100-connection req/s", big, lambda: m(big, rs)["rps"] / m(small, rs)["rps"], 0.9)
    large = "large tree"
    check("start to first response <= 100 ms", large, lambda: m(large, rs)["start_ms"], 100,
          at_most=True, unit="ms")
    check("idle CPU <= 0.5% of a core", large, lambda: m(large, rs)["idle_cpu_pct"], 0.5,
          at_most=True, unit="%")
    check("RSS <= cache budget (256 MiB) + 20 MiB", large, lambda: m(large, rs)["rss_mib"], 276,
          at_most=True, unit="MiB")
    check(">= 1.5x nginx req/s", large, lambda: m(large, rs)["rps"] / m(large, ng)["rps"], 1.5)
    logged = "small page, access log on"
    on_off = lambda server: m(logged, server)["rps"] / m(small, server)["rps"]
    check("req/s with the log >= 0.9x without", logged, lambda: on_off(rs), 0.9)
    check("that ratio >= nginx's own (log on / off)", logged, lambda: on_off(rs) / on_off(ng), 1.0)
    check("server CPU per request <= 0.7x nginx's", large,
          lambda: m(large, rs)["cpu_us_per_req"] / m(large, ng)["cpu_us_per_req"], 0.7, at_most=True)
    # With either client: the worst ratio of the two drivers.
    both = ("loadgen", "wrk")
    def cpu_ratio(workload, other, driver):
        return m(workload, rs, driver)["cpu_us_per_req"] / m(workload, other, driver)["cpu_us_per_req"]
    check("server CPU per request <= 0.75x lighttpd's, loadgen and wrk", small,
          lambda: max(cpu_ratio(small, lt, d) for d in both), 0.75, at_most=True)
    for workload in (small, image, mib, "1 MiB file, 10 connections", mix):
        check("server CPU per request <= lighttpd's and nginx's, loadgen and wrk", workload,
              lambda: max(cpu_ratio(workload, o, d) for o in (lt, ng) for d in both), 1.0, at_most=True)
        check("server CPU per request <= the epoll engine's, loadgen and wrk", workload,
              lambda: max(cpu_ratio(workload, "ringserve-epoll", d) for d in both), 1.0, at_most=True)
        check("both cores' CPU per request <= lighttpd's and nginx's, loadgen and wrk", workload,
              lambda: max(m(workload, rs, d)["machine_us_per_req"] / m(workload, o, d)["machine_us_per_req"]
                          for o in (lt, ng) for d in both), 1.0, at_most=True)
    for workload in (mib, "1 MiB file, 10 connections"):
        check("wrk req/s >= lighttpd's", workload,
              lambda: m(workload, rs, "wrk")["rps"] / m(workload, lt, "wrk")["rps"], 1.0)
        check("wrk req/s spread over the rounds <= lighttpd's", workload,
              lambda: spread(runs, workload, "wrk", rs) / spread(runs, workload, "wrk", lt), 1.0, at_most=True)
    return rows


def svg_chart(medians, servers, workloads):
    colors = {"ringserve": "#2a6fdb", "ringserve-blocking": "#8fb3ee", "ringserve-epoll": "#1c3f7a", "nginx": "#2f9e44",
              "lighttpd": "#e8590c", "h2o": "#ae3ec9"}
    rows = [(w, d) for w in workloads for d in ("loadgen", "wrk") if any((w, d, s) in medians for s in servers)]
    bar, gap, label_w, width = 16, 26, 300, 980
    height = 60 + len(rows) * (len(servers) * bar + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="10" y="22" font-size="16" font-weight="bold">Requests/s per server, one core each (longer is better)</text>']
    for i, s in enumerate(servers):
        parts.append(f'<rect x="{10 + i * 170}" y="34" width="12" height="12" fill="{colors[s]}"/>'
                     f'<text x="{26 + i * 170}" y="44">{s}</text>')
    y = 60
    for w, d in rows:
        best = max((medians[(w, d, s)]["rps"] for s in servers if (w, d, s) in medians), default=1) or 1
        parts.append(f'<text x="10" y="{y + len(servers) * bar / 2 + 4}" font-weight="bold">{w} ({d})</text>')
        for s in servers:
            m = medians.get((w, d, s))
            if m:
                length = (width - label_w - 150) * m["rps"] / best
                parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar - 3}" fill="{colors[s]}"/>'
                             f'<text x="{label_w + length + 5:.1f}" y="{y + bar - 5}">{m["rps"]:,.0f}</text>')
            y += bar
        y += gap
    parts.append("</svg>")
    return "\n".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--only", help="run only workloads whose name contains this text")
    ap.add_argument("--servers", help="comma-separated servers to run (default: all)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (1 if args.quick else 5)
    many = 1000 if args.quick else 10000
    os.makedirs(OUT, exist_ok=True)
    make_root()
    ports = {"ringserve": 18081, "ringserve-blocking": 18082, "ringserve-epoll": 18088, "nginx": 18083,
             "lighttpd": 18084, "h2o": 18085}
    log_ports = {"ringserve+log": 18086, "nginx+log": 18087}
    os.makedirs(LOGS, exist_ok=True)
    write_configs({**ports, **log_ports})
    with open(os.path.join(CONF, "pipeline.lua"), "w") as f:
        f.write('init = function(args)\n local r = {}\n for i = 1, 16 do r[i] = wrk.format(nil, wrk.path) end\n'
                ' req = table.concat(r)\nend\nrequest = function() return req end\n')
    # The page-load mix for wrk: its paths in turn, asking for the compressed variants.
    with open(os.path.join(CONF, "mix.lua"), "w") as f:
        f.write(f'local paths = {{}}\nfor line in io.lines("{OUT}/mix-paths.txt") do\n'
                ' if #line > 0 then paths[#paths + 1] = line end\nend\nlocal i = 0\n'
                'request = function()\n i = i % #paths + 1\n'
                ' return wrk.format("GET", paths[i], {["Accept-Encoding"] = "br, gzip"})\nend\n')
    workloads = [
        {"name": "small page", "path": "/small.html", "drivers": ["loadgen", "wrk"], "plot": "small-page"},
        {"name": "small page, pipeline 16", "path": "/small.html", "pipeline": 16, "drivers": ["loadgen", "wrk"]},
        {"name": "50 KiB image", "path": "/image.jpg", "drivers": ["loadgen", "wrk"]},
        {"name": "1 MiB file", "path": "/big.bin", "drivers": ["loadgen", "wrk"]},
        {"name": "1 MiB file, 10 connections", "path": "/big.bin", "conns": 10, "drivers": ["loadgen", "wrk"]},
        {"name": "page-load mix (br/gzip)", "path": "/mix/index.html", "paths": True, "drivers": ["loadgen", "wrk"],
         "plot": "page-load-mix"},
        {"name": f"{many:,} connections", "path": "/small.html", "conns": many, "rss": True,
         "drivers": ["loadgen"]},
        # The small page again, ringserve and nginx each writing an access log to a file (its
        # cost is the ratio to the first row).
        {"name": "small page, access log on", "path": "/small.html", "drivers": ["loadgen", "wrk"],
         "servers": ["ringserve", "nginx"], "log": True},
    ]
    if args.only:
        workloads = [w for w in workloads if args.only in w["name"]]
    large_tree = not args.only or args.only in "large tree"
    servers = args.servers.split(",") if args.servers else list(ports)
    procs = {}
    runs = []
    failed = False

    def stop_all(*_):
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop_all)
    try:
        cmds = server_commands({**ports, **log_ports})
        for s in servers if workloads else []:
            procs[s] = start(s, cmds[s], ports[s])
        for s in log_ports:
            if any(w.get("log") and s.split("+")[0] in servers for w in workloads):
                procs[s] = start(s, cmds[s], log_ports[s])
        for rnd in range(rounds):
            for w in workloads:
                for d in w["drivers"]:
                    for s in [s for s in servers if s in w.get("servers", servers)]:
                        conns = w.get("conns", 100)
                        # A logging row runs the server's logging twin, its log emptied first.
                        name = f"{s}+log" if w.get("log") else s
                        port = log_ports[name] if w.get("log") else ports[s]
                        if w.get("log"):
                            open(os.path.join(LOGS, f"{s}.log"), "w").close()
                        idle_rss = rss_kib(procs[name])
                        before, machine_before = cpu_ticks(procs[name]), machine_ticks()
                        # The plotted rows keep each server's loadgen JSON (the last round's).
                        json_out = (os.path.join(OUT, f"latency-{w['plot']}-{s}.json")
                                    if d == "loadgen" and "plot" in w else None)
                        result = drive(d, w, port, duration, conns, label=s, json_out=json_out)
                        if w.get("rss"):
                            result["rss_per_conn_bytes"] = max(0, rss_kib(procs[name]) - idle_rss) * 1024 / conns
                        ticks = cpu_ticks(procs[name]) - before
                        result["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / max(result["requests"], 1)
                        machine = machine_ticks() - machine_before
                        result["machine_us_per_req"] = machine * 1e6 / CLK_TCK / max(result["requests"], 1)
                        result.update({"round": rnd, "workload": w["name"], "driver": d, "server": s})
                        runs.append(result)
                        print(f"round {rnd + 1}/{rounds} {w['name']:<26} {d:<8} {s:<19} "
                              f"{result['rps']:>12,.0f} req/s  p99 {result['p99_us'] / 1000:>8.2f} ms  "
                              f"{result['cpu_us_per_req']:>7.1f} us/req  both cores {result['machine_us_per_req']:>7.1f}  errors {result['errors']}"
                              f"{'  driver busy %.0f%%' % (100 * result['driver_busy']) if 'driver_busy' in result else ''}", flush=True)
                        if result["requests"] == 0:
                            failed = True
    finally:
        stop_all()
    large = ([s for s in servers if s != "ringserve-blocking"] if large_tree else [])
    large_files = 0
    if large:
        large_runs, large_files, large_distinct = run_large_tree(large, ports, rounds, duration, args.quick)
        runs += large_runs
        failed = failed or any(r["requests"] == 0 for r in large_runs)
        workloads.append({"name": "large tree", "path": "/index.html", "drivers": ["loadgen"]})
    medians = {}
    for w in workloads:
        for d in w["drivers"]:
            for s in servers:
                rs = [r for r in runs if (r["workload"], r["driver"], r["server"]) == (w["name"], d, s)]
                if rs:
                    medians[(w["name"], d, s)] = {k: statistics.median(r[k] for r in rs)
                                                  for k in rs[0] if isinstance(rs[0][k], (int, float)) and k != "round"}
    machine = {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
               "cores": os.cpu_count(), "kernel": os.uname().release, "rounds": rounds, "duration_secs": duration,
               "versions": {"nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
                            "lighttpd": sh(["lighttpd", "-v"]).strip(),
                            "h2o": sh(["h2o", "-v"]).splitlines()[0]}}
    md = [f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}; each server pinned "
          f"to CPU 0 with one worker, the load generator to CPU 1; {rounds} interleaved round(s) of "
          f"{duration:g} s; medians. Command: scripts/compare.sh{' --quick' if args.quick else ''}", "",
          "CPU-us/req is the server's own CPU time (its processes in /proc/PID/stat) per request. In brackets, "
          "both cores: the busy time of CPU 0 and CPU 1 together (/proc/stat) per request, server and load "
          "generator. On loopback the kernel sends a segment and delivers it in the context of whichever side "
          "pushes it out; a server that leaves more unsent data queued has more of its transmission done in the "
          "client's context, acknowledgement by acknowledgement, so its own CPU falls while the machine's does not.", "",
          "| workload | driver | " + " | ".join(servers) + " | ringserve / lighttpd | ringserve / nginx |",
          "|---|---|" + "---|" * (len(servers) + 2)]
    for w in workloads:
        for d in w["drivers"]:
            cells = []
            for s in servers:
                m = medians.get((w["name"], d, s))
                if not m:
                    cells.append("-")
                    continue
                cell = f"{m['rps']:,.0f} req/s, p99 {m['p99_us'] / 1000:.2f} ms, {m['cpu_us_per_req']:.1f} CPU-us/req"
                if "machine_us_per_req" in m:
                    cell += f" ({m['machine_us_per_req']:.0f} both cores)"
                if w["path"] == "/big.bin" and d == "loadgen":
                    cell += f", {m['body_bytes_per_sec'] / 1e9:.2f} GB/s"
                if "rss_per_conn_bytes" in m:
                    cell += f", {m['rss_per_conn_bytes']:,.0f} B RSS/conn"
                if "start_ms" in m:
                    cell += (f", first response {m['start_ms']:.0f} ms, idle CPU {m['idle_cpu_pct']:.2f}%, "
                             f"RSS {m['rss_mib']:.0f} MiB")
                if m["errors"]:
                    cell += f", **{m['errors']:.0f} errors**"
                cells.append(cell)
            ratio = lambda other: (f"{medians[(w['name'], d, 'ringserve')]['rps'] / medians[(w['name'], d, other)]['rps']:.2f}x"
                                   if (w["name"], d, other) in medians and medians[(w["name"], d, other)]["rps"] else "-")
            md.append(f"| {w['name']} | {d} | " + " | ".join(cells) + f" | {ratio('lighttpd')} | {ratio('nginx')} |")
    md.append("")
    md.append("The project's targets in this run (ringserve; the loadgen driver unless a row names both; ratios of medians; "
              "a spread is (max - min) / median of the rounds' req/s):")
    md.append("")
    md.append("| workload | target | measured | met |")
    md.append("|---|---|---|---|")
    for row in target_rows(medians, many, runs):
        md.append("| " + " | ".join(row) + " |")
    md.append("")
    md.append("lighttpd 1.4 has no option to serve precompressed siblings, so in the page-load mix it sends the "
              "identity files (more bytes); the others send .br/.gz.")
    md.append("")
    md.append("Cache modes: on the small roots ringserve fills its file cache at start-up (`--warm`) and does "
              "not re-check files (`--revalidate-interval 0`), like nginx's `open_file_cache` without expiry. "
              + (f"In the large tree ({large_files:,} files, {large_distinct:,} distinct paths requested with "
                 "Zipf-like popularity, a warm-up run first) every server starts fresh: ringserve finds files on first "
                 "request with its default bounds and sees changes through inotify, nginx has `open_file_cache "
                 "max=16384 open_file_cache_valid 1s open_file_cache_errors on` (each cached file holds a "
                 "descriptor; the machine's limit is 20,000), lighttpd and h2o their default caches; "
                 "each cell adds time from spawn to first response, idle CPU before load, and RSS after the run."
                 if large else ""))
    text = "\n".join(md) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"machine": machine, "runs": runs,
                   "medians": [dict(workload=k[0], driver=k[1], server=k[2], **v) for k, v in medians.items()]}, f, indent=1)
    with open(os.path.join(OUT, "chart.svg"), "w") as f:
        f.write(svg_chart(medians, servers, [w["name"] for w in workloads]))
    plots = []
    for w in workloads:
        files = [os.path.join(OUT, f"latency-{w['plot']}-{s}.json") for s in servers] if "plot" in w else []
        files = [f for f in files if os.path.exists(f)]
        if files:
            plots.append(f"latency-{w['plot']}.svg")
            sh([LOADGEN, "plot", *files, "-o", os.path.join(OUT, plots[-1]),
                "--title", f"{w['name']}: latency and req/s per server (loadgen, last round)"])
    print()
    print(text)
    print(f"wrote {OUT}/results.md, results.json, chart.svg" + "".join(f", {p}" for p in plots))
    if failed:
        raise SystemExit("a run completed no requests")


if __name__ == "__main__":
    main()
