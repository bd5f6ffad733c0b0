//! Differential harness: the same commands go to a real `redis-server` and
//! to the store; replies are decoded into `resp::Frame`s and compared.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::{Frame, Limits};
use store::{Clock, Session, Store, StoreConfig};
use test_support::RedisServer;

/// A plain RESP connection to Redis.
pub struct Redis {
    stream: TcpStream,
    buf: BytesMut,
    limits: Limits,
}

impl Redis {
    pub fn connect(server: &RedisServer) -> Redis {
        let stream = TcpStream::connect(server.addr()).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Redis {
            stream,
            buf: BytesMut::new(),
            limits: Limits::default(),
        }
    }

    pub fn send(&mut self, args: &[Bytes]) {
        let mut out = BytesMut::new();
        resp::frame::encode_command(&mut out, args);
        self.stream.write_all(&out).expect("write to redis");
    }

    pub fn read(&mut self) -> Frame {
        loop {
            if let Some((f, n)) =
                resp::parse_frame(&self.buf, &self.limits).expect("valid RESP from redis")
            {
                let _ = self.buf.split_to(n);
                return f;
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read from redis");
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn cmd(&mut self, args: &[Bytes]) -> Frame {
        self.send(args);
        self.read()
    }
}

pub fn args(cmd: &[&str]) -> Vec<Bytes> {
    cmd.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

/// A store whose clock is the wall clock, like Redis's, so absolute expiry
/// times are comparable.
pub fn wall_clock_store() -> Store {
    Store::new(StoreConfig {
        clock: Clock::System,
        ..StoreConfig::default()
    })
}

/// How a command's reply is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// Frame for frame.
    Exact,
    /// Arrays/sets compared as multisets: Redis's hashtable order is
    /// arbitrary (SMEMBERS, KEYS, SUNION of non-integer sets, …).
    Unordered,
    /// Remaining-time replies: both sides read their own clock a few ms
    /// apart, so equal within a tolerance (ms or s by command).
    Time,
    /// Random picks (SRANDMEMBER, RANDOMKEY, HRANDFIELD…): the same shape
    /// (type, length, and each pick a member of what exists), checked by
    /// the caller; here only type and length.
    Shape,
    /// SCAN replies whose page order is hashtable order: the cursor must
    /// match, the page is compared as a multiset.
    ScanUnordered,
    /// A flat array of (name, value) pairs (CONFIG GET) in arbitrary order.
    PairsUnordered,
    /// HELLO: the client id differs between the two servers.
    Hello,
}

pub fn cmp_for(cmd: &[Bytes]) -> Cmp {
    let name = String::from_utf8_lossy(&cmd[0]).to_ascii_lowercase();
    match name.as_str() {
        "smembers" | "sinter" | "sunion" | "sdiff" | "keys" | "hkeys" | "hvals" | "hgetall"
            if !small_ordered(&name) =>
        {
            Cmp::Unordered
        }
        "sscan" | "scan" => Cmp::ScanUnordered,
        // Redis lists parameters and commands in dict order.
        "config" if cmd.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"get")) => {
            Cmp::PairsUnordered
        }
        "command" if cmd.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"list")) => Cmp::Unordered,
        "pubsub"
            if cmd
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"channels")) =>
        {
            Cmp::Unordered
        }
        "ttl" | "pttl" | "expiretime" | "pexpiretime" | "time" => Cmp::Time,
        "hello" => Cmp::Hello,
        "client" if cmd.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"id")) => Cmp::Shape,
        "srandmember" | "randomkey" | "hrandfield" | "zrandmember" | "spop" => Cmp::Shape,
        // Unsorted geo searches come in an order Redis leaves unspecified.
        "georadius"
        | "georadius_ro"
        | "georadiusbymember"
        | "georadiusbymember_ro"
        | "geosearch"
            if !cmd.iter().any(|a| {
                a.eq_ignore_ascii_case(b"asc")
                    || a.eq_ignore_ascii_case(b"desc")
                    || a.eq_ignore_ascii_case(b"count")
            }) =>
        {
            Cmp::Unordered
        }
        _ => Cmp::Exact,
    }
}

/// Small hashes keep insertion order in both (listpack), so HGETALL and
/// friends compare exactly; sets and KEYS do not.
fn small_ordered(name: &str) -> bool {
    matches!(name, "hkeys" | "hvals" | "hgetall")
}

fn sort_frames(v: &mut [Frame]) {
    v.sort_by_key(|f| f.to_bytes());
}

