//! Redis Cluster: Redoubt in front of a real cluster (three primaries,
//! three replicas, `redis-cli --cluster create`), which redis-rs and
//! redis-cli reach in standalone mode as if it were one Redis.
//!
//! Each test starts its own cluster (nextest runs every test in its own
//! process) and checks what it claims against the nodes directly: a key
//! written through Redoubt is on its slot's primary, a merged reply equals
//! what the keys hold there.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use test_support::cluster::ClusterSet;
use test_support::{free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

struct Redoubt {
    child: Child,
    port: u16,
    admin: u16,
    log: PathBuf,
}

impl Redoubt {
    fn start(dir: &Path, upstream: &str) -> Redoubt {
        Redoubt::start_with(dir, upstream, "")
    }

    /// [`Redoubt::start`] with `extra` appended to its config file.
    fn start_with(dir: &Path, upstream: &str, extra: &str) -> Redoubt {
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

[limits]
command_timeout_ms = 5000
{extra}
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
        wait_for("redoubt to answer PING", Duration::from_secs(10), || {
            r.conn().is_some_and(|mut c| {
                redis::cmd("PING")
                    .query::<String>(&mut c)
                    .is_ok_and(|p| p == "PONG")
            })
        });
        r
    }

    fn conn(&self) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = test_support::http("GET", self.admin, "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Redoubt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slot(key: &str) -> u16 {
    upstream::cluster::key_slot(key.as_bytes())
}

/// `GET key` on the primary serving its slot, directly.
fn on_node(cluster: &ClusterSet, key: &str) -> String {
    cluster.node_of_slot(slot(key)).cmd(&["GET", key])
}

/// The value of each key on the primary serving it now ("" when absent),
/// read with one pipeline per node.
fn read_all<'a>(
    cluster: &ClusterSet,
    keys: impl Iterator<Item = &'a str>,
) -> HashMap<&'a str, String> {
    let owners = cluster.slot_owners();
    let mut by_node: HashMap<String, Vec<&'a str>> = HashMap::new();
    for k in keys {
        let owner = owners[slot(k) as usize].clone().expect("every slot served");
        by_node.entry(owner).or_default().push(k);
    }
    let mut out = HashMap::new();
    for (node, keys) in by_node {
        let mut c = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_connection()
            .unwrap();
        for chunk in keys.chunks(1000) {
            let mut p = redis::pipe();
            for k in chunk {
                p.cmd("GET").arg(*k);
            }
            let vals: Vec<Option<String>> = p.query(&mut c).unwrap();
            for (k, v) in chunk.iter().zip(vals) {
                out.insert(*k, v.unwrap_or_default());
            }
        }
    }
    out
}

fn q(c: &mut redis::Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn q_err(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
    }
}

