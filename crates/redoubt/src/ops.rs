//! Telling people and acting: webhook alerts on state changes, incident
//! closes and remediation attempts, and the `[remediation]` command run
//! when Redis stays Down.
//!
//! Neither is on the data path. The health watchers only push an event
//! onto a bounded in-memory queue; one delivery task of its own POSTs
//! them, with retries, and drops the oldest (counted) when a webhook is
//! too slow to keep up. Remediation runs on a task of its own too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use upstream::{Health, HealthHandle, State};

use crate::config::{Alert, RemediationSection};

/// Events waiting for delivery; beyond this the oldest is dropped. An
/// outage produces a handful, so only a webhook that has been failing for
/// a long time fills it, and then the newest events are the useful ones.
const QUEUE: usize = 256;

/// Waits before the 2nd and 3rd delivery attempt of one event.
const RETRY_BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];

/// A remediation command still running after this is killed: a restart
/// that hangs must not hold back the next attempt forever.
const REMEDIATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of a remediation command's output kept in the log, the incident
/// and the webhook event.
const OUTPUT_LINES: usize = 5;

/// An `http://host[:port][/path]` webhook address. Plain HTTP only: no
/// TLS client is in the build, and a local relay can add it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (default 80, 443 for https).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `https://`: TLS, the certificate checked against `host`.
    pub tls: bool,
}

impl HttpUrl {
    /// Parses and checks `url`, saying what is wrong.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (rest, tls) = match url.split_once("://") {
            Some(("http", rest)) => (rest, false),
            Some(("https", rest)) => (rest, true),
            _ => {
                return Err(format!(
                    "'{url}' is not an http:// or https:// URL (example: \"https://hooks.example.com/redoubt\")"
                ))
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "'{url}': user info in the URL is not supported; put a token in the path instead"
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{url}': the path has spaces or control characters"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("'{url}' has a malformed host")),
                },
                None => return Err(format!("'{url}' has a malformed host")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{url}' has no host"));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "'{url}' has port '{p}'; give a port from 1 to 65535"
                    ))
                }
                Ok(p) => p,
            },
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path,
            tls,
        })
    }

    /// `host:port` as written in a `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The TLS client of an `https://` webhook: the system's roots, or only
/// the CAs in `ca_file`.
pub fn webhook_tls(ca_file: &str) -> Result<tls::TlsClient, String> {
    tls::TlsClient::new(&tls::ClientOptions {
        ca_file: (!ca_file.is_empty()).then(|| ca_file.into()),
        ..tls::ClientOptions::default()
    })
    .map_err(|e| e.to_string())
}

/// One POST: connect (and for https, the TLS handshake, the certificate
/// checked against the URL's host), send `body`, read the status code.
/// Connection: close, so the reply's end needs no parsing beyond its
/// first line.
async fn post(
    url: &HttpUrl,
    client: Option<&tls::TlsClient>,
    body: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let exchange = async {
        let mut s = tls::connect((url.host.as_str(), url.port), &url.host, client)
            .await
            .map_err(|e| match e {
                tls::ConnectFailure::Tcp(e) => format!("connect: {e}"),
                tls::ConnectFailure::Tls(f) => format!("TLS: {f}"),
            })?;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: redoubt\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            url.path,
            url.authority(),
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        s.flush().await.map_err(|e| format!("send: {e}"))?;
        // Only the status line matters; a reply longer than this is not
        // read further.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or_default();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| line.starts_with("HTTP/"))
            .ok_or_else(|| {
                format!(
                    "not an HTTP reply: {:?}",
                    line.chars().take(80).collect::<String>()
                )
            })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no reply within {} ms", timeout.as_millis())),
    }
}

/// The sending side of the alert queue. Cheap to clone; [`Alerts::send`]
/// never waits.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
    node_id: Arc<str>,
}

struct Inner {
    queue: Mutex<VecDeque<Value>>,
    ready: Notify,
    dropped: AtomicU64,
    enabled: bool,
}

