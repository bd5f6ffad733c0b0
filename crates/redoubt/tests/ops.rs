//! Operations that act without a person: webhook alerts and the
//! remediation hook, against a real Redis and the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{free_port, wait_for, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

/// A running Redoubt, killed and reaped on drop.
struct Running {
    child: Child,
    port: u16,
    admin: u16,
    _data: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` in front of `upstream` with `toml` added to a config that
/// probes fast.
fn serve(upstream: &str, toml: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    let conf = data.path().join("redoubt.toml");
    std::fs::write(
        &conf,
        format!("[health]\ninterval_ms = 50\ntimeout_ms = 100\n{toml}"),
    )
    .unwrap();
    let (port, admin) = (free_port(), free_port());
    let log = std::fs::File::create(data.path().join("redoubt.log")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config", conf.to_str().unwrap()])
        .args(["--upstream", upstream])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let r = Running {
        child,
        port,
        admin,
        _data: data,
    };
    wait_for("admin to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    wait_for("redoubt to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    r
}

/// `GET /readyz` answers 200.
fn ready(admin: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", admin)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.starts_with("HTTP/1.1 200")
}

fn get_json(admin: u16, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

/// A webhook receiver: answers 500 to the first request and 200 after,
/// and hands every request body (JSON) to the test.
fn receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/secret", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { continue };
            let mut r = BufReader::new(conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() || !line.starts_with("POST /hook/secret ") {
                continue;
            }
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if n == 0 { "500 Oops" } else { "200 OK" };
            let _ = write!(
                r.get_mut(),
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// The next webhook body, within `timeout`.
fn next(rx: &mpsc::Receiver<Value>, timeout: Duration) -> Value {
    rx.recv_timeout(timeout)
        .unwrap_or_else(|e| panic!("no webhook request within {timeout:?}: {e}"))
}

#[test]
fn webhooks_report_down_with_a_retry_then_up_and_the_closed_incident() {
    let mut redis = RedisServer::new();
    let (url, rx) = receiver();
    let r = serve(
        &redis.url(),
        &format!("[[alert]]\nurl = \"{url}\"\ntimeout_ms = 1000\n"),
    );
    wait_for("redoubt to be ready", Duration::from_secs(10), || {
        ready(r.admin)
    });

    redis.kill();
    let first = next(&rx, Duration::from_secs(10));
    assert_eq!(first["event"], "state_changed", "{first}");
    assert_eq!(first["from"], "up", "{first}");
    assert_eq!(first["to"], "down", "{first}");
    assert!(
        !first["reason"].as_str().unwrap_or("").is_empty(),
        "{first}"
    );
    assert!(first["node_id"].is_string(), "{first}");
    let at = first["at"].as_str().unwrap_or("");
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.contains('T'),
        "{at}"
    );
    // The receiver answered 500: the same event comes again.
    let retry = next(&rx, Duration::from_secs(5));
    assert_eq!(retry, first, "the retry carries the same event");

    redis.start_again();
    let mut up = None;
    let mut closed = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.is_none() || closed.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = next(&rx, left);
        match e["event"].as_str() {
            Some("state_changed") if e["to"] == "up" => up = Some(e),
            Some("incident_closed") => closed = Some(e),
            _ => {}
        }
    }
    let up = up.unwrap();
    assert_eq!(up["from"], "down", "{up}");
    let closed = closed.unwrap();
    assert_eq!(closed["state"], "down", "{closed}");
    assert_eq!(closed["to"], "up", "{closed}");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert!(closed["started_at"].is_string(), "{closed}");
    assert!(closed["ended_at"].is_string(), "{closed}");
    assert!(closed["rejected"].is_u64(), "{closed}");
    assert!(closed["diagnoses"].is_u64(), "{closed}");
}

/// The `redis-server` the remediation script starts (daemonized, so no
/// child of the test): killed through its pidfile on drop.
struct Daemon(PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

/// A script that starts Redis the way `RedisServer` does, on the same
/// port and dir, daemonized with a pidfile.
fn restart_script(dir: &Path, port: u16, redis_dir: &Path) -> (PathBuf, PathBuf) {
    let pidfile = dir.join("redis.pid");
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho restarting redis on {port}\nexec redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{}' --logfile redis.log --daemonize yes --pidfile '{}'\n",
            redis_dir.display(),
            pidfile.display()
        ),
    )
    .unwrap();
    (script, pidfile)
}

#[test]
fn the_remediation_hook_restarts_a_killed_redis() {
    let mut redis = RedisServer::new();
    let scripts = tempfile::tempdir().unwrap();
    let (script, pidfile) = restart_script(scripts.path(), redis.port(), redis.dir());
    let _daemon = Daemon(pidfile);
    let (url, rx) = receiver();
    let r = serve(
        &redis.url(),
        &format!(
            "[[alert]]\nurl = \"{url}\"\n[remediation]\non_down = [\"/bin/sh\", \"{}\"]\nafter_ms = 300\nbackoff_ms = 1000\nmax_attempts = 3\n",
            script.display()
        ),
    );
    wait_for("redoubt to be ready", Duration::from_secs(10), || {
        ready(r.admin)
    });

    let killed = Instant::now();
    redis.kill();
    wait_for("redoubt to see redis down", Duration::from_secs(10), || {
        !ready(r.admin)
    });
    // Nothing in the test starts Redis again: only the hook can.
    wait_for(
        "the remediation hook to bring redis back",
        Duration::from_secs(20),
        || ready(r.admin),
    );
    eprintln!(
        "remediation: redis killed -> redoubt Up again in {} ms (after_ms = 300, health interval 50 ms)",
        killed.elapsed().as_millis()
    );

    // The closed incident records the attempt...
    let mut attempt = Value::Null;
    wait_for(
        "the incident to record the attempt",
        Duration::from_secs(5),
        || {
            let inc = get_json(r.admin, "/incidents");
            attempt = inc["recent"][0]["remediation"][0].clone();
            !attempt.is_null()
        },
    );
    assert_eq!(attempt["attempt"], 1, "{attempt}");
    assert_eq!(attempt["outcome"], "succeeded", "{attempt}");
    assert_eq!(attempt["exit_code"], 0, "{attempt}");
    assert!(
        attempt["output"]
            .as_str()
            .unwrap_or("")
            .contains("restarting redis"),
        "{attempt}"
    );
    // ...and the webhook heard of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = next(&rx, deadline.saturating_duration_since(Instant::now()));
        if e["event"] == "remediation" {
            assert_eq!(e["attempt"], 1, "{e}");
            assert_eq!(e["command"][0], "/bin/sh", "{e}");
            break;
        }
    }
}

fn config_check(toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    std::fs::write(&p, toml).unwrap();
    Command::new(BIN)
        .args(["config", "check", p.to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .output()
        .unwrap()
}

#[test]
fn bad_alert_urls_and_remediation_delays_are_config_errors() {
    let o = config_check(
        "upstream = \"redis://127.0.0.1:6379\"\n[[alert]]\nurl = \"http://hooks.example/x\"\nca_file = \"ca.pem\"\n[[alert]]\nurl = \"alerts:80\"\n[[alert]]\nurl = \"http://h:0/\"\ntimeout_ms = 0\n[[alert]]\nurl = \"http://h/\"\nnope = 1\n[remediation]\non_down = [\"true\"]\nafter_ms = 0\n",
    );
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in [
        "alert[0].ca_file: set, but the url is http://",
        "alert[1].url: 'alerts:80' is not an http:// or https:// URL",
        "alert[2].url: 'http://h:0/' has port '0'",
        "alert[2].timeout_ms: 0",
        "alert[3]: unknown field `nope`",
        "remediation.after_ms: 0",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
    let o = config_check("[remediation]\nafter_ms = -5\n");
    let t = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("remediation.after_ms"), "{t}");

    let o = config_check(
        "upstream = \"redis://127.0.0.1:6379\"\n[[alert]]\nurl = \"http://127.0.0.1:8080/hook\"\n[remediation]\non_down = [\"systemctl\", \"restart\", \"redis-server\"]\n",
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An https webhook receiver with the test CA's certificate for
/// 127.0.0.1: hands every request body to the test, answers 200.
fn https_receiver(pki: &test_support::pki::TestPki) -> (String, mpsc::Receiver<Value>) {
    let acceptor = tls::Acceptor::new(tls::ServerOptions {
        cert_file: pki.server.cert.clone(),
        key_file: pki.server.key.clone(),
        client_ca_file: None,
    })
    .unwrap();
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/hook", std_listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body[..len].to_string());
                        }
                    }
                };
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = s.flush().await;
                let v: Value = body
                    .and_then(|b| serde_json::from_str(&b).ok())
                    .unwrap_or(Value::Null);
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
    });
    (url, rx)
}

#[test]
fn an_https_webhook_gets_the_events_with_its_certificate_checked() {
    let pki = test_support::pki::TestPki::new();
    let mut redis = RedisServer::new();
    let (url, rx) = https_receiver(&pki);
    let r = serve(
        &redis.url(),
        &format!(
            "[[alert]]\nurl = \"{url}\"\nca_file = \"{}\"\ntimeout_ms = 2000\n",
            pki.ca.display()
        ),
    );
    wait_for("redoubt to be ready", Duration::from_secs(10), || {
        ready(r.admin)
    });
    redis.kill();
    let first = next(&rx, Duration::from_secs(10));
    assert_eq!(first["event"], "state_changed", "{first}");
    assert_eq!(first["to"], "down", "{first}");
}

#[test]
fn a_failing_remediation_is_retried_up_to_max_attempts_and_again_after_the_next_up() {
    let mut redis = RedisServer::new();
    let r = serve(
        &redis.url(),
        "[remediation]\non_down = [\"/bin/sh\", \"-c\", \"echo not today; exit 3\"]\nafter_ms = 100\nbackoff_ms = 150\nmax_attempts = 3\n",
    );
    wait_for("redoubt to be ready", Duration::from_secs(10), || {
        ready(r.admin)
    });
    let attempts = |r: &Running| -> Vec<Value> {
        let inc = get_json(r.admin, "/incidents");
        inc["open"]["remediation"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    redis.kill();
    wait_for("three attempts", Duration::from_secs(15), || {
        attempts(&r).len() >= 3
    });
    // No fourth: one would come 600 ms after the third (the wait doubles).
    std::thread::sleep(Duration::from_millis(600 + 300));
    let tried = attempts(&r);
    assert_eq!(tried.len(), 3, "{tried:?}");
    for (i, a) in tried.iter().enumerate() {
        assert_eq!(a["attempt"], i as u64 + 1, "{a}");
        assert_eq!(a["max_attempts"], 3, "{a}");
        assert_eq!(a["outcome"], "failed", "{a}");
        assert_eq!(a["exit_code"], 3, "{a}");
        assert!(
            a["output"].as_str().unwrap_or("").contains("not today"),
            "{a}"
        );
    }
    // The wait doubles: 150 ms before the second, 300 ms before the third.
    let ms_of_day = |a: &Value| -> u64 {
        let t = a["at"].as_str().unwrap_or("");
        let time = t.split('T').nth(1).unwrap_or("").trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: u64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let m: u64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let s: f64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        (h * 3600 + m * 60) * 1000 + (s * 1000.0) as u64
    };
    let gaps: Vec<u64> = tried
        .windows(2)
        .map(|w| ms_of_day(&w[1]).saturating_sub(ms_of_day(&w[0])))
        .collect();
    assert!(
        gaps[0] >= 150 && gaps[1] >= 300,
        "gaps {gaps:?} ms: {tried:?}"
    );
    // Up again resets the count: the next outage is tried from 1.
    redis.start_again();
    wait_for("redoubt up again", Duration::from_secs(10), || {
        ready(r.admin)
    });
    redis.kill();
    wait_for("a new first attempt", Duration::from_secs(15), || {
        attempts(&r).first().is_some_and(|a| a["attempt"] == 1)
    });
}

#[test]
fn a_webhook_that_never_answers_holds_up_no_client() {
    // Accepts every connection and never answers: each delivery waits
    // out its whole timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let mut redis = RedisServer::new();
    let r = serve(
        &redis.url(),
        &format!("[[alert]]\nurl = \"{url}\"\ntimeout_ms = 60000\n[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n"),
    );
    wait_for("redoubt to be ready", Duration::from_secs(10), || {
        ready(r.admin)
    });
    // State changes queue events behind the stuck delivery.
    for _ in 0..2 {
        // A durable write during the outage needs `default`'s permissions,
        // read from Redis once it answers: kill it only after that.
        wait_for(
            "default's permissions to be read",
            Duration::from_secs(10),
            || get_json(r.admin, "/status")["auth"]["users_with_known_permissions"] == 1,
        );
        redis.kill();
        wait_for("down", Duration::from_secs(10), || !ready_up(r.admin));
        let started = Instant::now();
        assert_eq!(
            test_support::send_command(r.port, &["SET", "d:k", "v"]),
            "+OK"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a journaled write waited"
        );
        redis.start_again();
        wait_for("up", Duration::from_secs(10), || ready_up(r.admin));
        let started = Instant::now();
        assert_eq!(test_support::send_command(r.port, &["GET", "d:k"]), "$1");
        assert!(started.elapsed() < Duration::from_secs(2), "a read waited");
    }
    let (code, _) = test_support::http("GET", r.admin, "/status");
    assert_eq!(code, 200);
}

/// `/status` says Up.
fn ready_up(admin: u16) -> bool {
    get_json(admin, "/status")["state"] == "up"
}
