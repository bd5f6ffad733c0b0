//! [`RequestDecoder`]: client commands decoded incrementally, one decoder
//! per connection, in time linear in the bytes received.
//!
//! A command can arrive over many socket reads (a 100 MB `SET`, a `MSET`
//! of a million keys). Parsing it again from its first byte after every
//! read, as [`parse_request`](crate::parse_request) does, costs time
//! quadratic in its size, which lets one slow client starve every other
//! task on the thread. The decoder remembers where the pending command
//! stopped (its argument count, the arguments complete so far, how far the
//! current line has been searched for its end) and resumes there.

use bytes::{Buf, Bytes, BytesMut};

use crate::decode::{blob_len, parse_i64, split_inline, ProtocolError, Request};
use crate::limits::Limits;

/// Header lines of a request (`*3`, `$5`) are short; a longer one is
/// garbage, refused before it can grow.
const MAX_HEADER: usize = 32;

/// Arguments reserved up front for a multibulk; more grow as they arrive.
/// Small, because the count is announced by the client before it has sent
/// anything to back it.
const PREALLOC_ARGS: usize = 16;

/// Decodes client commands off the front of a connection's input buffer,
/// resuming where the previous call stopped.
///
/// Keep one per connection and call [`decode`](Self::decode) after every
/// read with the same buffer. Between calls the caller may only append to
/// the buffer: the decoder keeps offsets into it. (If the buffer is found
/// shorter than it was, the decoder starts the pending command over rather
/// than trust stale offsets.)
///
/// ```
/// use bytes::BytesMut;
/// use resp::{Limits, RequestDecoder};
///
/// let mut decoder = RequestDecoder::new(Limits::default());
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1"[..]);
/// assert_eq!(decoder.decode(&mut buf), Ok(None));
/// buf.extend_from_slice(b"\r\nk\r\n");
/// let req = decoder.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(req.args, ["GET", "k"]);
/// assert!(!decoder.has_partial(&buf));
/// ```
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    pending: Pending,
    /// Buffer length when `decode` last answered "incomplete".
    seen: usize,
    /// Bytes looked at so far, for the linearity tests.
    examined: u64,
    /// Requests keep their wire bytes (`Request::raw`); see
    /// [`without_raw`](Self::without_raw).
    keep_raw: bool,
}

/// How far the command at the front of the buffer has been decoded.
#[derive(Debug)]
enum Pending {
    /// Nothing: the next byte decides between multibulk and inline.
    Nothing,
    /// An inline command: `buf[..scanned]` holds no '\n'.
    Inline { scanned: usize },
    /// A multibulk whose `*N` line is incomplete; `scan` is where the
    /// search for its CRLF resumes.
    Count { scan: usize },
    /// A multibulk of `count` arguments: `spans` (data offset, length) are
    /// the complete ones, and the next one starts at `pos`.
    Args {
        count: usize,
        spans: Vec<(usize, usize)>,
        pos: usize,
        arg: Arg,
    },
}

/// How far the argument starting at `pos` has been decoded.
#[derive(Debug, Clone, Copy)]
enum Arg {
    /// Not at all.
    Start,
    /// Its `$` is there; the search for its length line's CRLF resumes at
    /// `scan`.
    Len { scan: usize },
    /// `len` bytes of data at `start`, then CRLF, once they arrive.
    Data { start: usize, len: usize },
}

/// What one step on the front command found.
enum Step {
    /// More bytes are needed.
    Incomplete,
    /// An empty command was consumed; look at what follows.
    Empty,
    /// A command.
    Done(Request),
}

