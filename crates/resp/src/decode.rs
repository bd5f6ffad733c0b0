//! Incremental decoding. Every function looks at the bytes received so far
//! and answers `Ok(None)` when a frame is not complete yet, so callers just
//! read more and call again. Limits are enforced before anything is
//! allocated, and aggregates are measured and built with explicit heap
//! stacks, so a deep or huge frame costs neither call stack nor memory
//! beyond its own bytes. These functions start from the first byte each
//! time; a connection reading commands keeps a
//! [`RequestDecoder`] instead.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::frame::Frame;
use crate::limits::{Limits, MAX_FRAME_NESTING};
use crate::request_decoder::RequestDecoder;

/// Why a byte stream is not valid RESP. The text follows Redis's own
/// wording where Redis has one, so clients see familiar errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// An array header that is not a number, or over the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk header that is not a number.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A bulk string longer than the configured maximum.
    #[error("Protocol error: bulk length {len} exceeds limits.proto_max_bulk_len ({max} bytes)")]
    BulkTooLong {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// An array with more elements than allowed.
    #[error("Protocol error: {len} elements exceed the limit of {max}")]
    ArrayTooLong {
        /// Announced count.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Aggregates nested deeper than allowed.
    #[error("Protocol error: nesting deeper than limits.max_nesting ({0})")]
    TooDeep(usize),
    /// A command element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// An inline command (or a header line) longer than allowed.
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    /// Inline command with an open quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A byte that starts no RESP type.
    #[error("Protocol error: unknown type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// An integer, double or boolean whose text does not parse.
    #[error("Protocol error: invalid {0} value")]
    InvalidValue(&'static str),
}

/// A client command as received: its arguments and the exact multibulk
/// encoding, so the proxy can forward it without re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Arguments, the command name first. Never empty.
    pub args: Vec<Bytes>,
    /// The command as a RESP multibulk (inline commands are re-encoded);
    /// empty when a decoder made
    /// [`without_raw`](crate::RequestDecoder::without_raw) copied every
    /// argument.
    pub raw: Bytes,
}

/// Finds the CRLF-terminated line starting at `pos`. Returns the line (without
/// CRLF) and the position after it.
#[inline]
pub(crate) fn line_at(
    buf: &[u8],
    pos: usize,
    max: usize,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[pos..];
    match memchr_crlf(rest) {
        Some(i) => {
            if i > max {
                return Err(ProtocolError::InlineTooLong);
            }
            Ok(Some((&rest[..i], pos + i + 2)))
        }
        None if rest.len() > max + 1 => Err(ProtocolError::InlineTooLong),
        None => Ok(None),
    }
}

#[inline]
fn memchr_crlf(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i + 1..].iter().position(|&c| c == b'\n') {
            None => return None,
            Some(j) => {
                let nl = i + 1 + j;
                if b[nl - 1] == b'\r' {
                    return Some(nl - 1);
                }
                i = nl;
            }
        }
    }
    None
}

/// Parses a signed decimal exactly as Redis's `string2ll` accepts it: no
/// `+`, no leading zeros, no `-0`. Being as strict as Redis keeps
/// encode ∘ decode the identity (`$05` would re-encode as `$5`).
#[inline]
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub((c - b'0') as i64)?
        } else {
            n.checked_add((c - b'0') as i64)?
        };
    }
    Some(n)
}

pub(crate) fn blob_len(
    line: &[u8],
    limits: &Limits,
    allow_null: bool,
) -> Result<Option<usize>, ProtocolError> {
    let n = parse_i64(line).ok_or(ProtocolError::InvalidBulkLength)?;
    if n == -1 && allow_null {
        return Ok(None);
    }
    if n < 0 {
        return Err(ProtocolError::InvalidBulkLength);
    }
    if n as u64 > limits.max_bulk_len as u64 {
        return Err(ProtocolError::BulkTooLong {
            len: n as u64,
            max: limits.max_bulk_len,
        });
    }
    Ok(Some(n as usize))
}

fn agg_len(line: &[u8], limits: &Limits, allow_null: bool) -> Result<Option<usize>, ProtocolError> {
    let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if n == -1 && allow_null {
        return Ok(None);
    }
    if n < 0 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    if n as u64 > limits.max_array_len as u64 {
        return Err(ProtocolError::ArrayTooLong {
            len: n as u64,
            max: limits.max_array_len,
        });
    }
    Ok(Some(n as usize))
}

