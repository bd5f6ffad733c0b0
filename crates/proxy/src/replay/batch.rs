//! One replay transaction: its encoding (`MULTI`, the records' commands with
//! `SELECT`s between databases, back to db 0, the checkpoint `SET`) and the
//! reading of Redis's replies to it, without building frames.

use bytes::{Bytes, BytesMut};
use journal::{Entry, Position, Record};
use resp::command::F_NO_MULTI;
use resp::frame::encode_command;
use resp::{frame_len, Limits};

/// `MULTI`, opening every batch.
pub(super) const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
/// `EXEC`, sent only once every queued command was accepted.
pub(super) const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
/// `DISCARD`, for a batch that must not run.
pub(super) const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";

/// Error codes meaning "Redis is not accepting writes right now", not "this
/// command is wrong": replay pauses instead of recording a failure. `OOM`
/// and `MISCONF` are DESIGN's; the rest are the other WritesDown and Down
/// signals (a replica, missing replicas, loading, a busy script, lost auth).
const PAUSING: &[&[u8]] = &[
    b"OOM",
    b"MISCONF",
    b"READONLY",
    b"NOREPLICAS",
    b"LOADING",
    b"BUSY",
    b"MASTERDOWN",
    b"NOAUTH",
];

/// What one queued command of a batch is, so a reply can be traced back to
/// its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// A `SELECT` switching to `db` before record `rec` (or back to 0 at
    /// the end, with `rec` the last record).
    Select { rec: u32, db: u32 },
    /// Command `cmd` of record `rec`.
    Command { rec: u32, cmd: u32 },
    /// The checkpoint `SET`.
    Checkpoint,
}

/// One transaction's worth of records, encoded.
#[derive(Debug)]
pub(super) struct Batch {
    /// Where reading for this batch started: the checkpoint before it.
    pub start: Position,
    /// The position after its last record (skipped ones included): the
    /// checkpoint it sets.
    pub next: Position,
    /// The records sent (not those skipped as failed before sending).
    pub records: Vec<Record>,
    /// One per command between `MULTI` and `EXEC`.
    pub slots: Vec<Slot>,
    /// `MULTI` and the queued commands; `EXEC` goes separately.
    pub raw: Bytes,
    /// Record commands in the batch (not `SELECT`s or the checkpoint).
    pub commands: u64,
}

impl Batch {
    /// Replies expected to [`raw`](Self::raw): `MULTI`'s and one per slot.
    pub fn queued_replies(&self) -> usize {
        self.slots.len() + 1
    }
}

/// Encodes `records` as one transaction into `buf` and returns the batch.
/// The connection is on db 0 before (every batch leaves it there) and the
/// `SELECT`s inside `MULTI` take effect at `EXEC`, in order.
pub(super) fn encode(
    buf: &mut BytesMut,
    start: Position,
    next: Position,
    records: Vec<Record>,
    key: &[u8],
    checkpoint: &str,
) -> Batch {
    let mut slots = Vec::with_capacity(records.len() + 2);
    let mut commands = 0u64;
    let mut db = 0u32;
    buf.extend_from_slice(MULTI);
    for (i, r) in records.iter().enumerate() {
        let rec = i as u32;
        if r.entry.db != db {
            db = r.entry.db;
            select(buf, db);
            slots.push(Slot::Select { rec, db });
        }
        for (c, cmd) in r.entry.commands.iter().enumerate() {
            encode_replayed(buf, cmd);
            slots.push(Slot::Command { rec, cmd: c as u32 });
            commands += 1;
        }
    }
    if db != 0 {
        select(buf, 0);
        slots.push(Slot::Select {
            rec: records.len().saturating_sub(1) as u32,
            db: 0,
        });
    }
    encode_command(buf, &[&b"SET"[..], key, checkpoint.as_bytes()]);
    slots.push(Slot::Checkpoint);
    Batch {
        start,
        next,
        records,
        slots,
        raw: buf.split().freeze(),
        commands,
    }
}