impl RequestDecoder {
    /// A decoder that enforces `limits` (use the client limits, not
    /// [`Limits::upstream`]).
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            pending: Pending::Nothing,
            seen: 0,
            examined: 0,
            keep_raw: true,
        }
    }

    /// For a caller that never reads [`Request::raw`] (one that runs
    /// commands rather than forwards them): a request whose arguments are
    /// all copied out of the buffer ([`COPY_ARG_MAX`] bytes or less each)
    /// comes with an empty `raw`. Taking `raw` off the read buffer counted
    /// a reference on it and again when dropped, a locked instruction
    /// each, per command.
    pub fn without_raw(mut self) -> Self {
        self.keep_raw = false;
        self
    }

    /// Takes one command off the front of `buf`, with exactly the
    /// semantics of [`parse_request`](crate::parse_request): a multibulk of
    /// bulk strings or an inline line; empty commands (`*0`, blank lines)
    /// consumed and skipped, as Redis does; `Ok(None)` when the command is
    /// not complete yet, with its bytes left in `buf`.
    ///
    /// Nothing is reserved from an announced length: a client that sends
    /// `$536870912` and stops costs nothing beyond the bytes it sent.
    /// After a request or an error the decoder starts afresh; after an
    /// error the connection should be closed, as Redis does.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if buf.len() < self.seen {
            // The caller consumed bytes behind our back: offsets are stale.
            self.pending = Pending::Nothing;
        }
        let out = self.decode_front(buf);
        self.seen = buf.len();
        if !matches!(out, Ok(None)) {
            self.pending = Pending::Nothing;
            self.seen = 0;
        }
        out
    }

    /// True when `buf` holds part of a command: what a session asks at end
    /// of input, after [`decode`](Self::decode) answered `Ok(None)`, to
    /// tell a clean close from one in the middle of a command.
    pub fn has_partial(&self, buf: &[u8]) -> bool {
        // `decode` consumes empty commands, so whatever is left after it
        // answered "incomplete" is the start of one that is not.
        !buf.is_empty()
    }

    /// Bytes this decoder has looked at (searched, compared or split) over
    /// its life. Each byte received is looked at at most once while framing
    /// (twice for an inline line, which is also split), so this stays within
    /// twice the bytes received however they are chunked. Exposed so tests
    /// can check that bound without timing anything.
    #[doc(hidden)]
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    fn decode_front(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            let step = match &mut self.pending {
                Pending::Nothing => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first == b'*' {
                        if let Some((req, examined)) = whole(buf, &self.limits, self.keep_raw) {
                            self.examined += examined;
                            return Ok(Some(req));
                        }
                    }
                    self.examined += 1;
                    self.pending = if first == b'*' {
                        Pending::Count { scan: 0 }
                    } else {
                        Pending::Inline { scanned: 0 }
                    };
                    continue;
                }
                Pending::Inline { scanned } => {
                    inline(buf, scanned, &self.limits, &mut self.examined)?
                }
                Pending::Count { scan } => {
                    let Some((end, next)) = find_crlf(buf, 1, scan, &mut self.examined)? else {
                        return Ok(None);
                    };
                    let n = parse_i64(&buf[1..end]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if n <= 0 {
                        buf.advance(next);
                        Step::Empty
                    } else if n as u64 > self.limits.max_array_len as u64 {
                        return Err(ProtocolError::ArrayTooLong {
                            len: n as u64,
                            max: self.limits.max_array_len,
                        });
                    } else {
                        let count = n as usize;
                        self.pending = Pending::Args {
                            count,
                            spans: Vec::with_capacity(count.min(PREALLOC_ARGS)),
                            pos: next,
                            arg: Arg::Start,
                        };
                        continue;
                    }
                }
                Pending::Args {
                    count,
                    spans,
                    pos,
                    arg,
                } => args(
                    buf,
                    *count,
                    spans,
                    pos,
                    arg,
                    &self.limits,
                    &mut self.examined,
                )?,
            };
            match step {
                Step::Incomplete => return Ok(None),
                Step::Empty => self.pending = Pending::Nothing,
                Step::Done(req) => return Ok(Some(req)),
            }
        }
    }
}

/// Reads the arguments of a multibulk, from the one starting at `pos`.
fn args(
    buf: &mut BytesMut,
    count: usize,
    spans: &mut Vec<(usize, usize)>,
    pos: &mut usize,
    arg: &mut Arg,
    limits: &Limits,
    examined: &mut u64,
) -> Result<Step, ProtocolError> {
    while spans.len() < count {
        if let Arg::Start = arg {
            let Some(&first) = buf.get(*pos) else {
                return Ok(Step::Incomplete);
            };
            *examined += 1;
            if first != b'$' {
                return Err(ProtocolError::ExpectedBulk(first as char));
            }
            *arg = Arg::Len { scan: 0 };
        }
        if let Arg::Len { scan } = arg {
            let Some((end, next)) = find_crlf(buf, *pos + 1, scan, examined)? else {
                return Ok(Step::Incomplete);
            };
            let len = blob_len(&buf[*pos + 1..end], limits, false)?.unwrap_or(0);
            *arg = Arg::Data { start: next, len };
        }
        if let Arg::Data { start, len } = *arg {
            // Only a length check until the data is all there: the bytes in
            // between are never looked at, and never reserved for.
            let end = start.saturating_add(len);
            if buf.len() < end.saturating_add(2) {
                return Ok(Step::Incomplete);
            }
            *examined += 2;
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            spans.push((start, len));
            *pos = end + 2;
            *arg = Arg::Start;
        }
    }
    let raw = buf.split_to(*pos).freeze();
    let args = spans.iter().map(|&(s, l)| take_arg(&raw, s, l)).collect();
    Ok(Step::Done(Request { args, raw }))
}

