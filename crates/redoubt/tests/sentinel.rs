//! Sentinel: Redoubt in front of a Sentinel-managed Redis (one primary,
//! two replicas, three Sentinels, all real processes, set up once for the
//! whole file), under eight redis-rs clients that SET unique durable keys,
//! INCR durable counters and LPUSH unique queue items through it.
//!
//! One test, in steps, each followed by the chaos suite's checks against
//! the primary of the moment (every acknowledged write there once, counters
//! between acknowledged and acknowledged plus uncertain, nothing refused
//! as not executed applied, no reply later than the deadline):
//! 1. the primary killed with SIGKILL: the Sentinels promote a replica;
//!    Redoubt journals durable writes meanwhile and replays them into the
//!    new primary;
//! 2. `SENTINEL FAILOVER` (graceful): the old primary keeps answering and
//!    then turns replica; nothing written through Redoubt is lost with it;
//! 3. one Sentinel killed: Redoubt keeps serving, `/status` says which
//!    Sentinel is not reached, and a failover through the other two is
//!    followed too.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::sentinel::{query, SentinelSet, MASTER, SENTINEL_PASSWORD};
use test_support::{free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");
/// `limits.command_timeout_ms`.
const DEADLINE_MS: u64 = 1000;
/// What the client measures beyond the deadline on a busy 2-core machine
/// (see tests/chaos.rs).
const MARGIN_MS: u64 = 250;
const WORKERS: usize = 8;
/// Sentinel's `down-after-milliseconds`.
const DOWN_AFTER_MS: u64 = 1000;
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// A write the old primary answered at most this long before it was
/// killed (and until the kill returned) may be missing from the new one:
/// Redis replicates asynchronously, and a write it answered just before
/// SIGKILL may not have been written to any replica yet (seen here:
/// writes answered 0.2 ms before the kill, lost). Those are counted
/// (`lost_in_window`), not failed; any other missing write fails, and so
/// does any write Redoubt journaled. The chaos suite's `restart-empty`
/// rounds allow the same.
const REPLICATION_WINDOW: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Acked,
    Uncertain,
    NotApplied,
}

#[derive(Default)]
struct Ledger {
    /// (worker, n) → outcome of `SET ack:{w}:{n}`.
    sets: HashMap<(usize, u64), Outcome>,
    /// worker → (acked, uncertain) INCRs of `ctr:{w}`.
    incrs: HashMap<usize, (u64, u64)>,
    /// (worker, n) → outcome of `LPUSH q:{w} n`.
    pushes: HashMap<(usize, u64), Outcome>,
    /// When each SET and LPUSH was answered, for a failure's report.
    answered: HashMap<(usize, u64), Instant>,
    /// When each acknowledged INCR was answered, per worker.
    incr_answered: HashMap<usize, Vec<Instant>>,
    /// When the fault was dealt.
    fault_at: Option<Instant>,
    /// For a kill: writes Redis itself answered from this long before the
    /// fault until the kill returned may be missing from the new primary
    /// ([`REPLICATION_WINDOW`]).
    window: Option<(Instant, Instant)>,
    /// Writes in that window that the new primary lacks.
    lost_in_window: usize,
    violations: Vec<String>,
    /// Writes acknowledged while Redoubt said Redis was not Up.
    acked: u64,
    slowest: Duration,
}

struct Redoubt {
    child: Child,
    port: u16,
    admin: u16,
    log: PathBuf,
}

