"""redis-py, unchanged, talking to Redis through Redoubt."""
import threading

import pytest
import redis

from conftest import Redis, Redoubt, wait_until


def client(d, **kw):
    return redis.Redis(port=d.port, socket_timeout=5, **kw)


def test_data_types(redoubt, redis_server):
    c = client(redoubt, decode_responses=True)
    assert c.set("s", "v") and c.get("s") == "v"
    assert c.incrby("n", 3) == 3
    c.hset("h", mapping={"a": "1", "b": "2"})
    assert c.hgetall("h") == {"a": "1", "b": "2"}
    c.rpush("l", "x", "y")
    assert c.lrange("l", 0, -1) == ["x", "y"]
    c.sadd("set", "m")
    assert c.smembers("set") == {"m"}
    c.zadd("z", {"a": 1, "b": 2})
    assert c.zrange("z", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.0)]
    direct = redis.Redis(port=redis_server.port, decode_responses=True)
    assert direct.get("s") == "v"


def test_scripts_pipeline_transaction_watch(redoubt, redis_server):
    c = client(redoubt)
    assert c.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "e", 5) == 5
    sha = c.script_load("return 'ok'")
    assert c.evalsha(sha, 0) == b"ok"
    p = c.pipeline(transaction=True)
    p.incr("t").incr("t")
    assert p.execute() == [1, 2]
    # Optimistic locking with WATCH, and a concurrent writer that wins.
    direct = redis.Redis(port=redis_server.port)
    with c.pipeline() as p:
        p.watch("w")
        direct.set("w", "theirs")
        p.multi()
        p.set("w", "mine")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert direct.get("w") == b"theirs"


def test_blpop_and_pubsub(redoubt):
    c = client(redoubt)
    threading.Timer(0.1, lambda: client(redoubt).rpush("q", "job")).start()
    assert c.blpop(["q"], timeout=5) == (b"q", b"job")
    assert c.blpop(["empty"], timeout=0.1) is None
    ps = client(redoubt).pubsub()
    ps.subscribe("news")
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    assert c.publish("news", "hi") == 1
    msg = ps.get_message(timeout=5)
    assert msg["type"] == "message" and msg["data"] == b"hi"
    ps.close()


def test_select_setname_and_resp3(redoubt, redis_server):
    c = client(redoubt, db=2)
    c.set("k", "db2")
    assert redis.Redis(port=redis_server.port, db=2).get("k") == b"db2"
    assert redis.Redis(port=redis_server.port, db=0).get("k") is None
    c.client_setname("worker-1")
    assert c.client_getname() in ("worker-1", b"worker-1")  # redis-py decodes this one itself
    r3 = client(redoubt, protocol=3, decode_responses=True)
    r3.hset("h3", "f", "v")
    assert r3.hgetall("h3") == {"f": "v"}
    assert r3.ping()


def test_large_value(redoubt):
    c = client(redoubt)
    big = bytes(range(256)) * (16 * 1024 * 4)  # 16 MiB
    c.set("big", big)
    assert c.get("big") == big


def test_auth_acl_wrong_password_and_noauth():
    r = Redis("--requirepass", "topsecret")
    try:
        admin = redis.Redis(port=r.port, password="topsecret")
        admin.acl_setuser("app", enabled=True, passwords=["+apppass"], keys=["app:*"], commands=["+@all"])
        d = Redoubt("redis://:topsecret@127.0.0.1:%d" % r.port)
        try:
            wait_until("prober up", lambda: redis.Redis(port=d.port, password="topsecret").ping())
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=d.port).get("x")  # NOAUTH
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=d.port, password="wrong").ping()
            app = redis.Redis(port=d.port, username="app", password="apppass")
            assert app.set("app:1", "ok")
            with pytest.raises(redis.exceptions.NoPermissionError):
                app.set("other", "no")
            assert admin.get("app:1") == b"ok"
        finally:
            d.stop()
    finally:
        r.stop()


def test_unavailable_when_redis_is_killed(redoubt, redis_server):
    c = client(redoubt)
    c.set("a", "1")
    redis_server.kill()
    def unavailable():
        try:
            c.get("a")
        except redis.ResponseError as e:
            return str(e).startswith("UNAVAILABLE")
        return False
    wait_until("UNAVAILABLE replies", unavailable, timeout=5)
