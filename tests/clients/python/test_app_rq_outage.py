"""Job queues keep working while Redis is down (issue 11, item 5), through
Redoubt with the queues' keys durable and Redis (AOF, appendfsync always)
SIGKILLed, kept down at least 5 s, and restarted on the same port.

RQ (the `rq` package, unchanged; `rq worker` processes, default forking
worker, no supervisor), `rq:*` durable:
  - worker A runs from before the kill; jobs the app enqueues during the
    outage (RQ's MULTI/EXEC enqueue through redis-py) are processed by it
    *while Redis is still down*;
  - worker B is started during the outage, on its own queue, and processes
    the jobs enqueued there, also while Redis is still down;
  - after recovery: every job (before, during, after) ran exactly once (each
    run appends a line to a file, outside Redis), is `finished` with its
    result readable through Redoubt, and Redis itself (read directly) has
    every job hash finished, the finished registries complete and the
    queues empty; both workers are still running; Redoubt refused none of
    RQ's commands during the outage.

Sidekiq-style (what Sidekiq's client and a reliable-fetch consumer send),
`queue:*` and `queues` durable:
  - producer: `LPUSH queue:default <json>` + `SADD queues default` in one
    MULTI through redis-py, before, during and after the outage; every one
    during the outage accepted;
  - consumer: a loop of `BLMOVE queue:default <processing> RIGHT LEFT 1`,
    then `LREM <processing>` once done, with the usual catch-log-retry; it
    consumes the jobs pushed during the outage while Redis is still down;
  - after recovery: every job consumed exactly once, none made up, and in
    Redis the queue and processing list are empty and `queues` is {default}.

The outage lasts at least 5 s; it is extended (up to 12 s) only while
waiting for the during-outage jobs to be processed, so "processed while
Redis was down" is checked against the actual restart time. Figures are
printed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import redis
from rq import Queue
from rq.job import Job

from conftest import Redis, Redoubt, wait_until

REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0")
MIN_OUTAGE_S = 5.0
MAX_OUTAGE_S = 12.0
REDOUBT_REPLY = re.compile(r"UNAVAILABLE|UNCERTAIN|during an outage|not supported by the local store")

# The app's job module, importable by the workers (their cwd / PYTHONPATH).
# Each run appends one line (one write, O_APPEND) outside Redis: the job's
# name, the worker that ran it and when.
JOBS = '''
import os
import time


def work(name, ledger):
    time.sleep(0.05)
    line = "%s\\t%s\\t%.6f\\n" % (name, os.environ.get("APP_WORKER", "?"), time.time())
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return "done " + name
'''


def status_when(d, what, pred, timeout):
    """Polls /status until pred(status) holds; returns that status."""
    box = {}

    def cond():
        box["s"] = d.status()
        return pred(box["s"])

    wait_until(what, cond, timeout=timeout)
    return box["s"]


def replica_ready(s):
    r = s.get("journal", {}).get("replica") or {}
    return s["state"] == "up" and r.get("state") == "streaming" and r.get("complete", True)


def incident(d):
    with urllib.request.urlopen("http://127.0.0.1:%d/incidents" % d.admin, timeout=2) as resp:
        return json.load(resp)["recent"][0]


class Outage:
    """Kills Redis, waits for Redoubt to detect it; `end()` restarts Redis
    once the outage has lasted MIN_OUTAGE_S and `until()` holds (or
    MAX_OUTAGE_S has passed), then waits until Redoubt is Up with its
    journal replayed."""

    def __init__(self, r, d):
        self.r, self.d = r, d
        self.killed = time.time()
        r.kill()
        s = status_when(d, "redoubt declares redis down", lambda s: s["state"] == "down", 5)
        self.detected = s["since_unix_ms"] / 1000.0
        self.restarted = self.up = None

    def end(self, until=lambda: True):
        deadline = self.killed + MAX_OUTAGE_S
        while time.time() < deadline and not (time.time() >= self.killed + MIN_OUTAGE_S and until()):
            time.sleep(0.05)
        self.restarted = time.time()
        self.r.start()
        s = status_when(self.d, "redis up and the journal replayed",
                        lambda s: s["state"] == "up" and s["journal"]["pending_commands"] == 0, 30)
        self.up = s["since_unix_ms"] / 1000.0

    def figures(self):
        return "detected %.0f ms after the kill; Redis down %.1f s; Up %.0f ms after restart" % (
            (self.detected - self.killed) * 1000, self.restarted - self.killed, (self.up - self.restarted) * 1000)


def blocked_in_blmove(direct):
    """A client of Redis's is blocked in BLMOVE right now (`cmd` alone is
    the last command a connection ran; flag `b` is blocked)."""
    return any(cl.get("cmd") == "blmove" and "b" in cl.get("flags", "") for cl in direct.client_list())


def read_ledger(path):
    """[(name, worker, unix time)] in the order the jobs ran."""
    try:
        with open(path) as f:
            return [(a, b, float(c)) for a, b, c in (line.rstrip("\n").split("\t") for line in f if line.strip())]
    except FileNotFoundError:
        return []


def distinct_errors(text):
    return sorted({re.sub(r"\d{2}:\d{2}:\d{2}(,\d+)?", "", line).strip() for line in text.splitlines()
                   if re.search(r"error|UNAVAILABLE|UNCERTAIN|Traceback|refused|could not|retrying", line, re.I)})


def test_rq_workers_process_jobs_enqueued_during_the_outage_while_redis_is_down():
    r = Redis(*REDIS_ARGS)
    d = Redoubt("redis://127.0.0.1:%d" % r.port, config='[[keyspace]]\npattern = "rq:*"\npolicy = "durable"\n')
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "rq_outage_jobs.py"), "w") as f:
        f.write(JOBS)
    ledger = os.path.join(tmp, "ran.tsv")
    logs = {}
    workers = {}
    url = "redis://127.0.0.1:%d" % d.port
    rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")

    def start_worker(name, queue):
        logs[name] = os.path.join(tmp, "worker-%s.log" % name)
        workers[name] = subprocess.Popen(
            [rq_bin, "worker", "--url", url, "--name", "app-worker-" + name, queue],
            cwd=tmp, env={**os.environ, "PYTHONPATH": tmp, "APP_WORKER": name},
            stdout=open(logs[name], "w"), stderr=subprocess.STDOUT)

    def ran(name):
        return [x for x in read_ledger(ledger) if x[0] == name]

    try:
        c = redis.Redis(port=d.port, socket_timeout=10)
        direct = redis.Redis(port=r.port, socket_timeout=10, decode_responses=True)
        wait_until("redoubt forwarding", lambda: c.ping() and d.status()["state"] == "up")
        status_when(d, "replica streaming", replica_ready, 20)
        default = Queue("default", connection=c)
        late = Queue("late", connection=c)
        start_worker("a", "default")

        jobs = {}  # name -> rq Job

        def enqueue(q, name):
            job = q.enqueue("rq_outage_jobs.work", name, ledger)
            jobs[name] = job
            return job

        for i in range(3):
            enqueue(default, "before-%d" % i)
        wait_until("worker A ran the jobs enqueued before the outage",
                   lambda: all(ran("before-%d" % i) for i in range(3)), timeout=30)
        # Worker A is idle again, blocked in BLMOVE for its next job (as a
        # worker is nearly all the time): the kill does not land on a
        # heartbeat in flight, whose -UNCERTAIN reply RQ would not survive.
        wait_until("the jobs enqueued before the outage finished",
                   lambda: all(jobs["before-%d" % i].get_status(refresh=True) == "finished" for i in range(3)), timeout=10)
        wait_until("worker A blocked in BLMOVE", lambda: blocked_in_blmove(direct), timeout=10)

        out = Outage(r, d)
        # The web app enqueues during the outage; worker A is running.
        during_errors = []
        for i in range(5):
            try:
                enqueue(default, "during-%d" % i)
            except Exception as e:  # noqa: BLE001 - reported, then asserted on below
                during_errors.append("during-%d: %s: %s" % (i, type(e).__name__, e))
        # A worker started during the outage, on a queue of its own.
        for i in range(3):
            try:
                enqueue(late, "late-%d" % i)
            except Exception as e:  # noqa: BLE001
                during_errors.append("late-%d: %s: %s" % (i, type(e).__name__, e))
        start_worker("b", "late")
        names_during = ["during-%d" % i for i in range(5)] + ["late-%d" % i for i in range(3)]
        out.end(until=lambda: all(ran(n) for n in names_during))

        enqueue(default, "after-a")
        enqueue(late, "after-b")
        wait_until("jobs enqueued after recovery ran", lambda: ran("after-a") and ran("after-b"), timeout=30)
        deadline = time.monotonic() + 15  # for all of them together
        for name, job in jobs.items():
            while job.get_status(refresh=True) != "finished" and time.monotonic() < deadline:
                time.sleep(0.05)

        # Figures first, then the assertions.
        inc = incident(d)
        ran_during = [x for x in read_ledger(ledger) if x[2] < out.restarted and x[0] in names_during]
        print("\n%s" % out.figures())
        print("enqueue during the outage: %s" % ("; ".join(during_errors) or "all 8 accepted"))
        print("ran while Redis was down: %s" % ["%s by %s, %.1f s after the kill" % (n, w, t - out.killed)
                                               for n, w, t in ran_during])
        print("incident: %s" % {k: inc.get(k) for k in ("cause", "served_locally", "journaled", "replayed", "failed", "rejected")})
        for name, path in logs.items():
            with open(path) as f:
                errs = distinct_errors(f.read())
            print("worker %s log errors (%d distinct):\n  %s" % (name, len(errs), "\n  ".join(errs)))

        # Every check runs, then one assertion lists what failed.
        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        check(during_errors == [], "enqueue refused during the outage: %s" % during_errors)
        for name, p in workers.items():
            check(p.poll() is None, "rq worker %s exited (code %r)" % (name, p.returncode))
        # Processed while Redis was still down, by the worker expected.
        lines = read_ledger(ledger)
        for n in names_during:
            got = [x for x in lines if x[0] == n and x[2] < out.restarted]
            check(got, "%s not run while Redis was down (restarted %.1f s after the kill)" % (n, out.restarted - out.killed))
            want = "a" if n.startswith("during") else "b"
            check(all(x[1] == want for x in got), "%s ran on worker %s, not %s" % (n, [x[1] for x in got], want))
        # Every job exactly once, finished, result readable through Redoubt.
        counts = {n: sum(1 for x in lines if x[0] == n) for n in names_during + list(jobs)}
        check({n: k for n, k in counts.items() if k != 1} == {}, "jobs not run exactly once: %s" % counts)
        check({x[0] for x in lines} <= set(counts), "ran jobs nobody enqueued: %s" % lines)
        for name, job in jobs.items():
            st = job.get_status(refresh=True)
            check(st == "finished", "%s: status %s through redoubt" % (name, st))
            rv = job.return_value()
            check(rv == "done " + name, "%s: result %r through redoubt" % (name, rv))
        # Straight from Redis.
        direct_raw = redis.Redis(port=r.port, socket_timeout=10)  # job hashes hold zlib'd pickles
        for name, job in jobs.items():
            st = direct_raw.hget("rq:job:%s" % job.id, "status")
            check(st == b"finished", "%s: status %r in Redis" % (name, st))
            rv = Job.fetch(job.id, connection=direct_raw).return_value()
            check(rv == "done " + name, "%s: result in Redis %r" % (name, rv))
        for q in ("default", "late"):
            left = direct.lrange("rq:queue:" + q, 0, -1)
            check(left == [], "rq:queue:%s not empty in Redis: %s" % (q, left))
            finished = set(direct.zrange("rq:finished:" + q, 0, -1))
            want = {job.id for n, job in jobs.items() if (n.startswith("late") or n == "after-b") == (q == "late")}
            check(want <= finished, "rq:finished:%s in Redis lacks %s" % (q, want - finished))
        check(inc["rejected"] == 0, "redoubt refused %d commands during the outage" % inc["rejected"])
        assert problems == [], "\n".join(problems)
    except BaseException:
        print("--- redoubt log ---\n" + d.log_tail())
        for name, path in logs.items():
            try:
                with open(path) as f:
                    print("--- rq worker %s log ---\n%s" % (name, "".join(f.readlines()[-150:])))
            except OSError:
                pass
        raise
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        d.stop()
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


SIDEKIQ_CONFIG = """
[[keyspace]]
pattern = "queue:*"
policy = "durable"

