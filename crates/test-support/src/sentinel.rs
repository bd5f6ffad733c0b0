//! A Sentinel-managed Redis for tests: one primary, two replicas and three
//! Sentinels (`redis-server --sentinel`), all real processes on free
//! loopback ports, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use crate::{free_port, wait_for, RedisServer};

/// The master's name in the Sentinels' configuration.
pub const MASTER: &str = "mymaster";
/// The Sentinels' own password (`requirepass`, and `sentinel sentinel-pass`
/// for talking to each other): clients must log in to them.
pub const SENTINEL_PASSWORD: &str = "sentinel-secret";

/// One `redis-server --sentinel`.
pub struct SentinelProc {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl SentinelProc {
    fn start(primary_port: u16, down_after_ms: u64) -> SentinelProc {
        let dir = tempfile::tempdir().expect("temp dir for sentinel");
        let mut s = SentinelProc {
            child: None,
            port: free_port(),
            dir,
        };
        let conf = s.dir.path().join("sentinel.conf");
        // Sentinel rewrites its file: it must be writable and its own.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel.log\n\
                 requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} {down_after_ms}\n\
                 sentinel failover-timeout {MASTER} 10000\n\
                 sentinel parallel-syncs {MASTER} 2\n",
                port = s.port,
                dir = s.dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        s.child = Some(child);
        let port = s.port;
        wait_for(
            &format!("sentinel on port {port}"),
            Duration::from_secs(10),
            || query_as(port, Some(SENTINEL_PASSWORD), &["PING"]).is_ok_and(|r| r == ["PONG"]),
        );
        s
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a command against this Sentinel, logged in: the reply
    /// flattened (arrays opened, nil as an empty string); empty when it
    /// does not answer.
    pub fn cmd(&self, args: &[&str]) -> Vec<String> {
        query_as(self.port, Some(SENTINEL_PASSWORD), args).unwrap_or_default()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One primary, two replicas, three Sentinels.
pub struct SentinelSet {
    /// Index 0 starts as the primary.
    pub servers: Vec<RedisServer>,
    /// The Sentinels.
    pub sentinels: Vec<SentinelProc>,
}

impl SentinelSet {
    /// Starts everything and waits until every Sentinel sees both
    /// replicas and both other Sentinels. `down_after_ms` is Sentinel's
    /// `down-after-milliseconds` (how long a dead primary goes unnoticed).
    pub fn start(down_after_ms: u64) -> SentinelSet {
        let primary = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let mut servers = vec![primary];
        for _ in 0..2 {
            servers.push(RedisServer::start(&[
                "--replicaof",
                "127.0.0.1",
                &port,
                "--repl-diskless-sync-delay",
                "0",
            ]));
        }
        for r in &servers[1..] {
            wait_for("replica linked", Duration::from_secs(20), || {
                r.cmd(&["INFO", "replication"])
                    .contains("master_link_status:up")
            });
        }
        let sentinels = (0..3)
            .map(|_| SentinelProc::start(servers[0].port(), down_after_ms))
            .collect();
        let set = SentinelSet { servers, sentinels };
        set.wait_settled();
        set
    }

    /// Waits until every running Sentinel knows the primary, two
    /// replicas and the other running Sentinels.
    pub fn wait_settled(&self) {
        let running: Vec<&SentinelProc> =
            self.sentinels.iter().filter(|s| s.is_running()).collect();
        let others = running.len() - 1;
        for s in &running {
            wait_for(
                "sentinels to know each other and the replicas",
                Duration::from_secs(30),
                || {
                    let m = s.cmd(&["SENTINEL", "master", MASTER]);
                    field(&m, "num-other-sentinels") == Some(others.to_string())
                        && field(&m, "num-slaves")
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| n >= 2)
                },
            );
        }
    }

    /// `redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The primary's port as the first running Sentinel names it.
    pub fn primary_port(&self) -> u16 {
        let s = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .expect("a running sentinel");
        let r = s.cmd(&["SENTINEL", "get-master-addr-by-name", MASTER]);
        r.get(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no primary from sentinel: {r:?}"))
    }

    /// The server the Sentinels name as primary.
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.server(port)
    }

    /// The server on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("one of the set's servers")
    }

    /// Mutable, for kills.
    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("one of the set's servers")
    }

    /// Waits until the Sentinels name a primary other than `old` and it
    /// answers `ROLE master`; returns its port.
    pub fn wait_failover_from(&self, old: u16, timeout: Duration) -> u16 {
        let mut new = 0;
        wait_for("sentinel failover", timeout, || {
            new = self.primary_port();
            new != old
                && query(new, &["ROLE"]).is_ok_and(|r| r.first().is_some_and(|x| x == "master"))
        });
        new
    }
}

/// A field of `SENTINEL master` (names and values alternate).
fn field(reply: &[String], name: &str) -> Option<String> {
    reply
        .chunks(2)
        .find(|kv| kv[0] == name)
        .and_then(|kv| kv.get(1).cloned())
}

/// One command on a new connection; the reply flattened.
pub fn query(port: u16, args: &[&str]) -> std::io::Result<Vec<String>> {
    query_as(port, None, args)
}

/// [`query`], after `AUTH password` when given (its reply dropped).
pub fn query_as(port: u16, password: Option<&str>, args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    let mut encode = |args: &[&str]| {
        out.push_str(&format!("*{}\r\n", args.len()));
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    };
    if let Some(p) = password {
        encode(&["AUTH", p]);
    }
    encode(args);
    s.write_all(out.as_bytes())?;
    let mut r = BufReader::new(s);
    if password.is_some() {
        read_reply(&mut r, &mut Vec::new())?;
    }
    let mut flat = Vec::new();
    read_reply(&mut r, &mut flat)?;
    Ok(flat)
}

fn read_reply(r: &mut impl BufRead, flat: &mut Vec<String>) -> std::io::Result<()> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "*" => {
            let n: i64 = rest.parse().unwrap_or(-1);
            for _ in 0..n.max(0) {
                read_reply(r, flat)?;
            }
        }
        "$" => {
            let n: i64 = rest.parse().unwrap_or(-1);
            if n < 0 {
                flat.push(String::new());
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                flat.push(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        "-" => flat.push(line.to_string()),
        _ => flat.push(rest.to_string()),
    }
    Ok(())
}