/// Arguments up to this long are copied out of the read buffer; longer
/// ones share it.
pub const COPY_ARG_MAX: usize = 128;

/// The argument at `raw[s..s + l]`. A short one is copied into its own
/// allocation: sharing the buffer costs an atomic reference count
/// increment and decrement per argument (a few per command, each a locked
/// instruction), more than a small allocation and copy, and a copy never
/// keeps the rest of the read buffer alive when the store keeps it.
fn take_arg(raw: &Bytes, s: usize, l: usize) -> Bytes {
    if l <= COPY_ARG_MAX {
        Bytes::copy_from_slice(&raw[s..s + l])
    } else {
        raw.slice(s..s + l)
    }
}

/// Arguments [`whole`] takes at most.
const WHOLE_ARGS: usize = 16;

/// A multibulk already all in `buf`, of at most [`WHOLE_ARGS`] arguments
/// with short plain lengths — nearly every request — decoded in one pass
/// with no state kept: the request, and the bytes the step-by-step path
/// would have counted as looked at for it. `None` (incomplete, long,
/// unusual or wrong) sends it down that path, which then decides; nothing
/// is consumed before the request is known whole.
fn whole(buf: &mut BytesMut, limits: &Limits, keep_raw: bool) -> Option<(Request, u64)> {
    let b = &buf[..];
    let (count, mut pos) = plain_number(b, 1)?;
    if count == 0 || count > WHOLE_ARGS || count > limits.max_array_len {
        return None;
    }
    // The step-by-step path looks at the count line up to its LF.
    let mut examined = pos as u64 - 1;
    let mut spans = [(0usize, 0usize); WHOLE_ARGS];
    for span in spans.iter_mut().take(count) {
        if *b.get(pos)? != b'$' {
            return None;
        }
        let (len, start) = plain_number(b, pos + 1)?;
        if len > limits.max_bulk_len {
            return None;
        }
        let end = start + len;
        if b.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        // The `$`, the length line from its second byte to its LF, and
        // the CRLF after the data.
        examined += (start - pos + 1) as u64;
        *span = (start, len);
        pos = end + 2;
    }
    if !keep_raw && spans[..count].iter().all(|&(_, l)| l <= COPY_ARG_MAX) {
        let args = spans[..count]
            .iter()
            .map(|&(s, l)| Bytes::copy_from_slice(&b[s..s + l]))
            .collect();
        buf.advance(pos);
        return Some((
            Request {
                args,
                raw: Bytes::new(),
            },
            examined,
        ));
    }
    let raw = buf.split_to(pos).freeze();
    let args = spans[..count]
        .iter()
        .map(|&(s, l)| take_arg(&raw, s, l))
        .collect();
    Some((Request { args, raw }, examined))
}

/// A number of 1 to 9 plain digits (no sign, no leading zero) at `b[at..]`
/// followed by CRLF: the number and where the next line starts.
fn plain_number(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut n = 0usize;
    let mut i = at;
    loop {
        match *b.get(i)? {
            c @ b'0'..=b'9' if i - at < 9 => {
                n = n * 10 + usize::from(c - b'0');
                i += 1;
            }
            b'\r' if i > at => break,
            _ => return None,
        }
    }
    if *b.get(i + 1)? != b'\n' || (b[at] == b'0' && i - at > 1) {
        return None;
    }
    Some((n, i + 2))
}

