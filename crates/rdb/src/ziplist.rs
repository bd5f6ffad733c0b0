//! Ziplists (`ziplist.c`, RDB types 10, 12, 13 and quicklist-1 nodes): a
//! 10-byte header (total bytes, tail offset, count), entries of prevlen
//! (1 or 5 bytes) + encoding + data, and a 0xFF end byte.

use bytes::Bytes;

use crate::error::BlobError;
use crate::listpack::Item;

fn get(b: &[u8], at: usize, len: usize) -> Result<&[u8], BlobError> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| BlobError::new(at, "ziplist entry runs past the end of its blob"))
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

/// Decodes a whole ziplist, returning at most `max` elements.
pub(crate) fn decode(blob: &Bytes, max: u64) -> Result<Vec<Item>, BlobError> {
    let b: &[u8] = blob;
    if b.len() < 11 {
        return Err(BlobError::new(
            0,
            format!(
                "a ziplist needs at least 11 bytes, this one has {}",
                b.len()
            ),
        ));
    }
    let total = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if total != b.len() {
        return Err(BlobError::new(
            0,
            format!(
                "ziplist header says {total} bytes but the blob has {}",
                b.len()
            ),
        ));
    }
    let tail = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    let declared = u16::from_le_bytes([b[8], b[9]]);
    let mut items = Vec::with_capacity(usize::from(declared).min(1024));
    let mut p = 10;
    let mut prev_size = 0usize;
    let mut last_entry = 10;
    loop {
        let Some(&first) = b.get(p) else {
            return Err(BlobError::new(p, "ziplist has no end byte"));
        };
        if first == 0xff {
            if p != b.len() - 1 {
                return Err(BlobError::new(
                    p,
                    "ziplist end byte before the end of its blob",
                ));
            }
            break;
        }
        if items.len() as u64 >= max {
            return Err(BlobError::new(
                p,
                format!("ziplist has more than max_elements ({max}) entries"),
            ));
        }
        let (prevlen, q) = if first < 254 {
            (usize::from(first), p + 1)
        } else {
            let r = get(b, p + 1, 4)?;
            (u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize, p + 5)
        };
        if prevlen != prev_size {
            return Err(BlobError::new(p, format!("ziplist prevlen {prevlen} does not match the previous entry's {prev_size} bytes")));
        }
        let enc = get(b, q, 1)?[0];
        let (header, data_len, item) = match enc >> 6 {
            0 => (1, usize::from(enc & 0x3f), None),
            1 => (
                2,
                (usize::from(enc & 0x3f) << 8) | usize::from(get(b, q + 1, 1)?[0]),
                None,
            ),
            2 => {
                let r = get(b, q + 1, 4)?;
                (
                    5,
                    u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize,
                    None,
                )
            }
            _ => {
                let width = match enc {
                    0xc0 => 2,
                    0xd0 => 4,
                    0xe0 => 8,
                    0xf0 => 3,
                    0xfe => 1,
                    0xf1..=0xfd => 0,
                    _ => {
                        return Err(BlobError::new(
                            q,
                            format!("unknown ziplist entry encoding {enc:#04x}"),
                        ))
                    }
                };
                let v = if width == 0 {
                    i64::from(enc & 0x0f) - 1
                } else {
                    int_le(get(b, q + 1, width)?)
                };
                (1 + width, 0, Some(Item::Int(v)))
            }
        };
        let start = q + header;
        get(b, start, data_len).map_err(|e| BlobError::new(p, e.what))?;
        let item = match item {
            Some(i) => i,
            None => Item::Str(blob.slice(start..start + data_len)),
        };
        items.push(item);
        last_entry = p;
        let end = start + data_len;
        prev_size = end - p;
        p = end;
    }
    if tail != last_entry {
        return Err(BlobError::new(
            4,
            format!("ziplist tail offset {tail} is not its last entry ({last_entry})"),
        ));
    }
    if declared != u16::MAX && usize::from(declared) != items.len() {
        return Err(BlobError::new(
            8,
            format!(
                "ziplist header says {declared} entries but it holds {}",
                items.len()
            ),
        ));
    }
    Ok(items)
}