/// Checks a value that is whole on its header line (`+ - , ( _ # :`):
/// true when `tag` is one of those, false for blobs and aggregates.
#[inline]
pub(crate) fn line_value(tag: u8, line: &[u8]) -> Result<bool, ProtocolError> {
    match tag {
        b'+' | b'-' | b',' | b'(' => Ok(true),
        b'_' if line.is_empty() => Ok(true),
        b'_' => Err(ProtocolError::InvalidValue("null")),
        b'#' if line == b"t" || line == b"f" => Ok(true),
        b'#' => Err(ProtocolError::InvalidValue("boolean")),
        b':' => parse_i64(line)
            .map(|_| true)
            .ok_or(ProtocolError::InvalidValue("integer")),
        _ => Ok(false),
    }
}

/// Measures the complete frame at the start of `buf`: `Ok(Some(len))` when
/// all `len` bytes are there, `Ok(None)` when more are needed. Allocates
/// only the nesting stack, on the heap, so replies of any depth the limits
/// allow can be forwarded as raw bytes.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    let mut pos = 0usize;
    // Remaining children of each open aggregate.
    let mut stack: Vec<usize> = Vec::new();
    loop {
        if pos >= buf.len() {
            return Ok(None);
        }
        let tag = buf[pos];
        let Some((line, next)) = line_at(buf, pos + 1, limits.max_inline_len)? else {
            return Ok(None);
        };
        pos = next;
        let mut children = 0usize;
        match tag {
            _ if line_value(tag, line)? => {}
            b'$' | b'!' | b'=' => {
                if let Some(n) = blob_len(line, limits, tag == b'$')? {
                    if buf.len() < pos + n + 2 {
                        return Ok(None);
                    }
                    if &buf[pos + n..pos + n + 2] != b"\r\n" {
                        return Err(ProtocolError::MissingCrlf);
                    }
                    pos += n + 2;
                }
            }
            b'*' | b'~' | b'>' => {
                children = agg_len(line, limits, tag == b'*')?.unwrap_or(0);
            }
            b'%' => children = agg_len(line, limits, false)?.unwrap_or(0) * 2,
            b'|' => children = agg_len(line, limits, false)?.unwrap_or(0) * 2 + 1,
            other => return Err(ProtocolError::UnknownType(other)),
        }
        if children > 0 {
            if stack.len() >= limits.max_nesting {
                return Err(ProtocolError::TooDeep(limits.max_nesting));
            }
            stack.push(children);
            continue;
        }
        // One item done: close every aggregate it completes.
        loop {
            match stack.last_mut() {
                None => return Ok(Some(pos)),
                Some(top) => {
                    *top -= 1;
                    if *top > 0 {
                        break;
                    }
                    stack.pop();
                }
            }
        }
    }
}

/// Decodes the complete frame at the start of `buf`, returning it with the
/// number of bytes it took, or `Ok(None)` when more bytes are needed.
///
/// Nesting is bounded by [`MAX_FRAME_NESTING`] as well as by
/// `limits.max_nesting`: a frame nested deeper is refused with
/// [`ProtocolError::TooDeep`] even under [`Limits::upstream`], because the
/// tree it would build could not be dropped, cloned, compared or encoded
/// without overflowing the stack. Callers that must accept any reply
/// forward it as raw bytes measured by [`frame_len`] instead.
pub fn parse_frame(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let limits = Limits {
        max_nesting: limits.max_nesting.min(MAX_FRAME_NESTING),
        ..*limits
    };
    let Some(len) = frame_len(buf, &limits)? else {
        return Ok(None);
    };
    // `frame_len` validated structure, lengths and depth, so the build
    // below cannot run out of input.
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    let frame = build(&bytes)?;
    Ok(Some((frame, len)))
}

