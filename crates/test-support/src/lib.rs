//! Test fixtures: real `redis-server` processes on free ports, and the
//! faults tests inflict on them (SIGKILL, SIGSTOP/SIGCONT, restart on the
//! same port and data, unwritable persistence dir).
//!
//! Only for tests (`[dev-dependencies]`); nothing here is mocked.
//!
//! # Layout
//! - [`RedisServer`]: one `redis-server` child process.
//! - [`free_port`]: a loopback port nobody listens on.
//! - [`wait_for`]: poll a condition until it holds or a deadline passes.
//! - [`http`]: one HTTP request to a local port (Redoubt's admin endpoint).
//! - [`send_command`]: one RESP command on a fresh connection, first reply line.
//! - [`pki`]: test certificates ([`pki::TestPki`]) for TLS tests, and
//!   [`RedisServer::start_tls`] for a Redis with a TLS port.
//! - [`sentinel`]: [`sentinel::SentinelSet`], a primary, two replicas and
//!   three Sentinels.
//! - [`cluster`]: [`cluster::ClusterSet`], three primaries and three
//!   replicas joined into a Redis Cluster.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod pki;
pub mod sentinel;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Resident memory of process `pid`, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A port on 127.0.0.1 that refuses connections and goes on refusing
/// them: 1 (tcpmux), which nothing here listens on. A port from
/// [`free_port`] is free only a moment: a test that wants Redis
/// unreachable there can find another test's server on it, or the
/// listener of the process it started.
pub fn refused_port() -> u16 {
    const PORT: u16 = 1;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", PORT)).is_err(),
        "something listens on 127.0.0.1:{PORT}; these tests need it closed"
    );
    PORT
}

/// Polls `cond` every few milliseconds until it is true; panics with `what`
/// after `timeout`. For conditions that have no event to await (another
/// process's state), never as a stand-in for one that has.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One `method path` request to 127.0.0.1:`port`; returns the status code
/// and the body. Enough HTTP for Redoubt's admin endpoint, no more.
pub fn http(method: &str, port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP port");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send the HTTP request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the HTTP response");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {raw:?}"));
    (
        code,
        raw.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

/// Sends one RESP command to 127.0.0.1:`port` on a new connection and
/// returns the first line of the reply, without its CRLF.
pub fn send_command(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RESP port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).expect("send the command");
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .expect("read the reply");
    line.trim_end().to_string()
}