fn strings(v: Value) -> Vec<Option<String>> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Value::Nil => None,
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn clients_see_one_redis_whose_keys_live_on_their_slots_primaries() {
    let cluster = ClusterSet::start();
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start(dir.path(), &cluster.url());
    let mut c = r.conn().expect("connect to redoubt");

    // Keys spread over every shard land on their slot's primary.
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let owners: BTreeSet<String> = keys
        .iter()
        .map(|k| cluster.node_of_slot(slot(k)).addr())
        .collect();
    assert_eq!(owners.len(), 3, "the keys cover all three shards");
    for k in &keys {
        assert_eq!(q(&mut c, &["SET", k, &format!("v-{k}")]), Value::Okay);
    }
    for k in keys.iter().step_by(7) {
        assert_eq!(
            on_node(&cluster, k),
            format!("v-{k}"),
            "{k} on its slot's primary"
        );
    }

    // MGET across slots: every value in the order asked, nil for a
    // missing key, the same key twice answered twice.
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.insert(5, "missing:1");
    asked.push("key:3");
    let mut args = vec!["MGET"];
    args.extend(&asked);
    let got = strings(q(&mut c, &args));
    let want: Vec<Option<String>> = asked
        .iter()
        .map(|k| (!k.starts_with("missing")).then(|| format!("v-{k}")))
        .collect();
    assert_eq!(got, want);

    // MSET across slots, then read back on the nodes.
    assert_eq!(
        q(
            &mut c,
            &["MSET", "m:a", "1", "m:b", "2", "m:c", "3", "m:d", "4"]
        ),
        Value::Okay
    );
    for (k, v) in [("m:a", "1"), ("m:b", "2"), ("m:c", "3"), ("m:d", "4")] {
        assert_eq!(on_node(&cluster, k), v);
    }
    // Counts add up over the shards, duplicates counted as Redis counts.
    assert_eq!(
        q(&mut c, &["EXISTS", "m:a", "m:b", "m:a", "nope"]),
        Value::Int(3)
    );
    assert_eq!(q(&mut c, &["TOUCH", "m:a", "m:c", "nope"]), Value::Int(2));
    assert_eq!(q(&mut c, &["DBSIZE"]), Value::Int(304));
    assert_eq!(q(&mut c, &["DEL", "m:a", "m:b", "nope"]), Value::Int(2));
    assert_eq!(q(&mut c, &["UNLINK", "m:c", "m:d"]), Value::Int(2));
    assert_eq!(q(&mut c, &["DBSIZE"]), Value::Int(300));
    let direct_sum: i64 = cluster
        .primaries()
        .iter()
        .map(|n| {
            n.cmd(&["DBSIZE"])
                .trim_start_matches(':')
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(direct_sum, 300);

    // KEYS and a whole SCAN see every key once, from every shard.
    let all: BTreeSet<String> = keys.iter().cloned().collect();
    let listed: BTreeSet<String> = strings(q(&mut c, &["KEYS", "key:*"]))
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(listed, all);
    let mut cursor = "0".to_string();
    let mut scanned = Vec::new();
    let mut pages = 0;
    loop {
        let Value::Array(page) = q(&mut c, &["SCAN", &cursor, "COUNT", "50"]) else {
            panic!("SCAN reply is not an array")
        };
        let [Value::BulkString(next), Value::Array(_)] = page.as_slice() else {
            panic!("SCAN reply {page:?}")
        };
        cursor = String::from_utf8_lossy(next).into_owned();
        scanned.extend(strings(page[1].clone()).into_iter().flatten());
        pages += 1;
        assert!(pages < 1000, "SCAN never ends");
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(scanned.len(), all.len(), "each key once");
    assert_eq!(scanned.into_iter().collect::<BTreeSet<_>>(), all);

    // Other multi-key commands across slots get Redis's own error; with a
    // hash tag they run.
    let cross = q_err(&mut c, &["SUNION", "key:1", "key:2"]);
    assert!(cross.to_lowercase().contains("crossslot"), "{cross}");
    q(&mut c, &["SADD", "{u1}.a", "x", "y"]);
    q(&mut c, &["SADD", "{u1}.b", "y", "z"]);
    let mut union = strings(q(&mut c, &["SUNION", "{u1}.a", "{u1}.b"]));
    union.sort();
    assert_eq!(
        union,
        [Some("x".into()), Some("y".into()), Some("z".into())]
    );

    // Transactions, WATCH and scripts run on their keys' node.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("INCR")
        .arg("{acct}.n")
        .cmd("LPUSH")
        .arg("{acct}.log")
        .arg("one");
    let (n, len): (i64, i64) = tx.query(&mut c).unwrap();
    assert_eq!((n, len), (1, 1));
    assert_eq!(q(&mut c, &["WATCH", "{acct}.n"]), Value::Okay);
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{acct}.n")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(on_node(&cluster, "{acct}.n"), "2");
    let sha = match q(
        &mut c,
        &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    ) {
        Value::BulkString(s) => String::from_utf8(s).unwrap(),
        other => panic!("{other:?}"),
    };
    // Loaded on every primary: EVALSHA works whatever the key's shard.
    for k in ["key:1", "key:2", "key:3", "key:4", "key:5", "key:6"] {
        let got = q(&mut c, &["EVALSHA", &sha, "1", k]);
        assert_eq!(got, Value::BulkString(format!("v-{k}").into_bytes()));
    }
    assert_eq!(
        q(&mut c, &["SCRIPT", "EXISTS", &sha, "0000"]),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );

    // CLUSTER queries: KEYSLOT answered, the rest explained.
    assert_eq!(q(&mut c, &["CLUSTER", "KEYSLOT", "foo"]), Value::Int(12182));
    let e = q_err(&mut c, &["CLUSTER", "NODES"]);
    assert!(e.contains("standalone"), "{e}");

    // A long pipeline over every shard comes back in order.
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("INCRBY").arg(format!("ctr:{}", i % 97)).arg(1);
    }
    let replies: Vec<i64> = p.query(&mut c).unwrap();
    let mut seen: HashMap<usize, i64> = HashMap::new();
    for (i, got) in replies.iter().enumerate() {
        let e = seen.entry(i % 97).or_default();
        *e += 1;
        assert_eq!(*got, *e, "reply {i} out of order");
    }
    assert!(
        !r.log().contains("ERROR"),
        "redoubt logged errors:\n{}",
        r.log()
    );

    // The doctor diagnoses the primary keyless commands go to.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["doctor", &cluster.url()])
        .env_remove("REDOUBT_UPSTREAM")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains(&format!(
            "{} (primary of slot 0 of redis+cluster://",
            cluster.node_of_slot(0).addr()
        )),
        "{out}"
    );
}

#[test]
fn blocking_commands_and_pubsub_go_through() {
    let cluster = ClusterSet::start();
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start(dir.path(), &cluster.url());
    for list in ["jobs:a", "jobs:b", "jobs:c"] {
        let mut waiter = r.conn().unwrap();
        let mut pusher = r.conn().unwrap();
        let handle = std::thread::spawn(move || {
            redis::cmd("BLPOP")
                .arg(list)
                .arg(5)
                .query::<Option<(String, String)>>(&mut waiter)
        });
        // BLPOP holds its own upstream connection: the pusher's LPUSH
        // wakes it once it is blocked on the list's node.
        let node = cluster.node_of_slot(slot(list));
        wait_for(
            "the BLPOP to block on its node",
            Duration::from_secs(5),
            || {
                node.cmd_raw(&["INFO", "clients"])
                    .is_ok_and(|i| i.contains("blocked_clients:1"))
            },
        );
        assert_eq!(q(&mut pusher, &["LPUSH", list, "job-1"]), Value::Int(1));
        let got = handle.join().unwrap().unwrap();
        assert_eq!(got, Some((list.to_string(), "job-1".to_string())));
    }

    // CLIENT UNBLOCK with the id a client learnt through Redoubt reaches
    // the node its BLPOP blocks on, not the node keyless commands go to.
    let list = (0..)
        .map(|i| format!("unblock:{i}"))
        .find(|k| cluster.node_of_slot(slot(k)).addr() != cluster.node_of_slot(0).addr())
        .unwrap();
    let mut waiter = r.conn().unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut waiter).unwrap();
    let l = list.clone();
    let handle = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg(&l)
            .arg(0)
            .query::<Option<(String, String)>>(&mut waiter)
    });
    let node = cluster.node_of_slot(slot(&list));
    wait_for(
        "the BLPOP to block on its node",
        Duration::from_secs(5),
        || {
            node.cmd_raw(&["INFO", "clients"])
                .is_ok_and(|i| i.contains("blocked_clients:1"))
        },
    );
    let mut other = r.conn().unwrap();
    assert_eq!(
        q(&mut other, &["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]),
        Value::Int(1)
    );
    let e = handle.join().unwrap().unwrap_err();
    assert!(
        e.to_string()
            .contains("client unblocked via CLIENT UNBLOCK"),
        "{e}"
    );
    // An id no client of Redoubt has unblocks nobody.
    assert_eq!(
        q(&mut other, &["CLIENT", "UNBLOCK", "999999"]),
        Value::Int(0)
    );

    let client = redis::Client::open(format!("redis://127.0.0.1:{}", r.port)).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pubc = r.conn().unwrap();
    // Pub/sub messages are broadcast over the cluster bus: published
    // through any node, they reach the subscriber.
    wait_for("the subscriber to receive", Duration::from_secs(5), || {
        q(&mut pubc, &["PUBLISH", "news", "hello"]) == Value::Int(1)
    });
    let msg = sub.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");

    // Sharded pub/sub lives on the channel's slot's primary: one that is
    // not slot 0's (where keyless commands go).
    let chan = (0..)
        .map(|k| format!("shard-news-{k}"))
        .find(|c| cluster.node_of_slot(slot(c)).addr() != cluster.node_of_slot(0).addr())
        .unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::{BufRead, Write};
    write!(
        s,
        "*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{chan}\r\n",
        chan.len()
    )
    .unwrap();
    let mut rd = std::io::BufReader::new(s.try_clone().unwrap());
    let mut read_until = |want: &str| {
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            rd.read_line(&mut line)
                .unwrap_or_else(|e| panic!("waiting for {want}: {e}; read {seen:?}"));
            assert!(!line.starts_with('-'), "{line} (read {seen:?})");
            if line.trim_end() == want {
                return;
            }
            seen.push(line);
        }
    };
    read_until("ssubscribe");
    read_until(":1");
    wait_for(
        "the shard subscriber to receive",
        Duration::from_secs(5),
        || q(&mut pubc, &["SPUBLISH", &chan, "sharded hello"]) == Value::Int(1),
    );
    read_until("smessage");
    read_until(&chan);
    read_until("sharded hello");
}

