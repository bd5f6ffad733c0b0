"""redis-py, unchanged, with `ssl=True` through Redoubt's [tls] listener:
certificates made here with the openssl CLI, a client certificate required
when client_ca_file is set."""
import os
import ssl
import subprocess
import tempfile

import pytest
import redis

from conftest import Redoubt, free_port, wait_until


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def sign(d, name, cn, ext):
    """A key and a certificate for `cn`, signed by the CA in `d`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
            "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=Redoubt test CA", cwd=d)
    server = sign(d, "server", "localhost",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = sign(d, "client", "app", "extendedKeyUsage=clientAuth\n")
    return {"ca": os.path.join(d, "ca.crt"), "server": server, "client": client}


def start(pki, client_ca=False):
    tls_port = free_port()
    conf = '[tls]\nlisten = "127.0.0.1:%d"\ncert_file = "%s"\nkey_file = "%s"\n' % (
        tls_port, pki["server"][0], pki["server"][1])
    if client_ca:
        conf += 'client_ca_file = "%s"\n' % pki["ca"]
    d = Redoubt(None, config=conf)
    d.tls_port = tls_port
    wait_until("the TLS listener", lambda: redis.Redis(port=d.port).ping())
    return d


def tls_client(d, pki, **kw):
    return redis.Redis(host="127.0.0.1", port=d.tls_port, ssl=True, ssl_ca_certs=pki["ca"],
                       socket_timeout=5, decode_responses=True, **kw)


def test_redis_py_speaks_tls_to_the_listener(pki):
    d = start(pki)
    try:
        c = tls_client(d, pki)
        assert c.set("k", "over-tls") and c.get("k") == "over-tls"
        p = c.pipeline(transaction=True)
        p.incr("n").incr("n")
        assert p.execute() == [1, 2]
        big = "x" * 200_000  # several TLS records each way
        c.set("big", big)
        assert c.get("big") == big
        # The plain listener serves the same data alongside.
        assert redis.Redis(port=d.port, decode_responses=True).get("k") == "over-tls"
    finally:
        d.stop()


def test_a_client_without_a_certificate_is_refused_when_client_ca_file_is_set(pki):
    d = start(pki, client_ca=True)
    try:
        with pytest.raises((redis.ConnectionError, ssl.SSLError, OSError)):
            tls_client(d, pki).ping()
        c = tls_client(d, pki, ssl_certfile=pki["client"][0], ssl_keyfile=pki["client"][1])
        assert c.ping()
    finally:
        d.stop()