pub fn normalize(f: &Frame, how: Cmp) -> Frame {
    match (how, f) {
        (Cmp::Unordered, Frame::Array(v)) => {
            let mut v = v.clone();
            sort_frames(&mut v);
            Frame::Array(v)
        }
        (Cmp::Unordered, Frame::Set(v)) => {
            let mut v = v.clone();
            sort_frames(&mut v);
            Frame::Set(v)
        }
        (Cmp::Unordered, Frame::Map(v)) => {
            let mut v = v.clone();
            v.sort_by_key(|(k, _)| k.to_bytes());
            Frame::Map(v)
        }
        (Cmp::ScanUnordered, Frame::Array(v)) if v.len() == 2 => {
            Frame::Array(vec![v[0].clone(), normalize(&v[1], Cmp::Unordered)])
        }
        (Cmp::PairsUnordered, Frame::Array(v)) => {
            let mut pairs: Vec<Vec<Frame>> = v.chunks(2).map(|c| c.to_vec()).collect();
            pairs.sort_by_key(|p| p[0].to_bytes());
            Frame::Array(pairs.into_iter().flatten().collect())
        }
        (Cmp::PairsUnordered, Frame::Map(_)) => normalize(f, Cmp::Unordered),
        (Cmp::Shape, Frame::Array(v)) => {
            Frame::Array(v.iter().map(|_| Frame::Integer(0)).collect())
        }
        (Cmp::Shape, Frame::Set(v)) => Frame::Set(v.iter().map(|_| Frame::Integer(0)).collect()),
        (Cmp::Shape, Frame::Bulk(_)) => Frame::Bulk(Bytes::new()),
        (Cmp::Shape, Frame::Integer(_)) => Frame::Integer(0),
        (Cmp::Hello, Frame::Map(v)) => Frame::Map(
            v.iter()
                .map(|(k, val)| {
                    (
                        k.clone(),
                        if k.as_bytes() == Some(b"id") {
                            Frame::Integer(0)
                        } else {
                            val.clone()
                        },
                    )
                })
                .collect(),
        ),
        (Cmp::Hello, Frame::Array(v)) => Frame::Array(
            v.iter()
                .enumerate()
                .map(|(i, val)| {
                    if i > 0 && v[i - 1].as_bytes() == Some(b"id") {
                        Frame::Integer(0)
                    } else {
                        val.clone()
                    }
                })
                .collect(),
        ),
        _ => f.clone(),
    }
}

fn as_i64(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// True when the two replies agree under `how`.
pub fn same(redis: &Frame, ours: &Frame, cmd: &[Bytes]) -> bool {
    let how = cmp_for(cmd);
    if how == Cmp::Time {
        let name = String::from_utf8_lossy(&cmd[0]).to_ascii_lowercase();
        let tol = if name.starts_with('p') { 1500 } else { 2 };
        return match (redis, ours) {
            (Frame::Integer(a), Frame::Integer(b)) if *a < 0 || *b < 0 => a == b,
            (Frame::Integer(a), Frame::Integer(b)) => (a - b).abs() <= tol,
            (Frame::Array(a), Frame::Array(b)) if name == "time" => {
                a.len() == 2
                    && b.len() == 2
                    && as_i64(&a[0])
                        .zip(as_i64(&b[0]))
                        .is_some_and(|(x, y)| (x - y).abs() <= 2)
            }
            _ => redis == ours,
        };
    }
    normalize(redis, how) == normalize(ours, how)
}

/// Both sides of a differential run.
pub struct Pair {
    pub redis: Redis,
    pub store: Store,
    pub session: Session,
}

impl Pair {
    pub fn new(server: &RedisServer) -> Pair {
        let store = wall_clock_store();
        let session = store.session();
        Pair {
            redis: Redis::connect(server),
            store,
            session,
        }
    }

    /// Another client of the same two servers.
    pub fn another(&self, server: &RedisServer) -> Pair {
        Pair {
            redis: Redis::connect(server),
            store: self.store.clone(),
            session: self.store.session(),
        }
    }

    /// Runs one command on both; returns (redis frames, store frames).
    pub async fn run(&mut self, cmd: &[Bytes]) -> (Vec<Frame>, Vec<Frame>) {
        let out = self.store.execute(&mut self.session, cmd.to_vec()).await;
        let mut ours = vec![out.reply];
        ours.extend(out.more);
        self.redis.send(cmd);
        let theirs = (0..ours.len()).map(|_| self.redis.read()).collect();
        (theirs, ours)
    }

    /// Runs a sequence, collecting every disagreement as text.
    pub async fn run_seq(&mut self, seq: &[Vec<Bytes>], mismatches: &mut Vec<String>) {
        for cmd in seq {
            let (theirs, ours) = self.run(cmd).await;
            let ok = theirs.len() == ours.len()
                && theirs.iter().zip(&ours).all(|(t, o)| same(t, o, cmd));
            if !ok {
                let shown: Vec<String> = cmd
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                mismatches.push(format!(
                    "{shown:?}\n    redis: {theirs:?}\n    store: {ours:?}"
                ));
            }
        }
    }

    /// FLUSHALL and back to RESP2/db 0 on both sides.
    pub async fn reset(&mut self) {
        for c in [
            args(&["FLUSHALL"]),
            args(&["HELLO", "2"]),
            args(&["SELECT", "0"]),
            args(&["CONFIG", "SET", "maxmemory", "0"]),
        ] {
            self.run(&c).await;
        }
    }
}

/// Splits `"SET k v; GET k"` into commands; `""` is an empty argument.
pub fn parse(seq: &str) -> Vec<Vec<Bytes>> {
    seq.split(';')
        .map(|c| {
            c.split_whitespace()
                .map(|a| {
                    if a == "\"\"" {
                        Bytes::new()
                    } else {
                        Bytes::copy_from_slice(a.as_bytes())
                    }
                })
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}
