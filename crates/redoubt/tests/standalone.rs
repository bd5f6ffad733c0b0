//! Standalone mode through the real binary: durable across restarts and
//! kill -9, torn tails dropped and reported, compaction.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_support::{free_port, rss_kib, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

struct Server {
    child: Child,
    port: u16,
    admin: u16,
    log: std::path::PathBuf,
}

impl Server {
    /// SIGTERM, as a supervisor stops it.
    fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let admin = free_port();
    let log = data.with_extension(format!("{port}.log"));
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ])
    .args(["--data-dir", data.to_str().unwrap()])
    .env_remove("REDOUBT_UPSTREAM")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    wait_for(
        "standalone redoubt to listen",
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    // The admin endpoint binds after the data port.
    wait_for(
        "standalone redoubt's admin endpoint to listen",
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", admin)).is_ok(),
    );
    Server {
        child,
        port,
        admin,
        log,
    }
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    /// One command; its reply flattened to text (bulk payloads as is,
    /// array elements joined with ','), or `None` once the server is gone.
    fn cmd(&mut self, args: &[&str]) -> Option<String> {
        self.send(args)?;
        self.reply()
    }

    /// Sends one command without reading its reply.
    fn send(&mut self, args: &[&str]) -> Option<()> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.r.get_mut().write_all(out.as_bytes()).ok()
    }

    fn reply(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().ok()?;
            if n < 0 {
                return Some("(nil)".into());
            }
            let mut body = vec![0u8; n as usize + 2];
            std::io::Read::read_exact(&mut self.r, &mut body).ok()?;
            body.truncate(n as usize);
            return Some(String::from_utf8_lossy(&body).into_owned());
        }
        if let Some(n) = line.strip_prefix('*') {
            let n: i64 = n.parse().ok()?;
            let items: Option<Vec<String>> = (0..n.max(0)).map(|_| self.reply()).collect();
            return Some(items?.join(","));
        }
        Some(line)
    }
}

#[test]
fn writes_survive_a_clean_restart_with_types_and_ttls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let s = start(&data, &[]);
        let mut c = Client::new(s.port);
        assert_eq!(c.cmd(&["SET", "s", "v"]).unwrap(), "+OK");
        assert_eq!(c.cmd(&["INCRBY", "n", "5"]).unwrap(), ":5");
        assert_eq!(c.cmd(&["RPUSH", "l", "a", "b"]).unwrap(), ":2");
        assert_eq!(c.cmd(&["HSET", "h", "f", "1"]).unwrap(), ":1");
        assert_eq!(c.cmd(&["ZADD", "z", "2", "m"]).unwrap(), ":1");
        assert_eq!(c.cmd(&["SET", "ttl", "x", "EX", "1000"]).unwrap(), "+OK");
        assert_eq!(c.cmd(&["SELECT", "3"]).unwrap(), "+OK");
        assert_eq!(c.cmd(&["SET", "in3", "yes"]).unwrap(), "+OK");
        let mut s = s;
        s.terminate();
        assert_eq!(s.child.wait().unwrap().code(), Some(0));
    }
    let s = start(&data, &[]);
    let mut c = Client::new(s.port);
    assert_eq!(c.cmd(&["GET", "s"]).unwrap(), "v");
    assert_eq!(c.cmd(&["GET", "n"]).unwrap(), "5");
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).unwrap(), "a,b");
    assert_eq!(c.cmd(&["HGET", "h", "f"]).unwrap(), "1");
    assert_eq!(c.cmd(&["ZSCORE", "z", "m"]).unwrap(), "2");
    let ttl: i64 = c.cmd(&["TTL", "ttl"]).unwrap()[1..].parse().unwrap();
    assert!(
        (990..=1000).contains(&ttl),
        "the expiry is absolute and kept: {ttl}"
    );
    assert_eq!(c.cmd(&["SELECT", "3"]).unwrap(), "+OK");
    assert_eq!(c.cmd(&["GET", "in3"]).unwrap(), "yes");
    let status = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        status.contains("restored the store from the journal"),
        "{status}"
    );
}

#[test]
fn kill_9_during_concurrent_writes_loses_no_acknowledged_write() {
    kill_9_during_concurrent_writes("always");
}

