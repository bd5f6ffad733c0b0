"""An RQ worker (the `rq` package, unchanged, run as `rq worker` in its own
process, no supervisor) talks to Redis through Redoubt with `rq:*` durable.
Redis (AOF, appendfsync always) is SIGKILLed for ~5 s and restarted.

Asserted: the worker process is still alive after Redis returns; a job
the app enqueued during the outage (RQ's MULTI/EXEC enqueue, journaled by
Redoubt) is accepted and processed once Redis is back; a job enqueued after
recovery is processed (finished, with its result) within 15 s; Redoubt
refused none of RQ's commands during the outage (the incident's `rejected`
is 0). What the worker met during the outage (the error lines in its log,
each distinct line once) is printed for the report: its blocked BLMOVE's
connection is closed by Redoubt when Redis dies, RQ logs "could not connect
… retrying" and its next BLMOVE waits until Redis is back.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import redis
from rq import Queue

from conftest import Redis, Redoubt, wait_until

CONFIG = """
[[keyspace]]
pattern = "rq:*"
policy = "durable"
"""
JOBS = '''
def greet(name):
    return "hello " + name
'''


def run_job(q, name, timeout):
    job = q.enqueue("rq_app_jobs.greet", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh()
        if job.get_status() == "finished":
            return job
        time.sleep(0.05)
    raise AssertionError("job %s (%s) not finished after %d s: status %s" % (job.id, name, timeout, job.get_status()))


def test_rq_worker_survives_a_redis_kill_and_processes_jobs_after():
    r = Redis("--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0")
    d = Redoubt("redis://127.0.0.1:%d" % r.port, config=CONFIG)
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "rq_app_jobs.py"), "w") as f:
        f.write(JOBS)
    log_path = os.path.join(tmp, "worker.log")
    worker = None
    try:
        c = redis.Redis(port=d.port, socket_timeout=10)
        wait_until("redoubt forwarding", lambda: c.ping() and d.status()["state"] == "up")
        wait_until("replica streaming", lambda: d.status()["journal"]["replica"]["state"] == "streaming")
        url = "redis://127.0.0.1:%d" % d.port
        rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")
        worker = subprocess.Popen(
            [rq_bin, "worker", "--url", url, "--name", "app-worker", "default"],
            cwd=tmp, env={**os.environ, "PYTHONPATH": tmp}, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        q = Queue("default", connection=c)
        job = run_job(q, "before", 20)
        assert job.return_value() == "hello before"
        time.sleep(1)  # the worker is blocked waiting for the next job

        killed = time.monotonic()
        r.kill()
        wait_until("redoubt declares redis down", lambda: d.status()["state"] == "down", timeout=5)
        # The web app enqueues during the outage too.
        try:
            during = q.enqueue("rq_app_jobs.greet", "during")
            during_error = None
        except Exception as e:  # noqa: BLE001 - reported, then asserted on below
            during, during_error = None, "%s: %s" % (type(e).__name__, e)
        time.sleep(max(0, 5 - (time.monotonic() - killed)))
        assert worker.poll() is None, "rq worker exited during the outage (code %r)" % worker.returncode
        restarted = time.monotonic()
        r.start()
        wait_until("redis up and the journal replayed",
                   lambda: d.status()["state"] == "up" and d.status()["journal"]["pending_commands"] == 0, timeout=15)
        up_ms = (time.monotonic() - restarted) * 1000

        t0 = time.monotonic()
        job = run_job(q, "after", 15)
        assert job.return_value() == "hello after"
        took = time.monotonic() - t0
        assert worker.poll() is None, "rq worker exited (code %r)" % worker.returncode
        # A job the app enqueued during the outage (acknowledged: journaled)
        # is processed once Redis is back.
        assert during_error is None, "enqueue during the outage refused: " + during_error
        deadline = time.monotonic() + 10
        while during.get_status(refresh=True) != "finished" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert during.get_status() == "finished", "job enqueued during the outage: %s" % during.get_status()
        assert during.return_value() == "hello during"
        # Nothing RQ sent during the outage was refused by Redoubt.
        with urllib.request.urlopen("http://127.0.0.1:%d/incidents" % d.admin, timeout=2) as resp:
            incident = json.load(resp)["recent"][0]
        print("\nincident: %s" % {k: incident.get(k) for k in
                                  ("cause", "served_locally", "journaled", "replayed", "failed", "rejected")})
        assert incident["rejected"] == 0, "redoubt refused %d commands during the outage" % incident["rejected"]
        with open(log_path) as f:
            log = f.read()
        errors = sorted({re.sub(r"\d{2}:\d{2}:\d{2}", "", line).strip() for line in log.splitlines()
                         if re.search(r"error|UNAVAILABLE|UNCERTAIN|Traceback|refused|could not|retrying", line, re.I)})
        print("\nenqueue during the outage: %s" % (during_error or "accepted, job %s" % during.id))
        print("up %.0f ms after restart; job enqueued after recovery finished in %.2f s; worker log errors (%d distinct):\n  %s"
              % (up_ms, took, len(errors), "\n  ".join(errors)))
    except BaseException:
        print("--- redoubt log ---\n" + d.log_tail())
        try:
            with open(log_path) as f:
                print("--- rq worker log ---\n" + "".join(f.readlines()[-60:]))
        except OSError:
            pass
        raise
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        d.stop()
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)
