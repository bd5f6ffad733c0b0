//! A point-in-time copy of the keyspace for journal compaction, turned into
//! the commands that recreate it.

use bytes::Bytes;

use crate::db::Db;
use crate::num;
use crate::value::Value;
use crate::Effect;

/// Elements per generated command, so no command is huge.
const BATCH: usize = 128;

/// The data as it was when [`crate::Store::snapshot`] was called. Holding
/// it costs only the key maps: values are shared with the live store until
/// either side writes them.
pub struct Snapshot {
    dbs: Vec<Db>,
    /// Function libraries' code (they are data too).
    libraries: Vec<Bytes>,
    now: u64,
}

impl Snapshot {
    pub(crate) fn new(dbs: Vec<Db>, libraries: Vec<Bytes>, now: u64) -> Snapshot {
        Snapshot {
            dbs,
            libraries,
            now,
        }
    }

    /// Time (store clock, Unix ms) the snapshot was taken.
    pub fn taken_at_ms(&self) -> u64 {
        self.now
    }

    /// Number of live keys in the snapshot.
    pub fn key_count(&self) -> usize {
        let now = self.now;
        self.dbs
            .iter()
            .map(|d| {
                d.map
                    .values()
                    .filter(|e| e.expire_at.is_none_or(|t| t > now))
                    .count()
            })
            .sum()
    }

    /// Commands that rebuild the data in an empty store: `FUNCTION LOAD
    /// REPLACE` for each function library, then one write per key
    /// (batched for big collections), then `PEXPIREAT` for keys with a TTL.
    /// Keys already expired are left out.
    pub fn commands(&self) -> impl Iterator<Item = Effect> + '_ {
        let now = self.now;
        let libraries = self.libraries.iter().map(|code| Effect {
            db: 0,
            args: vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"LOAD"),
                Bytes::from_static(b"REPLACE"),
                code.clone(),
            ],
        });
        libraries.chain(self.dbs.iter().enumerate().flat_map(move |(db, d)| {
            d.map
                .iter()
                .filter(move |(_, e)| e.expire_at.is_none_or(|t| t > now))
                .flat_map(move |(k, e)| {
                    let mut out = Vec::new();
                    let cmd =
                        |name: &'static str| vec![Bytes::from_static(name.as_bytes()), k.clone()];
                    match &*e.value {
                        Value::Str(s) => out.push({
                            let mut c = cmd("SET");
                            c.push(s.clone());
                            c
                        }),
                        Value::List(l) => {
                            let items: Vec<&Bytes> = l.iter().collect();
                            for chunk in items.chunks(BATCH) {
                                let mut c = cmd("RPUSH");
                                c.extend(chunk.iter().map(|b| (*b).clone()));
                                out.push(c);
                            }
                        }
                        Value::Hash(h) => {
                            let items: Vec<(&Bytes, &Bytes)> = h.iter().collect();
                            for chunk in items.chunks(BATCH) {
                                let mut c = cmd("HSET");
                                for (f, v) in chunk {
                                    c.push((*f).clone());
                                    c.push((*v).clone());
                                }
                                out.push(c);
                            }
                        }
                        Value::Set(s) => {
                            let items: Vec<&Bytes> = s.iter().collect();
                            for chunk in items.chunks(BATCH) {
                                let mut c = cmd("SADD");
                                c.extend(chunk.iter().map(|b| (*b).clone()));
                                out.push(c);
                            }
                        }
                        Value::ZSet(z) => {
                            let items: Vec<(&Bytes, f64)> = z.iter().collect();
                            for chunk in items.chunks(BATCH) {
                                let mut c = cmd("ZADD");
                                for (m, s) in chunk {
                                    c.push(Bytes::from(num::fmt_g17(*s)));
                                    c.push((*m).clone());
                                }
                                out.push(c);
                            }
                        }
                        Value::Stream(s) => out.extend(s.rebuild_commands(k)),
                    }
                    if let Some(t) = e.expire_at {
                        let mut c = cmd("PEXPIREAT");
                        c.push(Bytes::from(t.to_string()));
                        out.push(c);
                    }
                    out.into_iter().map(move |args| Effect { db, args })
                })
        }))
    }
}