/// Adds a stream entry under its journaled ID, or under a new one (`*`)
/// when the stream has since moved past it: a Redis that came back with
/// entries the replica had not seen yet would otherwise refuse it, and the
/// entry would be lost. Any other error is the reply, as `XADD`'s.
/// `ARGV[1]` is where the ID is among the arguments after it.
const XADD_OR_NEWER: &str = "local i = tonumber(table.remove(ARGV, 1)) \
local r = redis.pcall('XADD', KEYS[1], unpack(ARGV)) \
if type(r) == 'table' and r.err then \
if string.find(r.err, 'equal or smaller', 1, true) then \
ARGV[i] = '*' return redis.call('XADD', KEYS[1], unpack(ARGV)) end \
return redis.error_reply(r.err) end \
return r";

/// Lua's `unpack` needs a stack slot per argument: past this many, the
/// entry is sent as a plain `XADD`.
const XADD_OR_NEWER_MAX_ARGS: usize = 4000;

/// One journaled command as replay sends it: as journaled, except an
/// `XADD` with an explicit `<ms>-<seq>` ID (the form the local store
/// journals, trim options included), which goes through [`XADD_OR_NEWER`].
fn encode_replayed(buf: &mut BytesMut, cmd: &[Bytes]) {
    let id_at = (cmd.len() <= XADD_OR_NEWER_MAX_ARGS
        && cmd.first().is_some_and(|c| c.eq_ignore_ascii_case(b"xadd")))
    .then(|| xadd_id_index(cmd))
    .flatten();
    let Some(i) = id_at else {
        encode_command(buf, cmd);
        return;
    };
    // The ID's place among the arguments after the key, from 1 (Lua).
    let place = (i - 1).to_string();
    let mut args: Vec<&[u8]> = Vec::with_capacity(cmd.len() + 4);
    args.extend_from_slice(&[b"EVAL", XADD_OR_NEWER.as_bytes(), b"1", &cmd[1]]);
    args.push(place.as_bytes());
    args.extend(cmd[2..].iter().map(|a| &a[..]));
    encode_command(buf, &args);
}

/// Where an `XADD`'s ID is, when it is explicit (`<ms>-<seq>`): past
/// `NOMKSTREAM` and a `MAXLEN`/`MINID [=|~] threshold [LIMIT n]` trim.
fn xadd_id_index(cmd: &[Bytes]) -> Option<usize> {
    let is = |i: usize, w: &[u8]| cmd.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w));
    let mut i = 2;
    if is(i, b"nomkstream") {
        i += 1;
    }
    if is(i, b"maxlen") || is(i, b"minid") {
        i += 1;
        if is(i, b"=") || is(i, b"~") {
            i += 1;
        }
        i += 1;
        if is(i, b"limit") {
            i += 2;
        }
        if is(i, b"nomkstream") {
            i += 1;
        }
    }
    let id = cmd.get(i)?;
    let (ms, seq) = id.split_at(id.iter().position(|&b| b == b'-')?);
    let digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    // A field and its value follow the ID.
    (digits(ms) && digits(&seq[1..]) && cmd.len() >= i + 3).then_some(i)
}

fn select(buf: &mut BytesMut, db: u32) {
    encode_command(buf, &[&b"SELECT"[..], db.to_string().as_bytes()]);
}

/// Why a record cannot go into a transaction at all: checked before
/// sending, because a queue-time error would abort the whole batch and a
/// bad `SELECT` inside `EXEC` would run the following commands in the
/// wrong database. Returns the index of the offending command (0 for a bad
/// database) and Redis-style error text.
pub(super) fn validate(entry: &Entry, databases: Option<u32>) -> Result<(), (usize, String)> {
    if let Some(n) = databases {
        if entry.db >= n {
            return Err((
                0,
                format!(
                    "ERR DB index is out of range (db {} of {n} databases)",
                    entry.db
                ),
            ));
        }
    }
    for (i, cmd) in entry.commands.iter().enumerate() {
        let Some(name) = cmd.first() else {
            return Err((i, "ERR empty command".into()));
        };
        let Some(spec) = resp::lookup(cmd) else {
            // Not in our table (a newer Redis or a module): Redis decides
            // when it is queued.
            continue;
        };
        let lossy = String::from_utf8_lossy(name).to_lowercase();
        if !spec.arity_ok(cmd.len()) {
            return Err((
                i,
                format!("ERR wrong number of arguments for '{lossy}' command"),
            ));
        }
        // Commands that would end, nest or reshape the batch transaction
        // (or the connection's db) instead of running inside it.
        let connection_scoped = matches!(
            spec.name,
            "multi" | "exec" | "discard" | "watch" | "unwatch" | "select" | "quit" | "reset"
        );
        if connection_scoped || spec.has(F_NO_MULTI) {
            return Err((
                i,
                format!("ERR '{lossy}' cannot be replayed inside a transaction"),
            ));
        }
    }
    Ok(())
}

