"""redis-py in standalone mode through Redoubt in front of a real Redis
Cluster (three primaries, three replicas), checked against the cluster
itself through redis-py's own cluster client (`RedisCluster`): what one
writes, the other reads."""
import os
import shutil
import subprocess
import tempfile
import threading

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import Redoubt, free_port, wait_until


class Cluster:
    def __init__(self):
        self.nodes = []
        for _ in range(6):
            port, bus = free_port(), free_port()
            d = tempfile.mkdtemp()
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", d, "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus),
                 "--cluster-node-timeout", "2000"],
                stdout=subprocess.DEVNULL,
            )
            self.nodes.append((port, d, proc))
            wait_until("redis-server %d" % port, lambda p=port: redis.Redis(port=p).ping())
        out = subprocess.run(
            ["redis-cli", "--cluster", "create",
             *["127.0.0.1:%d" % p for p, _, _ in self.nodes],
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        for p, _, _ in self.nodes:
            wait_until("cluster ok on %d" % p,
                       lambda p=p: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok",
                       timeout=30)
        self.client = RedisCluster(host="127.0.0.1", port=self.nodes[0][0], decode_responses=True)

    def url(self):
        return "redis+cluster://" + ",".join("127.0.0.1:%d" % p for p, _, _ in self.nodes[:2])

    def stop(self):
        self.client.close()
        for _, d, proc in self.nodes:
            proc.kill()
            proc.wait()
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def through(cluster):
    d = Redoubt(cluster.url())
    c = redis.Redis(port=d.port, socket_timeout=5, decode_responses=True)
    wait_until("redoubt up", lambda: c.ping())
    yield c
    c.close()
    d.stop()


def test_every_command_family_reads_back_through_the_cluster_client(cluster, through):
    direct = cluster.client
    # Strings, expiry.
    through.set("s:1", "a", ex=100)
    through.incrby("s:n", 5)
    through.append("s:1", "b")
    assert direct.get("s:1") == "ab" and 0 < direct.ttl("s:1") <= 100
    assert direct.get("s:n") == "5"
    # Hashes.
    through.hset("h:1", mapping={"f1": "v1", "f2": "v2"})
    through.hincrby("h:1", "n", 3)
    assert direct.hgetall("h:1") == {"f1": "v1", "f2": "v2", "n": "3"}
    # Lists.
    through.rpush("l:1", "a", "b", "c")
    assert through.lpop("l:1") == "a"
    assert direct.lrange("l:1", 0, -1) == ["b", "c"]
    # Sets, sorted sets.
    through.sadd("set:1", "x", "y")
    assert direct.smembers("set:1") == {"x", "y"}
    through.zadd("z:1", {"a": 1, "b": 2})
    through.zincrby("z:1", 5, "a")
    assert direct.zrange("z:1", 0, -1, withscores=True) == [("b", 2.0), ("a", 6.0)]
    # Streams.
    ident = through.xadd("st:1", {"k": "v"})
    assert direct.xrange("st:1") == [(ident, {"k": "v"})]
    # And the other way round: what the cluster client wrote reads back.
    direct.set("d:1", "from-cluster")
    direct.hset("d:h", "f", "v")
    assert through.get("d:1") == "from-cluster"
    assert through.hget("d:h", "f") == "v"


def test_multi_key_commands_across_slots_are_split_and_merged(cluster, through):
    direct = cluster.client
    keys = ["mk:%d" % i for i in range(100)]
    assert through.mset({k: "v" + k for k in keys})
    for k in keys[::9]:
        assert direct.get(k) == "v" + k
    got = through.mget(keys[:50] + ["mk:none"] + keys[50:])
    assert got == ["v" + k for k in keys[:50]] + [None] + ["v" + k for k in keys[50:]]
    assert through.exists(*keys, "mk:none") == 100
    assert through.dbsize() == 100
    assert sorted(through.keys("mk:*")) == sorted(keys)
    assert sorted(through.scan_iter(match="mk:*", count=7)) == sorted(keys)
    assert through.delete(*keys[:60]) == 60
    assert through.unlink(*keys[60:]) == 40
    assert direct.dbsize() == 0
    with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
        through.sunion("mk:1", "mk:2")


def test_pipelines_transactions_and_scripts(cluster, through):
    direct = cluster.client
    # A long non-transactional pipeline over every shard, replies in order.
    p = through.pipeline(transaction=False)
    for i in range(500):
        p.incr("pc:%d" % (i % 37))
    replies = p.execute()
    seen = {}
    for i, r in enumerate(replies):
        seen[i % 37] = seen.get(i % 37, 0) + 1
        assert r == seen[i % 37]
    # A transaction on one slot (hash tag), with WATCH.
    with through.pipeline() as p:
        p.watch("{acct:7}.balance")
        p.multi()
        p.incrby("{acct:7}.balance", 10)
        p.rpush("{acct:7}.log", "deposit")
        assert p.execute() == [10, 1]
    assert direct.lrange("{acct:7}.log", 0, -1) == ["deposit"]
    # Scripts: registered on every primary, so any key's node runs it.
    incr = through.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    for k in ["sc:a", "sc:b", "sc:c", "sc:d", "sc:e", "sc:f"]:
        assert incr(keys=[k], args=[2]) == 2
        assert direct.get(k) == "2"


def test_blocking_pop_and_pubsub(cluster, through):
    port = through.connection_pool.connection_kwargs["port"]
    got = {}

    def waiter():
        c = redis.Redis(port=port, socket_timeout=10, decode_responses=True)
        got["v"] = c.blpop(["jobs"], timeout=5)
        c.close()

    t = threading.Thread(target=waiter)
    t.start()
    node = cluster.client.get_node_from_key("jobs")
    wait_until("BLPOP blocked on its node",
               lambda: redis.Redis(port=node.port).info("clients")["blocked_clients"] == 1)
    through.rpush("jobs", "job-1")
    t.join(10)
    assert tuple(got["v"]) == ("jobs", "job-1")

    sub = redis.Redis(port=port, socket_timeout=5, decode_responses=True).pubsub()
    sub.subscribe("news")
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    wait_until("a subscriber counted", lambda: through.publish("news", "hello") == 1)
    msg = sub.get_message(timeout=2)
    assert msg["data"] == "hello"
    sub.close()
