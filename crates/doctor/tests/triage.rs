//! Triage over fixture lines written for these tests: one per signature
//! pattern, ordinary lines that must not match, and a mixed log with the
//! grouping an operator should see.

use std::io::{BufReader, Cursor, Read};

use doctor::{triage_files, triage_reader, Severity, Triage};

fn fixture(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_signature_has_a_fixture_line_that_it_matches() {
    let lines = fixture("triage-lines.txt");
    let sigs = Triage::signatures();
    for s in &sigs {
        assert!(
            lines.iter().any(|l| l.split('\t').next() == Some(s.id)),
            "no fixture line for {}",
            s.id
        );
    }
    for l in &lines {
        let (id, line) = l
            .split_once('\t')
            .unwrap_or_else(|| panic!("bad fixture {l:?}"));
        let sig = sigs
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("fixture names unknown signature {id}"));
        let mut t = Triage::new();
        t.feed(line.as_bytes());
        let r = t.finish();
        let g = r
            .group(sig.cause)
            .unwrap_or_else(|| panic!("{id} did not match {line:?}: {:?}", r.groups));
        assert!(
            g.signatures.iter().any(|s| s == id),
            "{id}: {:?}",
            g.signatures
        );
        assert_eq!((g.count, g.first.line, g.last.line), (1, 1, 1));
        assert_eq!(g.example, line);
        assert_eq!(r.exit_code(), 1);
    }
}

#[test]
fn ordinary_lines_match_nothing() {
    for line in fixture("benign-lines.txt") {
        let mut t = Triage::new();
        t.feed(line.as_bytes());
        let r = t.finish();
        assert!(
            r.groups.is_empty(),
            "{line:?} matched {:?}",
            r.groups.iter().map(|g| &g.cause).collect::<Vec<_>>()
        );
        assert_eq!(r.exit_code(), 0);
    }
}