/// Under `everysec` a write is acknowledged once it is written to the
/// journal file (synced within a second): a killed process, unlike a lost
/// machine, loses none of them.
#[test]
fn kill_9_under_everysec_loses_no_acknowledged_write() {
    kill_9_during_concurrent_writes("everysec");
}

fn kill_9_during_concurrent_writes(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = start(&data, &[("REDOUBT_JOURNAL_FSYNC", fsync)]);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let incr_acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..8 {
        let (acked, incr_acked, stop, port) =
            (acked.clone(), incr_acked.clone(), stop.clone(), s.port);
        threads.push(std::thread::spawn(move || {
            let mut c = Client::new(port);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("k{t}-{i}"), format!("v{i}"));
                match c.cmd(&["SET", &k, &v]) {
                    Some(r) if r == "+OK" => acked.lock().unwrap().push((k, v)),
                    _ => break,
                }
                match c.cmd(&["INCR", "counter"]) {
                    Some(r) if r.starts_with(':') => {
                        incr_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }));
    }
    wait_for(
        "a few thousand acknowledged writes",
        Duration::from_secs(60),
        || acked.lock().unwrap().len() >= 2000,
    );
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // An unacknowledged record cut short by the crash: a torn tail.
    let seg = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[40, 0, 0, 0, 1, 2, 3])
        .unwrap();

    let s2 = start(&data, &[]);
    let log = std::fs::read_to_string(&s2.log).unwrap();
    assert!(log.contains("torn"), "the torn tail is reported: {log}");
    let mut c = Client::new(s2.port);
    let acked = acked.lock().unwrap().clone();
    for (k, v) in &acked {
        assert_eq!(
            c.cmd(&["GET", k]).as_deref(),
            Some(v.as_str()),
            "acknowledged write {k} lost"
        );
    }
    let counter: u64 = c.cmd(&["GET", "counter"]).unwrap().parse().unwrap();
    let ok = incr_acked.load(Ordering::Relaxed);
    // Each of the 8 clients may have had one INCR in flight at the kill.
    assert!(
        counter >= ok && counter <= ok + 8,
        "counter {counter}, acknowledged {ok}"
    );
    eprintln!(
        "{} acknowledged SETs and {ok} INCRs all present after kill -9",
        acked.len()
    );
}

#[test]
fn compaction_shrinks_the_journal_and_keeps_the_data() {
    // A segment deleted between the listing and its size counts nothing.
    fn segment_bytes(data: &std::path::Path) -> u64 {
        std::fs::read_dir(data.join("journal"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("REDOUBT_JOURNAL_COMPACT_MIN_BYTES", "65536"),
        ("REDOUBT_JOURNAL_FSYNC", "no"),
    ];
    {
        let s = start(&data, &env);
        let mut c = Client::new(s.port);
        // Overwrite a few keys many times: the journal grows, the data not.
        for i in 0..5000 {
            assert_eq!(
                c.cmd(&["SET", &format!("k{}", i % 10), &format!("{i:0>64}")])
                    .unwrap(),
                "+OK"
            );
        }
        // A compaction that ran early (a slow machine) leaves the SETs
        // after it in segments until the next one: wait for the journal to
        // be smaller than the writes.
        wait_for(
            "a compaction leaving less than the writes",
            Duration::from_secs(20),
            || {
                let snap = std::fs::read_dir(data.join("journal"))
                    .unwrap()
                    .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".snap"));
                snap && segment_bytes(&data) < 5000 * 64
            },
        );
        // Clients were never stalled: writes go on during and after it.
        assert_eq!(c.cmd(&["SET", "after", "1"]).unwrap(), "+OK");
    }
    let s = start(&data, &[]);
    let mut c = Client::new(s.port);
    for k in 0..10 {
        let v = c.cmd(&["GET", &format!("k{k}")]).unwrap();
        assert_eq!(v, format!("{:0>64}", 4990 + k), "k{k}");
    }
    assert_eq!(c.cmd(&["GET", "after"]).unwrap(), "1");
    let seg_bytes = segment_bytes(&data);
    assert!(
        seg_bytes < 5000 * 64,
        "old segments were replaced by the snapshot: {seg_bytes} bytes left"
    );
    let _ = s.admin;
}

