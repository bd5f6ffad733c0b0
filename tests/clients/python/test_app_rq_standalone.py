"""RQ, unchanged, against standalone Redoubt (no Redis at all): the app
enqueues (RQ's MULTI/EXEC with its result stream), a real `rq worker`
process takes the jobs (BLMOVE), finishes them under WATCH and stores the
results; every job finishes once with its result readable."""
import os
import subprocess
import sys
import tempfile
import time

import redis
from rq import Queue

from conftest import Redoubt, wait_until

JOBS = '''
def square(n):
    return n * n
'''


def test_rq_enqueue_and_worker_against_standalone_redoubt():
    d = Redoubt(None)
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "rq_standalone_jobs.py"), "w") as f:
        f.write(JOBS)
    worker = None
    try:
        c = redis.Redis(port=d.port, socket_timeout=10)
        wait_until("redoubt serving", lambda: c.ping() and d.status()["state"] == "standalone")
        q = Queue("default", connection=c)
        jobs = [q.enqueue("rq_standalone_jobs.square", n) for n in range(12)]
        rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")
        worker = subprocess.Popen(
            [rq_bin, "worker", "--url", "redis://127.0.0.1:%d" % d.port, "--name", "standalone-worker", "default"],
            cwd=tmp, env={**os.environ, "PYTHONPATH": tmp},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(j.get_status(refresh=True) == "finished" for j in jobs):
            assert worker.poll() is None, "rq worker exited (code %r)" % worker.returncode
            time.sleep(0.05)
        assert [j.get_status() for j in jobs] == ["finished"] * len(jobs)
        assert [j.return_value() for j in jobs] == [n * n for n in range(12)]
        assert q.count == 0
        assert worker.poll() is None, "rq worker exited (code %r)" % worker.returncode
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        d.stop()
