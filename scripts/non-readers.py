#!/usr/bin/env python3
"""Clients that never read, against one ringserve: 300 connections each pipeline 300 KB of
GET /big.bin and never read; meanwhile a normal client fetches a small page 40 times. Prints
failed fetches, p50 and worst fetch time, and the server CPU while the attackers sit idle.

Usage: scripts/non-readers.py [BINARY [FLAGS...]]  (default target/release/ringserve; the
server is pinned to CPU 0, listens on 127.0.0.1:18091 and is stopped at the end).
"""
import os
import socket
import subprocess
import sys
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/ringserve"
extra = sys.argv[2:]
root = "/tmp/case1root"; os.makedirs(root, exist_ok=True)
open(root + "/index.html", "w").write("<p>hello</p>\n")
if not os.path.exists(root + "/big.bin"):
    open(root + "/big.bin", "wb").write(os.urandom(4 << 20))
p = subprocess.Popen(["taskset", "-c", "0", binary, "--threads", "1", "--root", root, "--addr", "127.0.0.1:18091"] + extra, stdout=subprocess.PIPE)
p.stdout.readline()
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"; burst = (req * (300000 // len(req) + 1))[:300000]
att = []
for i in range(300):
    s = socket.create_connection(("127.0.0.1", 18091)); s.setblocking(False); att.append([s, 0])
end = time.time() + 1
while time.time() < end:
    for a in att:
        if a[1] < len(burst):
            try: a[1] += a[0].send(burst[a[1]:])
            except BlockingIOError: pass
            except OSError: a[1] = len(burst)
    time.sleep(0.005)
lat = []; fails = 0
for i in range(40):
    t = time.time()
    try:
        c = socket.create_connection(("127.0.0.1", 18091), timeout=5)
        c.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = c.recv(65536)
            if not d: break
            data += d
        ok = data.startswith(b"HTTP/1.1 200") and data.endswith(b"<p>hello</p>\n")
        fails += not ok
    except Exception as e:
        fails += 1
    lat.append(time.time() - t); time.sleep(0.025)
c0 = cpu(); time.sleep(3); busy = cpu() - c0
closed = 0
for a in att:
    try:
        a[0].setblocking(True); a[0].settimeout(0.001); r = a[0].recv(1, socket.MSG_PEEK)
    except socket.timeout: pass
    except OSError: closed += 1
lat.sort()
print(f"{os.path.basename(binary)} {' '.join(extra)}: fetches {len(lat)}, failed {fails}, p50 {lat[len(lat)//2]*1000:.2f} ms, max {lat[-1]*1000:.2f} ms; server CPU over 3 s idle: {busy/3*100:.1f}% of a core")
for a in att: a[0].close()
p.terminate(); p.wait()
