//! Listpacks (`listpack.c`): a 6-byte header (total bytes, element count),
//! entries of encoding + data + backlen, and a 0xFF end byte. Every
//! encoding is read and every backlen checked.

use bytes::Bytes;

use crate::error::BlobError;

/// One element of a listpack or ziplist: an integer or a byte string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Int(i64),
    Str(Bytes),
}

impl Item {
    /// The element as Redis would reply with it: integers as decimal text.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Item::Int(i) => Bytes::from(i.to_string()),
            Item::Str(s) => s,
        }
    }

    /// As an integer, also when stored as decimal text.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Item::Int(i) => Some(*i),
            Item::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }

    /// As a score: integers convert, strings parse like `strtod`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Item::Int(i) => Some(*i as f64),
            Item::Str(s) => crate::source::parse_double(s),
        }
    }
}

/// The number of bytes a backlen of `l` takes (as `lpEncodeBacklen`).
pub(crate) fn backlen_size(l: u64) -> usize {
    if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2097151 {
        3
    } else if l < 268435455 {
        4
    } else {
        5
    }
}

/// Writes a backlen of `l` the way `lpEncodeBacklen` does.
pub(crate) fn encode_backlen(l: u64, out: &mut Vec<u8>) {
    let n = backlen_size(l);
    for i in (0..n).rev() {
        let part = ((l >> (7 * i)) & 127) as u8;
        out.push(if i == n - 1 { part } else { part | 128 });
    }
}

fn slice(
    blob: &[u8],
    at: usize,
    len: usize,
    what: &str,
) -> Result<std::ops::Range<usize>, BlobError> {
    let end = at
        .checked_add(len)
        .filter(|&e| e <= blob.len())
        .ok_or_else(|| BlobError::new(at, format!("{what} runs past the end of its blob")))?;
    Ok(at..end)
}

