"""A Redis without persistence (`--save ""`, no AOF) is SIGKILLed and comes
back EMPTY. The app (redis-py, through Redoubt) keeps its data in a durable
keyspace: strings with and without TTL, hashes, lists, sets and sorted sets,
some with TTL. Redoubt, attached to Redis as a replica of the durable
keyspaces, must put every durable key back (type, value, TTL) before it
declares Redis Up, and apply the outage's own writes on top, without the app
doing anything. Checked directly on Redis at the first moment /status says
`up`.
"""
import os
import time

import redis

from conftest import Redis, Redoubt, wait_until

CONFIG = """
[[keyspace]]
pattern = "data:*"
policy = "durable"
"""


def snapshot(r, keys):
    """key -> (type, value, pexpiretime) read straight from Redis."""
    out = {}
    for k in keys:
        t = r.type(k)
        if t == "string":
            v = r.get(k)
        elif t == "hash":
            v = r.hgetall(k)
        elif t == "list":
            v = r.lrange(k, 0, -1)
        elif t == "set":
            v = sorted(r.smembers(k))
        elif t == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        else:
            v = None
        out[k] = (t, v, r.execute_command("PEXPIRETIME", k))
    return out


def test_redis_restarted_empty_gets_the_durable_keyspace_back_before_up():
    r = Redis("--repl-diskless-sync-delay", "0")  # conftest: --save "" and no AOF
    d = Redoubt("redis://127.0.0.1:%d" % r.port, config=CONFIG)
    try:
        c = redis.Redis(port=d.port, socket_timeout=5, decode_responses=True)
        direct = redis.Redis(port=r.port, socket_timeout=5, decode_responses=True)
        wait_until("redoubt forwarding", lambda: c.ping() and d.status()["state"] == "up")
        wait_until("replica streaming", lambda: d.status()["journal"]["replica"]["state"] == "streaming")

        keys = []
        for i in range(40):
            k = "data:str:ttl:%d" % i
            c.set(k, "value-%d" % i, ex=600 + i)
            keys.append(k)
        for i in range(10):
            k = "data:str:forever:%d" % i
            c.set(k, "forever-%d" % i)
            keys.append(k)
        for i in range(20):
            k = "data:hash:%d" % i
            c.hset(k, mapping={"name": "user%d" % i, "plan": "pro", "n": str(i)})
            if i % 2 == 0:
                c.expire(k, 3600)
            keys.append(k)
        for i in range(20):
            k = "data:list:%d" % i
            c.rpush(k, *["item-%d-%d" % (i, j) for j in range(5)])
            if i % 2 == 0:
                c.pexpire(k, 900000)
            keys.append(k)
        for i in range(5):
            k = "data:set:%d" % i
            c.sadd(k, "a", "b", "c%d" % i)
            c.expire(k, 1200)
            keys.append(k)
            k = "data:zset:%d" % i
            c.zadd(k, {"x": 1, "y": 2.5, "z%d" % i: 3})
            keys.append(k)
        c.set("other:not-durable", "lost with redis")
        before = snapshot(direct, keys)
        assert all(t != "none" for t, _, _ in before.values())

        # The replica has everything Redis has: same offset.
        def caught_up():
            rep = d.status()["journal"]["replica"]
            info = direct.info("replication")
            return rep["state"] == "streaming" and rep["offset"] >= info["master_repl_offset"] and rep["keys"] >= len(keys)
        wait_until("the replica caught up with redis", caught_up)

        r.kill()
        wait_until("redoubt declares redis down", lambda: d.status()["state"] == "down", timeout=5)
        # The outage's own writes go on top of the restored data.
        assert c.set("data:during", "written during the outage", ex=700) is True
        assert c.rpush("data:list:1", "pushed-during") == 6
        assert c.hset("data:hash:1", "plan", "enterprise") == 0
        assert c.get("data:str:ttl:3") == "value-3"  # read from the replica
        time.sleep(2)
        for f in os.listdir(r.dir):  # nothing on disk: Redis comes back empty
            os.remove(os.path.join(r.dir, f))
        restarted = time.monotonic()
        r.start()

        while True:
            s = d.status()
            if s["state"] == "up":
                break
            assert time.monotonic() - restarted < 15, "not up 15 s after the restart: %r" % s
            time.sleep(0.005)
        up_ms = (time.monotonic() - restarted) * 1000
        # Straight away, before anything else touches Redis:
        after = snapshot(direct, keys)
        during = (direct.get("data:during"), direct.ttl("data:during"))
        rep = d.status()["journal"]["replica"]
        print("\nup %.0f ms after the restart; last_restore %r; other:not-durable in redis: %r"
              % (up_ms, rep.get("last_restore"), direct.exists("other:not-durable")))

        expected = dict(before)
        t, v, exp = expected["data:list:1"]
        expected["data:list:1"] = (t, v + ["pushed-during"], exp)
        t, v, exp = expected["data:hash:1"]
        expected["data:hash:1"] = (t, {**v, "plan": "enterprise"}, exp)
        wrong = []
        for k in keys:
            bt, bv, bexp = expected[k]
            at, av, aexp = after[k]
            if (at, av) != (bt, bv):
                wrong.append("%s: %s %r, expected %s %r" % (k, at, av, bt, bv))
            elif (bexp < 0) != (aexp < 0) or abs(aexp - bexp) > 1000:
                wrong.append("%s: PEXPIRETIME %d, expected %d (%+d ms)" % (k, aexp, bexp, aexp - bexp))
        assert not wrong, "%d of %d durable keys wrong when redoubt reported up: %s" % (len(wrong), len(keys), wrong[:8])
        assert during[0] == "written during the outage" and 600 < during[1] <= 700, during
        assert rep.get("last_restore"), "no restore recorded in /status: %r" % rep
    except BaseException:
        print("--- redoubt log ---\n" + d.log_tail())
        raise
    finally:
        d.stop()
        r.stop()