impl Redoubt {
    fn start(dir: &Path, upstream: &str) -> Redoubt {
        let port = free_port();
        let admin = free_port();
        let conf = dir.join("redoubt.toml");
        std::fs::write(
            &conf,
            format!(
                r#"listen = "127.0.0.1:{port}"
upstream = "{upstream}"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:{admin}"

[sentinel]
password = "{SENTINEL_PASSWORD}"

[health]
interval_ms = 50
timeout_ms = 100
down_after = 2
up_after = 2

[limits]
command_timeout_ms = {DEADLINE_MS}

[journal]
fsync = "always"

[[keyspace]]
pattern = "ack:*"
policy = "durable"

[[keyspace]]
pattern = "ctr:*"
policy = "durable"

[[keyspace]]
pattern = "q:*"
policy = "durable"
"#,
                data = dir.join("data").display()
            ),
        )
        .unwrap();
        let log = dir.join("redoubt.log");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("REDOUBT_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn redoubt");
        let r = Redoubt {
            child,
            port,
            admin,
            log,
        };
        wait_for("redoubt to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && TcpStream::connect(("127.0.0.1", admin)).is_ok()
        });
        r
    }

    fn status(&self) -> serde_json::Value {
        let mut s = match TcpStream::connect(("127.0.0.1", self.admin)) {
            Ok(s) => s,
            Err(_) => return serde_json::Value::Null,
        };
        let _ = write!(
            s,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw.split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Up, the journal drained, and the primary the one on `port`.
    /// Up, the journal drained, and the primary the one the Sentinels
    /// name (which may change meanwhile: on a busy machine Sentinel now and
    /// then fails over a new primary again); returns its port.
    fn wait_up(&self, set: &SentinelSet) -> u16 {
        let start = Instant::now();
        loop {
            let port = set.primary_port();
            let want = format!("127.0.0.1:{port}");
            let s = self.status();
            if s["state"] == "up"
                && s["journal"]["pending_commands"].as_u64() == Some(0)
                && s["sentinel"]["primary"] == want.as_str()
            {
                return port;
            }
            assert!(
                start.elapsed() < FAILOVER_TIMEOUT,
                "redoubt not up and drained on {want} after {FAILOVER_TIMEOUT:?}: {s}\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Redoubt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Eight clients writing through Redoubt until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, ledger: Arc<Mutex<Ledger>>, round: u64, admin: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicBool::new(true));
        let mut threads: Vec<_> = (0..WORKERS)
            .map(|w| {
                let stop = stop.clone();
                let ledger = ledger.clone();
                let up = up.clone();
                std::thread::spawn(move || worker(port, w, round, &stop, &ledger, &up))
            })
            .collect();
        // What Redoubt says of Redis, every 20 ms: a write acknowledged
        // while it is not Up was journaled.
        let watch = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !watch.load(Ordering::Acquire) {
                let s = test_support::http("GET", admin, "/status").1;
                let state = serde_json::from_str::<serde_json::Value>(&s)
                    .map(|v| v["state"] == "up")
                    .unwrap_or(false);
                up.store(state, Ordering::Release);
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        Load { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn connect(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let conn = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(conn)
}

fn worker(
    port: u16,
    w: usize,
    round: u64,
    stop: &AtomicBool,
    ledger: &Mutex<Ledger>,
    up: &AtomicBool,
) {
    let mut conn = None;
    let mut n = round * 1_000_000;
    while !stop.load(Ordering::Acquire) {
        if conn.is_none() {
            conn = connect(port);
        }
        let Some(c) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        let kind = n % 3;
        let cmd = match kind {
            0 => redis::cmd("SET")
                .arg(format!("ack:{w}:{n}"))
                .arg(format!("v{n}"))
                .to_owned(),
            1 => redis::cmd("INCR")
                .arg(format!("ctr:{round}:{w}"))
                .to_owned(),
            _ => redis::cmd("LPUSH")
                .arg(format!("q:{round}:{w}"))
                .arg(n.to_string())
                .to_owned(),
        };
        let sent = Instant::now();
        let res = cmd.query::<redis::Value>(c);
        let took = sent.elapsed();
        let mut broken = false;
        let outcome = match &res {
            Ok(redis::Value::Okay | redis::Value::Int(_)) => Outcome::Acked,
            Ok(v) => {
                ledger
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("unexpected reply {v:?}"));
                Outcome::Uncertain
            }
            Err(e) => match e.code() {
                Some("UNAVAILABLE" | "READONLY" | "LOADING" | "MASTERDOWN") => Outcome::NotApplied,
                Some("UNCERTAIN") => Outcome::Uncertain,
                _ => {
                    broken = true;
                    if !(e.is_io_error() || e.is_connection_dropped()) {
                        ledger
                            .lock()
                            .unwrap()
                            .violations
                            .push(format!("unexpected error {e}"));
                    }
                    Outcome::Uncertain
                }
            },
        };
        if broken {
            conn = None;
        }
        let down = outcome == Outcome::Acked && !up.load(Ordering::Acquire);
        let answered = Instant::now();
        let mut l = ledger.lock().unwrap();
        l.slowest = l.slowest.max(took);
        if took > Duration::from_millis(DEADLINE_MS + MARGIN_MS) {
            l.violations
                .push(format!("a reply took {took:?} ({res:?})"));
        }
        if down {
            l.acked += 1;
        }
        match kind {
            0 => {
                l.sets.insert((w, n), outcome);
                l.answered.insert((w, n), answered);
            }
            1 => {
                if outcome == Outcome::Acked {
                    l.incr_answered.entry(w).or_default().push(answered);
                }
                let e = l.incrs.entry(w).or_default();
                match outcome {
                    Outcome::Acked => e.0 += 1,
                    Outcome::Uncertain => e.1 += 1,
                    Outcome::NotApplied => {}
                }
            }
            _ => {
                l.pushes.insert((w, n), outcome);
                l.answered.insert((w, n), answered);
            }
        }
    }
}

/// The chaos suite's promises, against the primary on `port`. Returns
/// the problems; counts in `lost_in_window` the writes the old primary
/// answered just before it was killed that the new one lacks.
fn check(ledger: &mut Ledger, port: u16, round: u64) -> Vec<String> {
    let mut bad = ledger.violations.clone();
    let window = ledger.window;
    let in_window = |at: Option<&Instant>| matches!((at, window), (Some(a), Some((from, to))) if *a >= from && *a <= to);
    let mut lost_in_window = 0;
    let get = |args: &[&str]| query(port, args).unwrap_or_default();
    for ((w, n), o) in &ledger.sets {
        let v = get(&["GET", &format!("ack:{w}:{n}")]);
        let there = v.first().is_some_and(|x| !x.is_empty());
        match o {
            Outcome::Acked if !there && in_window(ledger.answered.get(&(*w, *n))) => {
                lost_in_window += 1
            }
            Outcome::Acked if v.first().map(String::as_str) != Some(&format!("v{n}")) => {
                bad.push(format!(
                    "ack:{w}:{n} acknowledged, redis has {v:?}{}",
                    since_fault(ledger, *w, *n)
                ))
            }
            Outcome::NotApplied if there => bad.push(format!(
                "ack:{w}:{n} refused as not executed, yet it is there"
            )),
            _ => {}
        }
    }
    for (w, (acked, uncertain)) in &ledger.incrs {
        let v: u64 = get(&["GET", &format!("ctr:{round}:{w}")])
            .first()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let may_be_lost = ledger.incr_answered.get(w).map_or(0, |t| {
            t.iter().filter(|a| in_window(Some(a))).count() as u64
        });
        lost_in_window += acked.saturating_sub(v).min(may_be_lost) as usize;
        if v < acked.saturating_sub(may_be_lost) || v > acked + uncertain {
            bad.push(format!(
                "ctr:{round}:{w} is {v}: {acked} INCRs acknowledged ({may_be_lost} of them by the old primary just before its kill), {uncertain} uncertain"
            ));
        }
    }
    let mut lists: HashMap<usize, HashMap<u64, usize>> = HashMap::new();
    for w in 0..WORKERS {
        let items = get(&["LRANGE", &format!("q:{round}:{w}"), "0", "-1"]);
        let counts = lists.entry(w).or_default();
        for i in items {
            *counts.entry(i.parse().unwrap_or(0)).or_default() += 1;
        }
    }
    for ((w, n), o) in &ledger.pushes {
        let c = lists.get(w).and_then(|m| m.get(n)).copied().unwrap_or(0);
        match o {
            _ if c > 1 => bad.push(format!("q:{w} holds item {n} {c} times")),
            Outcome::Acked if c == 0 && in_window(ledger.answered.get(&(*w, *n))) => {
                lost_in_window += 1
            }
            Outcome::Acked if c == 0 => bad.push(format!(
                "q:{round}:{w} lost acknowledged item {n}{}",
                since_fault(ledger, *w, *n)
            )),
            Outcome::NotApplied if c == 1 => bad.push(format!(
                "q:{w} item {n} refused as not executed, yet it is there"
            )),
            _ => {}
        }
    }
    ledger.lost_in_window = lost_in_window;
    bad
}

/// The failovers, in the order listed, that lead from `old` to `new`:
/// the first one leaving `old`, then each one leaving where the one before
/// arrived, up to the one arriving at `new`. Empty when there is no such
/// chain.
fn failover_path(failovers: &[serde_json::Value], old: u16, new: u16) -> Vec<serde_json::Value> {
    let mut at = format!("127.0.0.1:{old}");
    let mut path = Vec::new();
    for f in failovers {
        if f["from"] == at.as_str() {
            path.push(f.clone());
            at = f["to"].as_str().unwrap_or_default().to_string();
            if at == format!("127.0.0.1:{new}") {
                return path;
            }
        }
    }
    Vec::new()
}

/// When a write was answered, relative to the fault.
fn since_fault(ledger: &Ledger, w: usize, n: u64) -> String {
    match (ledger.answered.get(&(w, n)), ledger.fault_at) {
        (Some(a), Some(f)) if *a >= f => format!(" (answered {:?} after the fault)", *a - f),
        (Some(a), Some(f)) => format!(" (answered {:?} before the fault)", f - *a),
        _ => String::new(),
    }
}

/// Writes through Redoubt around `fault`, then checks the ledger on the
/// new primary; returns how many writes were acknowledged while Redoubt
/// had Redis not Up.
fn round(
    set: &mut SentinelSet,
    r: &Redoubt,
    n: u64,
    what: &str,
    kill: bool,
    fault: impl FnOnce(&mut SentinelSet, u16),
) -> u64 {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let old = r.wait_up(set);
    let load = Load::start(r.port, ledger.clone(), n, r.admin);
    wait_for("writes before the fault", Duration::from_secs(10), || {
        ledger.lock().unwrap().sets.len() > 100
    });
    let failovers_before = r.status()["sentinel"]["failovers"]
        .as_array()
        .map_or(0, Vec::len);
    let fault_at = Instant::now();
    ledger.lock().unwrap().fault_at = Some(fault_at);
    fault(set, old);
    if kill {
        ledger.lock().unwrap().window = Some((fault_at - REPLICATION_WINDOW, Instant::now()));
    }
    set.wait_failover_from(old, FAILOVER_TIMEOUT);
    r.wait_up(set);
    let after = ledger.lock().unwrap().sets.len();
    wait_for("writes after the failover", Duration::from_secs(10), || {
        ledger.lock().unwrap().sets.len() > after + 100
    });
    load.stop();
    let new = r.wait_up(set);
    // The replica of the durable keyspaces re-attached to the new primary:
    // it streams that primary's history (its replication ID).
    let replid = query(new, &["INFO", "replication"])
        .unwrap_or_default()
        .concat()
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_replid:").map(str::to_string))
        .unwrap_or_default();
    wait_for(
        "the replica streaming from the new primary",
        FAILOVER_TIMEOUT,
        || {
            let rep = &r.status()["journal"]["replica"];
            rep["state"] == "streaming" && rep["replid"] == replid.as_str()
        },
    );
    let mut l = ledger.lock().unwrap();
    let bad = check(&mut l, new, n);
    assert!(
        bad.is_empty(),
        "{what}: {} problems, first: {:?}\nredoubt log:\n{}",
        bad.len(),
        &bad[..bad.len().min(10)],
        r.tail()
    );
    let s = r.status();
    let failovers = s["sentinel"]["failovers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Sentinel may start another failover right after this one (a loaded
    // machine can make the new primary look down too, so the sentinels
    // move on to a third node): what /status lists since the round began
    // must lead from the old primary to the new one, each step starting
    // where the one before ended.
    let path = failover_path(
        &failovers[failovers_before.min(failovers.len())..],
        old,
        new,
    );
    assert!(
        !path.is_empty(),
        "{what}: /status names no failover from {old} to {new}: {}",
        s["sentinel"]
    );
    let last = path[path.len() - 1].clone();
    eprintln!(
        "{what}: {old} -> {new} ({} failovers, the last in {} ms as Redoubt saw it); {} sets, {} acknowledged while not up, slowest reply {:?}, lost_in_window={}",
        path.len(),
        last["duration_ms"],
        l.sets.len(),
        l.acked,
        l.slowest,
        l.lost_in_window
    );
    l.acked
}

#[test]
fn writes_through_redoubt_survive_sentinel_failovers() {
    let mut set = SentinelSet::start(DOWN_AFTER_MS);
    let _logs = SentinelLogs(set.sentinels.iter().map(|s| s.log_path()).collect());
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start(dir.path(), &set.url());
    r.wait_up(&set);
    // The doctor finds the primary through the Sentinels too, logging in
    // to them with [sentinel] from the config; without it they refuse.
    let elsewhere = tempfile::tempdir().unwrap();
    let doctor = |config: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["doctor", &set.url()]);
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        // Not in Redoubt's dir: its redoubt.toml would be read.
        c.env_remove("REDOUBT_UPSTREAM")
            .current_dir(elsewhere.path());
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = doctor(None);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("NOAUTH") || out.contains("Authentication required"),
        "{out}"
    );
    let (code, out) = doctor(Some(&dir.path().join("redoubt.toml")));
    assert_ne!(code, Some(3), "{out}");
    assert!(out.contains("(primary of redis+sentinel://"), "{out}");
    // The replication link's face is what the Sentinels see of Redoubt: a
    // replica that is never promoted and that they do not announce.
    let replicas = set.sentinels[0].cmd(&["SENTINEL", "replicas", MASTER]);
    let ports: Vec<&String> = replicas
        .chunks(2)
        .filter(|kv| kv[0] == "port")
        .map(|kv| &kv[1])
        .collect();
    assert_eq!(ports.len(), 2, "only the two real replicas: {replicas:?}");

    // 1. kill -9 of the primary: Redoubt journals meanwhile.
    let acked = round(&mut set, &r, 1, "kill -9", true, |set, old| {
        set.server_mut(old).kill();
    });
    assert!(acked > 0, "no write was acknowledged during the failover");

    // 2. graceful failover: the old primary answers until it turns
    //    replica. A subscriber through Redoubt follows to the new one.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", r.port)).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    round(&mut set, &r, 2, "SENTINEL FAILOVER", false, |set, _| {
        failover(set, 0)
    });
    let primary = set.primary_port();
    // Redoubt's subscription is on the new primary (the Sentinels' own
    // are named sentinel-…) within 5 s: Sentinel turns the old primary into
    // a replica, which drops its subscribers, only about 10 s after the
    // failover (its INFO period), so a subscription that did not follow
    // the move would still be there.
    wait_for(
        "the subscription on the new primary",
        Duration::from_secs(5),
        || {
            query(primary, &["CLIENT", "LIST"])
                .unwrap_or_default()
                .concat()
                .lines()
                .any(|l| l.contains(" sub=1 ") && !l.contains("name=sentinel-"))
        },
    );
    let mut heard = None;
    wait_for(
        "the subscriber to hear the new primary",
        FAILOVER_TIMEOUT,
        || {
            // Published until heard: the resubscribe takes a moment.
            let _ = query(primary, &["PUBLISH", "news", "from the new primary"]);
            if let Ok(m) = sub.get_message() {
                heard = m.get_payload::<String>().ok();
            }
            heard.is_some()
        },
    );
    assert_eq!(heard.as_deref(), Some("from the new primary"));
    drop(sub);

    // 3. one Sentinel gone: still served, and said.
    let gone = set.sentinels[2].port();
    set.sentinels[2].kill();
    wait_for(
        "a sentinel not reached in /status",
        FAILOVER_TIMEOUT,
        || {
            r.status()["sentinel"]["sentinels"]
                .as_array()
                .is_some_and(|a| {
                    a.iter().any(|s| {
                        s["addr"] == format!("127.0.0.1:{gone}").as_str()
                            && s["subscribed"] == false
                    })
                })
        },
    );
    round(
        &mut set,
        &r,
        3,
        "failover with a sentinel down",
        false,
        |set, _| failover(set, 1),
    );

    // What operators read of it: metrics, the incident log, the page.
    let (_, metrics) = test_support::http("GET", r.admin, "/metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    // Three made here; Sentinel may have added one of its own (above).
    assert!(
        value("redoubt_sentinel_failovers_total") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        value("redoubt_sentinels_reached"),
        2.0,
        "{}",
        r.status()["sentinel"]
    );
    assert_eq!(value("redoubt_sentinel_failover_in_progress"), 0.0);
    let (_, incidents) = test_support::http("GET", r.admin, "/incidents");
    let incidents: serde_json::Value = serde_json::from_str(&incidents).unwrap();
    let in_incidents: usize = incidents["recent"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| i["failovers"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert!(
        in_incidents >= 3,
        "failovers missing from /incidents: {incidents}"
    );
    // What was journaled during each: the kill -9 one took writes.
    let journaled: u64 = incidents["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["failovers"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["journaled"].as_u64())
        .sum();
    assert!(
        journaled > 0,
        "no failover says what was journaled: {incidents}"
    );
    let primary = set.primary_port();
    if let Some(dom) = page_dom(r.admin, dir.path()) {
        for needle in [
            format!("127.0.0.1:{primary} ({MASTER})"),
            "2 of 3 reached".to_string(),
            format!("→ 127.0.0.1:{primary} in "),
        ] {
            assert!(
                dom.contains(&needle),
                "status page lacks {needle:?}:\n{dom}"
            );
        }
    }
}

/// The status page's DOM after its script ran (headless Chromium), or
/// `None` when Chromium is missing outside CI.
fn page_dom(admin: u16, dir: &Path) -> Option<String> {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium is not installed and CI=true: scripts/test.sh installs it"
        );
        eprintln!("SKIPPED: chromium is not installed, the status page was not opened");
        return None;
    }
    let out = Command::new("timeout")
        .args([
            "--kill-after=5",
            "90",
            "chromium",
            "--headless",
            "--disable-gpu",
        ])
        .args(["--no-sandbox", "--no-first-run", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://127.0.0.1:{admin}/"))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page did not load:\n{dom}"
    );
    Some(dom)
}

/// On a failure, what each Sentinel saw (its events, with times).
struct SentinelLogs(Vec<PathBuf>);

impl Drop for SentinelLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for p in &self.0 {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} ---\n{}",
                p.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

/// `SENTINEL FAILOVER` on Sentinel `i`, asked again while it has no
/// replica to promote yet (one that just turned replica is still syncing,
/// or the Sentinel has not read its INFO since).
fn failover(set: &mut SentinelSet, i: usize) {
    let mut last = Vec::new();
    wait_for("SENTINEL FAILOVER to be accepted", FAILOVER_TIMEOUT, || {
        last = set.sentinels[i].cmd(&["SENTINEL", "FAILOVER", MASTER]);
        last == ["OK"] || {
            std::thread::sleep(Duration::from_millis(200));
            false
        }
    });
}