#[test]
fn pubsub_blocking_pops_and_active_expiry_work_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let mut sub = Client::new(s.port);
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "news"]).unwrap(),
        "subscribe,news,:1"
    );
    let mut c = Client::new(s.port);
    assert_eq!(c.cmd(&["PUBLISH", "news", "hi"]).unwrap(), ":1");
    assert_eq!(sub.reply().unwrap(), "message,news,hi");

    // BLPOP blocks until another client pushes.
    let port = s.port;
    let waiter = std::thread::spawn(move || Client::new(port).cmd(&["BLPOP", "q", "5"]));
    wait_for("the BLPOP to block", Duration::from_secs(5), || {
        c.cmd(&["INFO", "clients"])
            .is_some_and(|i| i.contains("blocked_clients:1"))
    });
    assert_eq!(c.cmd(&["RPUSH", "q", "job"]).unwrap(), ":1");
    assert_eq!(waiter.join().unwrap().unwrap(), "q,job");

    // Active expiry removes keys nobody reads.
    assert_eq!(c.cmd(&["SET", "short", "x", "PX", "50"]).unwrap(), "+OK");
    wait_for("active expiry", Duration::from_secs(5), || {
        c.cmd(&["DBSIZE"]).as_deref() == Some(":0")
    });
}

#[test]
fn logins_protected_mode_and_a_client_that_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    // Protected mode: reachable from other hosts without users.
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", dir.path().join("open").to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a configuration Redoubt refuses"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("protected mode"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `[auth]` users: nothing runs before AUTH.
    let port = free_port();
    let conf = dir.path().join("redoubt.toml");
    // sha256("s3cret")
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[auth]\nmode = \"local\"\nusers = [{{ name = \"app\", password_sha256 = \"{}\" }}]\n",
            dir.path().join("data").display(),
            free_port(),
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", conf.to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("redoubt to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut c = Client::new(port);
    assert_eq!(
        c.cmd(&["SET", "k", "v"]).as_deref(),
        Some("-NOAUTH Authentication required.")
    );
    assert!(c
        .cmd(&["HELLO", "3"])
        .unwrap()
        .starts_with("-NOAUTH HELLO must be called"));
    assert!(c
        .cmd(&["AUTH", "app", "nope"])
        .unwrap()
        .starts_with("-WRONGPASS"));
    assert!(c
        .cmd(&["CONFIG", "SET", "requirepass", "x"])
        .unwrap()
        .starts_with("-ERR requirepass cannot be set"));
    assert_eq!(c.cmd(&["AUTH", "app", "s3cret"]).as_deref(), Some("+OK"));
    // ACL speaks of the configured users, in Redis's words.
    let sha = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).as_deref(), Some("app"));
    assert_eq!(c.cmd(&["ACL", "USERS"]).as_deref(), Some("app"));
    assert_eq!(
        c.cmd(&["ACL", "LIST"]),
        Some(format!("user app on #{sha} ~* &* +@all"))
    );
    assert_eq!(
        c.cmd(&["ACL", "GETUSER", "app"]),
        Some(format!(
            "flags,on,passwords,{sha},commands,+@all,keys,~*,channels,&*,selectors,"
        ))
    );
    assert_eq!(
        c.cmd(&["ACL", "DRYRUN", "app", "SET", "k", "v"]).as_deref(),
        Some("+OK")
    );
    assert!(c
        .cmd(&["ACL", "SETUSER", "app", "off"])
        .unwrap()
        .starts_with("-ERR ACL SETUSER: standalone Redoubt's users are the [auth] users"));
    let big = "x".repeat(1 << 20);
    assert_eq!(c.cmd(&["SET", "big", &big]).as_deref(), Some("+OK"));
    assert_eq!(c.cmd(&["RESET"]).as_deref(), Some("+RESET"));
    assert_eq!(
        c.cmd(&["GET", "k"]).as_deref(),
        Some("-NOAUTH Authentication required.")
    );

    // A client pipelining 2000 reads of a 1 MiB value and reading none of
    // the replies: Redoubt holds about one batch of them, not 2 GiB.
    let before = rss_kib(child.id());
    let mut greedy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = String::from("*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\ns3cret\r\n");
    for _ in 0..2000 {
        req.push_str("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    greedy.write_all(req.as_bytes()).unwrap();
    let mut peak = 0;
    for _ in 0..40 {
        peak = peak.max(rss_kib(child.id()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak < before + 256 * 1024,
        "RSS grew from {before} KiB to {peak} KiB for a client that reads nothing"
    );
    let mut other = Client::new(port);
    assert_eq!(
        other.cmd(&["PING"]).as_deref(),
        Some("-NOAUTH Authentication required.")
    );
    drop(greedy);
    let _ = child.kill();
    let _ = child.wait();
}

fn admin_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
    raw
}

#[test]
fn a_full_journal_refuses_writes_visibly_in_readyz_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("data"),
        &[("REDOUBT_JOURNAL_MAX_BYTES", "64KiB")],
    );
    let mut c = Client::new(s.port);
    assert!(admin_get(s.admin, "/readyz").contains("\"degraded\":false"));
    let value = "v".repeat(4096);
    let mut refused = None;
    for i in 0..64 {
        let r = c.cmd(&["SET", &format!("k{i}"), &value]).unwrap();
        if r != "+OK" {
            refused = Some((i, r));
            break;
        }
    }
    let (i, text) = refused.expect("a 64 KiB journal refuses writes before 256 KiB");
    assert!(text.starts_with("-ERR journal full"), "{text}");
    // Refused, so never readable; reads go on.
    assert_eq!(c.cmd(&["GET", &format!("k{i}")]).as_deref(), Some("(nil)"));
    assert_eq!(c.cmd(&["GET", "k0"]).as_deref(), Some(value.as_str()));
    let ready = admin_get(s.admin, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains("\"degraded\":true") && ready.contains("writes refused: journal full"),
        "{ready}"
    );
    let metrics = admin_get(s.admin, "/metrics");
    assert!(
        metrics.contains("redoubt_writes_refused_total{reason=\"journal-full\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_write_the_journal_refuses_after_it_ran_is_undone_and_never_readable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("REDOUBT_JOURNAL_MAX_BYTES", "64KiB")];
    let s = start(&data, &env);
    let mut c = Client::new(s.port);
    assert_eq!(c.cmd(&["SET", "counter", "1"]).as_deref(), Some("+OK"));
    assert_eq!(c.cmd(&["RPUSH", "queue", "a"]).as_deref(), Some(":1"));
    // A transaction is one journal record, known only once it ran: two
    // 40 KiB values do not fit a 64 KiB journal.
    let value = "v".repeat(40 << 10);
    assert_eq!(c.cmd(&["MULTI"]).as_deref(), Some("+OK"));
    assert_eq!(c.cmd(&["SET", "t1", &value]).as_deref(), Some("+QUEUED"));
    assert_eq!(c.cmd(&["INCR", "counter"]).as_deref(), Some("+QUEUED"));
    assert_eq!(c.cmd(&["RPUSH", "queue", "b"]).as_deref(), Some("+QUEUED"));
    assert_eq!(c.cmd(&["SET", "t2", &value]).as_deref(), Some("+QUEUED"));
    let exec = c.cmd(&["EXEC"]).unwrap();
    assert!(exec.starts_with("-ERR journal full"), "{exec}");
    // None of it is readable, from this client or another.
    let mut other = Client::new(s.port);
    for cl in [&mut c, &mut other] {
        assert_eq!(cl.cmd(&["GET", "t1"]).as_deref(), Some("(nil)"));
        assert_eq!(cl.cmd(&["GET", "counter"]).as_deref(), Some("1"));
        assert_eq!(
            cl.cmd(&["LRANGE", "queue", "0", "-1"]).as_deref(),
            Some("a")
        );
    }
    // Writes that fit go on, on top of what is durable.
    assert_eq!(c.cmd(&["INCR", "counter"]).as_deref(), Some(":2"));
    let metrics = admin_get(s.admin, "/metrics");
    assert!(
        metrics.contains("redoubt_writes_refused_total{reason=\"journal-full\"} 1"),
        "{metrics}"
    );
    drop(s);
    // After a restart the data is what the clients were told.
    let s = start(&data, &env);
    let mut c = Client::new(s.port);
    assert_eq!(c.cmd(&["GET", "counter"]).as_deref(), Some("2"));
    assert_eq!(c.cmd(&["EXISTS", "t1", "t2"]).as_deref(), Some(":0"));
    assert_eq!(c.cmd(&["LRANGE", "queue", "0", "-1"]).as_deref(), Some("a"));
}

/// Redis's "XREAD: XADD + DEL + LPUSH should not awake client": woken by a
/// write that leaves its key a list, a blocked XREAD keeps waiting (no
/// WRONGTYPE) and is served by the next stream under that name.
#[test]
fn a_blocked_xread_waits_through_its_key_holding_another_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let mut reader = Client::new(s.port);
    let mut c = Client::new(s.port);
    let mut req = String::new();
    for a in ["XREAD", "BLOCK", "10000", "STREAMS", "s1", "$"] {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    reader
        .r
        .get_mut()
        .write_all(format!("*6\r\n{req}").as_bytes())
        .unwrap();
    wait_for("the XREAD to block", Duration::from_secs(5), || {
        c.cmd(&["INFO", "clients"])
            .is_some_and(|i| i.contains("blocked_clients:1"))
    });
    for cmd in [
        &["MULTI"][..],
        &["XADD", "s1", "*", "old", "abcd1234"],
        &["DEL", "s1"],
        &["LPUSH", "s1", "foo", "bar"],
        &["EXEC"],
        &["DEL", "s1"],
        &["XADD", "s1", "*", "new", "abcd1234"],
    ] {
        c.cmd(cmd).unwrap();
    }
    let got = reader.reply().unwrap();
    assert!(got.contains("new") && !got.contains("old"), "{got}");
}

/// Redis's "Blocking XREADGROUP: key type changed with SET": a consumer
/// blocked on a stream that SET overwrites is told at once.
#[test]
fn a_blocked_xreadgroup_is_told_when_set_overwrites_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let mut reader = Client::new(s.port);
    let mut c = Client::new(s.port);
    c.cmd(&["XADD", "mystream", "666", "f", "v"]).unwrap();
    c.cmd(&["XGROUP", "CREATE", "mystream", "mygroup", "$"])
        .unwrap();
    let args = [
        "XREADGROUP",
        "GROUP",
        "mygroup",
        "Alice",
        "BLOCK",
        "0",
        "STREAMS",
        "mystream",
        ">",
    ];
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    reader.r.get_mut().write_all(req.as_bytes()).unwrap();
    wait_for("the XREADGROUP to block", Duration::from_secs(5), || {
        c.cmd(&["INFO", "clients"])
            .is_some_and(|i| i.contains("blocked_clients:1"))
    });
    assert_eq!(c.cmd(&["SET", "mystream", "val1"]).as_deref(), Some("+OK"));
    let got = reader.reply().unwrap();
    assert!(got.contains("no longer exists"), "{got}");

    // "Blocking XREADGROUP: flushed DB": FLUSHALL tells it the same, and a
    // plain XREAD blocked beside it goes on waiting.
    c.cmd(&["DEL", "mystream"]).unwrap();
    c.cmd(&["XGROUP", "CREATE", "mystream", "mygroup", "$", "MKSTREAM"])
        .unwrap();
    let mut plain = Client::new(s.port);
    plain
        .send(&["XREAD", "BLOCK", "0", "STREAMS", "other", "$"])
        .unwrap();
    reader.send(&args).unwrap();
    wait_for("both reads to block", Duration::from_secs(5), || {
        c.cmd(&["INFO", "clients"])
            .is_some_and(|i| i.contains("blocked_clients:2"))
    });
    assert_eq!(c.cmd(&["FLUSHALL"]).as_deref(), Some("+OK"));
    let got = reader.reply().unwrap();
    assert!(got.contains("no longer exists"), "{got}");
    assert_eq!(
        c.cmd(&["XADD", "other", "1-1", "f", "v"]).as_deref(),
        Some("1-1")
    );
    assert_eq!(plain.reply().as_deref(), Some("other,1-1,f,v"));
}

/// The server commands standalone answers itself (ACL with no users
/// configured: Redis's `default`), reply for reply against a fresh
/// redis-server.
#[test]
fn acl_and_server_commands_answer_as_a_fresh_redis_does() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let redis = test_support::RedisServer::new();
    let mut ours = Client::new(s.port);
    let mut theirs = Client::new(redis.port());
    for cmd in [
        &["ACL", "WHOAMI"][..],
        &["ACL", "USERS"],
        &["ACL", "LIST"],
        &["ACL", "GETUSER", "default"],
        &["ACL", "GETUSER", "nobody"],
        &["ACL", "CAT"],
        &["ACL", "CAT", "string"],
        &["ACL", "CAT", "dangerous"],
        &["ACL", "CAT", "nosuch"],
        &["ACL", "DRYRUN", "default", "SET", "k", "v"],
        &["ACL", "DRYRUN", "default", "GET"],
        &["ACL", "DRYRUN", "nobody", "GET", "k"],
        &["ACL", "DRYRUN", "default", "NOCMD", "k"],
        &["ACL", "LOG"],
        &["ACL", "LOG", "RESET"],
        &["ACL", "GENPASS", "0"],
        &["ACL", "WHOAMI", "extra"],
        &["SLOWLOG", "LEN"],
        &["SLOWLOG", "GET"],
        &["SLOWLOG", "RESET"],
        &["LATENCY", "LATEST"],
        &["LATENCY", "RESET"],
        &["WAIT", "0", "0"],
        &["FAILOVER"],
        &["CLIENT", "NO-EVICT", "on"],
        &["COMMAND", "INFO", "echo", "acl|cat"],
    ] {
        let (mut a, mut b) = (ours.cmd(cmd).unwrap(), theirs.cmd(cmd).unwrap());
        if cmd.starts_with(&["ACL", "CAT"]) {
            // Redis lists a category's commands in its hash table's order.
            let sorted = |s: &str| {
                let mut v: Vec<&str> = s.split(',').collect();
                v.sort();
                v.join(",")
            };
            (a, b) = (sorted(&a), sorted(&b));
        }
        assert_eq!(a, b, "{cmd:?}");
    }
    let pass = ours.cmd(&["ACL", "GENPASS", "10"]).unwrap();
    assert!(
        pass.len() == 3 && pass.bytes().all(|b| b.is_ascii_hexdigit()),
        "{pass}"
    );
    assert_eq!(ours.cmd(&["ACL", "GENPASS"]).unwrap().len(), 64);
}