/// Reads an inline command line; `buf[..*scanned]` is known to hold no '\n'.
fn inline(
    buf: &mut BytesMut,
    scanned: &mut usize,
    limits: &Limits,
    examined: &mut u64,
) -> Result<Step, ProtocolError> {
    // A '\n' beyond `max_inline_len` makes the line too long, as does none
    // at all once that many bytes are in: either way searching further
    // cannot change the answer.
    let limit = buf.len().min(limits.max_inline_len.saturating_add(1));
    let from = (*scanned).min(limit);
    let Some(k) = buf[from..limit].iter().position(|&c| c == b'\n') else {
        *examined += (limit - from) as u64;
        *scanned = limit;
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(Step::Incomplete);
    };
    let nl = from + k;
    let line = buf.split_to(nl + 1);
    let mut text = &line[..nl];
    if text.last() == Some(&b'\r') {
        text = &text[..text.len() - 1];
    }
    *examined += (k + 1 + text.len()) as u64;
    let args = split_inline(text)?;
    if args.is_empty() {
        return Ok(Step::Empty);
    }
    let mut raw = BytesMut::new();
    crate::frame::encode_command(&mut raw, &args);
    Ok(Step::Done(Request {
        args,
        raw: raw.freeze(),
    }))
}

/// Finds the CRLF ending the header line that starts at `start`, searching
/// only bytes from `*scan` on and recording how far it got. Returns the end
/// of the line (before CR) and the offset after LF. Answers exactly as
/// `decode::line_at(buf, start, MAX_HEADER)`: the first "\r\n" at or after
/// `start`, refused when the line is longer than `MAX_HEADER`.
fn find_crlf(
    buf: &[u8],
    start: usize,
    scan: &mut usize,
    examined: &mut u64,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    // A LF past `start + MAX_HEADER + 1` ends a line that is too long, and
    // is refused below just as if it had not been found.
    let limit = buf.len().min(start + MAX_HEADER + 2);
    // A LF at `start` has no CR of this line before it.
    let mut j = (*scan).max(start + 1);
    while j < limit {
        match buf[j..limit].iter().position(|&c| c == b'\n') {
            Some(k) => {
                let lf = j + k;
                *examined += (k + 1) as u64;
                if buf[lf - 1] == b'\r' {
                    return Ok(Some((lf - 1, lf + 1)));
                }
                j = lf + 1;
            }
            None => {
                *examined += (limit - j) as u64;
                j = limit;
            }
        }
    }
    *scan = j;
    if buf.len().saturating_sub(start) > MAX_HEADER + 1 {
        return Err(ProtocolError::InlineTooLong);
    }
    Ok(None)
}

/// The fuzz property for chunked decoding, shared by the cargo-fuzz target
/// `decode_chunked` and the stable test that replays its corpus: the first
/// byte of `data` picks how the rest is cut into reads, and one
/// [`RequestDecoder`] fed those reads one by one returns exactly what it
/// (that is, [`parse_request`](crate::parse_request)) returns on the whole
/// input at once, errors included, leaves the same bytes unconsumed, and
/// looks at no byte more often.
#[doc(hidden)]
pub fn check_chunked(data: &[u8]) {
    let limits = Limits {
        max_bulk_len: 1 << 10,
        max_array_len: 1 << 8,
        max_nesting: 32,
        max_inline_len: 1 << 8,
    };
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (want, want_rest, want_examined) = one_shot(stream, &limits);
    // Read sizes from 1 to 64 bytes, varied by a small xorshift so that one
    // seed byte gives many different cuts.
    let mut x = u32::from(seed) | 0x100;
    let mut next_size = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 64) as usize + 1
    };
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut fed = 0;
    'feed: while fed < stream.len() {
        let n = next_size().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(req)) => got.push(Ok(req)),
                Ok(None) => break,
                Err(e) => {
                    got.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, want, "chunked decoding differs from one-shot");
    assert_eq!(
        decoder.bytes_examined(),
        want_examined,
        "bytes looked at again because they came in pieces"
    );
    if !matches!(want.last(), Some(Err(_))) {
        assert_eq!(&buf[..], &want_rest[..], "different bytes left over");
        assert_eq!(decoder.has_partial(&buf), !want_rest.is_empty());
    }
}