fn int_le(b: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

/// Decodes a whole listpack, returning at most `max` elements.
pub(crate) fn decode(blob: &Bytes, max: u64) -> Result<Vec<Item>, BlobError> {
    let b: &[u8] = blob;
    if b.len() < 7 {
        return Err(BlobError::new(
            0,
            format!(
                "a listpack needs at least 7 bytes, this one has {}",
                b.len()
            ),
        ));
    }
    let total = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if total != b.len() {
        return Err(BlobError::new(
            0,
            format!(
                "listpack header says {total} bytes but the blob has {}",
                b.len()
            ),
        ));
    }
    let declared = u16::from_le_bytes([b[4], b[5]]);
    let mut items = Vec::with_capacity(usize::from(declared).min(1024));
    let mut p = 6;
    loop {
        let Some(&enc) = b.get(p) else {
            return Err(BlobError::new(p, "listpack has no end byte"));
        };
        if enc == 0xff {
            if p != b.len() - 1 {
                return Err(BlobError::new(
                    p,
                    "listpack end byte before the end of its blob",
                ));
            }
            break;
        }
        if items.len() as u64 >= max {
            return Err(BlobError::new(
                p,
                format!("listpack has more than max_elements ({max}) entries"),
            ));
        }
        let (header, data_len, item) = match enc {
            0x00..=0x7f => (1, 0, Some(Item::Int(i64::from(enc)))),
            0x80..=0xbf => (1, usize::from(enc & 0x3f), None),
            0xc0..=0xdf => {
                let r = slice(b, p, 2, "listpack entry")?;
                let v = (u16::from(enc & 0x1f) << 8) | u16::from(b[r.start + 1]);
                let v = if v >= 1 << 12 {
                    i64::from(v) - (1 << 13)
                } else {
                    i64::from(v)
                };
                (2, 0, Some(Item::Int(v)))
            }
            0xe0..=0xef => {
                let r = slice(b, p, 2, "listpack entry")?;
                (
                    2,
                    (usize::from(enc & 0x0f) << 8) | usize::from(b[r.start + 1]),
                    None,
                )
            }
            0xf0 => {
                let r = slice(b, p + 1, 4, "listpack entry")?;
                let len = u32::from_le_bytes([
                    b[r.start],
                    b[r.start + 1],
                    b[r.start + 2],
                    b[r.start + 3],
                ]);
                (5, len as usize, None)
            }
            0xf1..=0xf4 => {
                let width = match enc {
                    0xf1 => 2,
                    0xf2 => 3,
                    0xf3 => 4,
                    _ => 8,
                };
                let r = slice(b, p + 1, width, "listpack entry")?;
                (1 + width, 0, Some(Item::Int(int_le(&b[r]))))
            }
            _ => {
                return Err(BlobError::new(
                    p,
                    format!("unknown listpack entry encoding {enc:#04x}"),
                ))
            }
        };
        let data = slice(b, p + header, data_len, "listpack entry")
            .map_err(|e| BlobError::new(p, e.what))?;
        let item = match item {
            Some(i) => i,
            None => Item::Str(blob.slice(data.clone())),
        };
        let entry_len = (header + data_len) as u64;
        let bl = backlen_size(entry_len);
        let back = slice(b, data.end, bl, "listpack entry backlen")?;
        let mut expect = Vec::with_capacity(5);
        encode_backlen(entry_len, &mut expect);
        if b[back.clone()] != expect[..] {
            return Err(BlobError::new(
                back.start,
                format!("listpack backlen does not match its {entry_len}-byte entry"),
            ));
        }
        items.push(item);
        p = back.end;
    }
    if declared != u16::MAX && usize::from(declared) != items.len() {
        return Err(BlobError::new(
            4,
            format!(
                "listpack header says {declared} entries but it holds {}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// Builds a listpack blob (`listpack.c`'s layout: total bytes and element
/// count, the elements, 0xFF), for writers of RDB payloads. Integers take
/// the 7-bit or the 64-bit encoding, strings the 6-, 12- or 32-bit one:
/// every Redis reads them, though Redis itself picks the smallest.
#[derive(Debug, Default)]
pub struct ListpackWriter {
    body: Vec<u8>,
    count: usize,
}

impl ListpackWriter {
    pub fn new() -> ListpackWriter {
        ListpackWriter::default()
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        let start = self.body.len();
        if (0..=127).contains(&v) {
            self.body.push(v as u8);
        } else {
            self.body.push(0xF4);
            self.body.extend_from_slice(&v.to_le_bytes());
        }
        self.close(start)
    }

    pub fn bytes(&mut self, s: &[u8]) -> &mut Self {
        let start = self.body.len();
        let n = s.len();
        if n < 64 {
            self.body.push(0x80 | n as u8);
        } else if n < 4096 {
            self.body.push(0xE0 | (n >> 8) as u8);
            self.body.push(n as u8);
        } else {
            self.body.push(0xF0);
            self.body.extend_from_slice(&(n as u32).to_le_bytes());
        }
        self.body.extend_from_slice(s);
        self.close(start)
    }

    fn close(&mut self, start: usize) -> &mut Self {
        let len = (self.body.len() - start) as u64;
        encode_backlen(len, &mut self.body);
        self.count += 1;
        self
    }

    /// The blob: 6-byte header, elements, terminator. A count past 65,534
    /// is stored as 65,535 ("count them"), as Redis does.
    pub fn finish(&self) -> Vec<u8> {
        let total = 6 + self.body.len() + 1;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(self.count.min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&self.body);
        out.push(0xFF);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlen_bytes() {
        let mut v = Vec::new();
        encode_backlen(5, &mut v);
        assert_eq!(v, [5]);
        v.clear();
        encode_backlen(300, &mut v);
        assert_eq!(v, [(300u64 >> 7) as u8, (300u64 & 127) as u8 | 128]);
        v.clear();
        encode_backlen(3_000_000, &mut v);
        assert_eq!(
            v,
            [
                (3_000_000u64 >> 21) as u8,
                ((3_000_000u64 >> 14) & 127) as u8 | 128,
                ((3_000_000u64 >> 7) & 127) as u8 | 128,
                (3_000_000u64 & 127) as u8 | 128
            ]
        );
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    #[test]
    fn what_the_writer_builds_decodes_to_the_same_items() {
        let mut w = ListpackWriter::new();
        let long = vec![b'x'; 5000];
        let mid = vec![b'y'; 300];
        w.int(0)
            .int(127)
            .int(128)
            .int(-1)
            .int(i64::MIN)
            .int(i64::MAX);
        w.bytes(b"").bytes(b"field").bytes(&mid).bytes(&long);
        let blob = Bytes::from(w.finish());
        let items = decode(&blob, 100).expect("a valid listpack");
        let ints: Vec<Option<i64>> = items[..6].iter().map(|i| i.as_int()).collect();
        assert_eq!(
            ints,
            vec![
                Some(0),
                Some(127),
                Some(128),
                Some(-1),
                Some(i64::MIN),
                Some(i64::MAX)
            ]
        );
        let strs: Vec<Bytes> = items[6..].iter().map(|i| i.clone().into_bytes()).collect();
        assert_eq!(
            strs,
            vec![
                Bytes::new(),
                Bytes::from_static(b"field"),
                Bytes::from(mid),
                Bytes::from(long)
            ]
        );
    }
}
