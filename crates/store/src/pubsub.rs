//! Pub/sub: SUBSCRIBE/PSUBSCRIBE and their UNSUBSCRIBEs, PUBLISH, PUBSUB.
//! Messages go to each subscriber's bounded push channel; a subscriber
//! whose channel is full is disconnected, as Redis does past its pubsub
//! output buffer limit.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use resp::Frame;
use tokio::sync::mpsc::error::TrySendError;

use crate::ctx::{Ctx, Handler, Reply};
use crate::glob::glob_match;
use crate::store::Inner;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("subscribe", subscribe),
    ("psubscribe", psubscribe),
    ("unsubscribe", unsubscribe),
    ("punsubscribe", punsubscribe),
    ("publish", publish),
    ("ssubscribe", ssubscribe),
    ("sunsubscribe", sunsubscribe),
    ("spublish", spublish),
    ("pubsub|channels", pubsub_channels),
    ("pubsub|numsub", pubsub_numsub),
    ("pubsub|numpat", pubsub_numpat),
    ("pubsub|shardchannels", pubsub_shardchannels),
    ("pubsub|shardnumsub", pubsub_shardnumsub),
];

/// A pub/sub frame: an array in RESP2, a push in RESP3.
fn push(resp3: bool, items: Vec<Frame>) -> Frame {
    if resp3 {
        Frame::Push(items)
    } else {
        Frame::Array(items)
    }
}

fn kind(s: &'static str) -> Frame {
    Frame::Bulk(Bytes::from_static(s.as_bytes()))
}

/// Emits one confirmation frame per channel: the first is the reply, the
/// others follow it.
fn confirm(ctx: &mut Ctx, frames: Vec<Frame>) -> Reply {
    let mut it = frames.into_iter();
    let first = it.next().unwrap_or(Frame::Array(Vec::new()));
    ctx.more.extend(it);
    Ok(first)
}

fn sync_counts(ctx: &mut Ctx) {
    let (s, p) = (ctx.sess.channels.len(), ctx.sess.patterns.len());
    if let Some(c) = ctx.inner.clients.get_mut(&ctx.sess.id) {
        c.subs = s;
        c.psubs = p;
    }
}

/// The three subscription namespaces.
#[derive(Clone, Copy, PartialEq)]
enum Space {
    Channel,
    Pattern,
    /// SSUBSCRIBE's shard channels: counted and confirmed apart.
    Shard,
}

impl Space {
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Space::Channel => ("subscribe", "unsubscribe"),
            Space::Pattern => ("psubscribe", "punsubscribe"),
            Space::Shard => ("ssubscribe", "sunsubscribe"),
        }
    }

    /// The session's subscriptions in this space.
    fn mine(self, sess: &mut crate::session::Session) -> &mut indexmap::IndexSet<Bytes> {
        match self {
            Space::Channel => &mut sess.channels,
            Space::Pattern => &mut sess.patterns,
            Space::Shard => &mut sess.shard_channels,
        }
    }

    /// Everyone's, by channel.
    fn all(
        self,
        inner: &mut Inner,
    ) -> &mut std::collections::HashMap<Bytes, indexmap::IndexSet<u64>> {
        match self {
            Space::Channel => &mut inner.channels,
            Space::Pattern => &mut inner.patterns,
            Space::Shard => &mut inner.shard_channels,
        }
    }

    /// The count a confirmation carries: shard subscriptions count apart.
    fn count(self, ctx: &Ctx) -> i64 {
        match self {
            Space::Shard => ctx.sess.shard_channels.len() as i64,
            _ => (ctx.sess.channels.len() + ctx.sess.patterns.len()) as i64,
        }
    }
}

fn subscribe(ctx: &mut Ctx) -> Reply {
    sub_generic(ctx, Space::Channel)
}

fn psubscribe(ctx: &mut Ctx) -> Reply {
    sub_generic(ctx, Space::Pattern)
}

fn ssubscribe(ctx: &mut Ctx) -> Reply {
    sub_generic(ctx, Space::Shard)
}

fn sub_generic(ctx: &mut Ctx, space: Space) -> Reply {
    let resp3 = ctx.resp3();
    let id = ctx.sess.id;
    let mut frames = Vec::new();
    for ch in ctx.args[1..].iter().cloned() {
        if space.mine(ctx.sess).insert(ch.clone()) {
            space
                .all(ctx.inner)
                .entry(ch.clone())
                .or_default()
                .insert(id);
        }
        frames.push(push(
            resp3,
            vec![
                kind(space.words().0),
                Frame::Bulk(ch),
                Frame::Integer(space.count(ctx)),
            ],
        ));
    }
    sync_counts(ctx);
    confirm(ctx, frames)
}

