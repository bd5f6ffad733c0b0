//! The real binary: exit codes, output, readiness, draining on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::{free_port, refused_port, rss_kib, wait_for, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

fn redoubt(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("REDOUBT_UPSTREAM")
        .output()
        .expect("run redoubt")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_commands_and_usage_errors_exit_64() {
    let o = redoubt(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    for cmd in ["serve", "config", "status", "incidents", "doctor"] {
        assert!(text(&o).contains(cmd), "{}", text(&o));
    }
    assert_eq!(
        redoubt(&["serve", "--no-such-flag"]).status.code(),
        Some(64)
    );
    assert_eq!(redoubt(&["frobnicate"]).status.code(), Some(64));
}

#[test]
fn config_check_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "upstream = \"redis://127.0.0.1:6379\"\n[[keyspace]]\npattern = \"sess:*\"\npolicy = \"durable\"\n").unwrap();
    let o = redoubt(&["config", "check", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "upstream = \"rediss+cluster://h:1\"\ntypo = 1\n[health]\ndown_after = 0\n[journal]\nfsync = \"maybe\"\n").unwrap();
    let o = redoubt(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    // Each problem names its line in the file.
    for needle in [
        "bad.toml:1: upstream: ",
        "not supported yet",
        "bad.toml:2: typo: unknown key",
        "bad.toml:4: health.down_after",
        "bad.toml:6: journal.fsync",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in {t}");
    }
    let arrays = dir.path().join("arrays.toml");
    std::fs::write(
        &arrays,
        "[[keyspace]]\npattern = \"a*\"\npolicy = \"durable\"\n\n[[keyspace]]\npattern = \"b*\"\npolicy = \"sometimes\"\n[doctor]\nignore = [\n  \"host\",\n  \"persistance\",\n]\n",
    )
    .unwrap();
    let o = redoubt(&["config", "check", arrays.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    for needle in [
        "arrays.toml:7: keyspace[1].policy",
        "arrays.toml:11: doctor.ignore[1]",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in {t}");
    }
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "listen = \"127.0.0.1:6380\"\n[health\ninterval_ms = 5\n",
    )
    .unwrap();
    let o = redoubt(&["config", "check", broken.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("broken.toml:2: not valid TOML"),
        "{}",
        text(&o)
    );
    // serve refuses the same file with the same exit code.
    assert_eq!(
        redoubt(&["serve", "--config", bad.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn config_print_shows_effective_values_with_env_and_hides_the_token() {
    let o = Command::new(BIN)
        .args(["config", "print"])
        .env("REDOUBT_HEALTH_INTERVAL_MS", "75")
        .env("REDOUBT_ADMIN_TOKEN", "sekrit")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("interval_ms = 75"), "{t}");
    assert!(t.contains("listen = \"127.0.0.1:6380\""), "{t}");
    assert!(!t.contains("sekrit"), "{t}");
}

/// What a Kubernetes Service named `redoubt` puts in every pod's environment.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("REDOUBT_SERVICE_HOST", "10.0.0.1"),
    ("REDOUBT_SERVICE_PORT", "6379"),
    ("REDOUBT_SERVICE_PORT_RESP", "6379"),
    ("REDOUBT_PORT", "tcp://10.0.0.1:6379"),
    ("REDOUBT_PORT_6379_TCP", "tcp://10.0.0.1:6379"),
    ("REDOUBT_PORT_6379_TCP_PROTO", "tcp"),
    ("REDOUBT_PORT_6379_TCP_PORT", "6379"),
    ("REDOUBT_PORT_6379_TCP_ADDR", "10.0.0.1"),
];

#[test]
fn kubernetes_service_link_variables_do_not_stop_redoubt() {
    let dir = tempfile::tempdir().unwrap();
    let check = |extra: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["config", "check"])
            .current_dir(dir.path())
            .env_remove("REDOUBT_UPSTREAM")
            .envs(SERVICE_LINKS.iter().chain(extra).copied())
            .output()
            .unwrap()
    };
    let o = check(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("config ok"), "{}", text(&o));
    // A misspelt setting among them is still refused.
    let o = check(&[("REDOUBT_HEALTH_INTERVL_MS", "50")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("health.intervl_ms"), "{}", text(&o));
    assert!(!text(&o).contains("REDOUBT_PORT"), "{}", text(&o));

    // `serve` starts with them, and says at debug level what it ignored.
    let (port, admin) = (free_port(), free_port());
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env_remove("REDOUBT_UPSTREAM")
        .envs(SERVICE_LINKS.iter().copied())
        .env("RUST_LOG", "redoubt=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "admin never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(cmd(port, &["PING"]), "+PONG");
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("service-link") && logged.contains("REDOUBT_PORT_6379_TCP_ADDR"),
        "{logged}"
    );
}

#[test]
fn status_exits_3_when_nothing_answers() {
    let port = refused_port();
    let o = redoubt(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("no answer"), "{}", text(&o));
}

/// `serve` in front of `upstream` with stderr in `dir/stderr.log`, and
/// the extra flags `args`; returns the child and the log's path.
fn serve_logging(
    upstream: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> (Child, std::path::PathBuf) {
    let log = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["serve", "--upstream", upstream])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("REDOUBT_HEALTH_INTERVAL_MS", "50")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[test]
fn an_unreachable_upstream_is_logged_with_its_reason_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let closed = refused_port();
    let upstream = format!("redis://app:hunter2@127.0.0.1:{closed}");
    let (mut child, log) = serve_logging(&upstream, dir.path(), &[]);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("a warning saying why", Duration::from_secs(10), || {
        read().lines().any(|l| {
            l.contains("WARN")
                && l.contains("unreachable")
                && (l.contains("cannot connect") || l.contains("refused"))
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let t = read();
    assert!(
        t.contains("mode=\"proxy\"") && t.contains("keyspaces=0") && t.contains("app:***@"),
        "startup says what it does: {t}"
    );
    assert!(!t.contains("hunter2"), "the password is masked: {t}");
    // Probes fail every 50 ms, but the warning is not repeated for each.
    let warnings = t.lines().filter(|l| l.contains("unreachable")).count();
    assert_eq!(warnings, 1, "{t}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("redis://127.0.0.1:{}", refused_port());
    let (mut child, log) = serve_logging(&upstream, dir.path(), &["--log-format", "json"]);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the unreachable warning", Duration::from_secs(10), || {
        read().contains("unreachable")
    });
    let _ = child.kill();
    let _ = child.wait();
    let t = read();
    let mut lines = 0;
    for l in t.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
        lines += 1;
    }
    assert!(lines >= 2, "{t}");
    assert!(t.contains("\"level\":\"WARN\""), "{t}");
}

struct Running {
    child: Child,
    port: u16,
    admin: u16,
    data: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(upstream: &str) -> Running {
    serve_with(upstream, "")
}

/// `serve` with extra TOML config (e.g. `[[keyspace]]` tables).
fn serve_with(upstream: &str, toml: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("redoubt.toml"), toml).unwrap();
    serve_in(upstream, data)
}

/// `serve` on `data` (holding `redoubt.toml`), on fresh ports.
fn serve_in(upstream: &str, data: tempfile::TempDir) -> Running {
    let (child, port, admin) = spawn_serve(upstream, data.path());
    Running {
        child,
        port,
        admin,
        data,
    }
}

/// `serve` on a data dir the caller keeps (it outlives the process), once
/// both its ports answer.
fn spawn_serve(upstream: &str, data: &std::path::Path) -> (Child, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let conf = data.join("redoubt.toml");
    let child = Command::new(BIN)
        .args(["serve", "--config", conf.to_str().unwrap()])
        .args([
            "--upstream",
            upstream,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .env("REDOUBT_HEALTH_INTERVAL_MS", "50")
        .env("REDOUBT_HEALTH_TIMEOUT_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("redoubt to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_for("admin to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    (child, port, admin)
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    http("GET", port, path)
}

fn http(method: &str, port: u16, path: &str) -> (u16, String) {
    test_support::http(method, port, path)
}

fn cmd(port: u16, args: &[&str]) -> String {
    test_support::send_command(port, args)
}

#[test]
fn readyz_flips_both_ways_and_metrics_and_status_answer() {
    let mut redis = RedisServer::new();
    let r = serve(&redis.url());
    wait_for("readyz 200", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz").0 == 200
    });
    assert_eq!(http_get(r.admin, "/healthz").0, 200);
    assert_eq!(cmd(r.port, &["SET", "a", "1"]), "+OK");
    let (_, body) = http_get(r.admin, "/metrics");
    for name in [
        "redoubt_upstream_up 1",
        "redoubt_state{state=\"up\"} 1",
        "redoubt_commands_total",
        "redoubt_command_duration_seconds_bucket",
        "redoubt_client_connections",
    ] {
        assert!(body.contains(name), "metrics lack {name}:\n{body}");
    }
    let (code, status) = http_get(r.admin, "/status");
    assert_eq!(code, 200);
    assert!(status.contains("\"state\":\"up\""), "{status}");
    let admin = format!("127.0.0.1:{}", r.admin);
    let o = redoubt(&["status", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("Redis is up since 20"), "{}", text(&o));
    let o = redoubt(&["status", "--admin", &admin, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
    assert_eq!(v["state"], "up", "{v}");
    let (code, body) = http("POST", r.admin, "/admin/replay");
    assert_eq!(code, 404, "no keyspace, no journal: {body}");

    redis.kill();
    wait_for("readyz 503", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz").0 == 503
    });
    let (_, body) = http_get(r.admin, "/readyz");
    assert!(
        body.contains("\"ready\":false") && body.contains("\"state\":\"down\""),
        "{body}"
    );
    assert!(cmd(r.port, &["GET", "a"]).starts_with("-UNAVAILABLE"));
    // Down with no local keyspace: nothing is served, exit 2, and why.
    let o = redoubt(&["status", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.starts_with("Redis is down since 20") && t.contains("nothing is served locally"),
        "{t}"
    );
    assert!(t.contains("refused"), "the probe's reason: {t}");
    // The outage is open in the incident log: exit 1.
    let o = redoubt(&["incidents", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).starts_with("OPEN  Redis down since 20") && text(&o).contains("so far): "),
        "{}",
        text(&o)
    );
    let o = redoubt(&["status", "--admin", &admin, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
    assert_eq!(v["state"], "down", "{v}");
    // The doctor ran on the way down and says why in /status.
    wait_for("a diagnosis in /status", Duration::from_secs(10), || {
        http_get(r.admin, "/status")
            .1
            .contains("connection.refused")
    });

    redis.restart();
    wait_for("readyz 200 again", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz").0 == 200
    });
    assert_eq!(cmd(r.port, &["SET", "a", "2"]), "+OK");

    // The outage is in the incident log, with its cause, what was refused
    // and the doctor's findings, on disk and at /incidents.
    let (code, body) = http_get(r.admin, "/incidents");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inc = &v["recent"][0];
    assert_eq!(inc["state"], "down", "{body}");
    assert!(
        inc["cause"].as_str().unwrap().contains("probes failed"),
        "{body}"
    );
    assert!(inc["rejected"].as_u64().unwrap() >= 1, "{body}");
    assert!(
        inc["diagnoses"].to_string().contains("connection.refused"),
        "{body}"
    );
    let file = std::fs::read_to_string(r.data.path().join("incidents.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 1, "{file}");
    // Closed, told with RFC 3339 times; --json adds them beside the ms.
    let o = redoubt(&["incidents", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    let first = t.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("20")
            && first.contains("Z – 20")
            && first.contains(") Redis down: ")
            && first.contains("probes failed"),
        "{t}"
    );
    assert!(
        t.contains(" refused\n") && t.contains("doctor diagnosis"),
        "{t}"
    );
    let o = redoubt(&["incidents", "--admin", &admin, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("incidents --json is JSON");
    let started = v["recent"][0]["started_at"].as_str().unwrap_or_default();
    assert!(started.starts_with("20") && started.ends_with('Z'), "{v}");
    assert!(v["recent"][0]["started_at_ms"].is_u64(), "{v}");
    let o = redoubt(&[
        "incidents",
        "--admin",
        &format!("127.0.0.1:{}", refused_port()),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

/// `threads = 1`: the proxy runs its whole data path on one thread (no
/// worker pool), and still serves, rides an outage on its journal and
/// replays it.
#[test]
fn a_proxy_on_one_thread_serves_rides_an_outage_and_replays() {
    let mut redis = RedisServer::new();
    let r = serve_with(
        &redis.url(),
        "threads = 1\n[replica]\nmode = \"off\"\n[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n",
    );
    // No tokio worker pool: the runtime is the main thread's.
    let pid = r.child.id();
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("tokio-rt-worker")),
        "{names:?}"
    );
    wait_for(
        "Up, default's permissions read",
        Duration::from_secs(10),
        || {
            let s = http_get(r.admin, "/status").1;
            s.contains("\"state\":\"up\"") && s.contains("\"users_with_known_permissions\":1")
        },
    );
    assert_eq!(cmd(r.port, &["SET", "d:before", "1"]), "+OK");
    assert_eq!(cmd(r.port, &["GET", "d:before"]), "$1");
    redis.kill();
    wait_for("readyz says down", Duration::from_secs(10), || {
        http_get(r.admin, "/readyz")
            .1
            .contains("\"state\":\"down\"")
    });
    assert_eq!(cmd(r.port, &["SET", "d:during", "2"]), "+OK");
    assert!(cmd(r.port, &["GET", "other"]).starts_with("-UNAVAILABLE"));
    redis.restart();
    wait_for(
        "the journal replayed into Redis",
        Duration::from_secs(10),
        || redis.cmd(&["GET", "d:during"]) == "2",
    );
    wait_for("Up again", Duration::from_secs(10), || {
        http_get(r.admin, "/readyz").0 == 200
    });
    assert_eq!(cmd(r.port, &["INCR", "d:during"]), ":3");
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let redis = RedisServer::new();
    let r = serve(&redis.url());
    let o = Command::new(BIN)
        .args([
            "serve",
            "--upstream",
            &redis.url(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args([
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            r.data.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("in use by another Redoubt process"),
        "{}",
        text(&o)
    );
    // The node id was made once and is kept.
    let id = std::fs::read_to_string(r.data.path().join("node_id")).unwrap();
    assert_eq!(id.trim().len(), 36);
}

#[test]
fn a_data_dir_serves_one_mode_only() {
    let redis = RedisServer::new();
    let r = serve(&redis.url());
    assert_eq!(
        std::fs::read_to_string(r.data.path().join("mode")).unwrap(),
        "proxy\n"
    );
    drop(r);
    // A standalone server's data_dir, started as a proxy: its dataset
    // would be replayed into Redis. Refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mode"), "standalone\n").unwrap();
    let o = Command::new(BIN)
        .args(["serve", "--upstream", &redis.url()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ran standalone") && text(&o).contains("Nothing was started"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_redoubt_restarted_during_an_outage_keeps_serving_the_default_user() {
    let mut redis = RedisServer::new();
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "default",
        "on",
        "nopass",
        "resetkeys",
        "~sess:*",
        "+@all",
    ]);
    let r = serve_with(
        &redis.url(),
        "[[keyspace]]\npattern = \"sess:*\"\npolicy = \"durable\"\n[[keyspace]]\npattern = \"other:*\"\npolicy = \"durable\"\n",
    );
    wait_for("default's ACL to be read", Duration::from_secs(5), || {
        http_get(r.admin, "/status")
            .1
            .contains("\"users_with_known_permissions\":1")
    });
    redis.kill();
    wait_for("down", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz")
            .1
            .contains("\"state\":\"down\"")
    });
    assert_eq!(cmd(r.port, &["SET", "sess:1", "a"]), "+OK");
    // kill -9 mid-outage, and start again on the same data_dir.
    let mut r = r;
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    let data = std::mem::replace(&mut r.data, tempfile::tempdir().unwrap());
    drop(r);
    let r = serve_in(&redis.url(), data);
    wait_for("down again", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz")
            .1
            .contains("\"state\":\"down\"")
    });
    // Redis has not been seen by this process, yet `default`'s kept
    // permissions let its sessions go on: the outage's writes and new ones.
    assert_eq!(
        cmd(r.port, &["GET", "sess:1"]),
        "$1",
        "a one-byte value, not a refusal"
    );
    assert_eq!(cmd(r.port, &["SET", "sess:2", "b"]), "+OK");
    assert!(
        cmd(r.port, &["SET", "other:1", "x"]).starts_with("-NOPERM"),
        "keys default may not access stay refused"
    );
    redis.restart();
    wait_for(
        "the outage's writes in redis",
        Duration::from_secs(10),
        || redis.cmd(&["GET", "sess:2"]) == "b",
    );
    assert_eq!(redis.cmd(&["GET", "sess:1"]), "a");
}

#[test]
fn sigterm_drains_in_flight_commands_then_exits_0() {
    let redis = RedisServer::new();
    let mut r = serve(&redis.url());
    wait_for("up", Duration::from_secs(5), || {
        cmd(r.port, &["PING"]) == "+PONG"
    });
    // A blocking command in flight when SIGTERM arrives still gets its
    // reply (nil after its 1 s block), and only then does the process exit.
    let port = r.port;
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        (cmd(port, &["BLPOP", "q", "1"]), start.elapsed())
    });
    wait_for(
        "the BLPOP to block in redis",
        Duration::from_secs(5),
        || {
            redis
                .cmd(&["INFO", "clients"])
                .lines()
                .any(|l| l.trim() == "blocked_clients:1")
        },
    );
    let ok = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (reply, took) = waiter.join().unwrap();
    assert_eq!(reply, "*-1", "the in-flight BLPOP was answered");
    assert!(
        took >= Duration::from_millis(900),
        "answered by Redis after its block time, not cut off: {took:?}"
    );
    let status = r.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn journal_inspect_and_export_through_redis_cli_pipe() {
    use bytes::Bytes;
    let dir = tempfile::tempdir().unwrap();
    {
        let cfg = journal::JournalConfig::default();
        let (j, _) = journal::Journal::open(dir.path(), cfg).unwrap();
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        j.append_blocking(journal::Entry::command(
            0,
            vec![b("SET"), b("a"), b("1")],
            1,
        ))
        .unwrap();
        j.append_blocking(journal::Entry::command(
            2,
            vec![b("RPUSH"), b("q"), b("x"), b("y")],
            2,
        ))
        .unwrap();
    }
    let o = redoubt(&["journal", "inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Times for people are dates, not epoch milliseconds.
    assert!(
        text(&o).contains("first      1970-01-01T00:00:00.001Z")
            && text(&o).contains("last       1970-01-01T00:00:00.002Z"),
        "{}",
        text(&o)
    );
    let o = redoubt(&["journal", "inspect", "--json", dir.path().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect --json is JSON");
    assert_eq!(v["records"], 2);
    assert_eq!(v["first_time_ms"], 1, "machine fields unchanged: {v}");
    assert_eq!(v["last_time"], "1970-01-01T00:00:00.002Z", "{v}");

    let export = redoubt(&[
        "journal",
        "export",
        dir.path().to_str().unwrap(),
        "--format",
        "resp",
    ]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export));
    // Piped, not a terminal: no progress bar redraws on stderr.
    let err = String::from_utf8_lossy(&export.stderr);
    assert!(!err.contains('\r') && !err.contains("exporting ["), "{err}");
    let redis = RedisServer::new();
    let mut pipe = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pipe.stdin
        .take()
        .unwrap()
        .write_all(&export.stdout)
        .unwrap();
    let out = pipe.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("errors: 0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(redis.cmd(&["GET", "a"]), "1");
    let llen = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "-n", "2", "LLEN", "q"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&llen.stdout).trim(),
        "2",
        "the RPUSH went to db 2"
    );

    // Replay into a fresh Redis: exactly once, even when run twice.
    std::fs::write(dir.path().join("node_id"), "test-node\n").unwrap();
    let target = RedisServer::new();
    let o = redoubt(&[
        "journal",
        "replay",
        dir.path().to_str().unwrap(),
        "--to",
        &target.url(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = redoubt(&[
        "journal",
        "replay",
        dir.path().to_str().unwrap(),
        "--to",
        &target.url(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(target.cmd(&["GET", "a"]), "1");
    let llen = Command::new("redis-cli")
        .args(["-p", &target.port().to_string(), "-n", "2", "LLEN", "q"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&llen.stdout).trim(),
        "2",
        "replayed once, not twice"
    );
    assert!(target
        .cmd(&["GET", "redoubt:replay:{test-node}"])
        .contains(':'));

    // And into a TLS Redis, with redis-cli's TLS flags.
    let pki = test_support::pki::TestPki::new();
    let tls_target = RedisServer::start_tls(&pki, &pki.server, false, &[]);
    let o = redoubt(&[
        "journal",
        "replay",
        dir.path().to_str().unwrap(),
        "--to",
        &tls_target.tls_url(),
        "--cacert",
        pki.ca.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(tls_target.cmd(&["GET", "a"]), "1");

    // Damage a byte in the middle of the first record: inspect says so.
    let seg = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[60] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let o = redoubt(&["journal", "inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        redoubt(&["journal", "export", dir.path().to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn doctor_and_triage_exit_codes() {
    // Nothing listens: could not diagnose, and says why.
    let port = refused_port();
    let o = redoubt(&["doctor", &format!("redis://127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("connection.refused"), "{}", text(&o));
    // A real Redis near maxmemory is critical; --json is machine-readable.
    let redis = RedisServer::new();
    redis.cmd(&["SET", "filler", &"x".repeat(100_000)]);
    let used: u64 = redis
        .cmd(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    redis.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used + used / 50).to_string(),
    ]);
    let o = redoubt(&["doctor", &redis.url(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("doctor --json is JSON");
    assert!(v.to_string().contains("memory.near-maxmemory"), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        "ok line\nReplyError: OOM command not allowed when used memory > 'maxmemory'.\n",
    )
    .unwrap();
    let o = redoubt(&["triage", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let clean = dir.path().join("clean.log");
    std::fs::write(&clean, "all good\n").unwrap();
    assert_eq!(
        redoubt(&["triage", clean.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let o = redoubt(&["triage", dir.path().join("missing.log").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

#[test]
fn durable_keyspace_keeps_accepting_writes_through_a_redis_kill() {
    let mut redis = RedisServer::new();
    let r = serve_with(
        &redis.url(),
        "[[keyspace]]\npattern = \"sess:*\"\npolicy = \"durable\"\n",
    );
    wait_for("up", Duration::from_secs(5), || {
        http_get(r.admin, "/readyz").0 == 200 && cmd(r.port, &["PING"]) == "+PONG"
    });
    // Unauthenticated sessions are Redis's `default`: its permissions must
    // have been read before local data is served to them.
    wait_for("default's ACL to be read", Duration::from_secs(5), || {
        http_get(r.admin, "/status")
            .1
            .contains("\"users_with_known_permissions\":1")
    });
    redis.kill();
    wait_for("down, degraded but ready", Duration::from_secs(5), || {
        let (code, body) = http_get(r.admin, "/readyz");
        code == 200 && body.contains("\"degraded\":true") && body.contains("\"state\":\"down\"")
    });
    assert_eq!(cmd(r.port, &["SET", "sess:42", "alice"]), "+OK");
    assert!(cmd(r.port, &["SET", "other", "x"]).starts_with("-UNAVAILABLE"));
    // Down but durable keys served: degraded, exit 1.
    let o = redoubt(&["status", "--admin", &format!("127.0.0.1:{}", r.admin)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("Redis is down since")
            && t.contains("serving durable and cache keyspaces locally")
            && t.contains("journal: 1 commands pending"),
        "{t}"
    );
    // An operator may ask for a replay attempt; while Redis is down it
    // just reports what waits.
    let (code, body) = http("POST", r.admin, "/admin/replay");
    assert_eq!(code, 202, "{body}");
    assert!(
        body.contains("\"replay_requested\":true") && body.contains("\"pending_commands\":1"),
        "{body}"
    );
    redis.restart();
    wait_for(
        "the outage write to reach redis",
        Duration::from_secs(10),
        || redis.cmd(&["GET", "sess:42"]) == "alice",
    );
    // /status shows the journal drained and the replay's checkpoint;
    // /metrics the journal gauges.
    wait_for(
        "status to show the journal drained",
        Duration::from_secs(10),
        || {
            let (_, body) = http_get(r.admin, "/status");
            body.contains("\"pending_commands\":0") && body.contains("\"checkpoint\":\"")
        },
    );
    let (_, metrics) = http_get(r.admin, "/metrics");
    assert!(
        metrics.contains("redoubt_journal_pending_commands")
            && metrics.contains("redoubt_replayed_commands_total")
            && metrics.contains("redoubt_fallback_keys")
            && metrics.contains(r#"redoubt_commands_total{route="local",policy="durable"} 1"#)
            && metrics.contains(r#"redoubt_commands_total{route="rejected",policy="fail-fast"} 1"#),
        "{metrics}"
    );
    // The outage ends once the journal is drained and Up is published.
    wait_for("the incident to close", Duration::from_secs(10), || {
        http_get(r.admin, "/incidents").1.contains("\"recent\":[{")
    });
    let (_, body) = http_get(r.admin, "/incidents");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["recent"][0]["journaled"].as_u64().unwrap() >= 1, "{body}");
}

/// `n` pipelined `GET` of a 256 KiB value, one write.
fn greedy_pipeline(port: u16, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(n);
    s.write_all(req.as_bytes()).unwrap();
    s
}

#[test]
fn replies_are_bounded_while_gathered_and_stream_to_a_client_that_reads() {
    let redis = RedisServer::new();
    let big = "x".repeat(256 << 10);
    let mut set = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    write!(
        set,
        "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{big}\r\n",
        big.len()
    )
    .unwrap();
    let mut ok = [0u8; 5];
    set.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    // The command deadline well past what a loaded machine takes to move
    // 250 MiB: replies cut short by it (small UNAVAILABLEs) would never
    // reach the output limit this test is about.
    let r = serve_with(
        &redis.url(),
        "[limits]\nmax_output_buffer_bytes = \"16MiB\"\ncommand_timeout_ms = 60000\n",
    );
    wait_for("up", Duration::from_secs(5), || {
        cmd(r.port, &["PING"]) == "+PONG"
    });

    // A client that reads: 12 MiB of replies, in pieces as they come.
    let mut reader = greedy_pipeline(r.port, 48);
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let one = format!("$262144\r\n{big}\r\n");
    let want = 48 * one.len();
    let mut all = Vec::with_capacity(want);
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    while got < want {
        let n = reader.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {got} of {want} bytes");
        got += n;
        all.extend_from_slice(&chunk[..n]);
    }
    assert!(
        all == one.repeat(48).into_bytes(),
        "replies out of order or torn"
    );
    drop(reader);

    // A client that reads nothing: Redoubt holds about its limit, not the
    // 250 MiB Redis sends, and then lets it go.
    let before = rss_kib(r.child.id());
    let mut greedy = greedy_pipeline(r.port, 1000);
    let mut peak = 0;
    for _ in 0..40 {
        peak = peak.max(rss_kib(r.child.id()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak < before + 96 * 1024,
        "RSS grew from {before} KiB to {peak} KiB for a client that reads nothing"
    );
    greedy
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut drained = 0usize;
    loop {
        match greedy.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) => panic!("not closed after {drained} bytes: {e}"),
        }
    }
    assert!(
        drained < 96 << 20,
        "{drained} bytes reached a client over its limit"
    );
    assert_eq!(cmd(r.port, &["PING"]), "+PONG");
}

/// The operator's way back from a corrupt journal, on a journal written by
/// the real binary: the refusal names the command, repair refuses while
/// Redoubt runs, then cuts the journal at the damage, keeps what it cut,
/// and Redoubt serves the records before it and takes writes again.
#[test]
fn journal_repair_does_what_the_corruption_error_asks() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    std::fs::write(data.path().join("redoubt.toml"), "").unwrap();
    let value = "v".repeat(1000);
    let (mut child, port, _) = spawn_serve("", data.path());
    for k in ["k1", "k2", "k3"] {
        assert_eq!(cmd(port, &["SET", k, &value]), "+OK");
    }
    // SIGKILL: fsync = always, so every acknowledged SET is on disk.
    child.kill().unwrap();
    child.wait().unwrap();

    // A flipped byte in the middle record (k2's): records follow it, so
    // it is corruption, not a torn tail.
    let seg = std::fs::read_dir(data.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let (mut child, port, _) = spawn_serve("", data.path());
    let refused = cmd(port, &["SET", "k4", "x"]);
    assert!(
        refused.contains("corrupt") && refused.contains("redoubt journal repair"),
        "{refused}"
    );
    let o = redoubt(&["journal", "repair", &dir]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use") && text(&o).contains("not changed"),
        "{}",
        text(&o)
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let o = redoubt(&["journal", "repair", &dir]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("repaired the journal") && t.contains("quarantine-"),
        "{t}"
    );
    let quarantine: Vec<_> = std::fs::read_dir(data.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let kept: u64 = std::fs::read_dir(&quarantine[0])
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept > 1000, "the cut-off records are kept ({kept} bytes)");
    let o = redoubt(&["journal", "repair", &dir]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to repair"), "{}", text(&o));
    let o = redoubt(&["journal", "inspect", &dir]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let (mut child, port, _) = spawn_serve("", data.path());
    assert_eq!(
        cmd(port, &["STRLEN", "k1"]),
        ":1000",
        "kept before the damage"
    );
    assert_eq!(cmd(port, &["EXISTS", "k3"]), ":0", "cut with the damage");
    assert_eq!(cmd(port, &["SET", "k4", "x"]), "+OK");
    child.kill().unwrap();
    child.wait().unwrap();

    // Pointed at a directory with no journal: refused, nothing created.
    let empty = tempfile::tempdir().unwrap();
    let o = redoubt(&["journal", "repair", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}

/// The ignores README documents for a `redis-server` started with its
/// built-in defaults on a development machine.
const STOCK_IGNORES: &[&str] = &["host", "server.version", "security.exposed-no-auth"];

/// `doctor` as a deploy gate: a stock `redis-server` (no config at all)
/// passes with the documented ignores, given as flags or in `[doctor]
/// ignore`, addressed as `host:port` with `REDISCLI_AUTH`, as redis-cli
/// users do; a misspelt ignore is refused rather than silently muting
/// nothing.
#[test]
fn doctor_gates_a_stock_redis_with_the_documented_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut stock = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--requirepass", "s3cret"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    wait_for("redis-server to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let addr = format!("127.0.0.1:{port}");
    let doctor = |args: &[&str], auth: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("doctor").args(args).current_dir(dir.path());
        c.env_remove("REDISCLI_AUTH").env_remove("REDOUBT_UPSTREAM");
        if let Some(a) = auth {
            c.env("REDISCLI_AUTH", a);
        }
        c.output().unwrap()
    };
    let o = doctor(&[&addr], None);
    assert_eq!(o.status.code(), Some(3), "no password: {}", text(&o));
    let mut gate = vec![addr.as_str()];
    for i in STOCK_IGNORES {
        gate.extend(["--ignore", i]);
    }
    let o = doctor(&gate, Some("s3cret"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.lines().nth(1).is_some_and(|l| l.starts_with("memory ")),
        "vital signs first: {t}"
    );

    // A redis-server exactly as it starts with no options but its port:
    // no password either, which the documented list mutes too.
    let open_port = free_port();
    let mut open = Command::new("redis-server")
        .args(["--port", &open_port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    wait_for("redis-server to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", open_port)).is_ok()
    });
    let open_addr = format!("127.0.0.1:{open_port}");
    let o = doctor(&[&open_addr], None);
    assert_ne!(o.status.code(), Some(0), "not muted: {}", text(&o));
    assert!(
        text(&o).contains("security.exposed-no-auth"),
        "{}",
        text(&o)
    );
    let mut gate = vec![open_addr.as_str()];
    for i in STOCK_IGNORES {
        gate.extend(["--ignore", i]);
    }
    let o = doctor(&gate, None);
    assert_eq!(o.status.code(), Some(0), "no password: {}", text(&o));
    let _ = open.kill();
    let _ = open.wait();

    // The same list in the config file (./redoubt.toml, which also names
    // the upstream, so no address is needed).
    let list: Vec<String> = STOCK_IGNORES.iter().map(|i| format!("\"{i}\"")).collect();
    std::fs::write(
        dir.path().join("redoubt.toml"),
        format!(
            "upstream = \"redis://:s3cret@{addr}\"\n[doctor]\nignore = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let o = doctor(&[], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = doctor(&["--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(
        v["vitals"]["clients"].as_u64().is_some_and(|c| c >= 1),
        "{v}"
    );

    let o = doctor(&[&addr, "--ignore", "host.overcomit"], Some("s3cret"));
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("names no doctor check"), "{}", text(&o));
    std::fs::write(
        dir.path().join("redoubt.toml"),
        "[doctor]\nignore = [\"persistance\"]\n",
    )
    .unwrap();
    let o = doctor(&[&addr], Some("s3cret"));
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("doctor.ignore[0]"), "{}", text(&o));
    let _ = stock.kill();
    let _ = stock.wait();
}

/// Pointed at a standalone Redoubt, the doctor knows what it is talking to
/// and does not report what only a redis-server can have (persistence
/// off, an unsupported release line).
#[test]
fn doctor_makes_no_redis_server_findings_against_a_redoubt() {
    let r = serve("");
    let o = redoubt(&["doctor", &format!("127.0.0.1:{}", r.port), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["redoubt"], true, "{v}");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    for id in [
        "persistence.off",
        "server.version",
        "latency.monitor-off",
        "security.exposed-no-auth",
    ] {
        assert!(!ids.contains(&id), "{id} against Redoubt: {v}");
    }
    assert_eq!(o.status.code(), Some(0), "{v}");
    let o = redoubt(&["doctor", &format!("127.0.0.1:{}", r.port)]);
    assert!(text(&o).contains("(Redoubt"), "{}", text(&o));
}

/// Runs `redoubt ARGS` under `script`, so its stderr is a terminal;
/// returns what the terminal received. Stdout goes to /dev/null.
fn on_a_terminal(args: &[&str]) -> String {
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let o = Command::new("script")
        .args(["-qec", &format!("{line} > /dev/null"), "/dev/null"])
        .env_remove("REDOUBT_UPSTREAM")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn progress_is_drawn_on_a_terminal_for_export_replay_and_restore() {
    use bytes::Bytes;
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = journal::Journal::open(dir.path(), journal::JournalConfig::default()).unwrap();
        for i in 0..2000 {
            let k = Bytes::from(format!("k{i}"));
            j.append_blocking(journal::Entry::command(
                0,
                vec![Bytes::from_static(b"SET"), k, Bytes::from_static(b"v")],
                i + 1,
            ))
            .unwrap();
        }
    }
    std::fs::write(dir.path().join("node_id"), "bar-node\n").unwrap();
    let path = dir.path().to_str().unwrap();
    let shown = on_a_terminal(&["journal", "export", path, "--format", "resp"]);
    assert!(shown.contains("exporting ["), "{shown:?}");
    let target = RedisServer::new();
    let shown = on_a_terminal(&["journal", "replay", path, "--to", &target.url()]);
    assert!(shown.contains("replaying ["), "{shown:?}");
    assert_eq!(
        target.cmd(&["DBSIZE"]),
        ":2001",
        "2000 keys and the checkpoint"
    );

    // Standalone rebuilding its store from the journal at start.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("redoubt.toml"), "").unwrap();
    let (mut first, port, _) = spawn_serve("", data.path());
    for i in 0..200 {
        assert_eq!(cmd(port, &["SET", &format!("s{i}"), "v"]), "+OK");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    let (port, admin) = (free_port(), free_port());
    let conf = data.path().join("redoubt.toml");
    let line = format!(
        "'{BIN}' serve --config '{}' --upstream '' --listen 127.0.0.1:{port} --admin 127.0.0.1:{admin} --data-dir '{}' > /dev/null",
        conf.display(),
        data.path().display()
    );
    let mut term = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("REDOUBT_UPSTREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script (util-linux)");
    wait_for("standalone to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(cmd(port, &["DBSIZE"]), ":200");
    let _ = Command::new("pkill")
        .args(["-TERM", "-f", &format!("127.0.0.1:{admin}")])
        .status();
    let mut shown = String::new();
    term.stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    let _ = term.wait();
    assert!(
        shown.contains("restoring the store from the journal"),
        "{shown:?}"
    );
}
