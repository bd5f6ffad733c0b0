//! `/metrics` as Prometheus reads it, and the alert rules shipped in
//! deploy/prometheus, both checked by `promtool` (Debian's `prometheus`
//! package; scripts/test.sh installs it).
//!
//! promtool missing is a failure, not a skip: a suite that passes because
//! the checker was absent proves nothing. `REDOUBT_SKIP_PROMTOOL=1` opts
//! out explicitly.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use test_support::{free_port, http, send_command, wait_for, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

/// `None` when the caller asked to skip; panics when promtool is missing.
fn promtool() -> Option<&'static str> {
    if std::env::var("REDOUBT_SKIP_PROMTOOL").as_deref() == Ok("1") {
        eprintln!("REDOUBT_SKIP_PROMTOOL=1: promtool checks skipped");
        return None;
    }
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Some("promtool"),
        _ => panic!(
            "promtool is not installed (Debian package `prometheus`): run scripts/test.sh, \
             which installs it, or set REDOUBT_SKIP_PROMTOOL=1 to skip these checks"
        ),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `promtool check metrics` on `body`: must pass with no lint problem
/// (promtool prints lint problems and exits non-zero for them).
fn assert_promtool_accepts(promtool: &str, body: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("write /metrics to promtool");
    let o = child.wait_with_output().expect("wait for promtool");
    let out = text(&o);
    assert!(
        o.status.success() && out.trim().is_empty(),
        "promtool check metrics: {}\n{out}\n--- /metrics ---\n{body}",
        o.status
    );
}

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

/// `serve` on fresh ports and a fresh data_dir, in front of `upstream`
/// (standalone when `None`), with `toml` as its config file.
fn serve(upstream: Option<&str>, toml: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    let conf = data.path().join("redoubt.toml");
    std::fs::write(&conf, toml).unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", conf.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .env("REDOUBT_HEALTH_INTERVAL_MS", "50")
        .env("REDOUBT_HEALTH_TIMEOUT_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(u) = upstream {
        cmd.args(["--upstream", u]);
    }
    let child = cmd.spawn().unwrap();
    let running = Running {
        child,
        port,
        admin,
        _data: data,
    };
    for (what, p) in [("redoubt to listen", port), ("admin to listen", admin)] {
        wait_for(what, Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", p)).is_ok()
        });
    }
    running
}