/// A `redis-server` child on a free loopback port, with its own data dir.
/// Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence; `extra` are more
    /// `--option value` arguments (e.g. `["--requirepass", "s3cret"]`).
    pub fn start(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls_port: None,
        };
        s.spawn_on_free_ports();
        s
    }

    /// Starts with a TLS port as well, serving `cert` (signed by the
    /// PKI's CA, which also verifies client certificates). The plain port
    /// stays open for the fixture's own commands ([`cmd`](Self::cmd),
    /// [`raw_ping`](Self::raw_ping)); tests point Redoubt at
    /// [`tls_port`](Self::tls_port). With `auth_clients`, clients must
    /// present a certificate (`--tls-auth-clients yes`).
    pub fn start_tls(
        pki: &crate::pki::TestPki,
        cert: &crate::pki::CertFiles,
        auth_clients: bool,
        extra: &[&str],
    ) -> RedisServer {
        let tls_port = free_port();
        let mut args: Vec<String> = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.cert.display().to_string(),
            "--tls-key-file".into(),
            cert.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            pki.ca.display().to_string(),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis-server"),
            extra: args,
            tls_port: Some(tls_port),
        };
        s.spawn_on_free_ports();
        s
    }

    /// The TLS port, for a server started with [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("started with start_tls")
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port())
    }

    /// Starts on a given port (e.g. one a proxy was told to use before
    /// Redis existed).
    pub fn start_on_port(port: u16, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls_port: None,
        };
        s.spawn();
        s
    }

    /// Starts with the default test options and no extras.
    pub fn new() -> RedisServer {
        RedisServer::start(&[])
    }

    /// [`spawn`](Self::spawn) on ports chosen by [`free_port`]: another
    /// process may bind one between the choice and redis-server's bind, so
    /// that case is retried on new ports.
    fn spawn_on_free_ports(&mut self) {
        for _ in 0..3 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => {
                    self.port = free_port();
                    if let Some(old) = self.tls_port {
                        let new = free_port();
                        self.tls_port = Some(new);
                        for a in self.extra.iter_mut() {
                            if *a == old.to_string() {
                                *a = new.to_string();
                            }
                        }
                    }
                }
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found its ports taken three times");
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("redis-server on port {} did not start:\n{log}", self.port);
        }
    }

    /// Starts redis-server and waits until it answers; `Err` with its log
    /// when it exits first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.log_path());
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("spawn redis-server (is redis-server installed? scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        let mut exited = false;
        wait_for(
            &format!("redis-server on port {port} to accept connections"),
            Duration::from_secs(10),
            || {
                exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                exited || self.raw_ping()
            },
        );
        if exited {
            self.child = None;
            return Err(std::fs::read_to_string(self.log_path()).unwrap_or_default());
        }
        Ok(())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its working directory (persistence files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "kill {sig} {pid} failed");
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts it again on the same port with the same dir and options
    /// (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Graceful stop: SIGTERM, which makes Redis flush its AOF (and save
    /// an RDB when `save` is set) before it exits; waits for the exit.
    pub fn shutdown(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, dir and options after
    /// [`kill`](Self::kill) or [`shutdown`](Self::shutdown), leaving a gap
    /// the caller chose (unlike [`restart`](Self::restart)). Does nothing
    /// while it runs.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Deletes its persistence files (the AOF dir or file, `dump.rdb`)
    /// while it is not running, so that [`start_again`](Self::start_again)
    /// brings up a Redis without its data (a wiped volume). Panics while
    /// it runs.
    pub fn wipe_data(&self) {
        assert!(self.child.is_none(), "wipe_data while redis runs");
        let dir = self.dir.path();
        let _ = std::fs::remove_dir_all(dir.join("appendonlydir"));
        for f in ["appendonly.aof", "dump.rdb"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }

    /// True between a start and a [`kill`](Self::kill) or
    /// [`shutdown`](Self::shutdown).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Makes Redis refuse writes with `MISCONF`, as a full or failing disk
    /// does. Permissions cannot do it when the tests run as root, so this
    /// points `dir` at a directory, deletes it, and has a background save
    /// fail there; with a `save` rule set (needed for `MISCONF`) and the
    /// default `stop-writes-on-bgsave-error yes`, Redis then refuses every
    /// write (reads still work). Needs the server started with
    /// `--enable-protected-configs yes` (`dir` is protected since 7.0).
    /// Redis's AOF, if on, keeps its open file and is unaffected.
    pub fn break_persistence(&self) {
        let gone = self.dir.path().join("gone");
        std::fs::create_dir_all(&gone).expect("create the dir to delete");
        self.cmd(&["CONFIG", "SET", "save", "3600 1"]);
        self.cmd(&["CONFIG", "SET", "dir", &gone.to_string_lossy()]);
        std::fs::remove_dir(&gone).expect("delete redis's dir");
        self.background_save();
        wait_for(
            "redis's background save to fail",
            Duration::from_secs(10),
            || self.persistence_field("rdb_last_bgsave_status").as_deref() == Some("err"),
        );
    }

    /// Undoes [`break_persistence`](Self::break_persistence): `dir` back,
    /// a background save that succeeds (which lifts `MISCONF`), `save`
    /// back to `""` (the fixture's default).
    pub fn repair_persistence(&self) {
        self.cmd(&["CONFIG", "SET", "dir", &self.dir.path().to_string_lossy()]);
        self.background_save();
        wait_for(
            "redis's background save to succeed",
            Duration::from_secs(10),
            || {
                self.persistence_field("rdb_bgsave_in_progress").as_deref() == Some("0")
                    && self.persistence_field("rdb_last_bgsave_status").as_deref() == Some("ok")
            },
        );
        self.cmd(&["CONFIG", "SET", "save", ""]);
    }

    /// `BGSAVE`, scheduled for later if an AOF rewrite is running; waits
    /// out a save already in progress.
    fn background_save(&self) {
        wait_for(
            "redis to start a background save",
            Duration::from_secs(10),
            || {
                self.cmd_raw(&["BGSAVE", "SCHEDULE"])
                    .is_ok_and(|r| r.starts_with("+Background saving"))
            },
        );
    }

    /// One `INFO persistence` field, if Redis answers.
    pub fn persistence_field(&self, name: &str) -> Option<String> {
        let info = self.cmd_raw(&["INFO", "persistence"]).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// True while `PING` answers `+PONG` (or `-NOAUTH`, which proves it is up).
    pub fn raw_ping(&self) -> bool {
        match self.cmd_raw(&["PING"]) {
            Ok(reply) => reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"),
            Err(_) => false,
        }
    }

    /// Sends one command on a fresh connection and returns the first line
    /// of the reply (for bulk replies, the payload). Enough for fixtures
    /// (`CONFIG SET`, `DBSIZE`, `CLIENT LIST`); tests use real clients for
    /// anything more.
    pub fn cmd_raw(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        s.write_all(out.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        if let Some(len) = line.strip_prefix('$') {
            let n: i64 = len.trim().parse().unwrap_or(-1);
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        Ok(line.trim_end().to_string())
    }

    /// Runs a command and panics unless it succeeds; returns the reply text.
    pub fn cmd(&self, args: &[&str]) -> String {
        let r = self
            .cmd_raw(args)
            .unwrap_or_else(|e| panic!("{args:?} on redis {}: {e}", self.port));
        assert!(
            !r.starts_with('-'),
            "{args:?} on redis {} failed: {r}",
            self.port
        );
        r
    }
}

impl Default for RedisServer {
    fn default() -> Self {
        RedisServer::new()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process; resuming first is harmless.
        self.resume();
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_pauses_and_restarts_on_the_same_port() {
        let mut r = RedisServer::new();
        assert_eq!(r.cmd(&["SET", "k", "v"]), "+OK");
        assert_eq!(r.cmd(&["GET", "k"]), "v");
        let port = r.port();
        r.restart();
        assert_eq!(r.port(), port);
        assert!(r.raw_ping());
    }

    #[test]
    fn shutdown_then_start_again_keeps_aof_data() {
        let mut r = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
        assert_eq!(r.cmd(&["SET", "k", "v"]), "+OK");
        r.shutdown();
        assert!(!r.is_running() && !r.raw_ping());
        r.start_again();
        assert_eq!(r.cmd(&["GET", "k"]), "v");
    }

    #[test]
    fn broken_persistence_refuses_writes_with_misconf_until_repaired() {
        let r = RedisServer::start(&["--appendonly", "yes", "--enable-protected-configs", "yes"]);
        assert_eq!(r.cmd(&["SET", "k", "v"]), "+OK");
        r.break_persistence();
        assert!(r
            .cmd_raw(&["SET", "k", "w"])
            .unwrap()
            .starts_with("-MISCONF"));
        assert_eq!(r.cmd(&["GET", "k"]), "v", "reads still work");
        r.repair_persistence();
        assert_eq!(r.cmd(&["SET", "k", "w"]), "+OK");
    }
}