/// A script past busy-reply-threshold leaves the server answering: other
/// clients, connected before or during it, get BUSY; FUNCTION STATS and
/// FUNCTION KILL work; SIGTERM ends a server whose script never does.
#[test]
fn a_busy_script_leaves_the_server_answering_busy_and_killable() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(&dir.path().join("data"), &[]);
    let mut scripter = Client::new(s.port);
    let mut other = Client::new(s.port);
    assert_eq!(
        other
            .cmd(&["CONFIG", "SET", "busy-reply-threshold", "50"])
            .as_deref(),
        Some("+OK")
    );
    let lib = "#!lua name=spin\nredis.register_function('spin', function(KEYS, ARGV) local a = 1 while true do a = a + 1 end end)";
    assert_eq!(
        other.cmd(&["FUNCTION", "LOAD", lib]).as_deref(),
        Some("spin")
    );
    scripter.send(&["FCALL", "spin", "0"]).unwrap();
    let busy =
        "-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
    wait_for("PING to answer BUSY", Duration::from_secs(10), || {
        other.cmd(&["PING"]).as_deref() == Some(busy)
    });
    let mut late = Client::new(s.port);
    assert_eq!(
        late.cmd(&["GET", "k"]).as_deref(),
        Some(busy),
        "a client connecting meanwhile"
    );
    drop(late);
    // A script busy for longer than the background work's periods
    // (compaction checks every 500 ms, active expiry every 100 ms): none
    // of it parks the thread that answers BUSY, nor does /status.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(other.cmd(&["PING"]).as_deref(), Some(busy));
    let status = admin_get(s.admin, "/status");
    assert!(status.contains("\"keys\":null"), "{status}");
    let stats = other.cmd(&["FUNCTION", "STATS"]).unwrap();
    assert!(
        stats.starts_with("running_script,name,spin,command,FCALL,spin,0,duration_ms,"),
        "{stats}"
    );
    assert_eq!(other.cmd(&["FUNCTION", "KILL"]).as_deref(), Some("+OK"));
    assert_eq!(
        scripter.reply().as_deref(),
        Some("-ERR Script killed by user with SCRIPT KILL... script: spin, on @user_function:2.")
    );
    assert_eq!(other.cmd(&["PING"]).as_deref(), Some("+PONG"));

    // An EVAL that never ends does not keep SIGTERM from ending the server.
    scripter.send(&["EVAL", "while true do end", "0"]).unwrap();
    wait_for("PING to answer BUSY", Duration::from_secs(10), || {
        other.cmd(&["PING"]).is_some_and(|r| r.starts_with("-BUSY"))
    });
    s.terminate();
    wait_for(
        "redoubt to exit on SIGTERM",
        Duration::from_secs(15),
        || matches!(s.child.try_wait(), Ok(Some(_))),
    );
}

