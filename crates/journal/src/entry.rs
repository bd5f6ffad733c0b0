//! [`Entry`]: what one journal record holds, and its payload encoding.

use bytes::Bytes;

/// One journaled unit: a single command, or several that form a transaction
/// (`MULTI … EXEC`) to be applied atomically, all in database `db`.
///
/// Commands are stored as given; the journal does not interpret them (the
/// store hands over relative expiries already turned into absolute
/// `PXAT` / `PEXPIREAT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Database index the commands run in.
    pub db: u32,
    /// The commands, each a list of arguments (name first).
    pub commands: Vec<Vec<Bytes>>,
    /// Wall-clock time of the write, milliseconds since the Unix epoch
    /// (for `inspect`'s time range; replay does not use it).
    pub time_ms: u64,
}

impl Entry {
    /// An entry holding one command.
    pub fn command(db: u32, args: Vec<Bytes>, time_ms: u64) -> Entry {
        Entry {
            db,
            commands: vec![args],
            time_ms,
        }
    }

    /// Bytes of argument data, for sizing.
    pub fn arg_bytes(&self) -> usize {
        self.commands.iter().flatten().map(|a| a.len()).sum()
    }
}

/// Payload kind byte: a journal entry. Other values are reserved for
/// future record kinds and for the snapshot's end marker.
pub(crate) const KIND_ENTRY: u8 = 1;
/// Payload kind byte: the end marker closing a snapshot file.
pub(crate) const KIND_SNAPSHOT_END: u8 = 2;

/// Smallest valid payload: kind, seq, time, db, command count.
pub(crate) const MIN_PAYLOAD: usize = 1 + 8 + 8 + 4 + 4;

/// Appends the payload of `entry` with sequence number `seq` to `out`.
///
/// Layout (little endian): `kind u8 = 1, seq u64, time_ms u64, db u32,
/// ncommands u32, then per command: nargs u32, then per argument: len u32,
/// bytes`.
pub(crate) fn encode_payload(seq: u64, entry: &Entry, out: &mut Vec<u8>) {
    out.push(KIND_ENTRY);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&entry.time_ms.to_le_bytes());
    out.extend_from_slice(&entry.db.to_le_bytes());
    out.extend_from_slice(&(entry.commands.len() as u32).to_le_bytes());
    for cmd in &entry.commands {
        out.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
        for arg in cmd {
            out.extend_from_slice(&(arg.len() as u32).to_le_bytes());
            out.extend_from_slice(arg);
        }
    }
}

/// Size [`encode_payload`] will produce, so frames are sized before copying.
pub(crate) fn payload_len(entry: &Entry) -> usize {
    MIN_PAYLOAD
        + entry
            .commands
            .iter()
            .map(|c| 4 + c.iter().map(|a| 4 + a.len()).sum::<usize>())
            .sum::<usize>()
}

/// A payload whose checksum matched but whose contents do not decode: a bug
/// or a format this build does not know, reported as corruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPayload(pub &'static str);

/// Decodes a payload written by [`encode_payload`], returning its sequence
/// number and entry. Every length is checked against what is left, so a
/// damaged payload is an error, never a panic or a huge allocation.
pub(crate) fn decode_payload(payload: &Bytes) -> Result<(u64, Entry), BadPayload> {
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    if c.u8()? != KIND_ENTRY {
        return Err(BadPayload("unknown record kind"));
    }
    let seq = c.u64()?;
    let time_ms = c.u64()?;
    let db = c.u32()?;
    let ncmds = c.u32()? as usize;
    // Each command takes at least 4 bytes: bound the allocation by the input.
    if ncmds > c.remaining() / 4 {
        return Err(BadPayload("command count exceeds payload"));
    }
    let mut commands = Vec::with_capacity(ncmds);
    for _ in 0..ncmds {
        let nargs = c.u32()? as usize;
        if nargs > c.remaining() / 4 {
            return Err(BadPayload("argument count exceeds payload"));
        }
        let mut args = Vec::with_capacity(nargs);
        for _ in 0..nargs {
            let len = c.u32()? as usize;
            args.push(c.bytes(len)?);
        }
        commands.push(args);
    }
    if c.remaining() != 0 {
        return Err(BadPayload("trailing bytes after the last command"));
    }
    Ok((
        seq,
        Entry {
            db,
            commands,
            time_ms,
        },
    ))
}

struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], BadPayload> {
        if n > self.remaining() {
            return Err(BadPayload("field runs past the end of the payload"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, BadPayload> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, BadPayload> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, BadPayload> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, BadPayload> {
        if n > self.remaining() {
            return Err(BadPayload("argument runs past the end of the payload"));
        }
        // Zero-copy: arguments share the record's buffer.
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(cmds: Vec<Vec<Vec<u8>>>, db: u32, time_ms: u64) -> Entry {
        Entry {
            db,
            commands: cmds
                .into_iter()
                .map(|c| c.into_iter().map(Bytes::from).collect())
                .collect(),
            time_ms,
        }
    }

    proptest! {
        #[test]
        fn payload_round_trips(
            cmds in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..5), 0..4),
            db in any::<u32>(), t in any::<u64>(), seq in any::<u64>(),
        ) {
            let e = entry(cmds, db, t);
            let mut out = Vec::new();
            encode_payload(seq, &e, &mut out);
            prop_assert_eq!(out.len(), payload_len(&e));
            let (s, d) = decode_payload(&Bytes::from(out)).unwrap();
            prop_assert_eq!(s, seq);
            prop_assert_eq!(d, e);
        }

        #[test]
        fn damaged_payload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_payload(&Bytes::from(bytes));
        }
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let e = entry(
            vec![vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]],
            0,
            1,
        );
        let mut out = Vec::new();
        encode_payload(1, &e, &mut out);
        for cut in 0..out.len() {
            assert!(
                decode_payload(&Bytes::copy_from_slice(&out[..cut])).is_err(),
                "cut at {cut}"
            );
        }
    }
}
