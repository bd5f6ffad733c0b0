"""Fixtures: a real redis-server and the real redoubt binary in front of it."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("TEST_REDOUBT_BIN", os.path.join(ROOT, "target", "debug", "redoubt"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, cond, timeout=10.0, why=None):
    """Polls `cond` until true. `why`, if given, says what went wrong
    (a process that exited, its log), checked on every poll: None while
    waiting on is still worth it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (redis.ConnectionError, OSError, redis.ResponseError):
            pass
        if why is not None:
            gone = why(False)
            if gone is not None:
                raise AssertionError("gave up waiting for %s: %s" % (what, gone))
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what + ("" if why is None else ": " + why(True)))


class Redis:
    def __init__(self, *extra):
        self.port = free_port()
        self.dir = tempfile.mkdtemp()
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL,
        )
        wait_until("redis-server", lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() is None)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redoubt:
    """The real binary, in front of `upstream_url` (None: standalone, the
    local store serves everything). `config` is TOML text (e.g.
    `[[keyspace]]` entries, which only a file can declare), written beside
    the data dir."""

    def __init__(self, upstream_url, *args, env=None, config=None):
        self.dir = tempfile.mkdtemp()
        self.conf_dir = None
        if config is not None:
            self.conf_dir = tempfile.mkdtemp()
            path = os.path.join(self.conf_dir, "redoubt.toml")
            with open(path, "w") as f:
                f.write(config)
            args = ("--config", path, *args)
        self.log = os.path.join(self.conf_dir or tempfile.mkdtemp(), "redoubt.log")
        upstream = [] if upstream_url is None else ["--upstream", upstream_url]
        env = {**os.environ, "REDOUBT_HEALTH_INTERVAL_MS": "50", **(env or {})}
        if upstream_url is None:
            env.pop("REDOUBT_UPSTREAM", None)
        # A port from free_port() is free only a moment: another test's
        # server can take it first. Redoubt then exits saying so, and is
        # started again on fresh ports.
        for attempt in range(3):
            self.port = free_port()
            self.admin = free_port()
            self.proc = subprocess.Popen(
                [BIN, "serve", *upstream, "--listen", "127.0.0.1:%d" % self.port,
                 "--admin", "127.0.0.1:%d" % self.admin, "--data-dir", self.dir, *args],
                stderr=open(self.log, "w"),
                env=env,
            )
            try:
                wait_until("redoubt listening",
                           lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() is None,
                           why=self._not_listening)
                return
            except AssertionError:
                taken = self.proc.poll() is not None and "Address already in use" in self.log_tail()
                if not taken or attempt == 2:
                    raise

    def _not_listening(self, timed_out):
        """Why it is not listening: it exited (said at once), or, once the
        wait timed out, what its log says."""
        code = self.proc.poll()
        if code is not None:
            return "redoubt exited with %s; its log:\n%s" % (code, self.log_tail())
        if timed_out:
            return "still running; its log:\n%s" % self.log_tail()
        return None

    def status(self):
        """`/status` on the admin port, as a dict."""
        with urllib.request.urlopen("http://127.0.0.1:%d/status" % self.admin, timeout=2) as r:
            return json.load(r)

    def log_tail(self, n=40):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(os.path.dirname(self.log), ignore_errors=True)


@pytest.fixture
def redis_server():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def redoubt(redis_server):
    d = Redoubt("redis://127.0.0.1:%d" % redis_server.port)
    # Wait until the prober has seen Redis: then commands are forwarded.
    c = redis.Redis(port=d.port, socket_timeout=5)
    wait_until("redoubt up", lambda: c.ping())
    yield d
    d.stop()