fn metrics(r: &Running) -> String {
    let (code, body) = http("GET", r.admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The `# HELP` line of every metric family in `body` is there.
fn assert_every_family_has_help(body: &str) {
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "{name} has no # HELP:\n{body}"
            );
        }
    }
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn proxy_metrics_pass_promtool_and_the_outage_gauge_moves_while_redis_is_down() {
    let Some(promtool) = promtool() else { return };
    let mut redis = RedisServer::new();
    // A durable keyspace, so the journal metrics exist too, and a cache
    // one for the near-cache's.
    let r = serve(
        Some(&redis.url()),
        "[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n[[keyspace]]\npattern = \"c:*\"\npolicy = \"cache\"\n",
    );
    wait_for("Redis up through Redoubt", Duration::from_secs(10), || {
        value(&metrics(&r), "redoubt_upstream_up") == Some(1.0)
    });
    assert_eq!(send_command(r.port, &["SET", "d:1", "x"]), "+OK");
    assert_eq!(send_command(r.port, &["GET", "d:1"]), "$1");
    assert_eq!(send_command(r.port, &["PING"]), "+PONG");
    // Histograms reach /metrics once upkeep folds their samples in.
    assert_eq!(send_command(r.port, &["SET", "c:1", "x"]), "+OK");
    assert_eq!(send_command(r.port, &["GET", "c:1"]), "$1");
    wait_for("the latency histograms", Duration::from_secs(10), || {
        let body = metrics(&r);
        body.contains("redoubt_command_duration_seconds_bucket")
            && body.contains("redoubt_upstream_probe_duration_seconds_bucket")
    });
    // Redis's vital signs, under redis_exporter's names.
    wait_for("Redis's vital signs", Duration::from_secs(10), || {
        value(&metrics(&r), "redis_memory_used_bytes").is_some_and(|b| b > 0.0)
    });
    let body = metrics(&r);
    for series in [
        "redoubt_build_info{version=\"",
        "redoubt_outage_current_seconds 0",
        "redoubt_journal_max_bytes ",
        "# HELP redoubt_command_duration_seconds ",
        "redis_memory_max_bytes 0",
    ] {
        assert!(body.contains(series), "no {series}:\n{body}");
    }
    assert!(
        value(&body, "redis_connected_clients").is_some_and(|c| c >= 1.0),
        "{body}"
    );
    assert!(
        value(&body, "redis_commands_processed_total").is_some_and(|c| c > 0.0),
        "{body}"
    );
    assert_every_family_has_help(&body);
    assert_promtool_accepts(promtool, &body);
    // Commands sent to Redis by their key's keyspace policy, each counted
    // once: the near-cache's hidden PEXPIRETIME behind GET c:1 is not one.
    for (policy, n) in [("durable", 2.0), ("cache", 2.0), ("none", 1.0)] {
        assert_eq!(
            value(
                &body,
                &format!("redoubt_commands_total{{route=\"upstream\",policy=\"{policy}\"}}")
            ),
            Some(n),
            "{policy}:\n{body}"
        );
    }
    assert!(!body.contains("unclassified"), "{body}");

    // While Redis is down the current outage's length grows, before the
    // outage ends (redoubt_outage_seconds_total only moves then).
    redis.kill();
    wait_for("the outage gauge to move", Duration::from_secs(20), || {
        value(&metrics(&r), "redoubt_outage_current_seconds").is_some_and(|s| s > 0.5)
    });
    // The near-cache answers c:1, read while Redis was up; c:2 it lacks.
    assert_eq!(send_command(r.port, &["GET", "c:1"]), "$1");
    assert_eq!(send_command(r.port, &["GET", "c:2"]), "$-1");
    let body = metrics(&r);
    assert_eq!(value(&body, "redoubt_state{state=\"down\"}"), Some(1.0));
    assert_eq!(
        value(&body, "redoubt_near_cache_lookups_total{result=\"hit\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "redoubt_near_cache_lookups_total{result=\"miss\"}"),
        Some(1.0)
    );
    assert_promtool_accepts(promtool, &body);
}

#[test]
fn standalone_metrics_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let r = serve(None, "");
    assert_eq!(send_command(r.port, &["SET", "a", "1"]), "+OK");
    assert_eq!(send_command(r.port, &["GET", "a"]), "$1");
    wait_for("the latency histogram", Duration::from_secs(10), || {
        metrics(&r).contains("redoubt_command_duration_seconds_bucket")
    });
    let body = metrics(&r);
    for series in [
        "redoubt_build_info{version=\"",
        "redoubt_state{state=\"standalone\"} 1",
        "redoubt_journal_max_bytes ",
        "redoubt_fallback_keys 1",
    ] {
        assert!(body.contains(series), "no {series}:\n{body}");
    }
    assert!(
        value(&body, "redoubt_journal_bytes").is_some_and(|b| b > 0.0),
        "{body}"
    );
    assert_every_family_has_help(&body);
    assert_promtool_accepts(promtool, &body);
}

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

#[test]
fn alert_rules_are_valid_and_their_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let dir = prometheus_dir();
    let o = Command::new(promtool)
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml"))
        .output()
        .expect("run promtool check rules");
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(promtool)
        .args(["test", "rules"])
        .arg(dir.join("alerts_test.yml"))
        .output()
        .expect("run promtool test rules");
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn every_metric_the_alert_rules_use_is_one_redoubt_exports() {
    // A renamed metric would leave an alert that can never fire, and
    // promtool cannot know which names Redoubt exports. Counters only
    // appear on /metrics once bumped, so compare with the names' source.
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("redoubt_"))
        .collect();
    assert!(!used.is_empty());
    let exported = [
        proxy::metrics::STATE,
        proxy::metrics::UPSTREAM_UP,
        proxy::metrics::JOURNAL_BYTES,
        proxy::metrics::JOURNAL_MAX_BYTES,
        proxy::metrics::WRITES_REFUSED,
        proxy::metrics::OUTAGE_CURRENT_SECONDS,
        proxy::replay::REPLAY_ERRORS_TOTAL,
    ];
    for name in used {
        assert!(
            exported.contains(&name),
            "alerts.yml uses {name}, which Redoubt does not export"
        );
    }
}

