//! A subscriber (`SUBSCRIBE` / `PSUBSCRIBE`) that stays connected through an
//! outage. Redoubt keeps the client's subscriptions; its upstream
//! connection relays Redis's messages while Redis is there, and when it
//! breaks the client is kept: subscriptions made meanwhile are confirmed
//! here, `PUBLISH`es to this Redoubt reach it ([`crate::pubsub`]), and once
//! Redis answers again a new connection subscribes to everything again
//! (its confirmations, already given, are not repeated to the client).
//!
//! Client libraries take an error reply on a subscriber connection as
//! final and never resubscribe; a subscriber here gets none for an outage.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use resp::{Frame, Request, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use upstream::backoff::Backoff;
use upstream::State;

use super::Session;
use crate::pubsub::confirmation;
use crate::reply;

/// Local messages queued for one subscriber; past it they are dropped.
const MAILBOX: usize = 1024;

/// True for the commands that start a subscriber kept through outages.
pub(super) fn is_subscribe(args: &[Bytes]) -> bool {
    args[0].eq_ignore_ascii_case(b"subscribe") || args[0].eq_ignore_ascii_case(b"psubscribe")
}

/// The upstream side: the connection and the dedicated-connection permit
/// it holds.
struct Up {
    rd: tls::ReadHalf,
    wr: tls::WriteHalf,
    /// Resolves when Sentinel names another primary: the subscriptions
    /// move there (on the old one, turned replica, publishes stop).
    moved: upstream::endpoint::Moved,
    _permit: OwnedSemaphorePermit,
}

struct Subs {
    channels: IndexSet<Bytes>,
    patterns: IndexSet<Bytes>,
}

impl Subs {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// What a client command asks of the loop.
enum Next {
    Go,
    Close,
}

impl Session {
    pub(super) async fn subscriber(&mut self, client: tls::Stream, first: Request, rest: BytesMut) {
        let (mut crd, mut cwr) = client.into_split();
        let mut decoder = RequestDecoder::new(self.limits);
        let mut inbuf = rest;
        let mut out = BytesMut::new();
        let mut subs = Subs {
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
        };
        let (tx, mut mailbox) = mpsc::channel(MAILBOX);
        let shared = self.shared.clone();
        let _registration = shared.pubsub.register(self.id, self.proto, tx);
        let mut up: Option<Up> = None;
        let mut upbuf = BytesMut::with_capacity(16 * 1024);
        // Confirmations of our own resubscribe still to come from Redis.
        let mut swallow = 0usize;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut next_try = Instant::now();
        let mut health = shared.health.subscribe();
        let mut shutdown = shared.shutdown.clone();
        let write_timeout = shared.limits.write_timeout();
        let mut queue = vec![first];
        let mut closing = false;
        loop {
            if up.is_none() && shared.health.state() != State::Down && Instant::now() >= next_try {
                match self.attach(&subs).await {
                    Some((u, n)) => {
                        up = Some(u);
                        swallow = n;
                        upbuf.clear();
                        backoff.reset();
                    }
                    None => next_try = Instant::now() + backoff.next_delay(),
                }
            }
            loop {
                match decoder.decode(&mut inbuf) {
                    Ok(Some(req)) => queue.push(req),
                    Ok(None) => break,
                    Err(e) => {
                        out.extend_from_slice(&reply::error(format!("ERR {e}; connection closed")));
                        closing = true;
                        break;
                    }
                }
            }
            for req in queue.drain(..) {
                if closing {
                    break;
                }
                match self.sub_command(req, &mut subs, &mut up, &mut out).await {
                    Next::Go => {}
                    Next::Close => closing = true,
                }
            }
            shared.pubsub.update(
                self.id,
                subs.channels.iter().cloned().collect(),
                subs.patterns.iter().cloned().collect(),
            );
            if !out.is_empty() {
                match cwr.send_within(&out, write_timeout).await {
                    Ok(()) => out.clear(),
                    Err(_) => return,
                }
            }
            if closing {
                let _ = cwr.shutdown().await;
                return;
            }
            let retry_in = (up.is_none() && shared.health.state() != State::Down)
                .then(|| next_try.saturating_duration_since(Instant::now()));
            tokio::select! {
                r = crd.read_buf(&mut inbuf) => match r {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                r = read_up(&mut up, &mut upbuf) => {
                    if !r {
                        // Redis went away: the client stays, subscribed.
                        up = None;
                        next_try = Instant::now();
                        self.shared.health.poke();
                    }
                    relay(&mut upbuf, &mut swallow, &mut out);
                }
                Some(m) = mailbox.recv() => out.extend_from_slice(&m),
                _ = health.changed() => {}
                _ = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {}
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = tls::send(&mut cwr, &out).await;
                    return;
                }
            }
        }
    }

    /// Opens the upstream connection and subscribes to everything; returns
    /// it with the number of confirmations that will come back.
    async fn attach(&mut self, subs: &Subs) -> Option<(Up, usize)> {
        let moved = self.shared.upstream.url().endpoint().moved();
        let (s, permit) = self.shared.upstream.tunnel(&self.key()).await.ok()?;
        let (rd, mut wr) = s.into_split();
        let mut raw = BytesMut::new();
        for (verb, set) in [
            ("SUBSCRIBE", &subs.channels),
            ("PSUBSCRIBE", &subs.patterns),
        ] {
            if set.is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![verb.as_bytes()];
            args.extend(set.iter().map(|c| &c[..]));
            resp::frame::encode_command(&mut raw, &args);
        }
        if !raw.is_empty() && tls::send(&mut wr, &raw).await.is_err() {
            return None;
        }
        self.shared.metrics.count_upstream(None, &[], None);
        Some((
            Up {
                rd,
                wr,
                moved,
                _permit: permit,
            },
            subs.count(),
        ))
    }