/// A command sent while another client's script runs (under the
/// threshold) waits for it and is journaled after it: the order a restart
/// replays is the order the clients were answered in.
#[test]
fn a_command_waiting_on_a_script_is_journaled_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut s = start(&data, &[]);
        let mut scripter = Client::new(s.port);
        let mut other = Client::new(s.port);
        scripter
            .send(&[
                "EVAL",
                "redis.call('SET', KEYS[1], '1') local a = 0 for i = 1, 20000000 do a = a + 1 end return a",
                "1",
                "k",
            ])
            .unwrap();
        // Sent while the script runs (or before it, which is also fine).
        assert_eq!(other.cmd(&["INCR", "k"]).as_deref(), Some(":2"));
        assert_eq!(scripter.reply().as_deref(), Some(":20000000"));
        s.terminate();
        assert_eq!(s.child.wait().unwrap().code(), Some(0));
    }
    let s = start(&data, &[]);
    let mut c = Client::new(s.port);
    assert_eq!(c.cmd(&["GET", "k"]).as_deref(), Some("2"));
}

/// CLIENT REPLY OFF/SKIP/ON silence exactly what Redis silences (the
/// writes still happen), and CLIENT PAUSE WRITE holds a writer, shown
/// blocked, while readers go on, until CLIENT UNPAUSE: the same byte
/// stream sent to Redis and to standalone Redoubt.
#[test]
fn client_reply_and_client_pause_behave_as_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let redis = test_support::RedisServer::new();
    for port in [redis.port(), s.port] {
        let mut c = Client::new(port);
        let seq: &[&[&str]] = &[
            &["CLIENT", "REPLY", "OFF"],
            &["SET", "a", "1"],
            &["GET", "a"],
            &["CLIENT", "REPLY", "ON"],
            &["GET", "a"],
            &["CLIENT", "REPLY", "SKIP"],
            &["SET", "b", "2"],
            &["GET", "b"],
            &["CLIENT", "REPLY", "maybe"],
            &["PING"],
        ];
        for cmd in seq {
            c.send(cmd).unwrap();
        }
        let mut replies = Vec::new();
        loop {
            let r = c.reply().unwrap();
            let done = r == "+PONG";
            replies.push(r);
            if done {
                break;
            }
        }
        assert_eq!(
            replies,
            ["+OK", "1", "2", "-ERR syntax error", "+PONG"],
            "port {port}"
        );

        let mut pauser = Client::new(port);
        let mut writer = Client::new(port);
        let mut reader = Client::new(port);
        assert_eq!(
            pauser.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]).unwrap(),
            "+OK"
        );
        writer.send(&["SET", "a", "paused"]).unwrap();
        wait_for(
            "the paused writer to show as blocked",
            Duration::from_secs(10),
            || {
                reader
                    .cmd(&["INFO", "clients"])
                    .is_some_and(|i| i.contains("blocked_clients:1"))
            },
        );
        assert_eq!(reader.cmd(&["GET", "a"]).unwrap(), "1", "port {port}");
        // The writer has not been answered: its reply would be waiting.
        writer.r.get_ref().set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let pending = std::io::Read::read(writer.r.get_mut(), &mut probe);
        assert!(
            matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "port {port}: {pending:?}"
        );
        writer.r.get_ref().set_nonblocking(false).unwrap();
        assert_eq!(pauser.cmd(&["CLIENT", "UNPAUSE"]).unwrap(), "+OK");
        assert_eq!(writer.reply().unwrap(), "+OK", "port {port}");
        assert_eq!(reader.cmd(&["GET", "a"]).unwrap(), "paused", "port {port}");
    }
}