/// Builds the frame `frame_len` measured in `b`. Iterative, with the open
/// aggregates on a heap stack: a recursive build took 4 KiB of stack per
/// level unoptimised, so 512 levels filled a 2 MiB thread.
fn build(b: &Bytes) -> Result<Frame, ProtocolError> {
    /// An aggregate still being filled: its type byte, the children so far
    /// (maps and attributes flattened, key then value) and how many more
    /// are to come.
    struct Open {
        tag: u8,
        items: Vec<Frame>,
        left: usize,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let &tag = b.get(pos).ok_or(ProtocolError::MissingCrlf)?;
        let (line, next) =
            line_at(b, pos + 1, usize::MAX - 2)?.ok_or(ProtocolError::MissingCrlf)?;
        let text = b.slice(pos + 1..pos + 1 + line.len());
        pos = next;
        let count = || parse_i64(&text).unwrap_or(0).max(0) as usize;
        let mut done = match tag {
            b'+' => Frame::Simple(text),
            b'-' => Frame::Error(text),
            b':' => Frame::Integer(parse_i64(&text).ok_or(ProtocolError::InvalidValue("integer"))?),
            b'_' => Frame::Null,
            b'#' => match &text[..] {
                b"t" => Frame::Boolean(true),
                b"f" => Frame::Boolean(false),
                _ => return Err(ProtocolError::InvalidValue("boolean")),
            },
            b',' => Frame::Double(text),
            b'(' => Frame::BigNumber(text),
            b'$' | b'!' | b'=' => match usize::try_from(parse_i64(&text).unwrap_or(-1)) {
                Err(_) => Frame::NullBulk,
                Ok(n) => {
                    let end = pos.checked_add(n).filter(|&end| end <= b.len());
                    let end = end.ok_or(ProtocolError::MissingCrlf)?;
                    let data = b.slice(pos..end);
                    pos += n + 2;
                    match tag {
                        b'$' => Frame::Bulk(data),
                        b'!' => Frame::BulkError(data),
                        _ => Frame::Verbatim(data),
                    }
                }
            },
            b'*' if parse_i64(&text) == Some(-1) => Frame::NullArray,
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let left = match tag {
                    b'%' => count() * 2,
                    b'|' => count() * 2 + 1,
                    _ => count(),
                };
                if left > 0 {
                    open.push(Open {
                        tag,
                        // Announced counts are not trusted with memory.
                        items: Vec::with_capacity(left.min(1024)),
                        left,
                    });
                    continue;
                }
                close(tag, Vec::new())?
            }
            other => return Err(ProtocolError::UnknownType(other)),
        };
        // One element done: hand it to its parent, closing every aggregate
        // it completes.
        loop {
            let Some(top) = open.last_mut() else {
                return Ok(done);
            };
            top.items.push(done);
            top.left -= 1;
            if top.left > 0 {
                break;
            }
            match open.pop() {
                Some(full) => done = close(full.tag, full.items)?,
                None => return Err(ProtocolError::MissingCrlf),
            }
        }
    }
}

/// The aggregate frame of type `tag` holding `items` (for maps and
/// attributes: key, value, key, value, …, then an attribute's value).
fn close(tag: u8, mut items: Vec<Frame>) -> Result<Frame, ProtocolError> {
    fn pairs(items: Vec<Frame>) -> Vec<(Frame, Frame)> {
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        out
    }
    Ok(match tag {
        b'*' => Frame::Array(items),
        b'~' => Frame::Set(items),
        b'>' => Frame::Push(items),
        b'%' => Frame::Map(pairs(items)),
        b'|' => {
            let value = items.pop().ok_or(ProtocolError::InvalidMultibulkLength)?;
            Frame::Attribute(pairs(items), Box::new(value))
        }
        other => return Err(ProtocolError::UnknownType(other)),
    })
}

/// Takes one client command off the front of `buf`: a multibulk of bulk
/// strings, or an inline command line. Empty commands (`*0`, blank lines)
/// are consumed and skipped, as Redis does. Returns `Ok(None)` when the
/// command is not complete yet; `buf` then still holds it.
///
/// Each call starts from the first byte of `buf`, so calling this after
/// every socket read costs time quadratic in the size of a command that
/// arrives in many reads: a connection should keep a [`RequestDecoder`],
/// which resumes where it stopped. This is a fresh one for a single call.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    RequestDecoder::new(*limits).decode(buf)
}