/// Everything a decoder takes off `stream` in one read, up to and including
/// the first error, what it leaves, and the bytes it looked at.
fn one_shot(
    stream: &[u8],
    limits: &Limits,
) -> (Vec<Result<Request, ProtocolError>>, BytesMut, u64) {
    let mut decoder = RequestDecoder::new(*limits);
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(req)) => out.push(Ok(req)),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    (out, buf, decoder.bytes_examined())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::frame::encode_command;

    /// `parse_request` as it was before `RequestDecoder`, kept verbatim as
    /// the oracle: the decoder must answer exactly as it did.
    mod oracle {
        use bytes::BytesMut;

        use crate::decode::{blob_len, line_at, parse_i64, split_inline, ProtocolError, Request};
        use crate::limits::Limits;

        pub fn parse_request(
            buf: &mut BytesMut,
            limits: &Limits,
        ) -> Result<Option<Request>, ProtocolError> {
            loop {
                if buf.is_empty() {
                    return Ok(None);
                }
                let parsed = if buf[0] == b'*' {
                    parse_multibulk(buf, limits)?
                } else {
                    parse_inline(buf, limits)?
                };
                match parsed {
                    Parsed::Incomplete => return Ok(None),
                    Parsed::Empty => continue,
                    Parsed::Done(req) => return Ok(Some(req)),
                }
            }
        }

        enum Parsed {
            Incomplete,
            Empty,
            Done(Request),
        }

        fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
            const MAX_HEADER: usize = 32;
            let Some((line, mut pos)) = line_at(buf, 1, MAX_HEADER)? else {
                return Ok(Parsed::Incomplete);
            };
            let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n <= 0 {
                let _ = buf.split_to(pos);
                return Ok(Parsed::Empty);
            }
            if n as u64 > limits.max_array_len as u64 {
                return Err(ProtocolError::ArrayTooLong {
                    len: n as u64,
                    max: limits.max_array_len,
                });
            }
            let n = n as usize;
            let mut spans = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                if pos >= buf.len() {
                    return Ok(Parsed::Incomplete);
                }
                if buf[pos] != b'$' {
                    return Err(ProtocolError::ExpectedBulk(buf[pos] as char));
                }
                let Some((line, next)) = line_at(buf, pos + 1, MAX_HEADER)? else {
                    return Ok(Parsed::Incomplete);
                };
                let len = blob_len(line, limits, false)?.unwrap_or(0);
                if buf.len() < next + len + 2 {
                    return Ok(Parsed::Incomplete);
                }
                if &buf[next + len..next + len + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                spans.push((next, len));
                pos = next + len + 2;
            }
            let raw = buf.split_to(pos).freeze();
            let args = spans
                .into_iter()
                .map(|(s, l)| raw.slice(s..s + l))
                .collect();
            Ok(Parsed::Done(Request { args, raw }))
        }

        fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
            let Some(nl) = buf.iter().position(|&c| c == b'\n') else {
                if buf.len() > limits.max_inline_len {
                    return Err(ProtocolError::InlineTooLong);
                }
                return Ok(Parsed::Incomplete);
            };
            if nl > limits.max_inline_len {
                return Err(ProtocolError::InlineTooLong);
            }
            let line = buf.split_to(nl + 1);
            let mut text = &line[..nl];
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
            let args = split_inline(text)?;
            if args.is_empty() {
                return Ok(Parsed::Empty);
            }
            let mut raw = BytesMut::new();
            crate::frame::encode_command(&mut raw, &args);
            Ok(Parsed::Done(Request {
                args,
                raw: raw.freeze(),
            }))
        }
    }

    type Outcome = Vec<Result<Request, ProtocolError>>;

    /// The oracle on the whole stream at once: every request up to and
    /// including the first error, and the bytes it leaves.
    fn oracle_run(stream: &[u8], limits: &Limits) -> (Outcome, Vec<u8>) {
        let mut buf = BytesMut::from(stream);
        let mut out = Vec::new();
        loop {
            match oracle::parse_request(&mut buf, limits) {
                Ok(Some(req)) => out.push(Ok(req)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        (out, buf.to_vec())
    }

    /// What one decoder took off `stream` fed in reads of the given sizes
    /// (cycled), decoding after each read and stopping at the first error.
    struct Chunked {
        outcome: Outcome,
        rest: Vec<u8>,
        partial: bool,
        examined: u64,
    }

    fn chunked_run(stream: &[u8], sizes: &[usize], limits: &Limits) -> Chunked {
        let mut decoder = RequestDecoder::new(*limits);
        let mut buf = BytesMut::new();
        let mut outcome = Vec::new();
        let mut fed = 0;
        let mut sizes = sizes.iter().cycle();
        'feed: while fed < stream.len() {
            let n = sizes
                .next()
                .copied()
                .unwrap_or(1)
                .clamp(1, stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(req)) => outcome.push(Ok(req)),
                    Ok(None) => break,
                    Err(e) => {
                        outcome.push(Err(e));
                        break 'feed;
                    }
                }
            }
        }
        Chunked {
            outcome,
            partial: decoder.has_partial(&buf),
            rest: buf.to_vec(),
            examined: decoder.bytes_examined(),
        }
    }

    /// Pieces of a client's byte stream: commands of every shape, empty
    /// commands, and the malformed inputs behind each protocol error.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        // Mostly within the small limits' 20-byte bulks, sometimes over.
        let bytes = proptest::collection::vec(any::<u8>(), 0..22);
        let word = "[a-zA-Z0-9:_]{1,8}";
        prop_oneof![
            8 => proptest::collection::vec(bytes, 1..6).prop_map(|args| {
                let mut out = BytesMut::new();
                encode_command(&mut out, &args);
                out.to_vec()
            }),
            4 => (proptest::collection::vec(word, 1..5), any::<bool>()).prop_map(|(w, crlf)| {
                let mut line = w.join(" ").into_bytes();
                line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                line
            }),
            // Inline lines with quotes and escapes, balanced or not.
            1 => "[a-z \"'\\\\x41]{0,20}\r?\n".prop_map(String::into_bytes),
            1 => prop_oneof![
                Just(b"*0\r\n".to_vec()),
                Just(b"*-1\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"  \t \r\n".to_vec()),
            ],
            1 => prop_oneof![
                Just(b"*x\r\n".to_vec()),
                Just(b"*1\r\n:1\r\n".to_vec()),
                Just(b"*1\r\n$-1\r\n".to_vec()),
                Just(b"*1\r\n$3\r\nabcXY".to_vec()),
                Just(b"*2\r\n$1\r\na\r\n$01\r\nb\r\n".to_vec()),
                Just(b"*3\r\n\n$1\r\na\r\n".to_vec()),
                Just(b"*1\r\n$1\na\r\n".to_vec()),
                Just(format!("*{}\r\n", "1".repeat(40)).into_bytes()),
                Just(format!("*1\r\n${}\r\n", "9".repeat(33)).into_bytes()),
                Just(b"*100\r\n".to_vec()),
                Just(b"*1\r\n$100\r\n".to_vec()),
                Just(vec![b'a'; 80]),
                Just(b"set 'k\r\n".to_vec()),
            ],
            1 => proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// Small limits, so that the stream above reaches every one of them.
    fn small_limits() -> Limits {
        Limits {
            max_bulk_len: 20,
            max_array_len: 5,
            max_nesting: 8,
            max_inline_len: 64,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn chunked_decoding_matches_the_old_one_shot_parse(
            pieces in proptest::collection::vec(piece(), 1..10),
            sizes in proptest::collection::vec(1usize..48, 1..16),
            small in any::<bool>(),
        ) {
            let stream = pieces.concat();
            let limits = if small { small_limits() } else { Limits::default() };
            let (want, want_rest) = oracle_run(&stream, &limits);
            let got = chunked_run(&stream, &sizes, &limits);
            prop_assert_eq!(&got.outcome, &want);
            // After an error the two have seen different amounts of input.
            if !matches!(want.last(), Some(Err(_))) {
                prop_assert_eq!(&got.rest, &want_rest);
                prop_assert_eq!(got.partial, !want_rest.is_empty());
            }
            // In one read it is today's `parse_request`, leftovers too.
            let whole = chunked_run(&stream, &[stream.len()], &limits);
            prop_assert_eq!(&whole.outcome, &want);
            prop_assert_eq!(&whole.rest, &want_rest);
            // And however the input is cut, each byte is looked at as often
            // as when it all comes at once: no re-scanning.
            prop_assert_eq!(got.examined, whole.examined);
        }

        #[test]
        fn random_input_holds_the_chunked_property(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_chunked(&data);
        }
    }

    /// Feeds `stream` in reads of `chunk` bytes and returns the requests and
    /// the bytes examined: by one decoder kept across reads, or, with
    /// `fresh_each_read`, by a new one for every read, which is what calling
    /// `parse_request` after each read amounts to.
    fn examined_when_fed(stream: &[u8], chunk: usize, fresh_each_read: bool) -> (usize, u64) {
        let limits = Limits::default();
        let mut decoder = RequestDecoder::new(limits);
        let mut examined = 0;
        let mut buf = BytesMut::new();
        let mut requests = 0;
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            if fresh_each_read {
                examined += decoder.bytes_examined();
                decoder = RequestDecoder::new(limits);
            }
            while let Some(req) = decoder.decode(&mut buf).expect("valid stream") {
                assert!(!req.args.is_empty());
                requests += 1;
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        (requests, examined + decoder.bytes_examined())
    }

    fn command(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_command(&mut out, args);
        out.to_vec()
    }

    const MB: usize = 1_000_000;

    /// Checks that `stream` fed in 4 KiB reads costs the decoder exactly
    /// what it costs in one read, and no more than one look per byte.
    fn assert_linear_in_4k_reads(stream: &[u8]) {
        let (requests, examined) = examined_when_fed(stream, 4096, false);
        assert_eq!(requests, 1);
        let (_, in_one_read) = examined_when_fed(stream, stream.len(), false);
        assert_eq!(examined, in_one_read, "bytes looked at again across reads");
        assert!(
            examined <= stream.len() as u64,
            "{examined} bytes examined for {}",
            stream.len()
        );
    }

    // Re-parsing after each read (a fresh decoder per read) fails the first
    // check of both tests below: 122 MB examined instead of 10 kB for the
    // thousand arguments, 586 kB instead of 26 bytes for the one bulk.

    #[test]
    fn without_raw_decodes_the_same_requests_and_drops_raw_only_when_every_argument_is_copied() {
        let long = "x".repeat(COPY_ARG_MAX + 1);
        let mut stream = Vec::new();
        stream.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
        stream.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{long}\r\n",
                long.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(b"PING inline\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI");
        let decode_all = |mut d: RequestDecoder| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut out = Vec::new();
            while let Some(r) = d.decode(&mut buf).expect("valid") {
                out.push(r);
            }
            (out, buf)
        };
        let (with, rest_with) = decode_all(RequestDecoder::new(Limits::default()));
        let (without, rest_without) =
            decode_all(RequestDecoder::new(Limits::default()).without_raw());
        assert_eq!(rest_with, rest_without, "the same bytes consumed");
        assert_eq!(with.len(), 4);
        assert_eq!(without.len(), 4);
        for (w, wo) in with.iter().zip(&without) {
            assert_eq!(w.args, wo.args);
        }
        assert!(without[0].raw.is_empty() && without[3].raw.is_empty());
        // A long argument is shared with the request's raw bytes, kept.
        assert_eq!(without[1].raw, with[1].raw);
        assert_eq!(
            &with[0].raw[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n"
        );
    }

    #[test]
    fn a_request_already_whole_is_decoded_in_one_pass_counting_the_same_bytes() {
        let stream: &[u8] = b"*3\r\n$4\r\nHSET\r\n$0\r\n\r\n$10\r\n0123456789\r\n*1\r\n";
        let mut buf = BytesMut::from(stream);
        let (req, examined) = whole(&mut buf, &Limits::default(), true).expect("the one-pass path");
        assert_eq!(req.args, ["HSET", "", "0123456789"]);
        assert_eq!(&buf[..], b"*1\r\n");
        // Byte by byte, the step-by-step path decodes it and counts as much.
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut fed = BytesMut::new();
        let mut got = None;
        for &b in &stream[..stream.len() - 4] {
            fed.extend_from_slice(&[b]);
            if let Some(r) = decoder.decode(&mut fed).expect("valid") {
                got = Some(r);
            }
        }
        assert_eq!(got.expect("decoded").args, req.args);
        assert_eq!(decoder.bytes_examined(), examined);
        // Anything it is not sure of goes the step-by-step way.
        for odd in [
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk"[..],
            b"*1\r\n$03\r\nGET\r\n",
            b"*1\r\n$-1\r\n",
            b"*01\r\n$3\r\nGET\r\n",
            b"*17\r\n",
        ] {
            assert!(whole(&mut BytesMut::from(odd), &Limits::default(), true).is_none());
        }
    }

    #[test]
    fn hundred_megabytes_in_a_thousand_args_cost_what_one_read_costs() {
        let args: Vec<Vec<u8>> = (0..1000)
            .map(|i| vec![b'a' + (i % 26) as u8; 100_000])
            .collect();
        let stream = command(&args);
        assert!(stream.len() >= 100 * MB);
        assert_linear_in_4k_reads(&stream);
    }

    #[test]
    fn one_hundred_megabyte_bulk_costs_what_one_read_costs() {
        assert_linear_in_4k_reads(&command(&[
            b"SET".to_vec(),
            b"k".to_vec(),
            vec![b'v'; 100 * MB],
        ]));
    }

    #[test]
    fn many_small_args_cost_one_look_per_byte_where_reparsing_costs_dozens() {
        // 2 MB as 100 000 arguments: the shape that made re-parsing
        // quadratic, since every read re-walked every argument header.
        let args: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("member:{i:012}").into_bytes())
            .collect();
        let stream = command(&args);
        let (requests, examined) = examined_when_fed(&stream, 4096, false);
        assert_eq!(requests, 1);
        assert!(
            examined <= stream.len() as u64,
            "{examined} bytes examined for {}",
            stream.len()
        );
        // The same measure on a fresh decoder per read (today's
        // `parse_request` after every read) shows the quadratic cost, so
        // the bound above is one that re-parsing would fail.
        let (requests, reparsed) = examined_when_fed(&stream, 4096, true);
        assert_eq!(requests, 1);
        assert!(
            reparsed > 20 * stream.len() as u64,
            "re-parsing examined only {reparsed}"
        );
    }

    #[test]
    fn inline_line_trickled_a_byte_at_a_time_is_searched_once() {
        let mut line = b"SET k ".to_vec();
        line.resize(60_000, b'x');
        line.extend_from_slice(b"\r\n");
        let (requests, examined) = examined_when_fed(&line, 1, false);
        assert_eq!(requests, 1);
        assert_eq!(examined, examined_when_fed(&line, line.len(), false).1);
        assert!(
            examined <= 2 * line.len() as u64,
            "{examined} bytes examined for {}",
            line.len()
        );
        let short = [&line[..4000], b"\r\n"].concat();
        let (_, reparsed) = examined_when_fed(&short, 1, true);
        assert!(
            reparsed > 1000 * short.len() as u64,
            "re-parsing examined only {reparsed}"
        );
    }

    #[test]
    fn header_lines_trickled_a_byte_at_a_time_are_searched_once() {
        let stream = command(&[b"GET".to_vec(), vec![b'k'; 1000]]).repeat(50);
        let (requests, examined) = examined_when_fed(&stream, 1, false);
        assert_eq!(requests, 50);
        assert_eq!(examined, examined_when_fed(&stream, stream.len(), false).1);
        assert!(
            examined <= stream.len() as u64,
            "{examined} bytes examined for {}",
            stream.len()
        );
    }

    #[test]
    fn announced_bulk_length_reserves_nothing() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"*2\r\n$536870912\r\n");
        let before = buf.capacity();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"some data");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.capacity(), before);
        assert!(decoder.has_partial(&buf));
    }

    #[test]
    fn decoder_starts_afresh_after_a_request_and_after_an_error() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n"[..]);
        let ping = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(ping.args, [Bytes::from("PING")]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        // A new buffer with the same decoder: nothing of the failed command
        // is remembered.
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nECHO\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap().args,
            [Bytes::from("ECHO")]
        );
    }

    #[test]
    fn partial_command_is_reported_and_empty_ones_are_not() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"\r\n*0\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(!decoder.has_partial(&buf));
        buf.extend_from_slice(b"*1\r\n$4\r\nPI");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(decoder.has_partial(&buf));
        buf.extend_from_slice(b"NG\r\n");
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert!(!decoder.has_partial(&buf));
    }

    #[test]
    fn buffer_consumed_behind_the_decoders_back_restarts_the_command() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.clear();
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap().args,
            [Bytes::from("PING")]
        );
    }
}
