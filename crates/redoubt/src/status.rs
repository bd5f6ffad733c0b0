//! `redoubt status`: one GET of `/status` from a running Redoubt, told
//! as a short summary (or the raw JSON), with an exit code a script or a
//! monitoring check can act on.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// Redis up, or standalone, and writes accepted.
const EXIT_OK: u8 = 0;
/// Serving, but not everything: Redis rejects writes, the journal is
/// being replayed, Redis is down with local keyspaces serving, or the
/// journal refuses writes.
const EXIT_DEGRADED: u8 = 1;
/// Redis is down and nothing is served locally: every command fails.
const EXIT_DOWN: u8 = 2;
/// The admin endpoint did not answer (or answered something unreadable).
const EXIT_NO_ANSWER: u8 = 3;

/// Fetches `/status` and prints the summary (`json`: the raw JSON); exit
/// code by state, 3 when nothing answers.
pub fn run(admin: &str, token: Option<&str>, json: bool) -> ExitCode {
    match fetch(admin, "/status", token) {
        Ok((200, body)) => {
            let Ok(v) = serde_json::from_str::<Value>(&body) else {
                eprintln!("redoubt status: the admin endpoint at {admin} answered something that is not JSON: {}", body.trim());
                return ExitCode::from(EXIT_NO_ANSWER);
            };
            let (text, code) = summary(&v, unix_ms_now());
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body));
            } else {
                print!("{text}");
            }
            ExitCode::from(code)
        }
        Ok((code, body)) => {
            eprintln!(
                "redoubt status: admin endpoint {admin} answered HTTP {code}: {}",
                body.trim()
            );
            ExitCode::from(EXIT_NO_ANSWER)
        }
        Err(e) => {
            eprintln!("redoubt status: no answer from the admin endpoint at {admin} ({e}); is `redoubt serve` running with admin.listen = \"{admin}\"?");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The summary of a `/status` document, and its exit code. `now_ms` is
/// passed in so the text can be tested.
fn summary(v: &Value, now_ms: u64) -> (String, u8) {
    let str_of = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or("");
    let journal = v.get("journal").filter(|j| !j.is_null());
    let refusing = journal
        .and_then(|j| j.get("refusing"))
        .and_then(Value::as_str);
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let state = str_of("state");
    if state == "standalone" {
        line("standalone: serving from the local store".into());
        let keys = v.get("keys").and_then(Value::as_u64).unwrap_or(0);
        let memory = v.get("used_memory").and_then(Value::as_u64).unwrap_or(0);
        let journal_bytes = journal
            .and_then(|j| j.get("bytes"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        line(format!(
            "{keys} keys, {} in memory; journal {}",
            journal::human_bytes(memory),
            journal::human_bytes(journal_bytes)
        ));
        if let Some(why) = refusing {
            line(format!("the journal refuses writes: {why}"));
        }
        let code = if refusing.is_some() {
            EXIT_DEGRADED
        } else {
            EXIT_OK
        };
        return (out, code);
    }

    let since = match v.get("since_unix_ms").and_then(Value::as_u64) {
        Some(ms) if ms > 0 => format!(
            " since {} ({})",
            journal::rfc3339_secs(ms),
            human_duration(now_ms.saturating_sub(ms) / 1000)
        ),
        _ => String::new(),
    };
    let reason = str_of("reason");
    let upstream = str_of("upstream");
    let code = match state {
        "up" => {
            line(format!("Redis is up{since}: forwarding to {upstream}"));
            if refusing.is_some() {
                EXIT_DEGRADED
            } else {
                EXIT_OK
            }
        }
        "down" => {
            line(format!("Redis is down{since}: {reason}"));
            if journal.is_some() {
                line("serving durable and cache keyspaces locally; other keys are refused".into());
                EXIT_DEGRADED
            } else {
                line("nothing is served locally (no durable or cache keyspace): every command is refused until Redis answers".into());
                EXIT_DOWN
            }
        }
        "writes_down" => {
            line(format!("Redis rejects writes{since}: {reason}"));
            if journal.is_some() {
                line("reads go to Redis; writes to durable keyspaces are journaled, other writes get Redis's error".into());
            } else {
                line("reads go to Redis; writes get Redis's error".into());
            }
            EXIT_DEGRADED
        }
        "recovering" => {
            line(format!(
                "Redis is back{since}; the outage's journal is being replayed into it"
            ));
            if let Some(r) = journal
                .and_then(|j| j.get("replay"))
                .filter(|r| !r.is_null())
            {
                let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                line(format!(
                    "replay: {} commands replayed, {} refused by Redis, {} entries to go",
                    n("replayed"),
                    n("failed"),
                    n("remaining")
                ));
                if let Some(why) = r.get("paused").and_then(Value::as_str) {
                    line(format!("replay paused: {why}"));
                }
            }
            EXIT_DEGRADED
        }
        other => {
            line(format!("unknown state {other:?}: {reason}"));
            EXIT_NO_ANSWER
        }
    };
    if let Some(busy) = v.get("busy").and_then(Value::as_str) {
        line(format!("Redis is busy running a script: {busy}"));
    }
    if let Some(j) = journal {
        let pending = j
            .get("pending_commands")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let bytes = j.get("bytes").and_then(Value::as_u64).unwrap_or(0);
        line(format!(
            "journal: {pending} commands pending ({})",
            journal::human_bytes(bytes)
        ));
        if let Some(why) = refusing {
            line(format!("the journal refuses writes: {why}"));
        }
        if let Some(r) = j.get("replica").filter(|r| !r.is_null()) {
            line(replica_line(r));
            if let Some(rs) = r.get("last_restore").filter(|x| !x.is_null()) {
                let n = |k: &str| rs.get(k).and_then(Value::as_u64).unwrap_or(0);
                line(format!(
                    "last restore: {} durable keys ({}) written back into a Redis that came back without them, {} failed, in {} ms",
                    n("keys"),
                    journal::human_bytes(n("bytes")),
                    n("failed"),
                    n("ms")
                ));
            }
        }
    }
    if state != "up" {
        if let Some(d) = v.get("latest_diagnosis").filter(|d| !d.is_null()) {
            let findings = d
                .pointer("/report/findings")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(first) = findings.first() {
                let title = first.get("title").and_then(Value::as_str).unwrap_or("");
                let fix = first.get("fix").and_then(Value::as_str).unwrap_or("");
                let more = match findings.len() {
                    1 => String::new(),
                    n => format!(" (+{} more: redoubt status --json)", n - 1),
                };
                line(format!("doctor: {title}{more}"));
                if !fix.is_empty() {
                    line(format!("  fix: {fix}"));
                }
            }
        }
    }
    if let Some(up) = v.get("uptime_seconds").and_then(Value::as_u64) {
        line(format!("redoubt running for {}", human_duration(up)));
    }
    (out, code)
}

/// One line on the replica of the durable keyspaces.
fn replica_line(r: &Value) -> String {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let state = r.get("state").and_then(Value::as_str).unwrap_or("?");
    let why = r
        .get("reason")
        .and_then(Value::as_str)
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    let lag = r
        .get("lag_bytes")
        .and_then(Value::as_u64)
        .map(|l| format!(", {} behind", journal::human_bytes(l)))
        .unwrap_or_default();
    let restoring = if r.get("restoring").and_then(Value::as_bool) == Some(true) {
        "; checking whether Redis kept the durable keyspaces"
    } else {
        ""
    };
    format!(
        "replica: {state}{why}; {} keys ({}){lag}{restoring}",
        n("keys"),
        journal::human_bytes(n("bytes"))
    )
}

/// `12 s`, `5 min 3 s`, `2 h 5 min`, `3 d 4 h`: two units are enough to
/// tell a blip from an outage.
pub(crate) fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// A plain HTTP/1.1 GET; the admin endpoint is ours and local, so a
/// client library would be more than this needs.
pub fn fetch(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
    })?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_012_000;

    fn proxy(state: &str, journal: Value) -> Value {
        json!({
            "state": state,
            "reason": "2 probes failed: connection refused",
            "busy": null,
            "since_unix_ms": 1_700_000_000_000u64,
            "upstream": "redis://127.0.0.1:6379/0",
            "uptime_seconds": 3725,
            "journal": journal,
            "latest_diagnosis": null,
        })
    }

    fn local() -> Value {
        json!({ "pending_commands": 153, "bytes": 1_258_291, "serving_locally": true, "refusing": null, "replay": null })
    }

    #[test]
    fn exit_code_by_state() {
        for (state, journal, code) in [
            ("up", Value::Null, 0),
            ("up", local(), 0),
            ("down", Value::Null, 2),
            ("down", local(), 1),
            ("writes_down", Value::Null, 1),
            ("recovering", local(), 1),
            ("nonsense", Value::Null, 3),
        ] {
            assert_eq!(summary(&proxy(state, journal), NOW).1, code, "{state}");
        }
        assert_eq!(summary(&json!({"state": "standalone"}), NOW).1, 0);
        let mut full = local();
        full["refusing"] = json!("journal full");
        assert_eq!(summary(&proxy("up", full.clone()), NOW).1, 1);
        assert_eq!(
            summary(&json!({"state": "standalone", "journal": full}), NOW).1,
            1
        );
    }

    #[test]
    fn down_says_since_when_why_and_what_is_served() {
        let (text, _) = summary(&proxy("down", local()), NOW);
        assert!(
            text.starts_with("Redis is down since 2023-11-14T22:13:20Z (12 s): 2 probes failed: connection refused\n"),
            "{text}"
        );
        assert!(
            text.contains("serving durable and cache keyspaces locally"),
            "{text}"
        );
        assert!(
            text.contains("journal: 153 commands pending (1.2 MiB)"),
            "{text}"
        );
        assert!(text.contains("running for 1 h 2 min"), "{text}");
        let (text, _) = summary(&proxy("down", Value::Null), NOW);
        assert!(text.contains("nothing is served locally"), "{text}");
    }

    #[test]
    fn the_replica_and_its_last_restore_are_one_line_each() {
        let mut j = local();
        j["replica"] = json!({
            "state": "streaming", "reason": null, "keys": 1200, "bytes": 2_097_152,
            "lag_bytes": 0, "restoring": false,
            "last_restore": { "keys": 40, "bytes": 4096, "failed": 0, "ms": 12 }
        });
        let (text, _) = summary(&proxy("up", j), NOW);
        assert!(
            text.contains("replica: streaming; 1200 keys (2.0 MiB), 0 B behind\n"),
            "{text}"
        );
        assert!(
            text.contains("last restore: 40 durable keys (4.0 KiB) written back"),
            "{text}"
        );
        let mut j = local();
        j["replica"] =
            json!({ "state": "refused", "reason": "NOPERM psync", "keys": 0, "bytes": 0 });
        let (text, _) = summary(&proxy("down", j), NOW);
        assert!(
            text.contains("replica: refused: NOPERM psync; 0 keys"),
            "{text}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0 s");
        assert_eq!(human_duration(303), "5 min 3 s");
        assert_eq!(human_duration(7500), "2 h 5 min");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 59), "3 d 4 h");
    }
}