#[test]
fn resharding_under_load_loses_and_fails_no_write() {
    let cluster = ClusterSet::start();
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start(dir.path(), &cluster.url());
    let stop = Arc::new(AtomicBool::new(false));
    let port = r.port;
    // Eight writers INCR counters over every slot; each remembers how many
    // INCRs of each counter were acknowledged. No error is tolerated: the
    // migration's ASK and MOVED must be followed, not shown.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut acked: HashMap<String, i64> = HashMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("n:{w}:{}", i % 500);
                    let v: i64 = redis::cmd("INCR")
                        .arg(&key)
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("INCR {key} failed during resharding: {e}"));
                    let a = acked.entry(key).or_default();
                    *a += 1;
                    assert_eq!(v, *a, "INCR answered {v} after {} acknowledged", *a - 1);
                    i += 1;
                }
                acked
            })
        })
        .collect();
    // Move a third of the first primary's slots to the second, with
    // redis-cli's own resharding (MIGRATE key by key, SETSLOT).
    let primaries = cluster.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard", &from.addr()])
        .args(["--cluster-from", &cluster.id_of(from)])
        .args(["--cluster-to", &cluster.id_of(to)])
        .args([
            "--cluster-slots",
            "2000",
            "--cluster-yes",
            "--cluster-pipeline",
            "10",
        ])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_ok();
    stop.store(true, Ordering::Relaxed);
    let mut total: HashMap<String, i64> = HashMap::new();
    for w in writers {
        for (k, n) in w.join().expect("a writer failed") {
            *total.entry(k).or_default() += n;
        }
    }
    let owners = cluster.slot_owners();
    let moved = total
        .keys()
        .filter(|k| owners[slot(k) as usize].as_deref() == Some(to.addr().as_str()))
        .count();
    assert!(moved > 0, "some counters moved to the other primary");
    let held = read_all(&cluster, total.keys().map(String::as_str));
    for (k, n) in &total {
        assert_eq!(
            held[k.as_str()],
            n.to_string(),
            "{k}: every acknowledged INCR once, on the primary serving it now"
        );
    }
}

