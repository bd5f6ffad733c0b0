//! Replies Redoubt writes itself. The first word is the contract
//! (`UNAVAILABLE`: not executed, safe to retry; `UNCERTAIN`: may have been
//! executed); the rest says what happened and what to do.

use bytes::{Bytes, BytesMut};
use resp::Frame;

/// Reply bytes gathered for a client before they are written to it: a
/// client pipelining large reads gets them in pieces, never gathered whole.
pub const FLUSH_AT: usize = 1 << 20;

/// A client's read buffer gets this much room before each read: enough
/// for a pipeline of small commands per system call.
pub const READ_CHUNK: usize = 16 * 1024;

/// Client output buffers larger than this are given back once written, so
/// a big reply does not stay allocated for an idle connection.
pub const KEEP_AT_MOST: usize = 64 * 1024;

/// Gives back an emptied read buffer before a client is waited on: an idle
/// connection then holds none ([`tls::ReadHalf::read_into`] takes one once
/// bytes arrive, lent from those given back on the same thread when it
/// can, see [`tls::read_buffers`]; requests still being answered keep
/// their bytes).
pub fn idle_read_buffer(buf: &mut BytesMut) {
    tls::read_buffers::give_back(buf);
}

/// Empties a client's output buffer once written, giving back a big one.
pub fn written(out: &mut BytesMut) {
    if out.capacity() > KEEP_AT_MOST {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
}

/// Encodes a frame.
pub fn encode(f: &Frame) -> Bytes {
    f.to_bytes()
}

/// A bulk string.
pub fn bulk(b: &[u8]) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(b.len() + 16);
    out.extend_from_slice(b"$");
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Redis's nil in protocol `proto`: `_` in RESP3; in RESP2 a null array
/// (`array`) or a null bulk string.
pub fn nil(proto: u8, array: bool) -> Bytes {
    Bytes::from_static(match (proto, array) {
        (3, _) => b"_\r\n",
        (_, true) => b"*-1\r\n",
        (_, false) => b"$-1\r\n",
    })
}

/// `+OK`.
pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

/// An `-ERR …` or other error line.
pub fn error(text: impl AsRef<str>) -> Bytes {
    let text = text.as_ref();
    let mut b = BytesMut::with_capacity(text.len() + 3);
    b.extend_from_slice(b"-");
    // Error lines cannot carry newlines.
    b.extend(
        text.bytes()
            .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

/// Redis is known to be down.
pub fn unavailable_down(reason: &str) -> Bytes {
    error(format!(
        "UNAVAILABLE redis is down ({reason}): command not executed; retry later"
    ))
}

/// No connection could be opened.
pub fn unavailable_connect(why: &str) -> Bytes {
    error(format!(
        "UNAVAILABLE cannot reach redis ({why}): command not executed; retry later"
    ))
}

/// A read whose deadline passed.
pub fn unavailable_deadline(ms: u64) -> Bytes {
    error(format!(
        "UNAVAILABLE no reply from redis within {ms} ms: command not executed (it was a read; safe to retry)"
    ))
}

/// A read on a connection that broke, not retried.
pub fn unavailable_lost() -> Bytes {
    error("UNAVAILABLE connection to redis lost before the reply: command not executed (it was a read; safe to retry)")
}

/// A write whose reply never came.
pub fn uncertain_deadline(ms: u64) -> Bytes {
    error(format!(
        "UNCERTAIN no reply from redis within {ms} ms: command may have been executed; check before retrying"
    ))
}

/// A write answered locally whose journal record was not confirmed on disk
/// in time: it stays in the journal's queue and is replayed if it lands.
pub fn uncertain_journal(ms: u64) -> Bytes {
    error(format!(
        "UNCERTAIN the journal did not confirm this write on disk within {ms} ms (disk stalled?): it may still become durable and reach redis; check before retrying"
    ))
}

/// A write sent on a connection that broke before the reply.
pub fn uncertain_lost() -> Bytes {
    error("UNCERTAIN connection to redis lost before the reply: command may have been executed; check before retrying")
}

/// A blocking command cut short because Redis went down.
pub fn uncertain_down() -> Bytes {
    error("UNCERTAIN redis went down while the command was blocked: it may have been executed; check before retrying")
}
