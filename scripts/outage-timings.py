#!/usr/bin/env python3
"""Outage timings with the default [health] settings, against the real binary
(build it first: cargo build --release -p redoubt). A measurement, not a test:
kill -> Redoubt says down, a GET while Down, restart -> served again, a GET
on a paused Redis.

  scripts/outage-timings.py [--config FILE] [--rounds N] [--json]

--config passes a Redoubt config file (e.g. durable keyspaces: then /readyz
stays 200 "degraded" while Down, so Down is read from its "state"). With
--rounds, the kill/restart is repeated and medians are printed. --json adds
one JSON line with every figure (scripts/bench-outage.sh reads it)."""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--config")
ap.add_argument("--rounds", type=int, default=1)
ap.add_argument("--json", action="store_true")
opt = ap.parse_args()

d = tempfile.mkdtemp()
interval = int(os.environ.get("REDOUBT_HEALTH_INTERVAL_MS", 250))
up_after = int(os.environ.get("REDOUBT_HEALTH_UP_AFTER", 2))
aim_ms = up_after * interval + 100


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


rp, pp, ap_ = port(), port(), port()


def start_redis():
    red = subprocess.Popen(["redis-server", "--port", str(rp), "--bind", "127.0.0.1", "--save", "", "--dir", d],
                           stdout=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", rp), 0.1).close()
            return red
        except OSError:
            time.sleep(0.001)


def readyz():
    """(HTTP status, state) of /readyz, or (None, None) while not answering."""
    try:
        r = urllib.request.urlopen("http://127.0.0.1:%d/readyz" % ap_, timeout=1)
        return r.status, json.load(r)["state"]
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)["state"]
    except Exception:
        return None, None


def get():
    s = socket.create_connection(("127.0.0.1", pp)); s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"); r = s.recv(200); s.close(); return r


red = start_redis()
args = [os.environ.get("TEST_REDOUBT_BIN", "target/release/redoubt"), "serve", "--upstream", "redis://127.0.0.1:%d" % rp,
        "--listen", "127.0.0.1:%d" % pp, "--admin", "127.0.0.1:%d" % ap_, "--data-dir", d + "/redoubt"]
if opt.config:
    args += ["--config", opt.config]
rd = subprocess.Popen(args, stderr=subprocess.DEVNULL)
detect, down_get, back = [], [], []
try:
    while readyz()[1] != "up": time.sleep(0.005)
    for _ in range(opt.rounds):
        red.kill(); red.wait(); t0 = time.monotonic()
        while readyz()[1] != "down": time.sleep(0.002)
        detect.append((time.monotonic() - t0) * 1000)
        code = readyz()[0]
        t = time.monotonic(); r = get(); down_get.append(((time.monotonic() - t) * 1000, r[:70]))
        red = start_redis()  # returns once Redis accepts connections
        t0 = time.monotonic()
        while not get().startswith(b"$"): time.sleep(0.002)
        back.append((time.monotonic() - t0) * 1000)
        while readyz()[1] != "up": time.sleep(0.002)
    med = statistics.median

    def fig(v):
        if opt.rounds == 1:
            return "%.0f ms" % v[0]
        return "%.0f ms (median of %d rounds, %.0f-%.0f)" % (med(v), opt.rounds, min(v), max(v))
    print("kill -> /readyz %d, state down: %s" % (code, fig(detect)))
    print("GET while Down: %.1f ms: %r" % down_get[-1])
    print("redis accepting -> GET served again: %s (aim up_after*interval+100 = %d ms)" % (fig(back), aim_ms))
    red.send_signal(signal.SIGSTOP); t = time.monotonic(); r = get(); paused = (time.monotonic() - t) * 1000
    print("GET on paused redis answered in %.0f ms: %r" % (paused, r[:40]))
    red.send_signal(signal.SIGCONT)
    if opt.json:
        print(json.dumps({"rounds": opt.rounds, "detect_ms": detect, "back_ms": back, "back_ms_median": med(back),
                          "aim_ms": aim_ms, "paused_get_ms": paused}))
finally:
    rd.terminate(); rd.wait(); red.kill()