fn unsubscribe(ctx: &mut Ctx) -> Reply {
    unsub_generic(ctx, Space::Channel)
}

fn punsubscribe(ctx: &mut Ctx) -> Reply {
    unsub_generic(ctx, Space::Pattern)
}

fn sunsubscribe(ctx: &mut Ctx) -> Reply {
    unsub_generic(ctx, Space::Shard)
}

fn unsub_generic(ctx: &mut Ctx, space: Space) -> Reply {
    let resp3 = ctx.resp3();
    let id = ctx.sess.id;
    let word = space.words().1;
    let targets: Vec<Bytes> = if ctx.args.len() > 1 {
        ctx.args[1..].to_vec()
    } else {
        space.mine(ctx.sess).iter().cloned().collect()
    };
    let mut frames = Vec::new();
    for ch in &targets {
        if space.mine(ctx.sess).shift_remove(ch) {
            let map = space.all(ctx.inner);
            if let Some(s) = map.get_mut(ch) {
                s.swap_remove(&id);
                if s.is_empty() {
                    map.remove(ch);
                }
            }
        }
        frames.push(push(
            resp3,
            vec![
                kind(word),
                Frame::Bulk(ch.clone()),
                Frame::Integer(space.count(ctx)),
            ],
        ));
    }
    if frames.is_empty() {
        let null = if resp3 { Frame::Null } else { Frame::NullBulk };
        frames.push(push(
            resp3,
            vec![kind(word), null, Frame::Integer(space.count(ctx))],
        ));
    }
    sync_counts(ctx);
    confirm(ctx, frames)
}

/// SPUBLISH: to the shard channel's subscribers only, as `smessage`.
fn spublish(ctx: &mut Ctx) -> Reply {
    let (ch, msg) = (ctx.args[1].clone(), ctx.args[2].clone());
    let ids: Vec<u64> = ctx
        .inner
        .shard_channels
        .get(&ch)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    let deliveries = ids
        .into_iter()
        .map(|id| {
            (
                id,
                vec![
                    kind("smessage"),
                    Frame::Bulk(ch.clone()),
                    Frame::Bulk(msg.clone()),
                ],
            )
        })
        .collect();
    Ok(Frame::Integer(deliver(ctx.inner, deliveries)))
}

fn publish(ctx: &mut Ctx) -> Reply {
    let (ch, msg) = (ctx.args[1].clone(), ctx.args[2].clone());
    let n = publish_to(ctx.inner, &ch, &msg);
    Ok(Frame::Integer(n))
}

/// Delivers a message to the channel's and matching patterns' subscribers;
/// returns how many received it.
pub(crate) fn publish_to(inner: &mut Inner, ch: &Bytes, msg: &Bytes) -> i64 {
    let mut deliveries: Vec<(u64, Vec<Frame>)> = Vec::new();
    if let Some(ids) = inner.channels.get(ch) {
        for id in ids {
            deliveries.push((
                *id,
                vec![
                    kind("message"),
                    Frame::Bulk(ch.clone()),
                    Frame::Bulk(msg.clone()),
                ],
            ));
        }
    }
    for (pat, ids) in &inner.patterns {
        if glob_match(pat, ch, false) {
            for id in ids {
                deliveries.push((
                    *id,
                    vec![
                        kind("pmessage"),
                        Frame::Bulk(pat.clone()),
                        Frame::Bulk(ch.clone()),
                        Frame::Bulk(msg.clone()),
                    ],
                ));
            }
        }
    }
    let receivers = deliver(inner, deliveries);
    inner.stats.pubsub_messages += 1;
    receivers
}

