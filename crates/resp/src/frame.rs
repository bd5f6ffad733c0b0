//! One RESP value, RESP2 and RESP3, and its encoding.
//!
//! Doubles keep their wire text so that encode ∘ decode is the identity
//! (`1e3` and `1000` are different bytes for the same number).

use bytes::{BufMut, Bytes, BytesMut};

/// A RESP2 or RESP3 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-ERR text` (the whole line after `-`)
    Error(Bytes),
    /// `:123`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// RESP2 null bulk string `$-1`
    NullBulk,
    /// RESP2 null array `*-1`
    NullArray,
    /// `*N`
    Array(Vec<Frame>),
    /// RESP3 `_`
    Null,
    /// RESP3 `#t` / `#f`
    Boolean(bool),
    /// RESP3 `,1.5` kept as its wire text
    Double(Bytes),
    /// RESP3 `(123…`
    BigNumber(Bytes),
    /// RESP3 `!N` blob error
    BulkError(Bytes),
    /// RESP3 `=N` verbatim string, payload including the `txt:` prefix
    Verbatim(Bytes),
    /// RESP3 `%N`
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~N`
    Set(Vec<Frame>),
    /// RESP3 `>N` out-of-band push (pub/sub, invalidation)
    Push(Vec<Frame>),
    /// RESP3 `|N` attributes, followed on the wire by the value they describe
    Attribute(Vec<(Frame, Frame)>, Box<Frame>),
    /// A reply already in its wire form, written out as it is, in the
    /// protocol of the session it was made for. The store makes one only
    /// for a client's own session that asked for them
    /// (`Session::set_wire_replies`), of arrays and maps of bulk strings
    /// (and nulls): building a hundred `Bulk` frames counted two
    /// references per element. Nothing that takes a reply apart (a
    /// script, a proxy, a transaction's caller) is handed one.
    Encoded(Bytes),
}

impl Frame {
    /// A simple string from static text, e.g. `Frame::simple("OK")`.
    pub fn simple(s: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `msg` is the whole line, first word included
    /// (`"ERR unknown command"`).
    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(msg.into()))
    }

    /// A bulk string copied from anything byte-like.
    pub fn bulk(b: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(b.as_ref()))
    }

    /// An array of bulk strings, the shape of every client command.
    pub fn command<I, B>(args: I) -> Frame
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        Frame::Array(args.into_iter().map(Frame::bulk).collect())
    }

    /// True for `Error` and `BulkError`.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BulkError(_))
    }

    /// The text of an error reply, if this is one.
    pub fn error_text(&self) -> Option<&[u8]> {
        match self {
            Frame::Error(b) | Frame::BulkError(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a simple, bulk or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(b) => Some(b),
            _ => None,
        }
    }

    /// Appends the wire encoding of this frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(b) => line(out, b'+', b),
            Frame::Error(b) => line(out, b'-', b),
            Frame::Integer(i) => {
                out.put_u8(b':');
                put_int(out, *i);
                out.put_slice(b"\r\n");
            }
            Frame::Bulk(b) => blob(out, b'$', b),
            Frame::NullBulk => out.put_slice(b"$-1\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                header(out, b'*', items.len());
                items.iter().for_each(|f| f.encode(out));
            }
            Frame::Null => out.put_slice(b"_\r\n"),
            Frame::Boolean(v) => out.put_slice(if *v { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Double(b) => line(out, b',', b),
            Frame::BigNumber(b) => line(out, b'(', b),
            Frame::BulkError(b) => blob(out, b'!', b),
            Frame::Verbatim(b) => blob(out, b'=', b),
            Frame::Map(pairs) => pairs_out(out, b'%', pairs),
            Frame::Set(items) => {
                header(out, b'~', items.len());
                items.iter().for_each(|f| f.encode(out));
            }
            Frame::Push(items) => {
                header(out, b'>', items.len());
                items.iter().for_each(|f| f.encode(out));
            }
            Frame::Attribute(pairs, value) => {
                pairs_out(out, b'|', pairs);
                value.encode(out);
            }
            Frame::Encoded(b) => out.put_slice(b),
        }
    }

    /// An array of bulk strings as one [`Frame::Encoded`], written into
    /// one buffer sized from their lengths.
    pub fn encoded_bulks<'a, I>(items: I) -> Frame
    where
        I: ExactSizeIterator<Item = &'a [u8]> + Clone,
    {
        let n = items.len();
        Frame::encoded_aggregate(b'*', n, items)
    }

    /// An aggregate of `count` under `tag` (`*` array, `%` map counted in
    /// pairs, `~` set) whose elements are the bulk strings `items`, as one
    /// [`Frame::Encoded`].
    pub fn encoded_aggregate<'a, I>(tag: u8, count: usize, items: I) -> Frame
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let size = items.clone().map(<[u8]>::len).sum::<usize>();
        let mut out = Wire::aggregate(tag, count, size);
        items.for_each(|b| out.bulk(b));
        out.finish()
    }

    /// The wire encoding as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        // The most common reply of all, without an allocation.
        if matches!(self, Frame::Simple(b) if b.as_ref() == b"OK") {
            return Bytes::from_static(b"+OK\r\n");
        }
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn line(out: &mut BytesMut, tag: u8, b: &[u8]) {
    out.reserve(b.len() + 3);
    out.put_u8(tag);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn blob(out: &mut BytesMut, tag: u8, b: &[u8]) {
    out.reserve(b.len() + 16);
    header(out, tag, b.len());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn pairs_out(out: &mut BytesMut, tag: u8, pairs: &[(Frame, Frame)]) {
    header(out, tag, pairs.len());
    for (k, v) in pairs {
        k.encode(out);
        v.encode(out);
    }
}

/// A [`Frame::Encoded`] written element by element: for a reply whose
/// elements are only known one at a time (each a lookup), so they are
/// neither collected nor counted first.
pub struct Wire(Vec<u8>);

impl Wire {
    /// Starts an aggregate of `count` elements under `tag` (`*`, `%`
    /// counted in pairs, `~`); `payload` is the elements' bytes expected,
    /// for the first allocation (a guess only costs a regrowth).
    pub fn aggregate(tag: u8, count: usize, payload: usize) -> Wire {
        // `$`, up to three digits, two CRLFs per element.
        let mut out = Vec::with_capacity(payload + count * 8 + 24);
        header(&mut out, tag, count);
        Wire(out)
    }

    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        header(&mut self.0, b'$', b.len());
        self.0.put_slice(b);
        self.0.put_slice(b"\r\n");
    }

    /// A null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self, resp3: bool) {
        self.0.put_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// The reply written so far.
    pub fn finish(self) -> Frame {
        Frame::Encoded(Bytes::from(self.0))
    }
}

/// Writes `tag`, the decimal length and CRLF; a length under 100 (nearly
/// every element's) without the integer formatter.
pub(crate) fn header(out: &mut impl BufMut, tag: u8, len: usize) {
    if len < 10 {
        out.put_slice(&[tag, b'0' + len as u8, b'\r', b'\n']);
    } else if len < 100 {
        let (tens, units) = (b'0' + (len / 10) as u8, b'0' + (len % 10) as u8);
        out.put_slice(&[tag, tens, units, b'\r', b'\n']);
    } else {
        out.put_u8(tag);
        put_int(out, len as i64);
        out.put_slice(b"\r\n");
    }
}

fn put_int(out: &mut impl BufMut, i: i64) {
    out.put_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Encodes a command (array of bulk strings) straight from its arguments,
/// without building a [`Frame`].
pub fn encode_command<B: AsRef<[u8]>>(out: &mut BytesMut, args: &[B]) {
    header(out, b'*', args.len());
    for a in args {
        blob(out, b'$', a.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_bulks_are_the_bytes_of_the_array_of_bulks() {
        let long = vec![b'x'; 12_345];
        // Every header width: lengths and counts under 10, under 100, more.
        let sizes: Vec<Vec<u8>> = [0, 1, 9, 10, 99, 100, 999, 1000]
            .iter()
            .map(|&n| vec![b'y'; n])
            .collect();
        let many: Vec<Vec<u8>> = (0..150).map(|i| format!("e{i}").into_bytes()).collect();
        for items in [
            vec![],
            vec![&b""[..]],
            vec![&b"a"[..], &b"bc"[..], &b"0123456789"[..]],
            vec![&long[..], &b"y"[..]],
            sizes.iter().map(|v| &v[..]).collect(),
            many[..10].iter().map(|v| &v[..]).collect(),
            many.iter().map(|v| &v[..]).collect(),
        ] {
            let Frame::Encoded(wire) = Frame::encoded_bulks(items.iter().copied()) else {
                panic!("not encoded");
            };
            let array = Frame::Array(items.iter().map(Frame::bulk).collect());
            assert_eq!(wire, array.to_bytes());
            assert_eq!(Frame::Encoded(wire.clone()).to_bytes(), wire);
        }
        let pairs = [(&b"f1"[..], &b"v1"[..]), (&b"f2"[..], &b""[..])];
        let flat = pairs.iter().flat_map(|(f, v)| [*f, *v]);
        let map = Frame::Map(
            pairs
                .iter()
                .map(|(f, v)| (Frame::bulk(f), Frame::bulk(v)))
                .collect(),
        );
        assert_eq!(
            Frame::encoded_aggregate(b'%', 2, flat.clone()),
            Frame::Encoded(map.to_bytes())
        );
        for resp3 in [false, true] {
            let mut w = Wire::aggregate(b'*', 3, 0);
            w.bulk(b"v");
            w.null(resp3);
            w.bulk(b"");
            let null = if resp3 { Frame::Null } else { Frame::NullBulk };
            let array = Frame::Array(vec![Frame::bulk("v"), null, Frame::bulk("")]);
            assert_eq!(w.finish(), Frame::Encoded(array.to_bytes()));
        }
        let set = Frame::Set(vec![Frame::bulk("a")]);
        assert_eq!(
            Frame::encoded_aggregate(b'~', 1, [&b"a"[..]].into_iter()),
            Frame::Encoded(set.to_bytes())
        );
    }

    #[test]
    fn integers_encode_in_decimal_including_extremes() {
        for (i, s) in [
            (0i64, ":0\r\n"),
            (-1, ":-1\r\n"),
            (i64::MAX, ":9223372036854775807\r\n"),
            (i64::MIN, ":-9223372036854775808\r\n"),
        ] {
            assert_eq!(Frame::Integer(i).to_bytes(), Bytes::from(s));
        }
    }

    #[test]
    fn command_encodes_as_array_of_bulks() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &["SET", "k", ""]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
