//! Shared by the tests: a small binary-safe RESP client for a real
//! `redis-server`, and encoders that build RDB bytes from the layouts in
//! Redis's `rdb.c`, `listpack.c`, `ziplist.c`, `intset.c`, `zipmap.c`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------- RESP

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn bulk(&self) -> Vec<u8> {
        match self {
            Reply::Bulk(Some(b)) => b.clone(),
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(i) => i.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// One connection to Redis that sends binary-safe commands.
pub struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    /// Sends a command and returns its reply, panicking on an error reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let r = self.call_raw(args);
        if let Reply::Error(e) = &r {
            let shown: Vec<String> = args
                .iter()
                .take(3)
                .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                .collect();
            panic!("{shown:?} failed: {e}");
        }
        r
    }

    pub fn call_raw<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&out).unwrap();
        self.read_reply()
    }

    fn read_reply(&mut self) -> Reply {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\r\n"), "short reply line {line:?}");
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'+' => Reply::Simple(body),
            b'-' => Reply::Error(body),
            b':' => Reply::Int(body.parse().unwrap()),
            b'$' => {
                let n: i64 = body.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.r.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
            b'*' => {
                let n: i64 = body.parse().unwrap();
                if n < 0 {
                    return Reply::Array(None);
                }
                Reply::Array(Some((0..n).map(|_| self.read_reply()).collect()))
            }
            other => panic!("unknown reply type {other}"),
        }
    }

    pub fn encoding(&mut self, key: &str) -> String {
        self.call(&["OBJECT", "ENCODING", key]).text()
    }
}

/// `SAVE`s and returns the bytes of `dump.rdb`.
pub fn save(server: &test_support::RedisServer) -> Vec<u8> {
    let mut c = Conn::new(server.port());
    c.call(&["SAVE"]);
    std::fs::read(server.dir().join("dump.rdb")).expect("dump.rdb after SAVE")
}

/// Decodes all records of an RDB, panicking on an error.
pub fn decode_all(rdb: &[u8]) -> (Vec<rdb::Record>, rdb::Reader<&[u8]>) {
    let mut reader = rdb::Reader::new(rdb).expect("RDB header");
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("decode record") {
        out.push(r);
    }
    (out, reader)
}

pub fn find<'a>(records: &'a [rdb::Record], db: u32, key: &[u8]) -> &'a rdb::Record {
    records
        .iter()
        .find(|r| r.db == db && r.key.as_ref() == key)
        .unwrap_or_else(|| {
            panic!(
                "key {:?} in db {db} not in the RDB",
                String::from_utf8_lossy(key)
            )
        })
}

// ------------------------------------------------------------ encoders

/// An RDB length (6/14/32/64-bit forms as `rdbSaveLen` picks them).
pub fn len(out: &mut Vec<u8>, n: u64) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A raw (length-prefixed) RDB string.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// An LZF-encoded RDB string (ENCVAL 3, compressed len, original len, data).
pub fn lzf_string(out: &mut Vec<u8>, s: &[u8]) {
    let c = lzf_compress(s);
    out.push(0xC3);
    len(out, c.len() as u64);
    len(out, s.len() as u64);
    out.extend_from_slice(&c);
}

/// A simple LZF compressor: back references to the longest match in the
/// last 8 KiB (greedy, naive search), literals otherwise. Valid LZF.
pub fn lzf_compress(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lit: Vec<u8> = Vec::new();
    let flush = |out: &mut Vec<u8>, lit: &mut Vec<u8>| {
        for chunk in lit.chunks(32) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
        lit.clear();
    };
    let mut i = 0;
    while i < input.len() {
        let mut best = (0usize, 0usize);
        let lo = i.saturating_sub(8192);
        for start in lo..i {
            let mut l = 0;
            while i + l < input.len() && l < 264 && input[start + l] == input[i + l] {
                l += 1;
            }
            if l > best.1 {
                best = (i - start, l);
            }
        }
        if best.1 >= 3 {
            flush(&mut out, &mut lit);
            let (dist, l) = (best.0 - 1, best.1 - 2);
            if l < 7 {
                out.push(((l as u8) << 5) | (dist >> 8) as u8);
            } else {
                out.push((7 << 5) | (dist >> 8) as u8);
                out.push((l - 7) as u8);
            }
            out.push(dist as u8);
            i += best.1;
        } else {
            lit.push(input[i]);
            i += 1;
        }
    }
    flush(&mut out, &mut lit);
    out
}

/// A listpack or ziplist element to encode.
#[derive(Debug, Clone, PartialEq)]
pub enum El {
    Int(i64),
    Str(Vec<u8>),
}

impl El {
    pub fn text(&self) -> Vec<u8> {
        match self {
            El::Int(i) => i.to_string().into_bytes(),
            El::Str(s) => s.clone(),
        }
    }
}

fn backlen(l: u64, out: &mut Vec<u8>) {
    let n = if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2097151 {
        3
    } else if l < 268435455 {
        4
    } else {
        5
    };
    for i in (0..n).rev() {
        let part = ((l >> (7 * i)) & 127) as u8;
        out.push(if i == n - 1 { part } else { part | 128 });
    }
}