/// What a writer learnt of one `SET`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Acked,
    /// Redoubt said the command was not run (its node unreachable).
    NotRun,
    /// Any other error: it may or may not have run.
    Uncertain,
}

#[test]
fn a_killed_primary_fails_only_its_own_slots_until_its_replica_takes_over() {
    // With Redis's default `cluster-require-full-coverage yes`, every node
    // refuses every slot (CLUSTERDOWN) while one is unserved; Redoubt then
    // retries until the deadline. Here the other shards keep serving.
    let mut cluster = ClusterSet::start_with(&["--cluster-require-full-coverage", "no"]);
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start(dir.path(), &cluster.url());
    // The primary of slot 0, where keyless commands (the prober's PING)
    // go: its death must not make Redoubt call the whole cluster down.
    let victim = cluster.node_of_slot(0).addr();
    let victim_slots: Vec<(u16, u16)> = {
        (0..16384u16)
            .filter(|&s| cluster.node_of_slot(s).addr() == victim)
            .fold(Vec::new(), |mut v: Vec<(u16, u16)>, s| {
                match v.last_mut() {
                    Some((_, last)) if *last + 1 == s => *last = s,
                    _ => v.push((s, s)),
                }
                v
            })
    };
    let on_victim = move |key: &str| {
        let s = slot(key);
        victim_slots.iter().any(|&(a, b)| a <= s && s <= b)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let port = r.port;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                // key → (fate, answered at, took)
                let mut log: Vec<(String, Fate, std::time::Instant, Duration)> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w:{w}:{i}");
                    let sent = std::time::Instant::now();
                    let res = redis::cmd("SET").arg(&key).arg(i).query::<Value>(&mut c);
                    let fate = match res {
                        Ok(Value::Okay) => Fate::Acked,
                        Ok(other) => panic!("SET {key} answered {other:?}"),
                        Err(e) if e.to_string().contains("the command was not run") => Fate::NotRun,
                        Err(e) => {
                            if e.is_io_error() || e.is_connection_dropped() {
                                c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                                    .unwrap()
                                    .get_connection()
                                    .unwrap();
                            }
                            Fate::Uncertain
                        }
                    };
                    log.push((key, fate, std::time::Instant::now(), sent.elapsed()));
                    i += 1;
                }
                log
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_node(&victim);
    *killed_at.lock().unwrap() = Some(std::time::Instant::now());
    let killed = std::time::Instant::now();
    cluster.wait_failover(&victim, 0);
    let promoted = std::time::Instant::now();
    // Writes go on until the new primary has taken a good number.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();

    let mut acked_after = 0;
    let mut not_run = 0;
    let mut slowest_elsewhere = Duration::ZERO;
    for (key, fate, at, took) in &logs {
        if !on_victim(key) {
            // Other shards: every write acknowledged, none slow.
            assert_eq!(*fate, Fate::Acked, "{key} on a live shard");
            slowest_elsewhere = slowest_elsewhere.max(*took);
            continue;
        }
        match fate {
            Fate::Acked if *at > promoted => acked_after += 1,
            Fate::NotRun => not_run += 1,
            _ => {}
        }
    }
    assert!(
        not_run > 0,
        "writes to the dead primary's slots were refused meanwhile"
    );
    let after: Vec<String> = logs
        .iter()
        .filter(|(k, _, at, _)| on_victim(k) && *at > promoted)
        .take(5)
        .map(|(k, f, _, took)| format!("{k} {f:?} in {took:?}"))
        .collect();
    assert!(
        acked_after > 0,
        "writes to its slots were acknowledged again once its replica took over; after: {after:?}\n{}",
        r.log()
    );
    // The live shards never waited on the dead one: no reply near the
    // connect timeout (1 s) or the deadline.
    assert!(
        slowest_elsewhere < Duration::from_millis(900),
        "a live shard's write took {slowest_elsewhere:?}"
    );
    // What was acknowledged is there (but for writes the dead primary
    // answered just before the kill, which Redis's asynchronous
    // replication may not have carried); what was refused as not run is
    // not.
    let held = read_all(&cluster, logs.iter().map(|(k, ..)| k.as_str()));
    let mut lost_in_window = 0;
    for (key, fate, at, _) in &logs {
        let now = held[key.as_str()].clone();
        match fate {
            Fate::Acked if now.is_empty() => {
                assert!(
                    on_victim(key)
                        && *at < killed + Duration::from_millis(50)
                        && *at + Duration::from_millis(100) > killed,
                    "acknowledged {key} is missing"
                );
                lost_in_window += 1;
            }
            Fate::Acked => {}
            Fate::NotRun => assert!(
                now.is_empty(),
                "{key} was refused as not run, yet holds {now}"
            ),
            Fate::Uncertain => {}
        }
    }
    assert!(
        lost_in_window < 50,
        "{lost_in_window} writes lost in the kill's window"
    );
    // /status names the failover and the shards, all reachable again.
    let s = r.status()["cluster"].clone();
    let failovers = s["failovers"].as_array().expect("failovers");
    assert_eq!(failovers.len(), 1, "{s}");
    assert_eq!(failovers[0]["from"], victim.as_str(), "{s}");
    assert_eq!(
        failovers[0]["to"].as_str(),
        cluster.owner_of(0).as_deref(),
        "{s}"
    );
    let shards = s["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{s}");
    assert_eq!(
        shards
            .iter()
            .map(|x| x["slot_count"].as_u64().unwrap())
            .sum::<u64>(),
        16384
    );
    assert!(shards.iter().all(|x| x["reachable"] == true), "{s}");
    let (_, metrics) = test_support::http("GET", r.admin, "/metrics");
    assert!(
        metrics.contains("redoubt_cluster_failovers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("redoubt_cluster_slots_unreachable 0"),
        "{metrics}"
    );
    // Redoubt never called the whole cluster down.
    assert!(
        !r.log().contains("to=\"down\""),
        "redoubt went down:\n{}",
        r.log()
    );
}

#[test]
fn durable_keys_of_a_killed_primary_are_served_journaled_and_replayed_to_its_replica() {
    let mut cluster = ClusterSet::start_with(&["--cluster-require-full-coverage", "no"]);
    let dir = tempfile::tempdir().unwrap();
    let r = Redoubt::start_with(
        dir.path(),
        &cluster.url(),
        "[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n",
    );
    // Slot 0's primary: the prober's PING goes there first, and its death
    // must not make Redoubt call the whole cluster down.
    let victim = cluster.node_of_slot(0).addr();
    let owners = cluster.slot_owners();
    let on_victim = move |key: &str| owners[slot(key) as usize].as_deref() == Some(victim.as_str());
    let victim_addr = cluster.node_of_slot(0).addr();
    // Each writer's queue, on the primary that dies.
    let queues: Vec<String> = (0..8)
        .map(|w| {
            (0..)
                .map(|k| format!("d:queue:{w}:{k}"))
                .find(|q| on_victim(q))
                .unwrap()
        })
        .collect();
    // A copy of every primary, streaming, before the primary dies.
    let streaming = |s: &serde_json::Value| {
        s.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|x| x["replica"]["state"] == "streaming"))
    };
    let waited = std::time::Instant::now();
    while !streaming(&r.status()["journal"]["shard_replicas"]) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no streaming replica of each primary: {}\n{}",
            r.status()["journal"],
            r.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let port = r.port;
    // A session store's traffic (write a key, read it back at once) and a
    // queue's (push).
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            let queue = queues[w].clone();
            std::thread::spawn(move || {
                let connect = || {
                    let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
                    c
                };
                let mut c = connect();
                let mut log: Vec<(String, Fate, std::time::Instant, Duration)> = Vec::new();
                let mut misread = Vec::new();
                let mut unread = Vec::new();
                let mut pushes: Vec<(u64, Fate, std::time::Instant)> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("d:{w}:{i}");
                    let sent = std::time::Instant::now();
                    let res = redis::cmd("SET").arg(&key).arg(i).query::<Value>(&mut c);
                    let fate = match res {
                        Ok(Value::Okay) => Fate::Acked,
                        Ok(other) => panic!("SET {key} answered {other:?}"),
                        Err(e) if e.to_string().contains("the command was not run") => Fate::NotRun,
                        Err(e) => {
                            if e.is_io_error() || e.is_connection_dropped() {
                                c = connect();
                            }
                            Fate::Uncertain
                        }
                    };
                    let took = sent.elapsed();
                    if fate == Fate::Acked {
                        match redis::cmd("GET").arg(&key).query::<Option<String>>(&mut c) {
                            Ok(Some(v)) if v == i.to_string() => {}
                            // A write Redis took just before its node died
                            // cannot be read until its replica takes over:
                            // refused, not answered wrong.
                            Err(e) if e.code().is_some() => unread.push(format!("GET {key}: {e}")),
                            other => misread.push(format!("GET {key}: {other:?}")),
                        }
                    }
                    log.push((key, fate, std::time::Instant::now(), took));
                    let res = redis::cmd("RPUSH")
                        .arg(&queue)
                        .arg(i)
                        .query::<Value>(&mut c);
                    let fate = match res {
                        Ok(Value::Int(_)) => Fate::Acked,
                        Ok(other) => panic!("RPUSH {queue} answered {other:?}"),
                        Err(e) if e.to_string().contains("the command was not run") => Fate::NotRun,
                        Err(e) if e.code() == Some("UNAVAILABLE") => Fate::NotRun,
                        Err(e) => {
                            if e.is_io_error() || e.is_connection_dropped() {
                                c = connect();
                            }
                            Fate::Uncertain
                        }
                    };
                    pushes.push((i, fate, std::time::Instant::now()));
                    i += 1;
                }
                (log, misread, unread, pushes)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_node(&victim_addr);
    let killed = std::time::Instant::now();
    // While its slots are down: a consumer blocked on a queue there, and a
    // check-and-set under WATCH, both served locally.
    wait_for("the dead primary seen", Duration::from_secs(5), || {
        r.status()["cluster"]["shards"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["reachable"] == false))
    });
    let jobs = (0..)
        .map(|k| format!("d:jobs:{k}"))
        .find(|k| on_victim(k))
        .unwrap();
    let cas = (0..)
        .map(|k| format!("d:cas:{k}"))
        .find(|k| on_victim(k))
        .unwrap();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let consumer = {
        let (jobs, port) = (jobs.clone(), r.port);
        std::thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_connection()
                .unwrap();
            ready_tx.send(()).unwrap();
            let t = std::time::Instant::now();
            let got: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&jobs)
                .arg(10)
                .query(&mut c)
                .unwrap();
            (got, t.elapsed())
        })
    };
    let mut c = r.conn().unwrap();
    // Pushed well after the consumer sends BLPOP, which then blocks.
    ready.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(q(&mut c, &["RPUSH", &jobs, "job-1"]), Value::Int(1));
    let (got, waited) = consumer.join().unwrap();
    assert_eq!(got, Some((jobs.clone(), "job-1".to_string())));
    assert!(
        waited >= Duration::from_millis(200),
        "BLPOP did not block: {waited:?}"
    );
    assert_eq!(q(&mut c, &["WATCH", &cas]), Value::Okay);
    assert_eq!(q(&mut c, &["GET", &cas]), Value::Nil);
    assert_eq!(q(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(
        q(&mut c, &["SET", &cas, "v1"]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(q(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
    let served_while_down = std::time::Instant::now();
    cluster.wait_failover(&victim_addr, 0);
    let promoted = std::time::Instant::now();
    assert!(served_while_down < promoted);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    let mut unread = Vec::new();
    let mut all_pushes = Vec::new();
    for w in writers {
        let (log, misread, u, pushes) = w.join().unwrap();
        assert!(misread.is_empty(), "a write read back wrong: {misread:?}");
        logs.extend(log);
        unread.extend(u);
        all_pushes.push(pushes);
    }
    assert!(
        unread.len() <= 16,
        "{} reads refused: {unread:?}",
        unread.len()
    );

    // Writes to the dead primary's slots, acknowledged while it was down:
    // served here and journaled.
    let mut acked_while_down = 0;
    let mut refused = Vec::new();
    let mut slowest_elsewhere = Duration::ZERO;
    for (key, fate, at, took) in &logs {
        if !on_victim(key) {
            assert_eq!(*fate, Fate::Acked, "{key} on a live shard");
            slowest_elsewhere = slowest_elsewhere.max(*took);
            continue;
        }
        match fate {
            Fate::Acked if *at > killed + Duration::from_millis(100) && *at < promoted => {
                acked_while_down += 1
            }
            Fate::Acked => {}
            _ => refused.push(format!("{key} {fate:?} at {:?}", at.duration_since(killed))),
        }
    }
    assert!(
        acked_while_down > 100,
        "only {acked_while_down} writes to the dead primary's slots were acknowledged while it was down\n{}",
        r.log()
    );
    // Only commands already on their way when the node died, or sent
    // before a connect to it failed, are refused.
    assert!(
        refused.len() <= 32,
        "{} refused: {refused:?}",
        refused.len()
    );
    assert!(
        slowest_elsewhere < Duration::from_millis(900),
        "a live shard's write took {slowest_elsewhere:?}"
    );

    // The journal goes to the promoted replica, and Redoubt hands the keys
    // back to the cluster.
    wait_for("the journal replayed", Duration::from_secs(60), || {
        let j = r.status()["journal"].clone();
        j["pending_commands"] == 0 && j["serving_locally"] == false
    });
    let j = r.status()["journal"].clone();
    let replayed = j["replay"]["replayed"].as_u64().unwrap();
    assert!(replayed >= acked_while_down, "{j}");
    assert_eq!(j["replay"]["failed"], 0, "{j}");
    eprintln!(
        "acknowledged while the primary was down: {acked_while_down} SETs; refused SETs: {}; refused reads: {}; replayed: {replayed}; failover took {:?}",
        refused.len(),
        unread.len(),
        promoted - killed
    );
    let held = read_all(&cluster, logs.iter().map(|(k, ..)| k.as_str()));
    let mut lost_in_window = 0;
    for (key, fate, at, _) in &logs {
        let now = held[key.as_str()].clone();
        let i = key.rsplit(':').next().unwrap();
        match fate {
            Fate::Acked if now == i => {}
            Fate::Acked => {
                // Redis's asynchronous replication may not have carried a
                // write the dead primary answered just before the kill;
                // nothing Redoubt journaled is lost.
                assert!(
                    now.is_empty()
                        && on_victim(key)
                        && *at < killed + Duration::from_millis(100)
                        && *at + Duration::from_millis(100) > killed,
                    "acknowledged {key} holds {now:?}"
                );
                lost_in_window += 1;
            }
            Fate::NotRun => assert!(
                now.is_empty(),
                "{key} was refused as not run, yet holds {now}"
            ),
            Fate::Uncertain => {}
        }
    }
    assert!(
        lost_in_window < 50,
        "{lost_in_window} writes lost in the kill's window"
    );
    // Each queue holds every push it acknowledged once, in order, and none
    // it refused; pushes while its primary was down were decided on the
    // copy of that primary and replayed onto the promoted replica.
    let mut pushed_while_down = 0;
    let mut pushes_refused = 0;
    for (queue, pushes) in queues.iter().zip(&all_pushes) {
        let node = cluster.node_of_slot(slot(queue)).addr();
        let mut nc = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let items: Vec<u64> = redis::cmd("LRANGE")
            .arg(queue)
            .arg(0)
            .arg(-1)
            .query(&mut nc)
            .unwrap();
        assert!(
            items.windows(2).all(|w| w[0] < w[1]),
            "{queue} holds a push twice or out of order: {items:?}"
        );
        let held: std::collections::HashSet<u64> = items.iter().copied().collect();
        for (i, fate, at) in pushes {
            match fate {
                Fate::Acked if held.contains(i) => {
                    if *at > killed + Duration::from_millis(100) && *at < promoted {
                        pushed_while_down += 1;
                    }
                }
                Fate::Acked => assert!(
                    *at < killed + Duration::from_millis(100)
                        && *at + Duration::from_millis(100) > killed,
                    "acknowledged push {i} to {queue} is missing"
                ),
                Fate::NotRun => {
                    pushes_refused += 1;
                    assert!(
                        !held.contains(i),
                        "push {i} to {queue} was refused, yet is there"
                    );
                }
                Fate::Uncertain => {}
            }
        }
    }
    assert!(
        pushed_while_down > 100,
        "only {pushed_while_down} pushes while the primary was down"
    );
    assert!(pushes_refused <= 32, "{pushes_refused} pushes refused");
    // The consumer's pop and the check-and-set are in the cluster.
    assert_eq!(on_node(&cluster, &cas), "v1");
    assert_eq!(
        cluster.node_of_slot(slot(&jobs)).cmd(&["LLEN", &jobs]),
        ":0"
    );
    // Through Redoubt too, from the cluster now.
    let mut c = r.conn().unwrap();
    let (key, ..) = logs
        .iter()
        .rev()
        .find(|(k, f, at, _)| on_victim(k) && *f == Fate::Acked && *at < promoted)
        .unwrap();
    let i = key.rsplit(':').next().unwrap();
    assert_eq!(
        q(&mut c, &["GET", key]),
        Value::BulkString(i.as_bytes().to_vec())
    );
    // One incident, closed, names the shard, its failover and what was
    // journaled and replayed meanwhile.
    let incidents = || {
        let (code, body) = test_support::http("GET", r.admin, "/incidents");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    wait_for(
        "the shard's incident closed",
        Duration::from_secs(30),
        || {
            let v = incidents();
            v["open"].is_null() && v["recent"].as_array().is_some_and(|r| !r.is_empty())
        },
    );
    let v = incidents();
    let recent = v["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{v}");
    let inc = &recent[0];
    let victim = victim_addr.clone();
    assert!(inc["cause"].as_str().unwrap().contains(&victim), "{inc}");
    assert_eq!(inc["shards"][0]["primary"], victim.as_str(), "{inc}");
    assert_eq!(inc["failovers"][0]["from"], victim.as_str(), "{inc}");
    assert!(
        inc["journaled"].as_u64().unwrap() >= acked_while_down,
        "{inc}"
    );
    assert!(
        inc["replayed"].as_u64().unwrap() >= acked_while_down,
        "{inc}"
    );
    // A copy of each primary now, the promoted one's included; the dead
    // one's link is stopped.
    wait_for(
        "a copy of each primary after the failover",
        Duration::from_secs(30),
        || {
            let s = r.status()["journal"]["shard_replicas"].clone();
            s.as_array().is_some_and(|a| {
                a.len() == 3
                    && a.iter().all(|x| x["primary"] != victim.as_str())
                    && a.iter().all(|x| x["replica"]["state"] == "streaming")
            })
        },
    );
    // The copies' gauges, summed over the primaries: every key written.
    let written =
        (logs.iter().filter(|(_, f, ..)| *f == Fate::Acked).count() - lost_in_window) as f64;
    wait_for(
        "the copies' keys in the metrics",
        Duration::from_secs(10),
        || {
            let (_, m) = test_support::http("GET", r.admin, "/metrics");
            m.lines()
                .find_map(|l| l.strip_prefix("redoubt_replica_keys "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|n| n >= written)
        },
    );
    // The replay checkpoints live on the promoted node, one per slot that
    // had journaled writes. The first write acknowledged after the kill
    // surely was journaled (no replica is promoted that fast); a late one
    // may have gone straight to the new primary before the test saw it
    // promoted, and its slot may then have no checkpoint.
    let node_id = r.status()["node_id"].as_str().unwrap().to_string();
    let (journaled, ..) = logs
        .iter()
        .filter(|(k, f, at, _)| {
            on_victim(k) && *f == Fate::Acked && *at > killed + Duration::from_millis(100)
        })
        .min_by_key(|(_, _, at, _)| *at)
        .unwrap();
    let key_slot = slot(journaled);
    let checkpoint = proxy::replay::slot_key(&node_id, key_slot);
    assert_eq!(slot(&checkpoint), key_slot);
    assert!(
        !on_node(&cluster, &checkpoint).is_empty(),
        "no {checkpoint}"
    );
    assert!(
        !r.log().contains("to=\"down\""),
        "redoubt went down:\n{}",
        r.log()
    );
}

#[test]
fn with_two_redoubts_only_the_lease_holder_takes_a_shards_writes_and_the_other_waits_for_its_replay(
) {
    let mut cluster = ClusterSet::start_with(&["--cluster-require-full-coverage", "no"]);
    let durable = "[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n";
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let writer = Redoubt::start_with(dirs[0].path(), &cluster.url(), durable);
    let holds = |r: &Redoubt| r.status()["journal"]["writer"]["takes_outage_writes"].clone();
    wait_for(
        "the first Redoubt holds the lease",
        Duration::from_secs(10),
        || holds(&writer) == true,
    );
    // A Redoubt reports holding it until Redis says otherwise: the lease
    // key in the cluster shows the first one has claimed it, so the second
    // cannot win the claim.
    wait_for(
        "the first Redoubt claims the lease",
        Duration::from_secs(10),
        || !on_node(&cluster, "redoubt:outage-writer").trim().is_empty(),
    );
    let other = Redoubt::start_with(dirs[1].path(), &cluster.url(), durable);
    wait_for(
        "the second knows it does not",
        Duration::from_secs(10),
        || holds(&other) == false,
    );
    let victim = cluster.node_of_slot(0).addr();
    let key = (0..)
        .map(|k| format!("d:ids:{k}"))
        .find(|k| cluster.node_of_slot(slot(k)).addr() == victim)
        .unwrap();
    for r in [&writer, &other] {
        wait_for("a copy of each primary", Duration::from_secs(30), || {
            r.status()["journal"]["shard_replicas"]
                .as_array()
                .is_some_and(|a| {
                    a.len() == 3 && a.iter().all(|x| x["replica"]["state"] == "streaming")
                })
        });
    }
    let (mut w, mut o) = (writer.conn().unwrap(), other.conn().unwrap());
    assert_eq!(q(&mut w, &["INCR", &key]), Value::Int(1));
    // Both copies have applied it (WAIT counts what a link received).
    let node = cluster.node_of_slot(slot(&key));
    let info = node.cmd(&["INFO", "replication"]);
    let offset: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.parse().ok())
        .unwrap();
    for r in [&writer, &other] {
        wait_for(
            "the copy to apply the INCR",
            Duration::from_secs(10),
            || {
                r.status()["journal"]["shard_replicas"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["primary"] == victim.as_str()).cloned())
                    .and_then(|x| x["replica"]["offset"].as_u64())
                    .is_some_and(|o| o >= offset)
            },
        );
    }
    cluster.kill_node(&victim);
    for r in [&writer, &other] {
        wait_for("the dead primary seen", Duration::from_secs(5), || {
            r.status()["cluster"]["shards"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["reachable"] == false))
        });
    }
    // Only the holder takes the shard's durable writes.
    let refused = q_err(&mut o, &["INCR", &key]);
    assert!(refused.contains("another Redoubt"), "{refused}");
    assert_eq!(q(&mut w, &["INCR", &key]), Value::Int(2));
    cluster.wait_failover(&victim, slot(&key));
    // The other takes writes again only once the holder has replayed its
    // journal: its first INCR that goes through counts the holder's.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        match redis::cmd("INCR").arg(&key).query::<i64>(&mut o) {
            Ok(n) => break n,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still refused: {e}\n{}",
                    other.log()
                );
                assert!(e.to_string().contains("another Redoubt"), "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(
        first, 3,
        "the other Redoubt wrote before the writer's replay"
    );
    assert_eq!(on_node(&cluster, &key), "3");
}