/// The status page's sparklines read these names from /metrics; the
/// admin crate spells them itself (it does not depend on proxy).
#[test]
fn the_status_page_history_reads_the_names_the_proxy_exports() {
    use admin::history::names;
    assert_eq!(names::COMMANDS_TOTAL, proxy::metrics::COMMANDS_TOTAL);
    assert_eq!(names::COMMAND_DURATION, proxy::metrics::COMMAND_DURATION);
    assert_eq!(names::JOURNAL_PENDING, proxy::metrics::JOURNAL_PENDING);
    assert_eq!(
        names::CLIENT_CONNECTIONS,
        proxy::metrics::CLIENT_CONNECTIONS
    );
    assert_eq!(names::WRITES_REFUSED, proxy::metrics::WRITES_REFUSED);
    assert_eq!(names::PROBE_DURATION, upstream::health::PROBE_DURATION);
}

fn dashboard() -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/redoubt-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard's panels (`expr`), and of its
/// template variables (`query`, `definition`) when `variables` is set.
fn dashboard_queries(v: &serde_json::Value, variables: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query" | "definition", serde_json::Value::String(s))
                        if variables && s.contains('(') =>
                    {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(x, variables, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, variables, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_are_promql_that_promtool_accepts() {
    let Some(promtool) = promtool() else { return };
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), false, &mut queries);
    assert!(queries.len() >= 20, "{queries:?}");
    // Grafana's variables, made concrete; each query as a recording rule
    // so `promtool check rules` parses it.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let o = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool check rules");
    assert!(o.status.success(), "{}\n{rules}", text(&o));
}

#[test]
fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), true, &mut queries);
    let used: std::collections::BTreeSet<String> = queries
        .iter()
        .flat_map(|q| {
            q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("redoubt_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(used.len() >= 15, "{used:?}");

    // Counters appear on /metrics once they move, so the scrape is taken
    // after Redoubt went through what the dashboard shows: traffic, an
    // outage with durable writes until the journal is full, a replica, and
    // the replay once Redis is back.
    let mut redis = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    let r = serve(
        Some(&redis.url()),
        "[journal]\nmax_bytes = \"64KiB\"\n\n[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n",
    );
    let status = |r: &Running| -> serde_json::Value {
        let (code, body) = http("GET", r.admin, "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_for("Redis up through Redoubt", Duration::from_secs(20), || {
        status(&r)["state"] == "up"
    });
    assert_eq!(send_command(r.port, &["SET", "d:seed", "x"]), "+OK");
    assert_eq!(send_command(r.port, &["GET", "d:seed"]), "$1");
    wait_for(
        "default's permissions and the replica streaming",
        Duration::from_secs(20),
        || {
            let s = status(&r);
            s["auth"]["users_with_known_permissions"] == 1
                && s["journal"]["replica"]["state"] == "streaming"
        },
    );
    redis.kill();
    wait_for("Redis down", Duration::from_secs(20), || {
        status(&r)["state"] == "down"
    });
    let value = "v".repeat(4096);
    let refused = (0..64)
        .map(|i| send_command(r.port, &["SET", &format!("d:{i}"), &value]))
        .find(|reply| reply != "+OK")
        .expect("a 64 KiB journal refuses durable writes before 256 KiB");
    assert!(refused.contains("journal full"), "{refused}");
    redis.start_again();
    wait_for(
        "Up with the journal replayed",
        Duration::from_secs(30),
        || {
            let s = status(&r);
            s["state"] == "up" && s["journal"]["pending_commands"] == 0
        },
    );
    // Histograms appear once upkeep folds their samples in, the replica's
    // gauges on its 1 s timer: polled (as wait_for does) until all are
    // there, then the ones still missing are named.
    let missing_in = |body: &str| -> Vec<String> {
        let exported: std::collections::BTreeSet<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        used.iter()
            .filter(|n| !exported.contains(n.as_str()))
            .cloned()
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (body, missing) = loop {
        let body = metrics(&r);
        let missing = missing_in(&body);
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (body, missing);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in /metrics:\n{body}"
    );
}
