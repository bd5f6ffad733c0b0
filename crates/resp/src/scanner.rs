//! [`ReplyScanner`]: measures a stream of replies as it arrives, keeping
//! its place between reads.
//!
//! [`frame_len`](crate::frame_len) measures one complete frame from its
//! first byte, so a caller waiting for a large reply measures it again on
//! every read: a million-element `LRANGE` arriving in 64 KiB reads is
//! scanned about 1,500 times. The scanner instead consumes bytes as they
//! come and remembers only how many values the current frame still needs
//! and how much of a bulk payload is left, so the cost is linear in the
//! bytes received, and the caller may drop the bytes it consumed (a reply
//! nobody waits for any more is discarded as it streams in, never held).

use crate::decode::{blob_len, line_at, line_value, parse_i64};
use crate::{Limits, ProtocolError};

/// What one call to [`ReplyScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes consumed from the start of the slice given.
    pub consumed: usize,
    /// A top-level frame ended at `consumed`; `true` when it was a push
    /// (`>`), which arrives out of band between replies.
    pub frame_done: Option<bool>,
}

/// Incremental measure of a stream of RESP2/RESP3 frames. Any depth, no
/// allocation: nesting is a count of values still needed, not a stack.
#[derive(Debug, Clone, Default)]
pub struct ReplyScanner {
    /// Values the current top-level frame still needs (0: between frames).
    need: u64,
    /// Payload bytes of the current blob still to pass.
    skip: u64,
    /// The blob's closing CRLF is still to come.
    crlf: bool,
    /// The current top-level frame is a push.
    push: bool,
}

impl ReplyScanner {
    /// A scanner positioned between frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// True between frames: nothing of a frame has been consumed.
    pub fn at_boundary(&self) -> bool {
        self.need == 0 && self.skip == 0 && !self.crlf
    }

