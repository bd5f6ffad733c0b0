//! Streams (RDB types 15, 19, 21; `t_stream.c`, `stream.h`): listpacks
//! keyed by a 16-byte big-endian master ID. Each listpack starts with a
//! master entry (count, deleted, field count, fields, 0) followed by
//! entries (flags, ms delta, seq delta, [field count, fields and] values,
//! lp-count). Then the stream's metadata and its consumer groups.

use std::io::Read;

use bytes::Bytes;

use crate::error::BlobError;
use crate::listpack::{self, Item};
use crate::source::Source;
use crate::Error;

const FLAG_DELETED: i64 = 1;
const FLAG_SAME_FIELDS: i64 = 2;

/// A stream entry ID, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One live (not deleted) entry, with its fields in stored order.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Bytes, Bytes)>,
}

/// A pending entry of a group's PEL.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub delivery_time_ms: i64,
    pub delivery_count: u64,
}

/// A consumer and the IDs of the pending entries it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub name: Bytes,
    pub seen_time_ms: i64,
    /// Stored from RDB type 21 (Redis 7.2) on; `None` before.
    pub active_time_ms: Option<i64>,
    pub pending: Vec<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerGroup {
    pub name: Bytes,
    pub last_delivered_id: StreamId,
    /// `entries-read`; `None` when not stored (type 15) or stored as invalid (-1).
    pub entries_read: Option<u64>,
    pub pel: Vec<PendingEntry>,
    pub consumers: Vec<Consumer>,
}

/// A whole stream value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    /// Live entries in ID order.
    pub entries: Vec<StreamEntry>,
    /// The length the RDB states (`XLEN`).
    pub length: u64,
    pub last_id: StreamId,
    /// Stored from type 19 on; for type 15 the first live entry's ID (0-0 if none).
    pub first_id: StreamId,
    /// Stored from type 19 on; 0-0 for type 15.
    pub max_deleted_entry_id: StreamId,
    /// Stored from type 19 on; `length` for type 15.
    pub entries_added: u64,
    pub groups: Vec<ConsumerGroup>,
}

fn id_from_be(raw: &[u8]) -> StreamId {
    let mut ms = [0u8; 8];
    let mut seq = [0u8; 8];
    ms.copy_from_slice(&raw[..8]);
    seq.copy_from_slice(&raw[8..16]);
    StreamId {
        ms: u64::from_be_bytes(ms),
        seq: u64::from_be_bytes(seq),
    }
}

struct Cursor {
    items: std::vec::IntoIter<Item>,
    at: usize,
}

impl Cursor {
    fn next(&mut self, what: &str) -> Result<Item, BlobError> {
        let i = self.items.next().ok_or_else(|| {
            BlobError::new(
                0,
                format!(
                    "stream listpack ends inside an entry, where {what} should be (element {})",
                    self.at
                ),
            )
        })?;
        self.at += 1;
        Ok(i)
    }

    fn int(&mut self, what: &str) -> Result<i64, BlobError> {
        let at = self.at;
        self.next(what)?.as_int().ok_or_else(|| {
            BlobError::new(
                0,
                format!("stream listpack element {at} ({what}) is not an integer"),
            )
        })
    }

    fn count(&mut self, what: &str) -> Result<usize, BlobError> {
        let at = self.at;
        let n = self.int(what)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.items.len())
            .ok_or_else(|| BlobError::new(0, format!("stream listpack element {at} ({what}) is {n}, more than the listpack holds")))
    }
}

/// Decodes one node's listpack into its live entries.
fn decode_node(
    master: StreamId,
    lp: Vec<Item>,
    out: &mut Vec<StreamEntry>,
) -> Result<(), BlobError> {
    if lp.is_empty() {
        return Err(BlobError::new(0, "empty listpack inside a stream"));
    }
    let mut c = Cursor {
        items: lp.into_iter(),
        at: 0,
    };
    let count = c.count("the master entry's count")?;
    let deleted = c.count("the master entry's deleted count")?;
    let nfields = c.count("the master entry's field count")?;
    let mut master_fields = Vec::with_capacity(nfields);
    for _ in 0..nfields {
        master_fields.push(c.next("a master field")?.into_bytes());
    }
    if c.int("the master entry's terminator")? != 0 {
        return Err(BlobError::new(0, "stream master entry does not end with 0"));
    }
    let mut seen = 0usize;
    while c.items.len() > 0 {
        let flags = c.int("entry flags")?;
        let ms = c.int("entry ms delta")?;
        let seq = c.int("entry seq delta")?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms as u64),
            seq: master.seq.wrapping_add(seq as u64),
        };
        let same = flags & FLAG_SAME_FIELDS != 0;
        let n = if same {
            nfields
        } else {
            c.count("entry field count")?
        };
        let mut fields = Vec::with_capacity(n);
        if same {
            for field in &master_fields {
                let value = c.next("a value")?.into_bytes();
                fields.push((field.clone(), value));
            }
        } else {
            for _ in 0..n {
                let field = c.next("a field")?.into_bytes();
                let value = c.next("a value")?.into_bytes();
                fields.push((field, value));
            }
        }
        let expect = if same { n + 3 } else { 2 * n + 4 };
        let lp_count = c.int("entry lp-count")?;
        if lp_count != expect as i64 {
            return Err(BlobError::new(
                0,
                format!("stream entry {id} has lp-count {lp_count}, expected {expect}"),
            ));
        }
        if flags & FLAG_DELETED == 0 {
            out.push(StreamEntry { id, fields });
        }
        seen += 1;
    }
    if seen != count + deleted {
        return Err(BlobError::new(0, format!("stream listpack holds {seen} entries, its master entry says {count} live + {deleted} deleted")));
    }
    Ok(())
}

