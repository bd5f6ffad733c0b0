//! TLS on both sides with the real binary, a real `redis-server
//! --tls-port` and certificates made for the test: Redoubt in front of a
//! TLS Redis (an outage's durable writes journaled and replayed into it),
//! mutual TLS to Redis, the `[tls]` listener for redis-cli and a TLS
//! client, client certificates required, and the listener's certificate
//! reloaded on SIGHUP while a connection stays open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::pki::TestPki;
use test_support::{free_port, wait_for, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");
const T: Duration = Duration::from_secs(15);

/// A running Redoubt, killed and reaped on drop.
struct Redoubt {
    child: Child,
    port: u16,
    admin: u16,
    tls_port: u16,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Drop for Redoubt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redoubt {
    /// `serve` with `toml` (which may use `{tls_port}`), probing fast;
    /// `upstream` empty for standalone.
    fn start(upstream: &str, toml: &str) -> Redoubt {
        let data = tempfile::tempdir().unwrap();
        let (port, admin, tls_port) = (free_port(), free_port(), free_port());
        let conf = data.path().join("redoubt.toml");
        std::fs::write(
            &conf,
            format!(
                "[health]\ninterval_ms = 50\ntimeout_ms = 250\n{}",
                toml.replace("{tls_port}", &tls_port.to_string())
            ),
        )
        .unwrap();
        let log = data.path().join("redoubt.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", conf.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--data-dir", data.path().join("data").to_str().unwrap()])
            .env_remove("REDOUBT_UPSTREAM")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if !upstream.is_empty() {
            cmd.args(["--upstream", upstream]);
        }
        let mut r = Redoubt {
            child: cmd.spawn().unwrap(),
            port,
            admin,
            tls_port,
            log,
            _data: data,
        };
        wait_for("redoubt to listen", T, || {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("redoubt exited at start ({st}):\n{}", r.log_text());
            }
            TcpStream::connect(("127.0.0.1", r.admin)).is_ok()
        });
        r
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's state line (`R`, `S`, `Z` once it exited), for
    /// failure messages.
    fn child_status(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("State:"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "gone".into())
    }

    fn status(&self) -> Option<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()
    }

    fn wait_status(&self, what: &str, cond: impl Fn(&Value) -> bool) {
        let start = std::time::Instant::now();
        loop {
            let s = self.status();
            if s.as_ref().is_some_and(&cond) {
                return;
            }
            assert!(
                start.elapsed() < T,
                "timed out waiting for {what}; last /status: {}\nlog:\n{}",
                s.map(|s| s.to_string()).unwrap_or_default(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One command on a fresh plain connection; the reply's first line (a
/// bulk string's payload).
fn raw_cmd(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    if line.starts_with('$') && !line.starts_with("$-1") {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    line.trim_end().to_string()
}

fn upstream_tls(pki: &TestPki, client_cert: bool) -> String {
    let mut t = format!(
        "[upstream_tls]\nca_file = {:?}\n",
        pki.ca.display().to_string()
    );
    if client_cert {
        t.push_str(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            pki.client.cert.display().to_string(),
            pki.client.key.display().to_string()
        ));
    }
    t
}

#[test]
fn a_tls_redis_is_proxied_and_an_outage_journal_is_replayed_into_it() {
    let pki = TestPki::new();
    let mut redis = RedisServer::start_tls(
        &pki,
        &pki.server,
        false,
        // No 5 s wait before a replica's full sync (as the chaos suite).
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--repl-diskless-sync-delay",
            "0",
        ],
    );
    let r = Redoubt::start(
        &redis.tls_url(),
        &format!(
            "{}[[keyspace]]\npattern = \"sess:*\"\npolicy = \"durable\"\n",
            upstream_tls(&pki, false)
        ),
    );
    r.wait_status("redis up through TLS", |s| s["state"] == "up");
    assert_eq!(raw_cmd(r.port, &["SET", "plain:k", "v1"]), "+OK");
    assert_eq!(raw_cmd(r.port, &["GET", "plain:k"]), "v1");
    assert_eq!(redis.cmd(&["GET", "plain:k"]), "v1", "written into Redis");
    assert_eq!(raw_cmd(r.port, &["SET", "sess:before", "b"]), "+OK");
    // The replica link, the lease and the ACL reader all ride TLS too.
    // Streaming is not enough: a write made while the full resync was
    // under way reaches the copy after it, from the stream.
    r.wait_status("the replica to stream over TLS", |s| {
        s["journal"]["replica"]["state"] == "streaming"
            && s["journal"]["replica"]["keys"] == 1
            && s["journal"]["writer"]["takes_outage_writes"] == true
            && s.to_string().contains("\"users_with_known_permissions\":1")
    });
    redis.kill();
    r.wait_status("down", |s| s["state"] == "down");
    assert_eq!(raw_cmd(r.port, &["SET", "sess:during", "d"]), "+OK");
    assert_eq!(raw_cmd(r.port, &["GET", "sess:before"]), "b");
    redis.start_again();
    r.wait_status("the journal replayed into the TLS redis", |s| {
        s["state"] == "up" && s["journal"]["pending_commands"] == 0
    });
    assert_eq!(redis.cmd(&["GET", "sess:during"]), "d");
    assert_eq!(raw_cmd(r.port, &["GET", "sess:during"]), "d");
}

#[test]
fn mutual_tls_to_redis_works_with_the_client_certificate_and_is_named_without_it() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, true, &[]);
    let with = Redoubt::start(&redis.tls_url(), &upstream_tls(&pki, true));
    with.wait_status("up with a client certificate", |s| s["state"] == "up");
    assert_eq!(raw_cmd(with.port, &["SET", "m", "tls"]), "+OK");
    assert_eq!(redis.cmd(&["GET", "m"]), "tls");
    let without = Redoubt::start(&redis.tls_url(), &upstream_tls(&pki, false));
    without.wait_status("the prober to say why", |s| {
        s["state"] == "down"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("requires a client certificate"))
    });
}

#[test]
fn insecure_skip_verify_is_warned_about_loudly() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.wrong_name, false, &[]);
    let r = Redoubt::start(
        &redis.tls_url(),
        "[upstream_tls]\ninsecure_skip_verify = true\n",
    );
    r.wait_status("up without verification", |s| s["state"] == "up");
    let log = r.log_text();
    assert!(
        log.contains("WARN") && log.contains("insecure_skip_verify is on"),
        "{log}"
    );
}

fn listener_toml(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let mut t = format!(
        "[tls]\nlisten = \"127.0.0.1:{{tls_port}}\"\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(ca) = client_ca {
        t.push_str(&format!(
            "client_ca_file = {:?}\n",
            ca.display().to_string()
        ));
    }
    t
}

fn redis_cli(port: u16, tls: &[&str], args: &[&str]) -> std::process::Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(tls)
        .args(args)
        .output()
        .expect("redis-cli")
}

