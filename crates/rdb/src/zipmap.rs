//! Zipmaps (`zipmap.c`, RDB type 9, hashes before Redis 2.6): a count
//! byte, then key/value pairs each with a 1- or 5-byte length (the value
//! also with a "free" byte and that many unused bytes), and a 0xFF end.

use bytes::Bytes;

use crate::error::BlobError;

fn len_at(b: &[u8], p: usize) -> Result<Option<(usize, usize)>, BlobError> {
    match b.get(p) {
        None => Err(BlobError::new(p, "zipmap has no end byte")),
        Some(255) => Ok(None),
        Some(254) => {
            let r = b
                .get(p + 1..p + 5)
                .ok_or_else(|| BlobError::new(p, "zipmap length runs past the end of its blob"))?;
            Ok(Some((
                u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize,
                p + 5,
            )))
        }
        Some(&n) => Ok(Some((usize::from(n), p + 1))),
    }
}

fn take(blob: &Bytes, at: usize, len: usize) -> Result<Bytes, BlobError> {
    let end = at
        .checked_add(len)
        .filter(|&e| e <= blob.len())
        .ok_or_else(|| BlobError::new(at, "zipmap string runs past the end of its blob"))?;
    Ok(blob.slice(at..end))
}

pub(crate) fn decode(blob: &Bytes, max: u64) -> Result<Vec<(Bytes, Bytes)>, BlobError> {
    let mut pairs = Vec::new();
    let mut p = 1;
    if blob.is_empty() {
        return Err(BlobError::new(0, "empty zipmap"));
    }
    loop {
        let Some((klen, at)) = len_at(blob, p)? else {
            if p != blob.len() - 1 {
                return Err(BlobError::new(
                    p,
                    "zipmap end byte before the end of its blob",
                ));
            }
            return Ok(pairs);
        };
        if pairs.len() as u64 >= max {
            return Err(BlobError::new(
                p,
                format!("zipmap has more than max_elements ({max}) pairs"),
            ));
        }
        let key = take(blob, at, klen)?;
        let vp = at + klen;
        let (vlen, at) =
            len_at(blob, vp)?.ok_or_else(|| BlobError::new(vp, "zipmap key without a value"))?;
        let free = usize::from(
            *blob
                .get(at)
                .ok_or_else(|| BlobError::new(at, "zipmap value runs past the end of its blob"))?,
        );
        let value = take(blob, at + 1, vlen)?;
        p = at + 1 + vlen + free;
        pairs.push((key, value));
    }
}
