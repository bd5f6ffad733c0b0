"""A web-style application keeping its sessions in Redis through Redoubt,
with redis-py, unchanged: its users stay logged in while Redis is SIGKILLed
and restarted, and users can log in during the outage.

What the test proves, and why Redis runs with `appendonly yes` /
`appendfsync always`: a production Redis that holds sessions persists them,
so Redis itself keeps the sessions it had acknowledged across the kill.
Redoubt's part is everything else: answering the sessions it saw before the
outage from its near-cache while Redis is gone, taking new logins and
logouts into its journal, and replaying them exactly once into the Redis
that comes back without clobbering what Redis kept. (Without persistence,
Redis would come back empty and the users who logged in before the outage
would be logged out by Redis's own loss; Redoubt does not resurrect data
Redis lost, by design: the near-cache is a read cache, never replayed.)
"""
import json
import secrets
import threading
import time

import redis

from conftest import Redis, Redoubt, wait_until

SESSION_TTL = 3600
CONFIG = """
[[keyspace]]
pattern = "sess:*"
policy = "durable"
"""


class SessionApp:
    """The session layer of a web app, as Flask-Session or Django's cache
    sessions do it: a session is a JSON document under `sess:<token>` with a
    TTL; every request loads it; logout deletes it."""

    def __init__(self, r):
        self.r = r

    def login(self, user):
        token = secrets.token_hex(16)
        doc = json.dumps({"user": user, "login_at": time.time()})
        assert self.r.set("sess:" + token, doc, ex=SESSION_TTL) is True
        return token

    def request(self, token):
        """The user the request is authenticated as, or None (a 401)."""
        raw = self.r.get("sess:" + token)
        return None if raw is None else json.loads(raw)["user"]

    def logout(self, token):
        self.r.delete("sess:" + token)


def state(d):
    return d.status()["state"]


def drained(d):
    """Redis is Up and the journal has been replayed into it."""
    s = d.status()
    j = s["journal"]
    return s["state"] == "up" and j["pending_commands"] == 0 and not j["serving_locally"]


class Requests(threading.Thread):
    """Keeps making requests for the given users, round after round, like
    the app's traffic would, recording every failure (an exception, or a user
    who should be logged in and is not)."""

    def __init__(self, app, users):
        super().__init__(daemon=True)
        self.app, self.users = app, dict(users)
        self.stop = threading.Event()
        self.count = 0
        self.failures = []

    def run(self):
        while not self.stop.is_set():
            for user, token in self.users.items():
                try:
                    got = self.app.request(token)
                    if got != user:
                        self.failures.append((user, "logged out: request authenticated as %r" % got))
                except redis.RedisError as e:
                    self.failures.append((user, "%s: %s" % (type(e).__name__, e)))
                self.count += 1


def test_users_stay_logged_in_across_a_redis_kill_and_restart():
    r = Redis("--appendonly", "yes", "--appendfsync", "always")
    d = Redoubt("redis://127.0.0.1:%d" % r.port, config=CONFIG)
    traffic = None
    try:
        c = redis.Redis(port=d.port, socket_timeout=5, decode_responses=True)
        direct = redis.Redis(port=r.port, socket_timeout=5, decode_responses=True)
        wait_until("redoubt forwarding", lambda: c.ping() and state(d) == "up")
        app = SessionApp(c)

        # Before the outage: users log in and use the site (every request
        # reads the session through Redoubt, which is how it learns them).
        before = {"user%02d" % i: app.login("user%02d" % i) for i in range(20)}

        def browse():
            for user, token in before.items():
                assert app.request(token) == user
            return d.status()["journal"]["near_cache"]["keys"] >= len(before)
        # Their traffic goes on until Redoubt's near-cache holds every one
        # of their sessions (the first reads may come before its tracking
        # connection is up, and are then not kept).
        wait_until("the near-cache to hold the sessions the app reads", browse)
        # Local answers go only to sessions whose Redis user Redoubt knows
        # (here Redis's `default`): it reads the user's ACL while Up.
        wait_until("redoubt to know the app's redis user",
                   lambda: d.status()["auth"]["users_with_known_permissions"] >= 1)
        assert direct.get("sess:" + before["user00"]) is not None

        # Traffic for the users logged in before the outage, from now on:
        # from the moment Redoubt has declared Redis down until the end,
        # not one of their requests may fail or find them logged out.
        leaver = "user19"  # logs out during the outage
        stayers = {u: t for u, t in before.items() if u != leaver}
        traffic = Requests(app, stayers)

        r.kill()  # SIGKILL
        wait_until("redoubt declares redis down", lambda: state(d) == "down", timeout=5)
        traffic.start()

        # During the outage: everyone who was logged in still is.
        for user, token in before.items():
            got = app.request(token)
            assert got == user, "%s logged out during the outage (request saw %r)" % (user, got)
        # New users log in, and their next requests find them.
        during = {"new%02d" % i: app.login("new%02d" % i) for i in range(20)}
        for user, token in during.items():
            assert app.request(token) == user
        # A logout during the outage holds.
        app.logout(before[leaver])
        assert app.request(before[leaver]) is None
        # Those writes were journaled, not applied anywhere else.
        assert d.status()["journal"]["pending_commands"] >= len(during) + 1
        # Traffic has run against the outage, not only around it.
        served = traffic.count
        wait_until("requests served during the outage", lambda: traffic.count >= served + 200)
        assert state(d) == "down"

        # Redis comes back on the same port and reloads its AOF; Redoubt
        # replays its journal into it, and the keys go back upstream.
        r.start()
        back_ms = time.time() * 1000  # Redis accepts again; no replay before this
        wait_until("journal replayed and redis up", lambda: drained(d), timeout=15)
        served = traffic.count
        wait_until("requests served after recovery", lambda: traffic.count >= served + 200)
        traffic.stop.set()
        traffic.join(5)
        assert not traffic.failures, "%d of %d requests failed from the outage on; first: %r" % (
            len(traffic.failures), traffic.count, traffic.failures[:5])

        # Every session is in Redis, checked directly, expiring an hour
        # after its login: SET EX during the outage is replayed as the
        # absolute time it meant, not a fresh hour from the replay (which
        # came after `back_ms`), nor no expiry at all.
        for user, token in {**stayers, **during}.items():
            raw = direct.get("sess:" + token)
            assert raw is not None, "session of %s missing from redis after replay" % user
            doc = json.loads(raw)
            assert doc["user"] == user
            expires = direct.execute_command("PEXPIRETIME", "sess:" + token)
            meant = doc["login_at"] * 1000 + SESSION_TTL * 1000
            assert meant - 50 <= expires < back_ms + SESSION_TTL * 1000, (
                "session of %s expires at %d: %+.0f ms from an hour after its login, %+.0f ms from an hour "
                "after redis came back" % (user, expires, expires - meant, expires - back_ms - SESSION_TTL * 1000))
        assert direct.exists("sess:" + before[leaver]) == 0, "the logout during the outage was not replayed"
        # Exactly the sessions that should exist: nothing extra.
        assert sorted(direct.scan_iter("sess:*")) == sorted("sess:" + t for t in {**stayers, **during}.values())

        # And through Redoubt, now forwarding: everyone is still logged in.
        for user, token in {**stayers, **during}.items():
            assert app.request(token) == user
        assert app.request(before[leaver]) is None
    except BaseException:
        print("--- redoubt log ---\n" + d.log_tail())
        raise
    finally:
        if traffic is not None:
            traffic.stop.set()
        d.stop()
        r.stop()