#[test]
fn redis_cli_speaks_tls_to_the_listener_in_front_of_redis() {
    let pki = TestPki::new();
    let redis = RedisServer::new();
    let r = Redoubt::start(
        &redis.url(),
        &listener_toml(&pki.server.cert, &pki.server.key, None),
    );
    r.wait_status("up", |s| s["state"] == "up");
    let ca = pki.ca.display().to_string();
    let out = redis_cli(r.tls_port, &["--cacert", &ca], &["SET", "k", "over-tls"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let out = redis_cli(r.tls_port, &["--cacert", &ca], &["GET", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");
    // The plain listener still serves, alongside.
    assert_eq!(raw_cmd(r.port, &["GET", "k"]), "over-tls");
}

#[test]
fn the_listener_refuses_a_client_without_a_certificate_when_client_ca_file_is_set() {
    let pki = TestPki::new();
    let r = Redoubt::start(
        "",
        &listener_toml(&pki.server.cert, &pki.server.key, Some(&pki.ca)),
    );
    let ca = pki.ca.display().to_string();
    let out = redis_cli(r.tls_port, &["--cacert", &ca], &["PING"]);
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "a client without a certificate must not be served: {out:?}"
    );
    let (cert, key) = (
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let out = redis_cli(
        r.tls_port,
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
        &["PING"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{out:?}"
    );
}

/// A TLS client of `r`'s listener, and the certificate it was shown.
async fn tls_client(r: &Redoubt, ca: &Path) -> (tls::Stream, Vec<u8>) {
    let client = tls::TlsClient::new(&tls::ClientOptions {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let s = tls::connect(("127.0.0.1", r.tls_port), "localhost", Some(&client))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "TLS connect to port {} ({:?}): {e:?}\nlog:\n{}",
                r.tls_port,
                r.child_status(),
                r.log_text()
            )
        });
    let tls::Stream::Tls(t) = &s else {
        panic!("not TLS")
    };
    let der = t.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (s, der)
}

async fn ping(s: &mut tls::Stream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    tls::send(s, b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = vec![0; 64];
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf.truncate(n);
    buf
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem_file)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_listener_certificate_and_keeps_open_connections() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let r = Redoubt::start("", &listener_toml(&cert, &key, None));
    let (mut old, seen) = tls_client(&r, &pki.ca).await;
    assert_eq!(seen, der_of(&pki.server.cert));
    assert_eq!(ping(&mut old).await, b"+PONG\r\n");

    // A broken file is refused and the old certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    let pid = r.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_for("the failed reload to be logged", T, || {
        r.log_text().contains("could not be reloaded")
    });
    let (_, seen) = tls_client(&r, &pki.ca).await;
    assert_eq!(seen, der_of(&pki.server.cert), "old certificate kept");

    std::fs::copy(&pki.server_renewed.cert, &cert).unwrap();
    std::fs::copy(&pki.server_renewed.key, &key).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_for("the reload to be logged", T, || {
        r.log_text().contains("TLS certificate reloaded")
    });
    let (mut new, seen) = tls_client(&r, &pki.ca).await;
    assert_eq!(seen, der_of(&pki.server_renewed.cert), "new handshakes");
    assert_eq!(ping(&mut new).await, b"+PONG\r\n");
    assert_eq!(ping(&mut old).await, b"+PONG\r\n", "old connection kept");
    assert!(r.status().is_some(), "still running after two SIGHUPs");
}

#[test]
fn tls_settings_are_checked_key_by_key() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("r.toml");
    std::fs::write(
        &conf,
        format!(
            "upstream = \"redis://127.0.0.1:6379\"\n[tls]\nlisten = \"127.0.0.1:7000\"\ncert_file = {:?}\nkey_file = \"/nonexistent/key.pem\"\n[upstream_tls]\nca_file = \"/x.pem\"\n",
            pki.server.cert.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", conf.to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/key.pem: cannot read"), "{err}");
    assert!(
        err.contains("upstream_tls.ca_file: set, but upstream is not a rediss:// URL"),
        "{err}"
    );
}

#[test]
fn doctor_on_the_command_line_takes_redis_cli_tls_flags_and_explains_failures() {
    let pki = TestPki::new();
    let good = RedisServer::start_tls(&pki, &pki.server, true, &[]);
    let ca = pki.ca.display().to_string();
    let (cert, key) = (
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let doctor = |url: &str, flags: &[&str]| {
        Command::new(BIN)
            .args(["doctor", url])
            .args(flags)
            .output()
            .unwrap()
    };
    let out = doctor(
        &good.tls_url(),
        &["--cacert", &ca, "--cert", &cert, "--key", &key, "--json"],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["diagnosable"], true, "{report}");
    let out = doctor(&good.tls_url(), &["--cacert", &ca]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("connection.tls-client-cert"), "{text}");
    let untrusted = RedisServer::start_tls(&pki, &pki.untrusted, false, &[]);
    let out = doctor(&untrusted.tls_url(), &["--cacert", &ca]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("not signed by a CA we trust"), "{text}");
    // TLS flags with a plain URL are a usage error.
    let out = doctor(&good.url(), &["--cacert", &ca]);
    assert_eq!(out.status.code(), Some(64));
}

/// Reads from `s` until `want` has arrived (or fails after a while).
async fn read_until(s: &mut tls::Stream, want: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_and_blocking_pops_work_over_the_tls_listener() {
    let pki = TestPki::new();
    let redis = RedisServer::new();
    let proxy = Redoubt::start(
        &redis.url(),
        &listener_toml(&pki.server.cert, &pki.server.key, None),
    );
    proxy.wait_status("up", |s| s["state"] == "up");
    // A subscriber: the session hands its TLS stream to the relay.
    let (mut sub, _) = tls_client(&proxy, &pki.ca).await;
    tls::send(&mut sub, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
        .await
        .unwrap();
    read_until(&mut sub, b"subscribe\r\n$2\r\nch\r\n:1\r\n").await;
    let port = proxy.port;
    let published = tokio::task::spawn_blocking(move || raw_cmd(port, &["PUBLISH", "ch", "hi"]));
    assert_eq!(published.await.unwrap(), ":1");
    read_until(&mut sub, b"$2\r\nhi\r\n").await;

    // Standalone: a blocking pop over TLS is woken by a push.
    let local = Redoubt::start("", &listener_toml(&pki.server.cert, &pki.server.key, None));
    let (mut c, _) = tls_client(&local, &pki.ca).await;
    tls::send(&mut c, b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n5\r\n")
        .await
        .unwrap();
    // Whether the push lands before or after the pop blocks, the reply is
    // the same; sent after the pop, it almost always wakes a blocked one.
    let port = local.port;
    let pushed = tokio::task::spawn_blocking(move || raw_cmd(port, &["RPUSH", "q", "x"]));
    assert_eq!(pushed.await.unwrap(), ":1");
    read_until(&mut c, b"$1\r\nq\r\n$1\r\nx\r\n").await;
}
