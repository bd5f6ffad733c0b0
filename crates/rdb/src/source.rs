//! The byte source and the RDB's basic encodings: lengths (6/14/32/64-bit),
//! strings (raw, int8/16/32, LZF), doubles (text and binary) and times.
//! Counts the offset of every byte and keeps the running CRC-64.

use std::io::{ErrorKind, Read};

use bytes::Bytes;

use crate::{crc, lzf, Error, Limits};

/// Bytes read per step for a long blob: memory grows only as data arrives.
const CHUNK: usize = 64 * 1024;

/// A length field, or the marker that a string is specially encoded.
pub(crate) enum Len {
    Plain(u64),
    Encoded(u8),
}

/// A string as read, with where its raw bytes began (None when it was
/// LZF-compressed or an integer, so inner offsets do not map to the input).
pub(crate) struct Blob {
    pub data: Bytes,
    pub start: u64,
    pub raw_at: Option<u64>,
}

impl Blob {
    /// An error at `pos` inside this blob, placed in the input if possible.
    pub(crate) fn error(&self, kind: &str, e: crate::error::BlobError) -> Error {
        match self.raw_at {
            Some(at) => Error::corrupt(at + e.pos as u64, format!("{kind}: {}", e.what)),
            None => Error::corrupt(
                self.start,
                format!(
                    "{kind} (LZF-compressed, at byte {} of it once decompressed): {}",
                    e.pos, e.what
                ),
            ),
        }
    }
}

pub(crate) struct Source<R> {
    inner: R,
    pos: u64,
    crc: u64,
    pub limits: Limits,
}