/// An incident as an operator would paste it: app logs of a Node API and
/// a Python worker interleaved with the server's log, in colour.
const MIXED: &str = "\
2024-05-02T09:59:58Z api info listening on :8080
1:M 02 May 2024 10:00:00.000 # WARNING Memory overcommit must be enabled! Without it, a background save may fail.
2024-05-02T10:00:01Z api info GET /cart 200 4ms
1:M 02 May 2024 10:05:00.000 # Can't save in background: fork: Cannot allocate memory
2024-05-02T10:05:01Z api \x1b[31merror\x1b[0m ReplyError: MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.
2024-05-02T10:05:02Z api \x1b[31merror\x1b[0m ReplyError: MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.
2024-05-02T10:05:03Z worker ERROR redis.exceptions.ResponseError: MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.
1:M 02 May 2024 10:06:00.000 # Out Of Memory allocating 65536 bytes!
2024-05-02T10:06:01Z api \x1b[31merror\x1b[0m [ioredis] Unhandled error event: Error: connect ECONNREFUSED 10.0.0.5:6379
2024-05-02T10:06:02Z api \x1b[31merror\x1b[0m [ioredis] Unhandled error event: Error: connect ECONNREFUSED 10.0.0.5:6379
2024-05-02T10:06:03Z worker ERROR redis.exceptions.ConnectionError: Error 111 connecting to redis:6379. Connection refused.
2024-05-02T10:06:04Z api \x1b[31merror\x1b[0m MaxRetriesPerRequestError: Reached the max retries per request limit (which is 20).
1:C 02 May 2024 10:06:30.000 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo
1:M 02 May 2024 10:06:35.000 * Ready to accept connections tcp
2024-05-02T10:06:36Z api info GET /cart 200 3ms
";

#[test]
fn mixed_incident_log_groups_by_cause() {
    let r = triage_reader(Cursor::new(MIXED)).unwrap();
    assert_eq!(r.lines, 15);
    let summary: Vec<(&str, u64, u64, u64)> = r
        .groups
        .iter()
        .map(|g| (g.cause.as_str(), g.count, g.first.line, g.last.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            // Critical first, then by count.
            ("misconf-rdb", 3, 5, 7),
            ("redis-unreachable", 3, 9, 11),
            ("server-fork-failed", 1, 4, 4),
            ("server-oom-abort", 1, 8, 8),
            // Same severity and count: the earlier one first.
            ("server-overcommit", 1, 2, 2),
            ("retries-exhausted", 1, 12, 12),
            ("server-restart", 2, 13, 14),
        ]
    );
    let refused = r.group("redis-unreachable").unwrap();
    assert_eq!(
        refused.signatures,
        vec!["node-econnrefused", "redis-py-refused"]
    );
    // The example is the first line, colour codes removed.
    assert!(
        refused.example.contains("api error [ioredis]"),
        "{}",
        refused.example
    );
    assert!(refused.likely_causes[0].contains("not running"));
    assert_eq!(r.group("misconf-rdb").unwrap().severity, Severity::Critical);
    assert_eq!(r.exit_code(), 1);

    let text = r.render_text(false);
    assert!(
        text.starts_with("redoubt triage: 15 lines, 7 causes found"),
        "{text}"
    );
    assert!(text.find("misconf-rdb").unwrap() < text.find("server-restart").unwrap());
    assert!(text.contains("line 5 … line 7"), "{text}");
    assert!(text.contains("first step: "));
    assert!(!text.contains('\x1b'));
    let j = r.to_json();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["groups"][0]["cause"], "misconf-rdb");
    assert_eq!(j["groups"][0]["first"]["line"], 5);
}

#[test]
fn invalid_utf8_and_crlf_are_tolerated() {
    let mut log = b"garbage \xff\xfe\xfd\r\n".to_vec();
    log.extend_from_slice(
        b"\xc3(bad) ReplyError: OOM command not allowed when used memory > 'maxmemory'.\r\n",
    );
    let r = triage_reader(Cursor::new(log)).unwrap();
    assert_eq!(r.lines, 2);
    let g = r.group("oom").unwrap();
    assert_eq!(g.first.line, 2);
    assert!(g.example.starts_with('\u{fffd}'), "{}", g.example);
    assert!(!g.example.ends_with('\r'));
}

#[test]
fn nothing_found_exits_zero() {
    let r = triage_reader(Cursor::new("all good\nstill good\n")).unwrap();
    assert_eq!((r.lines, r.exit_code()), (2, 0));
    assert!(r
        .render_text(false)
        .contains("no known Redis problem found"));
}

#[test]
fn several_sources_keep_their_own_line_numbers() {
    let mut t = Triage::new();
    t.begin_source("api.log");
    t.feed_reader(Cursor::new(
        "ok\nError: connect ECONNREFUSED 10.0.0.5:6379\n",
    ))
    .unwrap();
    t.begin_source("redis.log");
    t.feed_reader(Cursor::new(
        "1:M 02 May 2024 10:00:00.000 # Background saving error\n",
    ))
    .unwrap();
    t.begin_source("worker.log");
    t.feed_reader(Cursor::new(
        "a\nb\nc\ndial tcp 10.0.0.5:6379: connect: connection refused\n",
    ))
    .unwrap();
    let r = t.finish();
    assert_eq!(r.lines, 7);
    let g = r.group("redis-unreachable").unwrap();
    assert_eq!(g.first.to_string(), "api.log:2");
    assert_eq!(g.last.to_string(), "worker.log:4");
    assert_eq!(
        r.group("server-bgsave-failed").unwrap().first.to_string(),
        "redis.log:1"
    );
}

/// A reader that produces `total` bytes of log lines without holding them,
/// with a matching line every `every` lines and one line far over the cap.
struct Generated {
    produced: u64,
    total: u64,
    line_no: u64,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.pending.len() {
            if self.produced >= self.total {
                return Ok(0);
            }
            self.line_no += 1;
            self.pending = if self.line_no == 10 {
                let mut l = vec![b'x'; 1 << 20];
                l.extend_from_slice(b" ERR max number of clients reached\n");
                l
            } else if self.line_no.is_multiple_of(1000) {
                b"2024-05-02T10:00:00Z api error ReplyError: OOM command not allowed when used memory > 'maxmemory'.\n".to_vec()
            } else {
                b"2024-05-02T10:00:00Z api info GET /items 200 2ms user=42 trace=abcdef0123456789\n"
                    .to_vec()
            };
            self.pos = 0;
        }
        let n = out.len().min(self.pending.len() - self.pos);
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}

#[test]
fn large_input_streams_with_long_lines_capped() {
    // 64 MiB keeps the test quick; memory does not depend on the size,
    // since nothing but one capped line buffer is held.
    let gen = Generated {
        produced: 0,
        total: 64 << 20,
        line_no: 0,
        pending: Vec::new(),
        pos: 0,
    };
    let r = triage_reader(BufReader::new(gen)).unwrap();
    assert!(r.lines > 700_000, "{}", r.lines);
    assert_eq!(r.long_lines, 1);
    // The match sits past the cap on the long line, so it is not seen.
    assert!(r.group("max-clients").is_none());
    let oom = r.group("oom").unwrap();
    assert_eq!(oom.count, r.lines / 1000);
    assert_eq!(oom.first.line, 1000);
}

#[test]
fn read_errors_surface_for_the_caller() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk gone"))
        }
    }
    let e = triage_reader(BufReader::new(Broken)).unwrap_err();
    assert_eq!(e.to_string(), "disk gone");
}

#[test]
fn files_are_read_in_order_and_a_missing_one_is_an_input_error() {
    let dir = std::env::temp_dir().join(format!("doctor-triage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.log");
    let b = dir.join("b.log");
    std::fs::write(&a, "fine\nredis: connection pool timeout\n").unwrap();
    std::fs::write(&b, "redis: connection pool timeout\n").unwrap();
    let r = triage_files(&[&a, &b]).unwrap();
    let g = r.group("pool-exhausted").unwrap();
    assert_eq!(g.count, 2);
    assert_eq!(g.first.to_string(), format!("{}:2", a.display()));
    assert_eq!(g.last.to_string(), format!("{}:1", b.display()));
    let missing = dir.join("missing.log");
    let e = triage_files(&[&a, &missing]).unwrap_err();
    assert_eq!(e.path, missing.display().to_string());
    assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An outage as the people involved would collect it: the app's log
/// (behind Redoubt, with timeouts from two client libraries) given first,
/// then the host's kernel log. The timeline goes by time, not by file or
/// severity, so the OOM kill that started it is named first.
#[test]
fn the_timeline_names_the_earliest_cause_first_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    std::fs::write(
        &app,
        "\
2024-05-02T10:06:00.500Z api info GET /cart 200 4ms
2024-05-02T10:06:01.200Z api error Error: Command timed out
2024-05-02T10:06:01.400Z worker ERROR redis.exceptions.TimeoutError: Timeout reading from socket
2024-05-02T10:06:02Z api error ReplyError: UNCERTAIN no reply from redis within 1000 ms: command may have been executed; check before retrying
2024-05-02T10:06:03Z api error ReplyError: UNAVAILABLE redis is down (2 probes failed: cannot connect): command not executed; retry later
2024-05-02T10:06:04Z api error ReplyError: UNAVAILABLE redis is down (2 probes failed: cannot connect): command not executed; retry later
",
    )
    .unwrap();
    let kern = dir.path().join("kern.log");
    std::fs::write(
        &kern,
        "\
May  2 10:05:59 cache-1 kernel: [812345.1] redis-server invoked oom-killer: gfp_mask=0x140cca
May  2 10:06:00 cache-1 kernel: [812345.6] Out of memory: Killed process 1234 (redis-server) total-vm:8123456kB
",
    )
    .unwrap();
    let r = triage_files(&[&app, &kern]).unwrap();
    assert_eq!(
        r.timeline,
        vec![
            "server-oom-killed",
            "command-timeout",
            "redoubt-uncertain",
            "redoubt-unavailable"
        ],
        "{}",
        r.render_text(false)
    );
    let oom = r.group("server-oom-killed").unwrap();
    assert_eq!(
        oom.first_time.as_deref(),
        Some("2024-05-02T10:06:00Z"),
        "syslog year borrowed from the app log"
    );
    let timeouts = r.group("command-timeout").unwrap();
    assert_eq!(timeouts.count, 2);
    assert_eq!(
        timeouts.signatures,
        vec!["ioredis-timeout", "redis-py-timeout"]
    );
    assert_eq!(
        timeouts.first_time.as_deref(),
        Some("2024-05-02T10:06:01.200Z")
    );
    assert_eq!(
        r.group("redoubt-unavailable").unwrap().last_time.as_deref(),
        Some("2024-05-02T10:06:04Z")
    );
    let text = r.render_text(false);
    let earliest = text.lines().nth(1).unwrap_or_default();
    assert!(
        earliest.starts_with("earliest cause: The kernel's OOM killer killed redis-server (server-oom-killed), first at ")
            && earliest.ends_with("kern.log:2, 2024-05-02T10:06:00Z"),
        "{text}"
    );
    let pos = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s} missing in {text}"))
    };
    assert!(pos("timeline") < pos("  2024-05-02T10:06:00Z"));
    assert!(pos("2024-05-02T10:06:00Z") < pos("2024-05-02T10:06:01.200Z"));
    let j = r.to_json();
    assert_eq!(j["timeline"][0], "server-oom-killed");
    assert!(j["groups"][0]["first_time"].is_string(), "{j}");
}