/// A listpack, each integer in the narrowest encoding `lpEncodeIntegerGetType` picks.
pub fn listpack(els: &[El]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in els {
        let mut entry = Vec::new();
        match e {
            El::Int(v) => {
                let v = *v;
                if (0..=127).contains(&v) {
                    entry.push(v as u8);
                } else if (-4096..=4095).contains(&v) {
                    let u = (v as u64) & 0x1fff;
                    entry.push(0xC0 | (u >> 8) as u8);
                    entry.push(u as u8);
                } else if (-32768..=32767).contains(&v) {
                    entry.push(0xF1);
                    entry.extend_from_slice(&(v as i16).to_le_bytes());
                } else if (-8388608..=8388607).contains(&v) {
                    entry.push(0xF2);
                    entry.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
                } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
                    entry.push(0xF3);
                    entry.extend_from_slice(&(v as i32).to_le_bytes());
                } else {
                    entry.push(0xF4);
                    entry.extend_from_slice(&v.to_le_bytes());
                }
            }
            El::Str(s) => {
                if s.len() < 64 {
                    entry.push(0x80 | s.len() as u8);
                } else if s.len() < 4096 {
                    entry.push(0xE0 | (s.len() >> 8) as u8);
                    entry.push(s.len() as u8);
                } else {
                    entry.push(0xF0);
                    entry.extend_from_slice(&(s.len() as u32).to_le_bytes());
                }
                entry.extend_from_slice(s);
            }
        }
        let l = entry.len() as u64;
        body.extend_from_slice(&entry);
        backlen(l, &mut body);
    }
    let total = 6 + body.len() + 1;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(els.len().min(65535) as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xFF);
    out
}

/// A ziplist, integers in the narrowest encoding `zipTryEncoding` picks
/// (4-bit immediate 0..=12, int8, int16, int24, int32, int64).
pub fn ziplist(els: &[El]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev = 0usize;
    let mut tail = 10;
    for e in els {
        let mut entry = Vec::new();
        if prev < 254 {
            entry.push(prev as u8);
        } else {
            entry.push(254);
            entry.extend_from_slice(&(prev as u32).to_le_bytes());
        }
        match e {
            El::Int(v) => {
                let v = *v;
                if (0..=12).contains(&v) {
                    entry.push(0xF1 + v as u8);
                } else if (-128..=127).contains(&v) {
                    entry.push(0xFE);
                    entry.push(v as i8 as u8);
                } else if (-32768..=32767).contains(&v) {
                    entry.push(0xC0);
                    entry.extend_from_slice(&(v as i16).to_le_bytes());
                } else if (-8388608..=8388607).contains(&v) {
                    entry.push(0xF0);
                    entry.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
                } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
                    entry.push(0xD0);
                    entry.extend_from_slice(&(v as i32).to_le_bytes());
                } else {
                    entry.push(0xE0);
                    entry.extend_from_slice(&v.to_le_bytes());
                }
            }
            El::Str(s) => {
                if s.len() < 64 {
                    entry.push(s.len() as u8);
                } else if s.len() < 16384 {
                    entry.push(0x40 | (s.len() >> 8) as u8);
                    entry.push(s.len() as u8);
                } else {
                    entry.push(0x80);
                    entry.extend_from_slice(&(s.len() as u32).to_be_bytes());
                }
                entry.extend_from_slice(s);
            }
        }
        tail = 10 + body.len();
        prev = entry.len();
        body.extend_from_slice(&entry);
    }
    let total = 10 + body.len() + 1;
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(tail as u32).to_le_bytes());
    out.extend_from_slice(&(els.len().min(65535) as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xFF);
    out
}

/// An intset of the given width (2, 4 or 8) holding `vals` (sorted by the caller).
pub fn intset(width: u32, vals: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&(vals.len() as u32).to_le_bytes());
    for v in vals {
        out.extend_from_slice(&v.to_le_bytes()[..width as usize]);
    }
    out
}

/// A zipmap (Redis < 2.6 hash encoding), with `free` spare bytes after each value.
pub fn zipmap(pairs: &[(&[u8], &[u8])], free: u8) -> Vec<u8> {
    let mut out = vec![pairs.len().min(254) as u8];
    let zlen = |out: &mut Vec<u8>, n: usize| {
        if n < 254 {
            out.push(n as u8);
        } else {
            out.push(254);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
    };
    for (k, v) in pairs {
        zlen(&mut out, k.len());
        out.extend_from_slice(k);
        zlen(&mut out, v.len());
        out.push(free);
        out.extend_from_slice(v);
        out.resize(out.len() + free as usize, 0xAA);
    }
    out.push(0xFF);
    out
}

/// Builds an RDB file: header, the given body, EOF, CRC-64.
pub fn rdb_file(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = format!("REDIS{version:04}").into_bytes();
    out.extend_from_slice(body);
    out.push(0xFF);
    let crc = rdb::crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Builds a DUMP payload: type byte + value, version, CRC-64.
pub fn dump_payload(ty: u8, value: &[u8], version: u16) -> Vec<u8> {
    let mut out = vec![ty];
    out.extend_from_slice(value);
    out.extend_from_slice(&version.to_le_bytes());
    let crc = rdb::crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
