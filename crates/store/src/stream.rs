//! [`Stream`]: a Redis stream as the keyspace holds it — entries ordered by
//! [`StreamId`], the stream's counters (last generated ID, entries added,
//! first entry, largest deleted ID) and its consumer groups with their
//! pending entries lists.
//!
//! Redis stores entries in a radix tree of listpack "nodes" and approximate
//! trimming (`MAXLEN ~`, `MINID ~`) only ever drops whole nodes, so which
//! entries a `~` trim removes depends on where the nodes split. We keep a
//! model of those nodes (their first ID, live and deleted counts and byte
//! size, computed with listpack's encoding rules) so `~` trims remove
//! exactly what Redis 7.0 removes under the same `stream-node-max-bytes`
//! and `stream-node-max-entries`, and XINFO reports the same tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

/// Redis's default `stream-node-max-bytes`.
const NODE_MAX_BYTES: usize = 4096;
/// Redis's default `stream-node-max-entries`.
const NODE_MAX_ENTRIES: u64 = 100;
/// `STREAM_LISTPACK_MAX_SIZE`: no node grows past 1 GiB.
const LISTPACK_MAX: u64 = 1 << 30;

/// A stream entry ID, `ms-seq`; ordered by `ms`, then `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest ID there is.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An ID from its parts.
    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next ID, or `None` past the largest.
    pub fn next(self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            if self.ms == u64::MAX {
                None
            } else {
                Some(StreamId::new(self.ms + 1, 0))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous ID, or `None` before `0-0`.
    pub fn prev(self) -> Option<StreamId> {
        if self.seq == 0 {
            if self.ms == 0 {
                None
            } else {
                Some(StreamId::new(self.ms - 1, u64::MAX))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }

    /// True for `0-0`.
    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// The ID as `ms-seq` bytes.
    pub fn to_bytes(self) -> Bytes {
        Bytes::from(self.to_string())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One pending (delivered, not yet acknowledged) entry of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The consumer that owns it.
    pub consumer: Bytes,
    /// Last delivery, Unix ms.
    pub delivery_time: u64,
    /// Number of deliveries.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Consumer {
    /// Last time the consumer was seen (read, claimed), Unix ms.
    pub seen_time: u64,
    /// IDs of the pending entries it owns (each also in the group's PEL).
    pub pel: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Last ID delivered to the group.
    pub last_id: StreamId,
    /// Logical read counter of `last_id`; -1 when unknown (as in Redis).
    pub entries_read: i64,
    /// The group's pending entries list.
    pub pel: BTreeMap<StreamId, Nack>,
    /// Consumers by name (byte order, like Redis's radix tree).
    pub consumers: BTreeMap<Bytes, Consumer>,
}

impl Group {
    /// A group with nothing pending and no consumers.
    pub fn new(last_id: StreamId, entries_read: i64) -> Group {
        Group {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// Drops a pending entry from the group and its owner.
    pub(crate) fn remove_nack(&mut self, id: StreamId) -> Option<Nack> {
        let n = self.pel.remove(&id)?;
        if let Some(c) = self.consumers.get_mut(&n.consumer) {
            c.pel.remove(&id);
        }
        Some(n)
    }
}

/// One listpack node of Redis's radix tree, as far as trimming and
/// `XINFO` need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Entries not deleted.
    live: u64,
    /// Entries flagged deleted but still in the listpack.
    deleted: u64,
    /// `lpBytes` of the listpack.
    bytes: usize,
    /// The master entry's field names.
    fields: Vec<Bytes>,
    /// ID of the last entry in the node, deleted or not.
    last: StreamId,
}

/// A stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    /// Live entries: ID → field-value pairs in the order given.
    pub(crate) entries: BTreeMap<StreamId, Vec<(Bytes, Bytes)>>,
    /// Node model keyed by each node's master (first) ID.
    pub(crate) nodes: BTreeMap<StreamId, Node>,
    /// Last ID generated or set (`last-generated-id`).
    pub last_id: StreamId,
    /// First live entry's ID, 0-0 when empty (`recorded-first-entry-id`).
    pub first_id: StreamId,
    /// Largest ID ever deleted by XDEL (`max-deleted-entry-id`).
    pub max_deleted_id: StreamId,
    /// Entries ever added (`entries-added`).
    pub entries_added: u64,
    /// Consumer groups by name (byte order).
    pub groups: BTreeMap<Bytes, Group>,
}

/// Entries in ID order (or reversed).
pub(crate) type EntryIter<'a> =
    Box<dyn Iterator<Item = (&'a StreamId, &'a Vec<(Bytes, Bytes)>)> + 'a>;

/// How a trim bounds the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trim {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Drop entries below this ID.
    MinId(StreamId),
}

impl Stream {
    /// An empty stream.
    pub fn new() -> Stream {
        Stream::default()
    }

    /// Number of live entries (`XLEN`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True with no live entries (Redis keeps such a stream).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live entries in ID order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&StreamId, &Vec<(Bytes, Bytes)>)> {
        self.entries.iter()
    }

    /// The entry with this ID.
    pub fn get(&self, id: &StreamId) -> Option<&Vec<(Bytes, Bytes)>> {
        self.entries.get(id)
    }

    /// Entries within `[start, end]`, in order (reversed with `rev`).
    pub(crate) fn range(&self, start: StreamId, end: StreamId, rev: bool) -> EntryIter<'_> {
        if start > end {
            return Box::new(std::iter::empty());
        }
        let r = self.entries.range(start..=end);
        if rev {
            Box::new(r.rev())
        } else {
            Box::new(r)
        }
    }

    /// Number of listpack nodes (`radix-tree-keys`).
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The master IDs of the listpack nodes, in order.
    pub(crate) fn node_ids(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.nodes.keys().copied()
    }

    /// Last live entry's ID.
    pub(crate) fn last_live(&self) -> Option<StreamId> {
        self.entries.keys().next_back().copied()
    }

    /// Appends an entry with an ID the caller has checked is above
    /// `last_id`, placing it in the node model as `streamAppendItem` does.
    pub fn append(&mut self, id: StreamId, fields: Vec<(Bytes, Bytes)>) {
        self.append_with(id, fields, NODE_MAX_BYTES as u64, NODE_MAX_ENTRIES);
    }

    /// [`Stream::append`] with the `stream-node-max-bytes` and
    /// `stream-node-max-entries` in force (0: no limit by entries; bytes
    /// are capped at listpack's 1 GiB as in Redis).
    pub(crate) fn append_with(
        &mut self,
        id: StreamId,
        fields: Vec<(Bytes, Bytes)>,
        max_bytes: u64,
        max_entries: u64,
    ) {
        let max_bytes = if max_bytes == 0 || max_bytes > LISTPACK_MAX {
            LISTPACK_MAX
        } else {
            max_bytes
        } as usize;
        let total: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        let full = match self.nodes.values().next_back() {
            None => true,
            Some(n) => {
                n.bytes + total >= max_bytes
                    || (max_entries > 0 && n.live + n.deleted >= max_entries)
            }
        };
        if full {
            let names: Vec<Bytes> = fields.iter().map(|(f, _)| f.clone()).collect();
            // Header and end byte, then count, deleted, field count, the
            // field names and the zero terminator of the master entry.
            let bytes = 7
                + 2
                + 2
                + lp_int_size(fields.len() as i64)
                + names.iter().map(|f| lp_str_size(f)).sum::<usize>()
                + 2;
            self.nodes.insert(
                id,
                Node {
                    live: 0,
                    deleted: 0,
                    bytes,
                    fields: names,
                    last: id,
                },
            );
        }
        if let Some((master, node)) = self.nodes.iter_mut().next_back() {
            let same = node.fields.len() == fields.len()
                && node.fields.iter().zip(&fields).all(|(a, (b, _))| a == b);
            let n = fields.len();
            let mut size = 2
                + lp_int_size(id.ms.wrapping_sub(master.ms) as i64)
                + lp_int_size(id.seq.wrapping_sub(master.seq) as i64);
            if !same {
                size += lp_int_size(n as i64)
                    + fields.iter().map(|(f, _)| lp_str_size(f)).sum::<usize>();
            }
            size += fields.iter().map(|(_, v)| lp_str_size(v)).sum::<usize>();
            let lp_count = n + 3 + if same { 0 } else { n + 1 };
            size += lp_int_size(lp_count as i64);
            node.bytes += size;
            node.live += 1;
            node.last = id;
        }
        self.entries.insert(id, fields);
        self.entries_added = self.entries_added.wrapping_add(1);
        self.last_id = id;
        if self.entries.len() == 1 {
            self.first_id = id;
        }
    }

    /// Removes one entry as XDEL does (the caller updates `first_id` and
    /// `max_deleted_id`); true if it was there.
    pub(crate) fn delete(&mut self, id: StreamId) -> bool {
        if self.entries.remove(&id).is_none() {
            return false;
        }
        let master = self.nodes.range(..=id).next_back().map(|(k, _)| *k);
        if let Some(m) = master {
            if let Some(node) = self.nodes.get_mut(&m) {
                if node.live <= 1 {
                    self.nodes.remove(&m);
                } else {
                    node.live -= 1;
                    node.deleted += 1;
                }
            }
        }
        true
    }

    /// Sets `first_id` after deletions: the first live entry, or 0-0.
    pub(crate) fn refresh_first_id(&mut self) {
        self.first_id = self.entries.keys().next().copied().unwrap_or_default();
    }

    /// Trims from the head as `streamTrim` does; `approx` only drops whole
    /// nodes and `limit` (0: none) caps the entries dropped. Returns the
    /// number of entries removed.
    pub(crate) fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        while let Some((&master, node)) = self.nodes.iter().next() {
            let len = self.entries.len() as u64;
            if let Trim::MaxLen(max) = how {
                if len <= max {
                    break;
                }
            }
            let live = node.live;
            let last = node.last;
            if limit > 0 && deleted + live > limit {
                break;
            }
            let whole = match how {
                Trim::MaxLen(max) => len.saturating_sub(live) >= max,
                Trim::MinId(min) => last < min,
            };
            if whole {
                while self.entries.keys().next().is_some_and(|k| *k <= last) {
                    self.entries.pop_first();
                }
                self.nodes.remove(&master);
                deleted += live;
                continue;
            }
            if approx {
                break;
            }
            // Flag entries inside this node, oldest first.
            let mut flagged = 0u64;
            while let Some(&id) = self.entries.keys().next() {
                if id > last {
                    break;
                }
                let stop = match how {
                    Trim::MaxLen(max) => self.entries.len() as u64 <= max,
                    Trim::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                self.entries.pop_first();
                flagged += 1;
            }
            if let Some(node) = self.nodes.get_mut(&master) {
                node.live = node.live.saturating_sub(flagged);
                node.deleted += flagged;
            }
            deleted += flagged;
            break;
        }
        if self.entries.is_empty() {
            self.first_id = StreamId::MIN;
        } else if deleted > 0 {
            self.refresh_first_id();
        }
        deleted
    }

    /// The first entry's ID counting deleted ones still in a node (the
    /// first node's master ID), or the largest ID when there is no node:
    /// what Redis writes as the `MINID` of an approximate trim.
    pub(crate) fn first_with_tombstones(&self) -> StreamId {
        self.nodes.keys().next().copied().unwrap_or(StreamId::MAX)
    }

    /// True when `[start, end]` may contain a deleted entry
    /// (`streamRangeHasTombstones`).
    pub(crate) fn range_has_tombstones(&self, start: StreamId, end: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        start <= self.max_deleted_id && self.max_deleted_id <= end
    }

    /// The logical read counter of `id`, or -1 when it cannot be known
    /// (`streamEstimateDistanceFromFirstEverEntry`).
    pub(crate) fn estimate_distance(&self, id: StreamId) -> i64 {
        if self.entries_added == 0 {
            return 0;
        }
        let added = self.entries_added as i64;
        let len = self.entries.len() as i64;
        if len == 0 && id <= self.last_id {
            return added;
        }
        if id == self.last_id {
            return added;
        } else if id > self.last_id {
            return -1;
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            if id < self.first_id {
                return added - len;
            } else if id == self.first_id {
                return added - len + 1;
            }
        }
        -1
    }

    /// A group's lag (entries not yet delivered to it), `None` when unknown.
    pub(crate) fn lag(&self, g: &Group) -> Option<i64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read != -1 && !self.range_has_tombstones(g.last_id, StreamId::MAX) {
            return Some(self.entries_added as i64 - g.entries_read);
        }
        let read = self.estimate_distance(g.last_id);
        (read != -1).then(|| self.entries_added as i64 - read)
    }

    /// Approximate bytes used.
    pub(crate) fn approx_size(&self) -> usize {
        let n = self.entries.len();
        let per_entry = if n <= 64 {
            self.entries.values().map(|f| entry_size(f)).sum::<usize>()
        } else {
            self.entries
                .values()
                .take(32)
                .map(|f| entry_size(f))
                .sum::<usize>()
                * n
                / 32
        };
        let groups: usize = self
            .groups
            .iter()
            .map(|(name, g)| {
                64 + name.len()
                    + g.pel.len() * 48
                    + g.consumers.keys().map(|c| c.len() + 48).sum::<usize>()
            })
            .sum();
        per_entry + groups + 96
    }

    /// Commands that recreate this stream exactly under `key` in an empty
    /// keyspace: XADD with explicit IDs, XGROUP CREATE with ENTRIESREAD,
    /// XGROUP CREATECONSUMER, XCLAIM … FORCE for every pending entry, and
    /// XSETID for the counters. Consumers' seen-times become the time of
    /// replay, as in Redis's AOF.
    ///
    /// XCLAIM FORCE needs the message to exist, and pending entries may
    /// outlive theirs: those are first added as placeholders, claimed, and
    /// trimmed away (which leaves max-deleted-entry-id alone), before the
    /// live entries are added.
    pub fn rebuild_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut out = Vec::new();
        let dead: BTreeSet<StreamId> = self
            .groups
            .values()
            .flat_map(|g| g.pel.keys())
            .filter(|id| !self.entries.contains_key(id))
            .copied()
            .collect();
        let xadd = |id: StreamId, fields: &[(Bytes, Bytes)]| {
            let mut c = vec![b("XADD"), key.clone(), id.to_bytes()];
            for (k, v) in fields {
                c.push(k.clone());
                c.push(v.clone());
            }
            c
        };
        let placeholder = [(Bytes::new(), Bytes::new())];
        let mut groups = Vec::new();
        let mut claims_dead = Vec::new();
        let mut claims_live = Vec::new();
        for (name, g) in &self.groups {
            groups.push(vec![
                b("XGROUP"),
                b("CREATE"),
                key.clone(),
                name.clone(),
                g.last_id.to_bytes(),
                b("ENTRIESREAD"),
                Bytes::from(g.entries_read.to_string()),
            ]);
            for cname in g.consumers.keys() {
                groups.push(vec![
                    b("XGROUP"),
                    b("CREATECONSUMER"),
                    key.clone(),
                    name.clone(),
                    cname.clone(),
                ]);
            }
            for (id, n) in &g.pel {
                let claims = if dead.contains(id) {
                    &mut claims_dead
                } else {
                    &mut claims_live
                };
                claims.push(vec![
                    b("XCLAIM"),
                    key.clone(),
                    name.clone(),
                    n.consumer.clone(),
                    b("0"),
                    id.to_bytes(),
                    b("TIME"),
                    Bytes::from(n.delivery_time.to_string()),
                    b("RETRYCOUNT"),
                    Bytes::from(n.delivery_count.to_string()),
                    b("FORCE"),
                    b("JUSTID"),
                ]);
            }
        }
        if dead.is_empty() {
            if self.entries.is_empty() {
                // Create the key with an entry trimmed away at once.
                out.push(vec![
                    b("XADD"),
                    key.clone(),
                    b("MAXLEN"),
                    b("0"),
                    b("0-1"),
                    Bytes::new(),
                    Bytes::new(),
                ]);
            }
            out.extend(self.entries.iter().map(|(id, f)| xadd(*id, f)));
            out.extend(groups);
        } else {
            out.extend(dead.iter().map(|id| xadd(*id, &placeholder)));
            out.extend(groups);
            out.extend(claims_dead);
            out.push(vec![b("XTRIM"), key.clone(), b("MAXLEN"), b("="), b("0")]);
            // Empty now, so the last ID may go back for the live entries.
            out.push(vec![b("XSETID"), key.clone(), b("0-0")]);
            out.extend(self.entries.iter().map(|(id, f)| xadd(*id, f)));
        }
        out.extend(claims_live);
        // XSETID refuses a last ID below the max-deleted ID it is given,
        // yet a later XSETID may lower the last ID under it: set that one
        // first, then the last ID alone (a zero MAXDELETEDID keeps it).
        let mut setid = |last: StreamId, maxdel: StreamId| {
            out.push(vec![
                b("XSETID"),
                key.clone(),
                last.to_bytes(),
                b("ENTRIESADDED"),
                Bytes::from(self.entries_added.to_string()),
                b("MAXDELETEDID"),
                maxdel.to_bytes(),
            ])
        };
        if self.max_deleted_id > self.last_id {
            setid(self.max_deleted_id, self.max_deleted_id);
            setid(self.last_id, StreamId::MIN);
        } else {
            setid(self.last_id, self.max_deleted_id);
        }
        out
    }
}

