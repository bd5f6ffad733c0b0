//! Intsets (`intset.c`, RDB type 11): encoding width (2, 4 or 8 bytes),
//! count, then that many little-endian integers.

use bytes::Bytes;

use crate::error::BlobError;

/// The members as decimal text, as `SMEMBERS` would give them.
pub(crate) fn decode(b: &[u8], max: u64) -> Result<Vec<Bytes>, BlobError> {
    if b.len() < 8 {
        return Err(BlobError::new(
            0,
            format!("an intset needs at least 8 bytes, this one has {}", b.len()),
        ));
    }
    let width = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if !matches!(width, 2 | 4 | 8) {
        return Err(BlobError::new(
            0,
            format!("intset width {width} is not 2, 4 or 8"),
        ));
    }
    let count = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
    if count > max {
        return Err(BlobError::new(
            4,
            format!("intset claims {count} members, more than max_elements ({max})"),
        ));
    }
    if 8 + count * u64::from(width) != b.len() as u64 {
        return Err(BlobError::new(
            4,
            format!(
                "intset of {count} {width}-byte members cannot be {} bytes",
                b.len()
            ),
        ));
    }
    Ok(b[8..]
        .chunks_exact(width as usize)
        .map(|c| {
            let v = match c.len() {
                2 => i64::from(i16::from_le_bytes([c[0], c[1]])),
                4 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            };
            Bytes::from(v.to_string())
        })
        .collect())
}
