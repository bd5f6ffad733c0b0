#!/usr/bin/env python3
"""Outage timings with the default [health] settings, against the real binary
(build it first: cargo build --release -p redoubt). A measurement, not a test:
kill -> /readyz 503, a GET while Down, restart -> served again, a GET on a
paused Redis."""
import tempfile
import socket, subprocess, time, urllib.request, urllib.error, os, signal
d = tempfile.mkdtemp()
def port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
rp, pp, ap = port(), port(), port()
red = subprocess.Popen(["redis-server","--port",str(rp),"--save","","--dir",d], stdout=subprocess.DEVNULL)
time.sleep(0.3)
rd = subprocess.Popen([os.environ.get("TEST_REDOUBT_BIN", "target/release/redoubt"),"serve","--upstream","redis://127.0.0.1:%d"%rp,"--listen","127.0.0.1:%d"%pp,"--admin","127.0.0.1:%d"%ap,"--data-dir",d + "/redoubt"], stderr=subprocess.DEVNULL)
def ready():
    try: return urllib.request.urlopen("http://127.0.0.1:%d/readyz"%ap, timeout=1).status
    except urllib.error.HTTPError as e: return e.code
    except Exception: return None
def get():
    s=socket.create_connection(("127.0.0.1",pp)); s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"); r=s.recv(200); s.close(); return r
while ready()!=200: time.sleep(0.005)
red.kill(); red.wait(); t0=time.monotonic()
while ready()!=503: time.sleep(0.002)
t1=time.monotonic(); print("kill -> /readyz 503: %.0f ms"%((t1-t0)*1000))
t=time.monotonic(); r=get(); print("GET while Down: %.1f ms: %r"%((time.monotonic()-t)*1000, r[:60]))
red = subprocess.Popen(["redis-server","--port",str(rp),"--save","","--dir",d], stdout=subprocess.DEVNULL)
while True:
    try: socket.create_connection(("127.0.0.1",rp),0.1).close(); break
    except OSError: time.sleep(0.001)
t0=time.monotonic()
while not get().startswith(b"$"): time.sleep(0.002)
print("redis accepting -> GET served again: %.0f ms (budget up_after*interval+200 = 700 ms)"%((time.monotonic()-t0)*1000))
red.send_signal(signal.SIGSTOP); t=time.monotonic(); r=get(); print("GET on paused redis answered in %.0f ms: %r"%((time.monotonic()-t)*1000, r[:40]))
red.send_signal(signal.SIGCONT); rd.terminate(); rd.wait(); red.kill()
