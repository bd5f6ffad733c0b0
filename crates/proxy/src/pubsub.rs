//! The subscribers connected to this Redoubt, for `PUBLISH` while Redis is
//! down: a message published during an outage reaches them here (it never
//! reaches Redis, which is not there to relay it).
//!
//! While Redis is up every message goes through Redis, which delivers it
//! on each subscriber's upstream connection; the hub is not used then, so
//! nobody receives a message twice.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// One subscriber session's subscriptions and its mailbox.
struct Subscriber {
    channels: Vec<Bytes>,
    patterns: Vec<Bytes>,
    proto: u8,
    tx: mpsc::Sender<Bytes>,
}

/// Every local subscriber session, by client id.
#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<HashMap<u64, Subscriber>>,
}

/// Removes a session from the hub when dropped.
pub(crate) struct Registration<'a> {
    hub: &'a Hub,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.hub.subs.lock() {
            s.remove(&self.id);
        }
    }
}

impl Hub {
    /// Adds session `id` (replying in `proto`); messages for it arrive on
    /// `tx` as encoded frames (dropped when its mailbox is full, as Redis
    /// drops a subscriber past its output limit).
    pub(crate) fn register(&self, id: u64, proto: u8, tx: mpsc::Sender<Bytes>) -> Registration<'_> {
        if let Ok(mut s) = self.subs.lock() {
            s.insert(
                id,
                Subscriber {
                    channels: Vec::new(),
                    patterns: Vec::new(),
                    proto,
                    tx,
                },
            );
        }
        Registration { hub: self, id }
    }

    /// Session `id`'s subscriptions now.
    pub(crate) fn update(&self, id: u64, channels: Vec<Bytes>, patterns: Vec<Bytes>) {
        if let Ok(mut s) = self.subs.lock() {
            if let Some(sub) = s.get_mut(&id) {
                sub.channels = channels;
                sub.patterns = patterns;
            }
        }
    }

    /// Delivers `message` on `channel` to every matching local subscriber;
    /// returns how many received it (what `PUBLISH` answers).
    pub(crate) fn publish(&self, channel: &Bytes, message: &Bytes) -> usize {
        let Ok(s) = self.subs.lock() else { return 0 };
        let mut n = 0;
        for sub in s.values() {
            if sub.channels.iter().any(|c| c == channel) {
                let f = frame(sub.proto, &[b"message", channel, message]);
                if sub.tx.try_send(f).is_ok() {
                    n += 1;
                }
            }
            for p in &sub.patterns {
                if store::glob_match(p, channel, false) {
                    let f = frame(sub.proto, &[b"pmessage", p, channel, message]);
                    if sub.tx.try_send(f).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

/// A push frame of bulk strings: an array in RESP2, a push in RESP3.
pub(crate) fn frame(proto: u8, parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(if proto == 3 { b">" } else { b"*" });
    out.extend_from_slice(parts.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.extend_from_slice(b"$");
        out.extend_from_slice(p.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.freeze()
}

/// A (un)subscribe confirmation: kind, name (or nil), subscriptions left.
pub(crate) fn confirmation(proto: u8, kind: &[u8], name: Option<&[u8]>, count: usize) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(if proto == 3 { b">3\r\n" } else { b"*3\r\n" });
    out.extend_from_slice(b"$");
    out.extend_from_slice(kind.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\r\n");
    match name {
        Some(n) => {
            out.extend_from_slice(b"$");
            out.extend_from_slice(n.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(n);
            out.extend_from_slice(b"\r\n");
        }
        None if proto == 3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    out.extend_from_slice(b":");
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_matching_channels_and_patterns() {
        let hub = Hub::default();
        let (tx, mut rx) = mpsc::channel(8);
        let _r = hub.register(1, 2, tx);
        hub.update(1, vec![Bytes::from("news")], vec![Bytes::from("sse:*")]);
        assert_eq!(hub.publish(&Bytes::from("news"), &Bytes::from("hi")), 1);
        assert_eq!(hub.publish(&Bytes::from("sse:1"), &Bytes::from("x")), 1);
        assert_eq!(hub.publish(&Bytes::from("other"), &Bytes::from("x")), 0);
        assert_eq!(
            rx.try_recv().unwrap(),
            Bytes::from_static(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n")
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            Bytes::from_static(
                b"*4\r\n$8\r\npmessage\r\n$5\r\nsse:*\r\n$5\r\nsse:1\r\n$1\r\nx\r\n"
            )
        );
    }

    #[test]
    fn a_dropped_registration_receives_nothing() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(8);
        {
            let _r = hub.register(1, 2, tx);
            hub.update(1, vec![Bytes::from("c")], vec![]);
        }
        assert_eq!(hub.publish(&Bytes::from("c"), &Bytes::from("m")), 0);
    }
}