/// True when `err` (an error reply's text, code first) means Redis is not
/// taking writes now, so replay pauses. Looks through `EXECABORT`'s
/// "Transaction discarded because of: …" to the cause.
pub(super) fn is_pausing(err: &[u8]) -> bool {
    const ABORT: &[u8] = b"EXECABORT Transaction discarded because of: ";
    let err = err.strip_prefix(ABORT).unwrap_or(err);
    let code = err.split(|&b| b == b' ').next().unwrap_or(err);
    PAUSING.contains(&code)
}

/// What the replies to `MULTI` and the queued commands say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// Every command was queued: `EXEC` may be sent.
    Ok,
    /// Redis is not taking writes (`OOM` at queue time …): discard, pause.
    Pause(String),
    /// Some records' commands were refused (unknown command, `NOPERM` …):
    /// discard, record those records as failed, build the batch again
    /// without them. `(slot, error text)`.
    Refused(Vec<(usize, String)>),
    /// Replies that do not fit the batch: the connection is out of step.
    Desync(String),
}

/// What the reply to `EXEC` says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exec {
    /// The transaction ran: `(slot, error text)` for every command that
    /// failed inside it.
    Done(Vec<(usize, String)>),
    /// `EXEC` itself was refused (`EXECABORT … OOM`): nothing ran.
    Aborted(String),
    /// Not a reply to `EXEC` of this batch.
    Desync(String),
}