    /// Consumes bytes from `buf` (which starts where the previous call
    /// stopped) until a top-level frame ends or the input runs out. A
    /// header line is consumed only whole, so a call may stop up to one
    /// line short of the end of `buf`; give it those bytes again, followed
    /// by more.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Scanned, ProtocolError> {
        if self.at_boundary() {
            if let Some(consumed) = short_reply(buf, limits) {
                return Ok(Scanned {
                    consumed,
                    frame_done: Some(false),
                });
            }
        }
        self.scan_step(buf, limits)
    }

    /// [`scan`](Self::scan) without the short-reply path: one header line
    /// at a time.
    fn scan_step(&mut self, buf: &[u8], limits: &Limits) -> Result<Scanned, ProtocolError> {
        let mut pos = 0usize;
        loop {
            if self.skip > 0 {
                let take = self.skip.min((buf.len() - pos) as u64);
                pos += take as usize;
                self.skip -= take;
                if self.skip > 0 {
                    return Ok(self.partial(pos));
                }
            }
            if self.crlf {
                if buf.len() < pos + 2 {
                    return Ok(self.partial(pos));
                }
                if &buf[pos..pos + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                pos += 2;
                self.crlf = false;
                if self.need == 0 {
                    return Ok(self.done(pos));
                }
            }
            if pos >= buf.len() {
                return Ok(self.partial(pos));
            }
            let tag = buf[pos];
            let Some((line, next)) = line_at(buf, pos + 1, limits.max_inline_len)? else {
                return Ok(self.partial(pos));
            };
            if self.need == 0 {
                self.need = 1;
                self.push = tag == b'>';
            }
            let mut more = 0u64;
            match tag {
                _ if line_value(tag, line)? => {}
                b'$' | b'!' | b'=' => {
                    if let Some(n) = blob_len(line, limits, tag == b'$')? {
                        self.skip = n as u64;
                        self.crlf = true;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if n == -1 && tag == b'*' {
                        // A null array: a value with no elements.
                    } else if n < 0 || n as u64 > limits.max_array_len as u64 {
                        return Err(ProtocolError::InvalidMultibulkLength);
                    } else {
                        more = match tag {
                            b'%' => 2 * n as u64,
                            // An attribute annotates the value after it,
                            // which the frame still needs.
                            b'|' => 2 * n as u64 + 1,
                            _ => n as u64,
                        };
                    }
                }
                other => return Err(ProtocolError::UnknownType(other)),
            }
            pos = next;
            // This header is one of the values needed; an aggregate adds
            // its elements.
            self.need = self.need - 1 + more;
            if self.need == 0 && !self.crlf {
                return Ok(self.done(pos));
            }
        }
    }

    fn partial(&self, consumed: usize) -> Scanned {
        Scanned {
            consumed,
            frame_done: None,
        }
    }

    fn done(&mut self, consumed: usize) -> Scanned {
        Scanned {
            consumed,
            frame_done: Some(std::mem::take(&mut self.push)),
        }
    }
}

/// Longest header line [`short_reply`] reads.
const SHORT_LINE: usize = 62;

/// The length of the complete reply at the start of `buf` when it is one
/// of the short ones most commands get (a status such as `+OK`, a small
/// non-negative integer, a bulk string of under 100 bytes, a null), all
/// there and well formed; `None` for anything else, which the
/// step-by-step scan then measures (or refuses) as it always does.
/// Measured a line at a time, a short reply cost the proxy about a
/// fourteenth of its work per pipelined `GET`.
fn short_reply(buf: &[u8], limits: &Limits) -> Option<usize> {
    match *buf.first()? {
        b'+' => {
            // The line ends at the first LF, which must follow a CR
            // (otherwise the step-by-step scan looks further).
            let nl = buf.iter().take(SHORT_LINE + 2).position(|&c| c == b'\n')?;
            (nl >= 2 && buf[nl - 1] == b'\r' && nl - 2 <= limits.max_inline_len).then_some(nl + 1)
        }
        b':' => {
            // `0`, or up to 18 digits without a leading zero: always an i64.
            let digits = buf[1..]
                .iter()
                .take(19)
                .take_while(|c| c.is_ascii_digit())
                .count();
            let plain = digits == 1 || ((1..=18).contains(&digits) && buf[1] != b'0');
            let end = 1 + digits;
            (plain && buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
        }
        b'$' => {
            let (len, data) = match buf.get(1..5)? {
                // A null: a miss.
                b"-1\r\n" => return Some(5),
                &[d, b'\r', b'\n', _] if d.is_ascii_digit() => (usize::from(d - b'0'), 4),
                &[d1 @ b'1'..=b'9', d2, b'\r', b'\n'] if d2.is_ascii_digit() => {
                    (usize::from(d1 - b'0') * 10 + usize::from(d2 - b'0'), 5)
                }
                _ => return None,
            };
            let end = data + len;
            (len <= limits.max_bulk_len && buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_len;

    /// Whatever the short path takes, the step-by-step scan takes the same
    /// way; whatever it does not take is left to that scan.
    #[test]
    fn short_replies_measure_as_the_step_by_step_scan_measures_them() {
        let limits = Limits::upstream();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for n in [0usize, 1, 3, 9, 10, 42, 99, 100, 128] {
            let v = vec![b'v'; n];
            cases.push([format!("${n}\r\n").as_bytes(), &v, b"\r\n"].concat());
            cases.push([format!("${n}\r\n").as_bytes(), &v, b"\r\nrest"].concat());
            cases.push([format!("${n}\r\n").as_bytes(), &v].concat()); // cut short
            cases.push([format!("${n}\r\n").as_bytes(), &v, b"xx"].concat()); // no CRLF
        }
        for odd in [
            "$-1\r\n",
            "$01\r\nx\r\n",
            "$1\r\n\r\n\r\n",
            "$1\n\rx\r\n",
            "$",
            "$1",
            "$1\r",
            "+OK\r\n",
            "+OK\r\n+OK\r\n",
            "+\r\n",
            "+\n",
            "+a\rb\r\n",
            "+OK\n",
            "+OK",
            ":0\r\n",
            ":1\r\n",
            ":007\r\n",
            ":-1\r\n",
            ":123456789012345678\r\n",
            ":1234567890123456789\r\n",
            ":9223372036854775808\r\n",
            ":12a\r\n",
            ":\r\n",
            ":1\r",
            "-ERR x\r\n",
            "*1\r\n$1\r\nx\r\n",
            "_\r\n",
            ">1\r\n+x\r\n",
        ] {
            cases.push(odd.as_bytes().to_vec());
        }
        cases.push([b"+", &[b'x'; 70][..], b"\r\n"].concat()); // longer than the short path reads
        let mut taken = 0;
        for case in &cases {
            let slow = ReplyScanner::new().scan_step(case, &limits);
            match short_reply(case, &limits) {
                Some(n) => {
                    taken += 1;
                    let want = Scanned {
                        consumed: n,
                        frame_done: Some(false),
                    };
                    assert_eq!(slow, Ok(want), "{:?}", String::from_utf8_lossy(case));
                }
                None => {
                    // Left to the step-by-step scan, which `scan` then runs.
                    let both = ReplyScanner::new().scan(case, &limits);
                    assert_eq!(both, slow, "{:?}", String::from_utf8_lossy(case));
                }
            }
        }
        assert!(
            taken >= 20,
            "the short path takes the common replies ({taken})"
        );
    }

    /// Feeds `data` in pieces of `step` bytes the way a reader would (the
    /// unconsumed tail is kept and given again) and returns the frame
    /// boundaries found, each with its push flag.
    fn boundaries(data: &[u8], step: usize) -> Result<Vec<(usize, bool)>, ProtocolError> {
        let limits = Limits::upstream();
        let mut s = ReplyScanner::new();
        let mut out = Vec::new();
        let mut start = 0usize; // first byte not yet consumed
        let mut avail = 0usize; // bytes received so far
        while avail < data.len() || start < avail {
            let before = start;
            let r = s.scan(&data[start..avail], &limits)?;
            start += r.consumed;
            if let Some(push) = r.frame_done {
                out.push((start, push));
                continue;
            }
            if start == before || start == avail {
                if avail == data.len() {
                    break;
                }
                avail = (avail + step).min(data.len());
            }
        }
        Ok(out)
    }

    fn reference(data: &[u8]) -> Vec<(usize, bool)> {
        let limits = Limits::upstream();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Ok(Some(n)) = frame_len(&data[pos..], &limits) {
            out.push((pos + n, data[pos] == b'>'));
            pos += n;
        }
        out
    }

    const SAMPLES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR bad\r\n",
        b":-42\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n%1\r\n+k\r\n~2\r\n#t\r\n_\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nhey\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$3\r\nval\r\n",
        b",1.5\r\n(12345678901234567890\r\n!3\r\nerr\r\n=7\r\ntxt:abc\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n",
    ];

    #[test]
    fn finds_the_same_frames_as_frame_len_at_every_read_size() {
        let mut data = Vec::new();
        for s in SAMPLES {
            data.extend_from_slice(s);
        }
        let want = reference(&data);
        assert_eq!(want.last().map(|w| w.0), Some(data.len()));
        for step in [1, 2, 3, 5, 7, 16, 1000] {
            assert_eq!(boundaries(&data, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn any_depth_passes() {
        let depth = 100_000;
        let mut data = b"*1\r\n".repeat(depth);
        data.extend_from_slice(b":1\r\n");
        assert_eq!(boundaries(&data, 4096).unwrap(), vec![(data.len(), false)]);
    }

    #[test]
    fn a_big_reply_is_consumed_as_it_arrives() {
        let limits = Limits::upstream();
        let mut data = b"*1000\r\n".to_vec();
        for _ in 0..1000 {
            data.extend_from_slice(b"$3\r\nabc\r\n");
        }
        let mut s = ReplyScanner::new();
        // The first half arrives: nearly all of it is consumed (a partial
        // element header at most is left), and no frame is done.
        let half = data.len() / 2;
        let r = s.scan(&data[..half], &limits).unwrap();
        assert_eq!(r.frame_done, None);
        assert!(half - r.consumed < 9, "left {}", half - r.consumed);
        let r2 = s.scan(&data[r.consumed..], &limits).unwrap();
        assert_eq!(r2.frame_done, Some(false));
        assert_eq!(r.consumed + r2.consumed, data.len());
        assert!(s.at_boundary());
    }

    #[test]
    fn garbage_is_an_error() {
        let limits = Limits::upstream();
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcXY",
            b"*-2\r\n",
            b"_x\r\n",
            b":z\r\n",
        ] {
            assert!(ReplyScanner::new().scan(bad, &limits).is_err(), "{bad:?}");
        }
    }
}