/// Splits an inline command the way `redis-cli` and Redis do: whitespace
/// separated, with "double quotes" (C escapes, `\xHH`) and 'single quotes'.
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if c.is_ascii_whitespace() => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(cur));
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// The fuzz property, shared by the cargo-fuzz target and the stable test
/// that replays its corpus: decoding never panics, every accepted frame
/// re-encodes to exactly the bytes it came from, and `parse_request` agrees
/// with itself on what it consumed.
#[doc(hidden)]
pub fn check_roundtrip(data: &[u8]) {
    let limits = Limits {
        max_bulk_len: 1 << 20,
        max_array_len: 1 << 16,
        max_nesting: 32,
        max_inline_len: 1 << 12,
    };
    let mut rest = data;
    while let Ok(Some((frame, n))) = parse_frame(rest, &limits) {
        assert_eq!(frame_len(rest, &limits), Ok(Some(n)));
        assert_eq!(&frame.to_bytes()[..], &rest[..n], "encode(decode(x)) != x");
        rest = &rest[n..];
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(req)) = parse_request(&mut buf, &limits) {
        assert!(!req.args.is_empty());
        // The raw form of any request decodes back to the same arguments.
        let mut again = BytesMut::from(&req.raw[..]);
        let back = parse_request(&mut again, &limits)
            .expect("raw re-parses")
            .expect("complete");
        assert_eq!(back.args, req.args);
        assert!(again.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn incomplete_frames_ask_for_more_at_every_cut() {
        let full = b"*3\r\n$3\r\nSET\r\n%1\r\n+a\r\n:1\r\n$-1\r\n";
        for cut in 0..full.len() {
            assert_eq!(frame_len(&full[..cut], &lim()), Ok(None), "cut at {cut}");
        }
        assert_eq!(frame_len(full, &lim()), Ok(Some(full.len())));
    }

    #[test]
    fn nesting_beyond_limit_is_refused_without_recursion() {
        let deep = "*1\r\n".repeat(100_000);
        assert_eq!(
            frame_len(deep.as_bytes(), &lim()),
            Err(ProtocolError::TooDeep(128))
        );
    }

    /// A reply nested `depth` deep, through every aggregate type: arrays,
    /// sets, pushes, maps (in key and value position) and attributes.
    fn deep_reply(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for level in 0..depth {
            out.extend_from_slice(match level % 6 {
                0 => &b"*1\r\n"[..],
                1 => b"~2\r\n:1\r\n",
                2 => b">1\r\n",
                3 => b"%1\r\n+key\r\n",
                4 => b"%1\r\n",
                _ => b"|1\r\n+a\r\n#t\r\n",
            });
        }
        out.extend_from_slice(b"$5\r\nhello\r\n");
        // Close what the levels left open: map keys (level 4) get a value.
        for level in (0..depth).rev() {
            if level % 6 == 4 {
                out.extend_from_slice(b"_\r\n");
            }
        }
        out
    }

    #[test]
    fn upstream_reply_nested_100_000_deep_is_measured_whole() {
        let reply = deep_reply(100_000);
        assert_eq!(
            frame_len(&reply, &Limits::upstream()),
            Ok(Some(reply.len()))
        );
        for cut in [1, reply.len() / 2, reply.len() - 1] {
            assert_eq!(frame_len(&reply[..cut], &Limits::upstream()), Ok(None));
        }
    }

    #[test]
    fn parse_frame_refuses_a_reply_deeper_than_it_can_build_without_crashing() {
        let reply = deep_reply(100_000);
        assert_eq!(
            parse_frame(&reply, &Limits::upstream()),
            Err(ProtocolError::TooDeep(MAX_FRAME_NESTING))
        );
        // Just within the bound it builds, and re-encodes to the same bytes.
        let reply = deep_reply(MAX_FRAME_NESTING);
        let (frame, n) = parse_frame(&reply, &Limits::upstream()).unwrap().unwrap();
        assert_eq!(n, reply.len());
        assert_eq!(&frame.to_bytes()[..], &reply[..]);
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let text = "[ -~]{0,12}".prop_map(Bytes::from);
        let blob = proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from);
        let leaf = prop_oneof![
            text.clone().prop_map(Frame::Simple),
            text.clone().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            blob.clone().prop_map(Frame::Bulk),
            Just(Frame::NullBulk),
            Just(Frame::NullArray),
            Just(Frame::Null),
            any::<bool>().prop_map(Frame::Boolean),
            text.clone().prop_map(Frame::Double),
            text.prop_map(Frame::BigNumber),
            blob.clone().prop_map(Frame::BulkError),
            blob.prop_map(Frame::Verbatim),
        ];
        leaf.prop_recursive(6, 64, 4, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..4);
            let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
            prop_oneof![
                items.clone().prop_map(Frame::Array),
                items.clone().prop_map(Frame::Set),
                items.prop_map(Frame::Push),
                pairs.clone().prop_map(Frame::Map),
                (pairs, inner).prop_map(|(p, v)| Frame::Attribute(p, Box::new(v))),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn random_frames_decode_to_themselves(frame in any_frame()) {
            let wire = frame.to_bytes();
            let got = parse_frame(&wire, &Limits::upstream());
            proptest::prop_assert_eq!(got, Ok(Some((frame, wire.len()))));
        }
    }

    #[test]
    fn parse_frame_builds_the_deepest_frame_in_a_tiny_stack() {
        // The build keeps its open aggregates on the heap; a recursive one
        // needs several times this much at this depth. The frame comes back
        // to this thread to be dropped.
        let built = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(|| parse_frame(&deep_reply(MAX_FRAME_NESTING), &Limits::upstream()))
            .unwrap();
        assert!(matches!(built.join().unwrap(), Ok(Some(_))));
    }

    #[test]
    fn deepest_frame_parse_frame_builds_fits_in_a_small_stack() {
        // Half of what Tokio and std give a thread by default: building,
        // encoding, cloning, comparing, printing and dropping the deepest
        // frame `parse_frame` accepts must fit with room to spare, in any
        // build profile (`cargo nextest run -p resp --cargo-profile dev`).
        let run = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let reply = deep_reply(MAX_FRAME_NESTING);
                let (frame, _) = parse_frame(&reply, &Limits::upstream()).unwrap().unwrap();
                assert_eq!(&frame.to_bytes()[..], &reply[..]);
                let copy = frame.clone();
                assert_eq!(copy, frame);
                assert!(format!("{frame:?}").len() > MAX_FRAME_NESTING);
            })
            .unwrap();
        run.join().unwrap();
    }

    #[test]
    fn client_limits_still_refuse_deep_nesting() {
        let reply = deep_reply(129);
        assert_eq!(Limits::default().max_nesting, 128);
        assert_eq!(frame_len(&reply, &lim()), Err(ProtocolError::TooDeep(128)));
        assert_eq!(
            parse_frame(&reply, &lim()),
            Err(ProtocolError::TooDeep(128))
        );
        assert!(frame_len(&deep_reply(128), &lim()).unwrap().is_some());
    }

    #[test]
    fn oversized_bulk_is_refused_before_its_bytes_arrive() {
        let l = Limits {
            max_bulk_len: 10,
            ..lim()
        };
        let mut b = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert_eq!(
            parse_request(&mut b, &l),
            Err(ProtocolError::BulkTooLong { len: 11, max: 10 })
        );
    }

    #[test]
    fn request_parses_multibulk_and_keeps_raw() {
        let mut b = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI"[..]);
        let r = parse_request(&mut b, &lim()).unwrap().unwrap();
        assert_eq!(r.args, vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(&r.raw[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(parse_request(&mut b, &lim()), Ok(None));
        assert_eq!(&b[..], b"*1\r\n$4\r\nPI");
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let mut b = BytesMut::from(&b"\r\nset k \"a b\\x41\\n\" 'it\\'s'\r\n"[..]);
        let r = parse_request(&mut b, &lim()).unwrap().unwrap();
        assert_eq!(
            r.args,
            vec![
                Bytes::from("set"),
                Bytes::from("k"),
                Bytes::from("a bA\n"),
                Bytes::from("it's")
            ]
        );
        let mut bad = BytesMut::from(&b"set \"k\r\n"[..]);
        assert_eq!(
            parse_request(&mut bad, &lim()),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn non_bulk_argument_is_a_protocol_error() {
        let mut b = BytesMut::from(&b"*1\r\n:1\r\n"[..]);
        assert_eq!(
            parse_request(&mut b, &lim()),
            Err(ProtocolError::ExpectedBulk(':'))
        );
    }

    #[test]
    fn integers_are_as_strict_as_redis() {
        for (text, want) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("42", Some(42)),
            ("+1", None),
            ("01", None),
            ("-0", None),
            ("", None),
            ("-", None),
            ("9223372036854775808", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    }

    #[test]
    fn garbage_header_is_invalid_multibulk_length() {
        let mut b = BytesMut::from(&b"*x\r\n"[..]);
        assert_eq!(
            parse_request(&mut b, &lim()),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn overlong_inline_line_is_refused() {
        let mut b = BytesMut::from(vec![b'a'; 70_000].as_slice());
        assert_eq!(
            parse_request(&mut b, &lim()),
            Err(ProtocolError::InlineTooLong)
        );
    }
}