fn read_id<R: Read>(src: &mut Source<R>, what: &str) -> Result<StreamId, Error> {
    Ok(StreamId {
        ms: src.len(what)?,
        seq: src.len(what)?,
    })
}

fn read_raw_id<R: Read>(src: &mut Source<R>, what: &str) -> Result<StreamId, Error> {
    let raw: [u8; 16] = src.array(what)?;
    Ok(id_from_be(&raw))
}

pub(crate) fn read<R: Read>(src: &mut Source<R>, ty: u8) -> Result<Stream, Error> {
    let max = src.limits.max_elements;
    let mut s = Stream::default();
    let nodes = src.count("stream listpack count")?;
    for _ in 0..nodes {
        let at = src.pos();
        let key = src.string("stream node key")?;
        if key.len() != 16 {
            return Err(Error::corrupt(
                at,
                format!("stream node key is {} bytes, not a 16-byte ID", key.len()),
            ));
        }
        let master = id_from_be(&key);
        let blob = src.blob("stream listpack")?;
        let items = listpack::decode(&blob.data, max.saturating_mul(4))
            .map_err(|e| blob.error("stream listpack", e))?;
        decode_node(master, items, &mut s.entries)
            .map_err(|e| Error::corrupt(blob.start, format!("stream node {master}: {}", e.what)))?;
        if s.entries.len() as u64 > max {
            return Err(Error::Limit {
                at: blob.start,
                what: format!("stream has more than max_elements ({max}) entries"),
            });
        }
    }
    s.length = src.len("stream length")?;
    s.last_id = read_id(src, "stream last ID")?;
    if ty >= 19 {
        s.first_id = read_id(src, "stream first ID")?;
        s.max_deleted_entry_id = read_id(src, "stream max deleted ID")?;
        s.entries_added = src.len("stream entries added")?;
    } else {
        s.first_id = s.entries.first().map(|e| e.id).unwrap_or_default();
        s.entries_added = s.length;
    }
    let groups = src.count("stream consumer group count")?;
    for _ in 0..groups {
        let name = src.string("consumer group name")?;
        let last_delivered_id = read_id(src, "consumer group last ID")?;
        let entries_read = if ty >= 19 {
            Some(src.len("consumer group entries read")?).filter(|&n| n != u64::MAX)
        } else {
            None
        };
        let npel = src.count("consumer group PEL size")?;
        let mut pel = Vec::new();
        let mut pel_ids = std::collections::HashSet::new();
        for _ in 0..npel {
            let id = read_raw_id(src, "PEL entry ID")?;
            let delivery_time_ms = src.millis("PEL delivery time")?;
            let delivery_count = src.len("PEL delivery count")?;
            pel_ids.insert(id);
            pel.push(PendingEntry {
                id,
                delivery_time_ms,
                delivery_count,
            });
        }
        let nconsumers = src.count("consumer count")?;
        let mut consumers = Vec::new();
        for _ in 0..nconsumers {
            let name = src.string("consumer name")?;
            let seen_time_ms = src.millis("consumer seen time")?;
            let active_time_ms = if ty >= 21 {
                Some(src.millis("consumer active time")?)
            } else {
                None
            };
            let n = src.count("consumer PEL size")?;
            let mut pending = Vec::new();
            for _ in 0..n {
                let at = src.pos();
                let id = read_raw_id(src, "consumer PEL entry ID")?;
                if !pel_ids.contains(&id) {
                    return Err(Error::corrupt(
                        at,
                        format!("consumer PEL entry {id} is not in its group's PEL"),
                    ));
                }
                pending.push(id);
            }
            consumers.push(Consumer {
                name,
                seen_time_ms,
                active_time_ms,
                pending,
            });
        }
        s.groups.push(ConsumerGroup {
            name,
            last_delivered_id,
            entries_read,
            pel,
            consumers,
        });
    }
    Ok(s)
}
