"""redis-py against standalone Redoubt, RESP2 and RESP3: the reads a web
app makes on every request (a session hash read whole after it is
rewritten, a feed list's newest page, a page's fragments fetched from the
cache in one MGET with some missing) come back as the client's types.
Standalone writes these replies straight from the stored values, so
they are checked here with a real client's parser."""
import redis

from conftest import Redoubt, wait_until


def test_session_feed_and_cache_reads_decode_under_both_protocols():
    d = Redoubt(None)
    try:
        for protocol in (2, 3):
            c = redis.Redis(port=d.port, protocol=protocol, decode_responses=True, socket_timeout=10)
            wait_until("redoubt serving", lambda: c.ping())
            c.flushall()
            sid = "session:%d" % protocol
            for request in range(5):
                c.hset(sid, mapping={"user": "ada", "seen": str(request), "csrf": "x" * 40, "flash": ""})
                assert c.hgetall(sid) == {"user": "ada", "seen": str(request), "csrf": "x" * 40, "flash": ""}
            assert sorted(c.hkeys(sid)) == ["csrf", "flash", "seen", "user"]
            assert sorted(c.hvals(sid)) == sorted(["ada", "4", "x" * 40, ""])
            assert c.hgetall("session:none") == {}

            for i in range(150):
                c.lpush("feed", "post-%d" % i)
            assert c.lrange("feed", 0, 9) == ["post-%d" % i for i in range(149, 139, -1)]
            assert c.lrange("feed", 0, -1) == ["post-%d" % i for i in range(149, -1, -1)]
            assert c.lrange("feed", 200, 300) == []
            assert c.lrange("nofeed", 0, -1) == []

            c.mset({"frag:header": "<h1>hi</h1>", "frag:footer": "", "frag:big": "y" * 5000})
            assert c.mget(["frag:header", "frag:nav", "frag:footer", "feed", "frag:big"]) == [
                "<h1>hi</h1>", None, "", None, "y" * 5000]
            c.close()
    finally:
        d.stop()