/// Now, RFC 3339 UTC with milliseconds.
fn now_rfc3339() -> String {
    journal::rfc3339_millis(unix_ms(SystemTime::now()))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Alerts {
    /// Starts the delivery task for `targets` (none: events are discarded
    /// at once).
    pub fn spawn(targets: &[Alert], node_id: &str) -> Alerts {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
            enabled: !targets.is_empty(),
        });
        let mut parsed = Vec::new();
        for t in targets {
            // Validated with the config; one that fails here is skipped
            // rather than stopping the others.
            let client = |u: &HttpUrl| {
                if u.tls {
                    webhook_tls(&t.ca_file).map(Some)
                } else {
                    Ok(None)
                }
            };
            match HttpUrl::parse(&t.url).and_then(|u| client(&u).map(|c| (u, c))) {
                Ok((u, c)) => parsed.push((u, c, Duration::from_millis(t.timeout_ms))),
                Err(e) => tracing::error!(error = %e, "alert: skipping a webhook"),
            }
        }
        if inner.enabled {
            let me = inner.clone();
            tokio::spawn(async move { deliver(me, parsed).await });
        }
        Alerts {
            inner,
            node_id: node_id.into(),
        }
    }

    /// Queues `event` (an object) with `at` and `node_id` added.
    pub fn send(&self, mut event: Value) {
        if !self.inner.enabled {
            return;
        }
        if let Some(o) = event.as_object_mut() {
            o.insert("at".into(), Value::String(now_rfc3339()));
            o.insert("node_id".into(), Value::String(self.node_id.to_string()));
        }
        let Ok(mut q) = self.inner.queue.lock() else {
            return;
        };
        if q.len() >= QUEUE {
            q.pop_front();
            let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped_total = n,
                "alert: queue full (webhook too slow or failing); dropped the oldest event"
            );
        }
        q.push_back(event);
        drop(q);
        self.inner.ready.notify_one();
    }

    /// Queues an `incident_closed` event for `i`.
    pub fn incident_closed(&self, i: &proxy::incident::Incident) {
        let mut v = serde_json::to_value(i).unwrap_or_else(|_| json!({}));
        if let Some(o) = v.as_object_mut() {
            // Doctor reports can be large; the incident log and
            // `/incidents` have them, the alert says how many.
            let diagnoses = o
                .remove("diagnoses")
                .and_then(|d| d.as_array().map(Vec::len))
                .unwrap_or(0);
            o.insert("diagnoses".into(), json!(diagnoses));
            o.insert("event".into(), json!("incident_closed"));
            o.insert("from".into(), json!(i.state));
            o.insert("to".into(), json!("up"));
            o.insert("reason".into(), json!(i.cause));
            o.insert(
                "started_at".into(),
                json!(journal::rfc3339_millis(i.started_at_ms)),
            );
            if let Some(end) = i.ended_at_ms {
                o.insert("ended_at".into(), json!(journal::rfc3339_millis(end)));
                o.insert(
                    "duration_ms".into(),
                    json!(end.saturating_sub(i.started_at_ms)),
                );
            }
        }
        self.send(v);
    }
}

/// The delivery loop: one event at a time, to every target in turn, each
/// with up to three attempts.
async fn deliver(inner: Arc<Inner>, targets: Vec<(HttpUrl, Option<tls::TlsClient>, Duration)>) {
    loop {
        let next = inner.queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(event) = next else {
            inner.ready.notified().await;
            continue;
        };
        let body = event.to_string();
        for (url, client, timeout) in &targets {
            let mut attempt = 0;
            loop {
                let outcome = post(url, client.as_ref(), &body, *timeout).await;
                let why = match outcome {
                    Ok(code) if (200..300).contains(&code) => break,
                    Ok(code) => format!("HTTP {code}"),
                    Err(e) => e,
                };
                let Some(wait) = RETRY_BACKOFF.get(attempt) else {
                    tracing::error!(webhook = %url.authority(), event = %event["event"], error = %why, "alert: gave up delivering after 3 attempts");
                    break;
                };
                tracing::warn!(webhook = %url.authority(), event = %event["event"], error = %why, retry_in_ms = wait.as_millis() as u64, "alert: delivery failed");
                tokio::time::sleep(*wait).await;
                attempt += 1;
            }
        }
    }
}

