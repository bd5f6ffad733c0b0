//! `redoubt incidents`: the incident log of a running Redoubt (`GET
//! /incidents`), told as one paragraph per outage, newest first, with
//! RFC 3339 times; `--json` gives the same document with RFC 3339 fields
//! added beside the epoch-millisecond ones.

use std::process::ExitCode;

use serde_json::Value;

use crate::status::{fetch, human_duration, unix_ms_now};

/// No incident open.
const EXIT_NONE_OPEN: u8 = 0;
/// An incident is open: Redis is down or refusing writes, or the outage's
/// journal is still being replayed.
const EXIT_OPEN: u8 = 1;
/// The admin endpoint did not answer (or answered something unreadable).
const EXIT_NO_ANSWER: u8 = 3;

/// Fetches `/incidents` and prints them; exit 0 none open, 1 one open,
/// 3 no answer.
pub fn run(admin: &str, token: Option<&str>, json: bool) -> ExitCode {
    let body = match fetch(admin, "/incidents", token) {
        Ok((200, body)) => body,
        Ok((code, body)) => {
            eprintln!(
                "redoubt incidents: admin endpoint {admin} answered HTTP {code}: {}",
                body.trim()
            );
            return ExitCode::from(EXIT_NO_ANSWER);
        }
        Err(e) => {
            eprintln!("redoubt incidents: no answer from the admin endpoint at {admin} ({e}); is `redoubt serve` running with admin.listen = \"{admin}\"?");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    let Ok(mut v) = serde_json::from_str::<Value>(&body) else {
        eprintln!("redoubt incidents: the admin endpoint at {admin} answered something that is not JSON: {}", body.trim());
        return ExitCode::from(EXIT_NO_ANSWER);
    };
    let open = v.get("open").is_some_and(|o| !o.is_null());
    if json {
        add_times(&mut v);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body));
    } else {
        print!("{}", summary(&v, unix_ms_now()));
    }
    ExitCode::from(if open { EXIT_OPEN } else { EXIT_NONE_OPEN })
}

/// Adds `started_at`/`ended_at` (RFC 3339) beside `started_at_ms`/
/// `ended_at_ms`, which stay for scripts.
fn add_times(v: &mut Value) {
    let each = |i: &mut Value| {
        let Some(o) = i.as_object_mut() else { return };
        for (ms, text) in [("started_at_ms", "started_at"), ("ended_at_ms", "ended_at")] {
            let t = o
                .get(ms)
                .and_then(Value::as_u64)
                .map(journal::rfc3339_millis);
            o.insert(text.into(), t.into());
        }
    };
    if let Some(o) = v.get_mut("open") {
        each(o);
    }
    if let Some(Value::Array(r)) = v.get_mut("recent") {
        r.iter_mut().for_each(each);
    }
}

/// The incidents as text, the open one first, then the closed ones newest
/// first. `now_ms` is passed in so the text can be tested.
fn summary(v: &Value, now_ms: u64) -> String {
    let recent = v
        .get("recent")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let open = v.get("open").filter(|o| !o.is_null());
    if open.is_none() && recent.is_empty() {
        return "no incidents recorded: Redis has not been down or refusing writes since this data_dir was created\n".into();
    }
    let mut out = String::new();
    if let Some(o) = open {
        out.push_str(&incident(o, now_ms));
    }
    for i in recent {
        out.push_str(&incident(i, now_ms));
    }
    out
}

/// One incident: when, what, why, then what Redoubt did about it.
fn incident(i: &Value, now_ms: u64) -> String {
    let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
    let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("");
    let started = n("started_at_ms");
    let what = match s("state") {
        "down" => "Redis down",
        "writes_down" => "Redis refusing writes",
        other => other,
    };
    let mut out = match i.get("ended_at_ms").and_then(Value::as_u64) {
        None => format!(
            "OPEN  {what} since {} ({} so far): {}\n",
            journal::rfc3339_secs(started),
            human_duration(now_ms.saturating_sub(started) / 1000),
            s("cause")
        ),
        Some(ended) => format!(
            "{} – {} ({}) {what}: {}\n",
            journal::rfc3339_secs(started),
            journal::rfc3339_secs(ended),
            human_duration(ended.saturating_sub(started) / 1000),
            s("cause")
        ),
    };
    out.push_str(&format!(
        "      {} answered locally, {} journaled, {} replayed ({} refused by Redis), {} refused\n",
        n("served_locally"),
        n("journaled"),
        n("replayed"),
        n("failed"),
        n("rejected")
    ));
    if let Some(p) = i.get("replay_failed_log").and_then(Value::as_str) {
        out.push_str(&format!("      commands Redis refused at replay: {p}\n"));
    }
    let count = |k: &str| i.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    if count("restored") > 0 {
        let keys: u64 = i["restored"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.get("keys").and_then(Value::as_u64))
                    .sum()
            })
            .unwrap_or(0);
        out.push_str(&format!(
            "      {keys} durable keys restored into a Redis that came back without them\n"
        ));
    }
    if count("remediation") > 0 {
        out.push_str(&format!(
            "      remediation: {} attempt(s)\n",
            count("remediation")
        ));
    }
    if count("diagnoses") > 0 {
        out.push_str(&format!(
            "      {} doctor diagnosis(es) attached (--json)\n",
            count("diagnoses")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn open_first_then_closed_newest_first_with_rfc3339_times() {
        let v = json!({
            "open": { "started_at_ms": T0 + 60_000, "ended_at_ms": null, "state": "down",
                      "cause": "2 probes failed: connection refused", "served_locally": 4,
                      "journaled": 2, "replayed": 0, "failed": 0, "rejected": 7, "diagnoses": [{}] },
            "recent": [{ "started_at_ms": T0, "ended_at_ms": T0 + 5_000, "state": "writes_down",
                         "cause": "MISCONF", "served_locally": 0, "journaled": 3, "replayed": 3,
                         "failed": 1, "rejected": 0, "diagnoses": [],
                         "replay_failed_log": "/d/replay-failed.jsonl",
                         "remediation": [{}], "restored": [{ "keys": 40 }] }]
        });
        let t = summary(&v, T0 + 72_000);
        assert_eq!(
            t,
            "OPEN  Redis down since 2023-11-14T22:14:20Z (12 s so far): 2 probes failed: connection refused
      4 answered locally, 2 journaled, 0 replayed (0 refused by Redis), 7 refused
      1 doctor diagnosis(es) attached (--json)
2023-11-14T22:13:20Z – 2023-11-14T22:13:25Z (5 s) Redis refusing writes: MISCONF
      0 answered locally, 3 journaled, 3 replayed (1 refused by Redis), 0 refused
      commands Redis refused at replay: /d/replay-failed.jsonl
      40 durable keys restored into a Redis that came back without them
      remediation: 1 attempt(s)
"
        );
        let mut v = v;
        add_times(&mut v);
        assert_eq!(v["open"]["started_at"], "2023-11-14T22:14:20.000Z");
        assert_eq!(v["open"]["ended_at"], Value::Null);
        assert_eq!(v["recent"][0]["ended_at"], "2023-11-14T22:13:25.000Z");
        assert_eq!(
            v["recent"][0]["ended_at_ms"],
            T0 + 5_000,
            "machine fields kept"
        );
    }

    #[test]
    fn none_recorded_says_so() {
        assert!(summary(&json!({ "open": null, "recent": [] }), T0)
            .starts_with("no incidents recorded"));
    }
}
