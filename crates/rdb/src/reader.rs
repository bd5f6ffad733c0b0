//! The top level of an RDB file (`rdbLoadRioWithLoadingCtx`): the header,
//! the opcodes between keys, and the checksum after EOF.

use std::io::Read;

use bytes::Bytes;

use crate::source::Source;
use crate::{module, value, Error, Limits, Record, Value, MAX_VERSION};

const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;
/// Cluster slot sizes (Redis 7.4+); skipped like Redis does outside cluster mode.
const OP_SLOT_INFO: u8 = 244;

enum State {
    Running,
    Done,
    Failed,
}

/// Pulls records one at a time from an RDB stream.
///
/// Reads only as far as it needs: after the last record it has consumed
/// exactly the RDB, through its checksum, so the rest of a replication
/// stream can be read from [`Reader::into_inner`]. It does not buffer:
/// give it a `BufReader` (or a slice).
pub struct Reader<R: Read> {
    src: Source<R>,
    version: u32,
    db: u32,
    aux: Vec<(Bytes, Bytes)>,
    functions: Vec<Bytes>,
    state: State,
}

impl<R: Read> Reader<R> {
    /// Reads "REDIS" + 4-digit version, with default [`Limits`].
    pub fn new(input: R) -> Result<Self, Error> {
        Self::with_limits(input, Limits::default())
    }

    /// Like [`Reader::new`], with explicit limits.
    pub fn with_limits(input: R, limits: Limits) -> Result<Self, Error> {
        let mut src = Source::new(input, limits);
        let head: [u8; 9] = src.array("the RDB header")?;
        if &head[..5] != b"REDIS" {
            return Err(Error::corrupt(
                0,
                format!(
                    "not an RDB: starts with {:?}, not \"REDIS\"",
                    String::from_utf8_lossy(&head[..5])
                ),
            ));
        }
        let version = std::str::from_utf8(&head[5..])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| {
                Error::corrupt(
                    5,
                    format!(
                        "RDB version {:?} is not 4 digits",
                        String::from_utf8_lossy(&head[5..])
                    ),
                )
            })?;
        if version > MAX_VERSION {
            return Err(Error::Version {
                found: version,
                supported: MAX_VERSION,
            });
        }
        if version == 0 {
            return Err(Error::corrupt(5, "RDB version 0 does not exist"));
        }
        Ok(Reader {
            src,
            version,
            db: 0,
            aux: Vec::new(),
            functions: Vec::new(),
            state: State::Running,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Aux fields seen so far (all of them once `next_record` returned `None`).
    pub fn aux(&self) -> &[(Bytes, Bytes)] {
        &self.aux
    }

    /// The code of each function library (`FUNCTION LOAD` payload) seen so far.
    pub fn functions(&self) -> &[Bytes] {
        &self.functions
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.src.pos()
    }

    /// The underlying reader, positioned just after what was consumed.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }

    /// The next key; `None` once EOF was read and the checksum verified
    /// (a stored checksum of 0 means "not computed" and is accepted).
    /// Keys with empty collections are skipped, as Redis does.
    pub fn next_record(&mut self) -> Result<Option<Record>, Error> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => return Err(Error::Stopped),
            State::Running => {}
        }
        let r = self.step();
        match &r {
            Ok(None) => self.state = State::Done,
            Err(_) => self.state = State::Failed,
            Ok(Some(_)) => {}
        }
        r
    }

    fn step(&mut self) -> Result<Option<Record>, Error> {
        let src = &mut self.src;
        let mut expire_at_ms = None;
        let mut idle_secs = None;
        let mut lfu_freq = None;
        loop {
            let at = src.pos();
            let op = src.u8("an opcode or value type")?;
            match op {
                OP_AUX => {
                    let k = src.string("aux field name")?;
                    let v = src.string("aux field value")?;
                    self.aux.push((k, v));
                }
                OP_RESIZEDB => {
                    src.len("RESIZEDB size")?;
                    src.len("RESIZEDB expires size")?;
                }
                OP_SLOT_INFO => {
                    for _ in 0..3 {
                        src.len("SLOT_INFO")?;
                    }
                }
                OP_EXPIRETIME_MS => expire_at_ms = Some(src.millis("expire time")?),
                OP_EXPIRETIME => {
                    expire_at_ms = Some(i64::from(src.seconds("expire time")?) * 1000)
                }
                OP_SELECTDB => {
                    let n = src.len("SELECTDB")?;
                    self.db = u32::try_from(n)
                        .map_err(|_| Error::corrupt(at, format!("SELECTDB {n} is not a database number")))?;
                }
                OP_IDLE => idle_secs = Some(src.len("IDLE")?),
                OP_FREQ => lfu_freq = Some(src.u8("FREQ")?),
                OP_MODULE_AUX => {
                    let id = src.len("module aux ID")?;
                    let name = module::type_name(id);
                    let wat = src.pos();
                    if src.len("module aux when-opcode")? != 2 {
                        return Err(Error::corrupt(wat, format!("module {name} aux data: bad when-opcode")));
                    }
                    src.len("module aux when")?;
                    module::skip_value(src, &name)?;
                }
                OP_FUNCTION_PRE_GA => {
                    return Err(Error::Unsupported {
                        at,
                        what: "function library in the pre-release format of Redis 7.0 release candidates (opcode 246), which Redis itself refuses".into(),
                    })
                }
                OP_FUNCTION2 => {
                    let code = src.string("function library")?;
                    self.functions.push(code);
                }
                OP_EOF => {
                    if self.version >= 5 {
                        let computed = src.crc();
                        let expected = u64::from_le_bytes(src.array("the checksum")?);
                        if expected != 0 && expected != computed {
                            return Err(Error::Checksum { expected, computed });
                        }
                    }
                    return Ok(None);
                }
                ty if value::is_value_type(ty) => {
                    let key = src.string("key")?;
                    let value = value::read(src, ty, at)?;
                    let empty = match &value {
                        Value::List(v) | Value::Set(v) => v.is_empty(),
                        Value::Hash(v) => v.is_empty(),
                        Value::ZSet(v) => v.is_empty(),
                        _ => false,
                    };
                    if empty {
                        expire_at_ms = None;
                        idle_secs = None;
                        lfu_freq = None;
                        continue;
                    }
                    return Ok(Some(Record {
                        db: self.db,
                        key,
                        expire_at_ms,
                        idle_secs,
                        lfu_freq,
                        value,
                    }));
                }
                other => {
                    return Err(Error::corrupt(at, format!("unknown opcode or value type {other}")));
                }
            }
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if matches!(self.state, State::Failed) {
            return None;
        }
        self.next_record().transpose()
    }
}