fn entry_size(fields: &[(Bytes, Bytes)]) -> usize {
    fields
        .iter()
        .map(|(f, v)| f.len() + v.len() + 8)
        .sum::<usize>()
        + 32
}

/// Bytes a listpack integer element takes (encoding plus back-length).
fn lp_int_size(v: i64) -> usize {
    let enc = if (0..=127).contains(&v) {
        1
    } else if (-4096..=4095).contains(&v) {
        2
    } else if (-32768..=32767).contains(&v) {
        3
    } else if (-8_388_608..=8_388_607).contains(&v) {
        4
    } else if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&v) {
        5
    } else {
        9
    };
    enc + 1
}

/// Bytes a listpack string element takes; strings that read as integers
/// are stored as integers, as `lpAppend` does.
fn lp_str_size(s: &[u8]) -> usize {
    if let Some(v) = crate::num::parse_i64(s) {
        return lp_int_size(v);
    }
    let len = s.len();
    let enc = if len < 64 {
        1 + len
    } else if len < 4096 {
        2 + len
    } else {
        5 + len
    };
    let back = if enc <= 127 {
        1
    } else if enc < 16383 {
        2
    } else if enc < 2_097_151 {
        3
    } else if enc < 268_435_455 {
        4
    } else {
        5
    };
    enc + back
}
