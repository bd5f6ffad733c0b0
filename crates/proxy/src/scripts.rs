//! The scripts clients sent through Redoubt, by SHA1: what lets an
//! `EVALSHA` run locally during an outage, and what is loaded back into a
//! Redis that returns without them (a restart forgets its script cache),
//! so a client never gets a `NOSCRIPT` it did not cause.
//!
//! Bodies are learned from `EVAL`/`EVAL_RO` and `SCRIPT LOAD` on their way
//! to Redis. The cache is bounded by bytes; when full, the oldest script
//! goes first (a client whose script was dropped gets `NOSCRIPT` during an
//! outage and sends `EVAL`, as clients do).

use std::sync::Mutex;

use bytes::Bytes;
use indexmap::IndexMap;
use sha1::{Digest, Sha1};

/// Default bound on the bytes of remembered script bodies.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// Remembered script bodies, by lower-case hex SHA1.
pub struct ScriptCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    bodies: IndexMap<[u8; 40], Bytes>,
    bytes: usize,
}

/// The lower-case hex SHA1 of a script body, as Redis names scripts.
pub fn sha1_hex(body: &[u8]) -> [u8; 40] {
    let digest = Sha1::digest(body);
    let mut out = [0u8; 40];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl ScriptCache {
    /// An empty cache holding at most `max_bytes` of bodies.
    pub fn new(max_bytes: usize) -> ScriptCache {
        ScriptCache {
            inner: Mutex::default(),
            max_bytes,
        }
    }

    /// Learns from a command on its way to Redis: the body of `EVAL`,
    /// `EVAL_RO` or `SCRIPT LOAD`. Anything else is ignored, cheaply.
    pub fn note(&self, args: &[Bytes]) {
        let Some(first) = args.first() else { return };
        let body = if first.eq_ignore_ascii_case(b"eval") || first.eq_ignore_ascii_case(b"eval_ro")
        {
            args.get(1)
        } else if first.eq_ignore_ascii_case(b"script")
            && args.len() == 3
            && args[1].eq_ignore_ascii_case(b"load")
        {
            args.get(2)
        } else {
            None
        };
        if let Some(body) = body {
            self.remember(body.clone());
        }
    }

    /// Remembers `body` under its SHA1.
    pub fn remember(&self, body: Bytes) {
        if body.len() > self.max_bytes {
            return;
        }
        let sha = sha1_hex(&body);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.bodies.contains_key(&sha) {
            return;
        }
        inner.bytes += body.len();
        inner.bodies.insert(sha, body);
        while inner.bytes > self.max_bytes {
            let Some((_, old)) = inner.bodies.shift_remove_index(0) else {
                break;
            };
            inner.bytes -= old.len();
        }
    }

    /// The body of the script named `sha` (hex, any case), if known.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let key: [u8; 40] = sha.to_ascii_lowercase().try_into().ok()?;
        self.inner.lock().ok()?.bodies.get(&key).cloned()
    }

    /// Every remembered body, oldest first: what a Redis that came back
    /// without its script cache is given again.
    pub fn all(&self) -> Vec<Bytes> {
        self.inner
            .lock()
            .map(|i| i.bodies.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of remembered scripts.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.bodies.len()).unwrap_or(0)
    }

    /// True when no script is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn learns_eval_and_script_load_bodies_by_redis_sha() {
        let c = ScriptCache::new(1 << 20);
        c.note(&b(&["EVAL", "return 1", "0"]));
        c.note(&b(&["script", "LOAD", "return 2"]));
        c.note(&b(&["GET", "return 3"]));
        c.note(&b(&["SCRIPT", "FLUSH"]));
        // Redis: SCRIPT LOAD "return 1" answers this SHA.
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        assert_eq!(sha1_hex(b"return 1"), sha.as_bytes());
        assert_eq!(c.body(sha.as_bytes()).as_deref(), Some(&b"return 1"[..]));
        assert_eq!(
            c.body(sha.to_ascii_uppercase().as_bytes()).as_deref(),
            Some(&b"return 1"[..])
        );
        assert_eq!(c.len(), 2);
        assert!(c.body(b"nope").is_none());
    }

    #[test]
    fn the_oldest_script_goes_when_the_bound_is_reached() {
        let c = ScriptCache::new(20);
        c.remember(Bytes::from_static(b"return 'aaaaaaa'")); // 16 bytes
        c.remember(Bytes::from_static(b"return 1")); // 8: over, first goes
        assert_eq!(c.all(), vec![Bytes::from_static(b"return 1")]);
        c.remember(Bytes::from_static(&[b'x'; 21]));
        assert_eq!(c.len(), 1, "a body over the bound is not kept");
    }
}