    /// One client command in subscriber mode.
    async fn sub_command(
        &mut self,
        req: Request,
        subs: &mut Subs,
        up: &mut Option<Up>,
        out: &mut BytesMut,
    ) -> Next {
        if let Some(r) = self.shared.access.gate(&self.who, &req.args) {
            out.extend_from_slice(&r.reply());
            return Next::Go;
        }
        let name = req.args[0].to_ascii_lowercase();
        let proto = self.proto;
        // Kept here whatever happens upstream, so a resubscribe has them.
        let local: Option<BytesMut> = match &name[..] {
            b"subscribe" | b"psubscribe" => {
                let pattern = name == b"psubscribe";
                let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
                let mut o = BytesMut::new();
                for n in &req.args[1..] {
                    if pattern {
                        subs.patterns.insert(n.clone());
                    } else {
                        subs.channels.insert(n.clone());
                    }
                    o.extend_from_slice(&confirmation(proto, kind, Some(n), subs.count()));
                }
                Some(o)
            }
            b"unsubscribe" | b"punsubscribe" => {
                let pattern = name == b"punsubscribe";
                let kind: &[u8] = if pattern {
                    b"punsubscribe"
                } else {
                    b"unsubscribe"
                };
                let names: Vec<Bytes> = match (req.args.len() > 1, pattern) {
                    (true, _) => req.args[1..].to_vec(),
                    (false, true) => subs.patterns.iter().cloned().collect(),
                    (false, false) => subs.channels.iter().cloned().collect(),
                };
                let mut o = BytesMut::new();
                if names.is_empty() {
                    o.extend_from_slice(&confirmation(proto, kind, None, subs.count()));
                }
                for n in names {
                    if pattern {
                        subs.patterns.shift_remove(&n);
                    } else {
                        subs.channels.shift_remove(&n);
                    }
                    o.extend_from_slice(&confirmation(proto, kind, Some(&n), subs.count()));
                }
                Some(o)
            }
            b"quit" => {
                out.extend_from_slice(&reply::ok());
                return Next::Close;
            }
            b"reset" => {
                // Subscriptions and the connection that holds them go.
                subs.channels.clear();
                subs.patterns.clear();
                *up = None;
                out.extend_from_slice(b"+RESET\r\n");
                return Next::Go;
            }
            b"ping" => {
                let msg = req.args.get(1).cloned().unwrap_or_default();
                let mut o = BytesMut::new();
                if proto == 2 && subs.count() > 0 {
                    o.extend_from_slice(&crate::pubsub::frame(2, &[b"pong", &msg]));
                } else if req.args.len() > 1 {
                    o.extend_from_slice(&reply::bulk(&msg));
                } else {
                    o.extend_from_slice(b"+PONG\r\n");
                }
                Some(o)
            }
            _ => None,
        };
        if let Some(u) = up.as_mut() {
            // Redis answers (and judges) everything while it is there.
            if tls::send(&mut u.wr, &req.raw).await.is_ok() {
                return Next::Go;
            }
            *up = None;
        }
        match local {
            Some(o) => out.extend_from_slice(&o),
            None if proto == 2 && subs.count() > 0 => {
                let n = String::from_utf8_lossy(&name);
                out.extend_from_slice(&reply::error(format!(
                    "ERR Can't execute '{n}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                )));
            }
            None => out.extend_from_slice(&reply::unavailable_down(
                &self.shared.health.current().reason,
            )),
        }
        Next::Go
    }
}

/// Reads from the upstream connection; pending for ever when there is
/// none. False when it closed or failed.
async fn read_up(up: &mut Option<Up>, buf: &mut BytesMut) -> bool {
    match up {
        Some(u) => tokio::select! {
            r = u.rd.read_buf(buf) => matches!(r, Ok(n) if n > 0),
            _ = u.moved.wait() => false,
        },
        None => std::future::pending().await,
    }
}

/// Moves the complete frames Redis sent to the client, minus the
/// confirmations of our own resubscribe.
fn relay(buf: &mut BytesMut, swallow: &mut usize, out: &mut BytesMut) {
    let limits = resp::Limits::upstream();
    loop {
        let n = match resp::frame_len(buf, &limits) {
            Ok(Some(n)) => n,
            _ => return,
        };
        let frame = buf.split_to(n);
        if *swallow > 0 && is_confirmation(&frame, &limits) {
            *swallow -= 1;
            continue;
        }
        out.extend_from_slice(&frame);
    }
}

fn is_confirmation(raw: &[u8], limits: &resp::Limits) -> bool {
    let Ok(Some((f, _))) = resp::parse_frame(raw, limits) else {
        return false;
    };
    let items = match f {
        Frame::Array(items) | Frame::Push(items) => items,
        _ => return false,
    };
    matches!(items.first(), Some(Frame::Bulk(k)) if &k[..] == b"subscribe" || &k[..] == b"psubscribe")
}