/// Pushes each message to its client; returns how many were sent.
fn deliver(inner: &mut Inner, deliveries: Vec<(u64, Vec<Frame>)>) -> i64 {
    let mut receivers = 0;
    for (id, items) in deliveries {
        let Some(c) = inner.clients.get(&id) else {
            continue;
        };
        let frame = push(c.resp == 3, items);
        receivers += 1;
        match c.push.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Too slow a reader: Redis closes it (client-output-buffer-limit).
                c.killed.store(true, Ordering::Relaxed);
                c.unblock.notify_one();
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
    receivers
}

/// Keyspace notification classes (`notify-keyspace-events` letters).
pub(crate) mod class {
    pub const GENERIC: u32 = 1;
    pub const STRING: u32 = 1 << 1;
    pub const LIST: u32 = 1 << 2;
    pub const SET: u32 = 1 << 3;
    pub const HASH: u32 = 1 << 4;
    pub const ZSET: u32 = 1 << 5;
    pub const EXPIRED: u32 = 1 << 6;
    pub const EVICTED: u32 = 1 << 7;
    pub const STREAM: u32 = 1 << 8;
    pub const KEY_MISS: u32 = 1 << 9;
    pub const MODULE: u32 = 1 << 10;
    pub const NEW: u32 = 1 << 11;
    pub const KEYSPACE: u32 = 1 << 12;
    pub const KEYEVENT: u32 = 1 << 13;
    /// `A`: every class but key-miss and new.
    pub const ALL: u32 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;
}

/// Parses `notify-keyspace-events` letters; None on an unknown letter.
pub(crate) fn parse_events(s: &str) -> Option<u32> {
    use class::*;
    let mut f = 0;
    for c in s.chars() {
        f |= match c {
            'A' => ALL,
            'g' => GENERIC,
            '$' => STRING,
            'l' => LIST,
            's' => SET,
            'h' => HASH,
            'z' => ZSET,
            'x' => EXPIRED,
            'e' => EVICTED,
            't' => STREAM,
            'm' => KEY_MISS,
            'd' => MODULE,
            'n' => NEW,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            _ => return None,
        };
    }
    Some(f)
}

/// The canonical text CONFIG GET shows for a set of classes.
pub(crate) fn events_text(f: u32) -> String {
    use class::*;
    let mut s = String::new();
    if f & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if f & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Publishes a keyspace event if its class is enabled (Redis's
/// `notifyKeyspaceEvent`).
pub(crate) fn notify(inner: &mut Inner, db: usize, cls: u32, event: &str, key: &[u8]) {
    let flags = inner.config.notify_flags;
    if flags & cls == 0 {
        return;
    }
    if flags & class::KEYSPACE != 0 {
        let mut ch = format!("__keyspace@{db}__:").into_bytes();
        ch.extend_from_slice(key);
        publish_to(
            inner,
            &Bytes::from(ch),
            &Bytes::copy_from_slice(event.as_bytes()),
        );
    }
    if flags & class::KEYEVENT != 0 {
        let ch = Bytes::from(format!("__keyevent@{db}__:{event}"));
        publish_to(inner, &ch, &Bytes::copy_from_slice(key));
    }
}

fn pubsub_channels(ctx: &mut Ctx) -> Reply {
    list_channels(ctx, Space::Channel)
}

fn pubsub_shardchannels(ctx: &mut Ctx) -> Reply {
    list_channels(ctx, Space::Shard)
}

/// PUBSUB CHANNELS / SHARDCHANNELS [pattern].
fn list_channels(ctx: &mut Ctx, space: Space) -> Reply {
    let pat = ctx.args.get(2).cloned();
    let out = space
        .all(ctx.inner)
        .keys()
        .filter(|c| pat.as_ref().is_none_or(|p| glob_match(p, c, false)))
        .cloned()
        .map(Frame::Bulk)
        .collect();
    Ok(Frame::Array(out))
}

fn pubsub_numsub(ctx: &mut Ctx) -> Reply {
    count_subscribers(ctx, Space::Channel)
}

fn pubsub_shardnumsub(ctx: &mut Ctx) -> Reply {
    count_subscribers(ctx, Space::Shard)
}

/// PUBSUB NUMSUB / SHARDNUMSUB channel…: Redis 7.0 answers a flat array
/// here even under RESP3.
fn count_subscribers(ctx: &mut Ctx, space: Space) -> Reply {
    let names = &ctx.args[2..];
    let subs = space.all(ctx.inner);
    let out = names
        .iter()
        .flat_map(|c| {
            let n = subs.get(c).map_or(0, |s| s.len() as i64);
            [Frame::Bulk(c.clone()), Frame::Integer(n)]
        })
        .collect();
    Ok(Frame::Array(out))
}

fn pubsub_numpat(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(ctx.inner.patterns.len() as i64))
}
