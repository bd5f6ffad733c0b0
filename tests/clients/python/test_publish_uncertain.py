"""Found by the SSE fan-out app test (tests/clients/node/test/app-sse-pubsub.test.js):
a PUBLISH in flight when Redis stops answering is reported as "not
executed (it was a read; safe to retry)", but Redis may well have run it
(here it runs it as soon as it resumes), so an app that retries, as the
reply invites, delivers the message twice. PUBLISH has side effects: like a
write whose reply never came it should be -UNCERTAIN."""
import os
import signal

import pytest
import redis

from conftest import Redis, Redoubt, wait_until


def test_publish_without_reply_is_uncertain_not_safe_to_retry():
    r = Redis()
    d = Redoubt("redis://127.0.0.1:%d" % r.port)
    try:
        c = redis.Redis(port=d.port, socket_timeout=5, decode_responses=True)
        wait_until("redoubt up", lambda: c.ping() and d.status()["state"] == "up")
        sub = redis.Redis(port=r.port, socket_timeout=5, decode_responses=True).pubsub()
        sub.subscribe("sse:feed")
        assert sub.get_message(timeout=2)["type"] == "subscribe"
        os.kill(r.proc.pid, signal.SIGSTOP)  # Redis hangs: no reply within command_timeout_ms
        try:
            reply = c.publish("sse:feed", "event-1")
        except redis.ResponseError as e:
            reply = str(e)
        os.kill(r.proc.pid, signal.SIGCONT)
        m = sub.get_message(timeout=3)
        while m is not None and m["type"] != "message":
            m = sub.get_message(timeout=3)
        delivered = m is not None and m["data"] == "event-1"
        assert delivered, "setup: Redis did not deliver the PUBLISH after SIGCONT"
        # Delivered: the client must not have been told "not executed".
        assert isinstance(reply, str) and reply.startswith("UNCERTAIN"), \
            "PUBLISH that Redis delivered was answered: %r" % reply
    finally:
        try:
            os.kill(r.proc.pid, signal.SIGCONT)
        except OSError:
            pass
        d.stop()
        r.stop()