/// Sends `state_changed` on every change of state. The Down a prober
/// starts in is no state yet: leaving it for Up says nothing, and a first
/// failed probe is reported as `starting` → `down`.
pub fn spawn_state_alerts(health: HealthHandle, alerts: Alerts) {
    if !alerts.inner.enabled {
        return;
    }
    tokio::spawn(async move {
        let mut rx = health.subscribe();
        let mut last: Option<State> = None;
        loop {
            let (state, reason, failures) = {
                let h = rx.borrow_and_update();
                (h.state, h.reason.clone(), h.consecutive_failures)
            };
            let probed = !(state == State::Down && failures == 0);
            if probed && last != Some(state) {
                if last.is_some() || state != State::Up {
                    alerts.send(json!({
                        "event": "state_changed",
                        "from": last.map(State::as_str).unwrap_or("starting"),
                        "to": state.as_str(),
                        "reason": reason,
                    }));
                }
                last = Some(state);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Waits up to `d` while the state stays Down; false as soon as it
/// leaves Down (or the prober is gone).
async fn stays_down(rx: &mut watch::Receiver<Health>, d: Duration) -> bool {
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            changed = rx.changed() => {
                if changed.is_err() || rx.borrow_and_update().state != State::Down {
                    return false;
                }
            }
        }
    }
}

/// Runs `[remediation] on_down` when Redis has been Down for `after_ms`,
/// then every `backoff_ms` while it stays Down, at most `max_attempts`
/// times until it is Up again.
pub fn spawn_remediation(
    cfg: RemediationSection,
    health: HealthHandle,
    incidents: Arc<proxy::incident::IncidentLog>,
    alerts: Alerts,
) {
    if cfg.on_down.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut rx = health.subscribe();
        let mut attempts = 0u32;
        loop {
            let (state, failures) = {
                let h = rx.borrow_and_update();
                (h.state, h.consecutive_failures)
            };
            if state == State::Up {
                attempts = 0;
            }
            if state == State::Down && failures > 0 && attempts < cfg.max_attempts {
                // The first after after_ms, then backoff_ms doubling each
                // time (at most 64×): a Redis that a restart does not bring
                // back is not restarted in a tight loop.
                let wait = if attempts == 0 {
                    cfg.after_ms
                } else {
                    cfg.backoff_ms.saturating_mul(1 << (attempts - 1).min(6))
                };
                if stays_down(&mut rx, Duration::from_millis(wait)).await {
                    attempts += 1;
                    let result = run_remediation(&cfg.on_down, attempts, cfg.max_attempts).await;
                    incidents.add_remediation(result.clone());
                    let mut event = result;
                    if let Some(o) = event.as_object_mut() {
                        o.insert("event".into(), json!("remediation"));
                    }
                    alerts.send(event);
                }
                // Whatever happened meanwhile, look at the state afresh.
                continue;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Runs the command once, killed after [`REMEDIATION_TIMEOUT`], and says
/// what came of it (JSON for the incident and the webhook).
async fn run_remediation(argv: &[String], attempt: u32, max: u32) -> Value {
    let started = std::time::Instant::now();
    let Some((prog, args)) = argv.split_first() else {
        return json!({ "attempt": attempt, "outcome": "not_configured" });
    };
    tracing::warn!(command = ?argv, attempt, max_attempts = max, "remediation: redis is still down; running on_down");
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Dropping the wait on timeout kills it.
        .kill_on_drop(true)
        .spawn();
    let (outcome, exit, output) = match child {
        Err(e) => ("failed_to_start", None, e.to_string()),
        Ok(child) => {
            match tokio::time::timeout(REMEDIATION_TIMEOUT, child.wait_with_output()).await {
                Err(_) => (
                    "timed_out",
                    None,
                    format!("killed after {} s", REMEDIATION_TIMEOUT.as_secs()),
                ),
                Ok(Err(e)) => ("failed", None, e.to_string()),
                Ok(Ok(out)) => {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    let first: Vec<&str> = text.lines().take(OUTPUT_LINES).collect();
                    let outcome = if out.status.success() {
                        "succeeded"
                    } else {
                        "failed"
                    };
                    (outcome, out.status.code(), first.join("\n"))
                }
            }
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    if outcome == "succeeded" {
        tracing::warn!(attempt, exit = ?exit, ms, output = %output, "remediation: on_down finished");
    } else {
        tracing::error!(attempt, outcome, exit = ?exit, ms, output = %output, "remediation: on_down did not succeed");
    }
    json!({
        "attempt": attempt,
        "max_attempts": max,
        "command": argv,
        "outcome": outcome,
        "exit_code": exit,
        "output": output,
        "duration_ms": ms,
        "at": now_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let u = HttpUrl::parse("http://alerts.internal:8080/hook?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("alerts.internal", 8080, "/hook?x=1")
        );
        let u = HttpUrl::parse("http://h").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/p").unwrap();
        assert_eq!((u.host.as_str(), u.authority()), ("::1", "[::1]:9".into()));
        let u = HttpUrl::parse("https://hooks.example.com/x").unwrap();
        assert_eq!((u.port, u.tls), (443, true));
        assert!(!HttpUrl::parse("http://h").unwrap().tls);
        for bad in [
            "ftp://h",
            "h:80",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