/// The frame at the start of `data`: its length and, if it is an error, its
/// text. Only error texts are copied.
fn next_reply(data: &[u8], limits: &Limits) -> Result<(usize, Option<String>), String> {
    match frame_len(data, limits) {
        Ok(Some(n)) => {
            let err = match data[0] {
                b'-' => Some(String::from_utf8_lossy(&data[1..n - 2]).into_owned()),
                b'!' => Some(String::from_utf8_lossy(bulk_payload(&data[..n])).into_owned()),
                _ => None,
            };
            Ok((n, err))
        }
        Ok(None) => Err("reply cut short".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The payload of a `!len\r\npayload\r\n` blob error ([`frame_len`]
/// already checked its shape).
fn bulk_payload(frame: &[u8]) -> &[u8] {
    match frame.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i + 2 <= frame.len().saturating_sub(2) => &frame[i + 2..frame.len() - 2],
        _ => frame,
    }
}

/// The length of the first `n` replies in `data`; `None` when fewer are
/// there or one is unreadable.
pub(super) fn replies_len(data: &[u8], n: usize) -> Option<usize> {
    let limits = Limits::upstream();
    let mut pos = 0;
    for _ in 0..n {
        pos += next_reply(&data[pos..], &limits).ok()?.0;
    }
    Some(pos)
}

/// Reads the replies to `MULTI` and the batch's queued commands.
pub(super) fn parse_queued(data: &[u8], slots: &[Slot]) -> Queued {
    let limits = Limits::upstream();
    let mut pos = match next_reply(data, &limits) {
        Ok((n, None)) if &data[..n] == b"+OK\r\n" => n,
        Ok((_, Some(e))) => return Queued::Desync(format!("MULTI refused: {e}")),
        Ok(_) => return Queued::Desync("unexpected reply to MULTI".into()),
        Err(e) => return Queued::Desync(e),
    };
    let mut refused = Vec::new();
    let mut pause = None;
    for (i, slot) in slots.iter().enumerate() {
        let (n, err) = match next_reply(&data[pos..], &limits) {
            Ok(x) => x,
            Err(e) => return Queued::Desync(e),
        };
        match err {
            None if &data[pos..pos + n] == b"+QUEUED\r\n" => {}
            None => return Queued::Desync("a queued command was not answered QUEUED".into()),
            Some(e) => {
                if is_pausing(e.as_bytes()) || !matches!(slot, Slot::Command { .. }) {
                    // Our own SELECT or checkpoint refused: nothing a
                    // record did, so wait rather than skip records.
                    pause.get_or_insert(e);
                } else {
                    refused.push((i, e));
                }
            }
        }
        pos += n;
    }
    if pos != data.len() {
        return Queued::Desync("more replies than queued commands".into());
    }
    match pause {
        Some(p) => Queued::Pause(p),
        None if refused.is_empty() => Queued::Ok,
        None => Queued::Refused(refused),
    }
}

/// Reads the reply to `EXEC` of a batch with `slots` queued commands.
pub(super) fn parse_exec(data: &[u8], slots: usize) -> Exec {
    let limits = Limits::upstream();
    match data.first() {
        Some(b'-') | Some(b'!') => {
            return match next_reply(data, &limits) {
                Ok((_, Some(e))) => Exec::Aborted(e),
                Ok(_) => Exec::Desync("unreadable EXEC error".into()),
                Err(e) => Exec::Desync(e),
            }
        }
        Some(b'*') => {}
        _ => return Exec::Desync("EXEC reply is not an array".into()),
    }
    let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
        return Exec::Desync("EXEC reply cut short".into());
    };
    let count: i64 = match std::str::from_utf8(&data[1..eol])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(c) => c,
        None => return Exec::Desync("bad EXEC array header".into()),
    };
    if count < 0 {
        // A null array: a WATCHed key changed. Replay watches nothing, so
        // this should not happen; nothing ran either way.
        return Exec::Aborted("EXEC returned null (transaction aborted)".into());
    }
    if count as usize != slots {
        return Exec::Desync(format!(
            "EXEC returned {count} replies for {slots} queued commands"
        ));
    }
    let mut pos = eol + 2;
    let mut errors = Vec::new();
    for i in 0..slots {
        match next_reply(&data[pos..], &limits) {
            Ok((n, err)) => {
                if let Some(e) = err {
                    errors.push((i, e));
                }
                pos += n;
            }
            Err(e) => return Exec::Desync(e),
        }
    }
    Exec::Done(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use resp::Request;

    fn rec(db: u32, cmds: &[&[&str]], n: u64) -> Record {
        Record {
            position: Position::new(1, 40 + n),
            next: Position::new(1, 41 + n),
            seq: n,
            entry: Entry {
                db,
                commands: cmds
                    .iter()
                    .map(|c| {
                        c.iter()
                            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                            .collect()
                    })
                    .collect(),
                time_ms: 0,
            },
        }
    }

    fn commands(raw: &[u8]) -> Vec<String> {
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        while let Some(Request { args, .. }) =
            resp::parse_request(&mut buf, &Limits::default()).unwrap()
        {
            out.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        out
    }

    #[test]
    fn selects_only_on_db_change_and_ends_on_db_0_before_the_checkpoint() {
        let records = vec![
            rec(0, &[&["SET", "a", "1"]], 0),
            rec(3, &[&["INCR", "c"], &["INCR", "c"]], 1),
            rec(3, &[&["RPUSH", "l", "x"]], 2),
            rec(5, &[&["DEL", "z"]], 3),
        ];
        let mut buf = BytesMut::new();
        let b = encode(
            &mut buf,
            Position::new(1, 40),
            Position::new(1, 44),
            records,
            b"redoubt:replay:{n}",
            "7:1:44",
        );
        assert_eq!(
            commands(&b.raw),
            [
                "MULTI",
                "SET a 1",
                "SELECT 3",
                "INCR c",
                "INCR c",
                "RPUSH l x",
                "SELECT 5",
                "DEL z",
                "SELECT 0",
                "SET redoubt:replay:{n} 7:1:44",
            ]
        );
        assert_eq!(b.queued_replies(), 10);
        assert_eq!(b.commands, 5);
        assert_eq!(b.slots[1], Slot::Select { rec: 1, db: 3 });
        assert_eq!(b.slots[3], Slot::Command { rec: 1, cmd: 1 });
        assert_eq!(b.slots[8], Slot::Checkpoint);
    }

    #[test]
    fn a_batch_on_db_0_has_no_select() {
        let mut buf = BytesMut::new();
        let b = encode(
            &mut buf,
            Position::START,
            Position::new(1, 41),
            vec![rec(0, &[&["SET", "a", "1"]], 0)],
            b"k",
            "1:1:41",
        );
        assert_eq!(commands(&b.raw), ["MULTI", "SET a 1", "SET k 1:1:41"]);
    }

    #[test]
    fn validation_refuses_what_would_break_the_batch_transaction() {
        let e = |cmds: &[&[&str]], db| rec(db, cmds, 0).entry;
        assert!(validate(&e(&[&["SET", "a", "1"]], 0), Some(16)).is_ok());
        assert!(validate(&e(&[&["FOO.BAR", "x"]], 0), Some(16)).is_ok());
        let bad = [
            (e(&[&["SET", "a", "1"]], 16), 0, "out of range"),
            (
                e(&[&["SET", "a", "1"], &["SET", "a"]], 0),
                1,
                "wrong number",
            ),
            (e(&[&["EXEC"]], 0), 0, "cannot be replayed"),
            (e(&[&["SELECT", "2"]], 0), 0, "cannot be replayed"),
            (e(&[&["WATCH", "k"]], 0), 0, "cannot be replayed"),
            (e(&[&[]], 0), 0, "empty"),
        ];
        for (entry, at, text) in bad {
            let (i, why) = validate(&entry, Some(16)).unwrap_err();
            assert_eq!(i, at, "{why}");
            assert!(why.contains(text), "{why}");
        }
    }

    #[test]
    fn pausing_errors_are_told_from_command_errors() {
        for p in [
            &b"OOM command not allowed when used memory > 'maxmemory'."[..],
            b"MISCONF Redis is configured to save RDB snapshots",
            b"EXECABORT Transaction discarded because of: OOM command not allowed",
            b"READONLY You can't write against a read only replica.",
        ] {
            assert!(is_pausing(p), "{}", String::from_utf8_lossy(p));
        }
        for c in [
            &b"WRONGTYPE Operation against a key holding the wrong kind of value"[..],
            b"ERR unknown command 'FOO'",
            b"EXECABORT Transaction discarded because of previous errors.",
            b"NOPERM this user has no permissions",
        ] {
            assert!(!is_pausing(c), "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn queued_replies_sort_refusals_from_pauses() {
        let slots = [
            Slot::Command { rec: 0, cmd: 0 },
            Slot::Command { rec: 1, cmd: 0 },
            Slot::Checkpoint,
        ];
        assert_eq!(
            parse_queued(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n", &slots),
            Queued::Ok
        );
        assert_eq!(
            parse_queued(
                b"+OK\r\n+QUEUED\r\n-ERR unknown command 'x'\r\n+QUEUED\r\n",
                &slots
            ),
            Queued::Refused(vec![(1, "ERR unknown command 'x'".into())])
        );
        assert_eq!(
            parse_queued(b"+OK\r\n+QUEUED\r\n-ERR x\r\n-OOM full\r\n", &slots),
            Queued::Pause("OOM full".into())
        );
        assert!(matches!(
            parse_queued(b"+OK\r\n+QUEUED\r\n", &slots),
            Queued::Desync(_)
        ));
        assert!(matches!(
            parse_queued(b"-ERR MULTI calls can not be nested\r\n", &slots),
            Queued::Desync(_)
        ));
    }

    #[test]
    fn exec_reply_yields_errors_by_slot() {
        assert_eq!(
            parse_exec(b"*3\r\n+OK\r\n-WRONGTYPE bad\r\n:5\r\n", 3),
            Exec::Done(vec![(1, "WRONGTYPE bad".into())])
        );
        assert_eq!(
            parse_exec(b"*2\r\n*2\r\n$1\r\na\r\n:1\r\n$-1\r\n", 2),
            Exec::Done(vec![])
        );
        assert_eq!(
            parse_exec(b"-EXECABORT Transaction discarded because of: OOM x\r\n", 2),
            Exec::Aborted("EXECABORT Transaction discarded because of: OOM x".into())
        );
        assert!(matches!(parse_exec(b"*-1\r\n", 2), Exec::Aborted(_)));
        assert!(matches!(parse_exec(b"*1\r\n+OK\r\n", 2), Exec::Desync(_)));
        assert!(matches!(parse_exec(b"+OK\r\n", 2), Exec::Desync(_)));
    }
}