impl<R: Read> Source<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        Source {
            inner,
            pos: 0,
            crc: 0,
            limits,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn crc(&self) -> u64 {
        self.crc
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fills `buf` exactly; a short input is a `Corrupt` naming `what`
    /// and the offset where the input ended.
    pub fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        let mut done = 0;
        let result = loop {
            if done == buf.len() {
                break Ok(());
            }
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => break Err(None),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(Some(e)),
            }
        };
        self.crc = crc::crc64_update(self.crc, &buf[..done]);
        self.pos += done as u64;
        match result {
            Ok(()) => Ok(()),
            Err(None) => Err(Error::corrupt(
                self.pos,
                format!("the input ends inside {what}"),
            )),
            Err(Some(e)) => Err(Error::Io(e)),
        }
    }

    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    /// `len` raw bytes, read in chunks so a lying length costs no memory.
    pub fn bytes(&mut self, len: u64, what: &str) -> Result<Vec<u8>, Error> {
        self.check_string_len(len, what, self.pos)?;
        let len = len as usize;
        let mut out = Vec::with_capacity(len.min(CHUNK));
        while out.len() < len {
            let old = out.len();
            let step = (len - old).min(CHUNK.max(old));
            out.resize(old + step, 0);
            self.fill(&mut out[old..], what)?;
        }
        Ok(out)
    }

    /// Reads and drops `len` bytes (they still count for the checksum).
    pub fn skip(&mut self, mut len: u64, what: &str) -> Result<(), Error> {
        let mut scratch = [0u8; 4096];
        while len > 0 {
            let step = len.min(scratch.len() as u64) as usize;
            self.fill(&mut scratch[..step], what)?;
            len -= step as u64;
        }
        Ok(())
    }

    fn check_string_len(&self, len: u64, what: &str, at: u64) -> Result<(), Error> {
        if len > self.limits.max_string as u64 {
            return Err(Error::Limit {
                at,
                what: format!(
                    "{what} claims {len} bytes, more than max_string ({})",
                    self.limits.max_string
                ),
            });
        }
        Ok(())
    }

    pub fn len_or_encoded(&mut self, what: &str) -> Result<Len, Error> {
        let at = self.pos;
        let b = self.u8(what)?;
        Ok(match b >> 6 {
            0 => Len::Plain(u64::from(b & 0x3f)),
            1 => {
                let low = self.u8(what)?;
                Len::Plain((u64::from(b & 0x3f) << 8) | u64::from(low))
            }
            2 => match b {
                0x80 => Len::Plain(u64::from(u32::from_be_bytes(self.array(what)?))),
                0x81 => Len::Plain(u64::from_be_bytes(self.array(what)?)),
                _ => {
                    return Err(Error::corrupt(
                        at,
                        format!("{what}: unknown length prefix byte {b:#04x}"),
                    ))
                }
            },
            _ => Len::Encoded(b & 0x3f),
        })
    }

    /// A length (6/14/32/64-bit); a string-encoding marker here is corrupt.
    pub fn len(&mut self, what: &str) -> Result<u64, Error> {
        let at = self.pos;
        match self.len_or_encoded(what)? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(e) => Err(Error::corrupt(
                at,
                format!("{what}: expected a length, found string encoding marker {e}"),
            )),
        }
    }

    /// A length that counts elements, checked against `max_elements`.
    pub fn count(&mut self, what: &str) -> Result<u64, Error> {
        let at = self.pos;
        let n = self.len(what)?;
        if n > self.limits.max_elements {
            return Err(Error::Limit {
                at,
                what: format!(
                    "{what} claims {n} elements, more than max_elements ({})",
                    self.limits.max_elements
                ),
            });
        }
        Ok(n)
    }

    /// A string in any of its encodings (integers rendered as decimal text).
    pub fn string(&mut self, what: &str) -> Result<Bytes, Error> {
        Ok(self.blob(what)?.data)
    }

    pub fn blob(&mut self, what: &str) -> Result<Blob, Error> {
        let start = self.pos;
        match self.len_or_encoded(what)? {
            Len::Plain(n) => {
                self.check_string_len(n, what, start)?;
                let raw_at = self.pos;
                let data = Bytes::from(self.bytes(n, what)?);
                Ok(Blob {
                    data,
                    start,
                    raw_at: Some(raw_at),
                })
            }
            Len::Encoded(enc) => {
                let data = match enc {
                    0 => Bytes::from(i8::from_le_bytes(self.array(what)?).to_string()),
                    1 => Bytes::from(i16::from_le_bytes(self.array(what)?).to_string()),
                    2 => Bytes::from(i32::from_le_bytes(self.array(what)?).to_string()),
                    3 => Bytes::from(self.lzf(start, what)?),
                    _ => {
                        return Err(Error::corrupt(
                            start,
                            format!("{what}: unknown string encoding {enc}"),
                        ))
                    }
                };
                Ok(Blob {
                    data,
                    start,
                    raw_at: None,
                })
            }
        }
    }

    fn lzf(&mut self, start: u64, what: &str) -> Result<Vec<u8>, Error> {
        let clen = self.len(what)?;
        let ulen = self.len(what)?;
        self.check_string_len(ulen, what, start)?;
        if ulen > lzf::max_expansion(clen) {
            return Err(Error::corrupt(
                start,
                format!("{what}: {clen} bytes of LZF cannot expand to the {ulen} bytes claimed"),
            ));
        }
        let packed = self.bytes(clen, what)?;
        lzf::decompress(&packed, ulen as usize)
            .map_err(|m| Error::corrupt(start, format!("{what}: {m}")))
    }

    /// Reads past a string without keeping it.
    pub fn skip_string(&mut self, what: &str) -> Result<(), Error> {
        let at = self.pos;
        match self.len_or_encoded(what)? {
            Len::Plain(n) => self.skip(n, what),
            Len::Encoded(0) => self.skip(1, what),
            Len::Encoded(1) => self.skip(2, what),
            Len::Encoded(2) => self.skip(4, what),
            Len::Encoded(3) => {
                let clen = self.len(what)?;
                self.len(what)?;
                self.skip(clen, what)
            }
            Len::Encoded(e) => Err(Error::corrupt(
                at,
                format!("{what}: unknown string encoding {e}"),
            )),
        }
    }

    /// A double as text with a length byte; 253/254/255 mean NaN/+inf/-inf.
    pub fn text_double(&mut self, what: &str) -> Result<f64, Error> {
        let at = self.pos;
        let len = self.u8(what)?;
        match len {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let mut buf = [0u8; 252];
                let text = &mut buf[..usize::from(n)];
                self.fill(text, what)?;
                parse_double(text).ok_or_else(|| {
                    Error::corrupt(
                        at,
                        format!(
                            "{what}: {:?} is not a number",
                            String::from_utf8_lossy(text)
                        ),
                    )
                })
            }
        }
    }

    pub fn binary_double(&mut self, what: &str) -> Result<f64, Error> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    pub fn millis(&mut self, what: &str) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub fn seconds(&mut self, what: &str) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
}

/// Parses a double the way Redis writes them (`%.17g`, "inf", "-inf", "nan").
pub(crate) fn parse_double(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    let t = s.trim_start();
    if t.is_empty() || t.len() != s.len() {
        return None;
    }
    t.parse::<f64>().ok()
}