[[keyspace]]
pattern = "queues"
policy = "durable"
"""


class BlmoveConsumer(threading.Thread):
    """A reliable-fetch consumer: BLMOVE from the queue to its own processing
    list (1 s timeout), process, LREM; errors are logged and retried."""

    def __init__(self, port, name):
        super().__init__(daemon=True)
        self.c = redis.Redis(port=port, socket_timeout=10, decode_responses=True)
        self.processing = "queue:default:processing:" + name
        self.got = []  # (jid, unix time)
        self.errors = []  # (unix time, message)
        self.polls = []  # (started, seconds, got something)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                payload = self.c.blmove("queue:default", self.processing, 1, "RIGHT", "LEFT")
                self.polls.append((t0, time.time() - t0, payload is not None))
                if payload is None:
                    continue
                self.got.append((json.loads(payload)["jid"], time.time()))
                self.c.lrem(self.processing, 1, payload)
            except Exception as e:  # noqa: BLE001 - the app logs and retries
                self.errors.append((t0, "%s: %s" % (type(e).__name__, e)))
                time.sleep(0.2)


def test_sidekiq_style_multi_producer_and_blmove_consumer_during_the_outage():
    r = Redis(*REDIS_ARGS)
    d = Redoubt("redis://127.0.0.1:%d" % r.port, config=SIDEKIQ_CONFIG)
    consumer = None
    try:
        c = redis.Redis(port=d.port, socket_timeout=10, decode_responses=True)
        direct = redis.Redis(port=r.port, socket_timeout=10, decode_responses=True)
        wait_until("redoubt forwarding", lambda: c.ping() and d.status()["state"] == "up")
        status_when(d, "replica streaming", replica_ready, 20)
        consumer = BlmoveConsumer(d.port, "host1")
        consumer.start()
        pushed = {}  # jid -> phase
        errors = []

        def push(jid, phase):
            job = {"class": "HardWorker", "args": [jid], "jid": jid, "queue": "default",
                   "retry": True, "created_at": time.time(), "enqueued_at": time.time()}
            try:
                with c.pipeline(transaction=True) as p:
                    p.lpush("queue:default", json.dumps(job))
                    p.sadd("queues", "default")
                    res = p.execute()
                assert isinstance(res[0], int) and res[0] >= 1 and res[1] in (0, 1), res
                pushed[jid] = phase
            except Exception as e:  # noqa: BLE001 - reported, then asserted on below
                errors.append((phase, jid, "%s: %s" % (type(e).__name__, e)))

        got = lambda: {j for j, _ in consumer.got}  # noqa: E731
        for i in range(5):
            push("before-%d" % i, "before")
        wait_until("consumer got the jobs pushed before the outage", lambda: {"before-%d" % i for i in range(5)} <= got(), 10)
        wait_until("consumer blocked in BLMOVE", lambda: blocked_in_blmove(direct), 10)

        out = Outage(r, d)
        during = ["during-%d" % i for i in range(20)]
        for jid in during:
            push(jid, "during")
        out.end(until=lambda: set(during) <= got())
        for i in range(5):
            push("after-%d" % i, "after")
        wait_until("consumer got the jobs pushed after recovery",
                   lambda: {"after-%d" % i for i in range(5)} <= got(), 15)
        consumer.stop.set()
        consumer.join(5)

        consumed_down = [(j, t) for j, t in consumer.got if out.detected <= t < out.restarted]
        outage_polls = [p for p in consumer.polls if p[0] >= out.detected + 0.1 and p[0] + p[1] < out.restarted]
        print("\n%s" % out.figures())
        print("pushes refused: %s" % (errors or "none"))
        print("consumed while Redis was down: %d of %d pushed during the outage (last %.1f s after the kill)" % (
            len([j for j, _ in consumed_down if j in during]), len(during),
            max([t for _, t in consumed_down] or [out.killed]) - out.killed))
        print("consumer errors: %s" % sorted({m for _, m in consumer.errors}))
        print("BLMOVE during the outage: %d answered (%d with a job), took %s s" % (
            len(outage_polls), sum(1 for p in outage_polls if p[2]), "/".join("%.1f" % p[1] for p in outage_polls[:12])))

        # Every check runs, then one assertion lists what failed.
        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        check(errors == [], "pushes refused: %s" % errors)
        refused = [(t, m) for t, m in consumer.errors if t >= out.detected and REDOUBT_REPLY.search(m)]
        check(refused == [], "consumer commands refused by Redoubt during the outage: %s" % refused)
        consumed_before_restart = {j for j, t in consumer.got if t < out.restarted}
        missing_down = [j for j in during if j not in consumed_before_restart]
        check(missing_down == [], "pushed during the outage, not consumed while Redis was down (%.1f s): %s" % (
            out.restarted - out.killed, missing_down))
        counts = {}
        for j, _ in consumer.got:
            counts[j] = counts.get(j, 0) + 1
        check({j: n for j, n in counts.items() if n != 1} == {}, "consumed more than once: %s" % counts)
        check(set(counts) == set(pushed), "consumed but not pushed %s, pushed but not consumed %s" % (
            sorted(set(counts) - set(pushed)), sorted(set(pushed) - set(counts))))
        # Redis, read directly: nothing left, nothing in flight, the queue registered.
        for key in ("queue:default", consumer.processing):
            left = direct.lrange(key, 0, -1)
            check(left == [], "%s not empty in Redis: %s" % (key, left))
        queues = direct.smembers("queues")
        check(queues == {"default"}, "queues in Redis: %s" % queues)
        assert problems == [], "\n".join(problems)
    except BaseException:
        print("--- redoubt log ---\n" + d.log_tail())
        raise
    finally:
        if consumer is not None:
            consumer.stop.set()
            consumer.join(5)
        d.stop()
        r.stop()
