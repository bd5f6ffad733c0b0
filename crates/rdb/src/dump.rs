//! DUMP / RESTORE payloads (`verifyDumpPayload`, `cluster.c`): a value
//! type byte and the value as in an RDB, then the RDB version (2 bytes,
//! little-endian) and a CRC-64 of everything before it (8 bytes, LE).

use crate::source::Source;
use crate::{crc, value, Error, Limits, Value, MAX_VERSION};

/// Decodes a DUMP payload, refusing a bad checksum or a newer RDB version.
pub fn decode_dump(payload: &[u8]) -> Result<Value, Error> {
    decode_dump_with_limits(payload, Limits::default())
}

/// [`decode_dump`] with explicit limits.
pub fn decode_dump_with_limits(payload: &[u8], limits: Limits) -> Result<Value, Error> {
    if payload.len() < 11 {
        return Err(Error::corrupt(
            0,
            format!(
                "a DUMP payload needs at least 11 bytes, this one has {}",
                payload.len()
            ),
        ));
    }
    let body_len = payload.len() - 10;
    let footer = &payload[body_len..];
    let version = u32::from(u16::from_le_bytes([footer[0], footer[1]]));
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&footer[2..]);
    let expected = u64::from_le_bytes(sum);
    let computed = crc::crc64(&payload[..body_len + 2]);
    if expected != computed {
        return Err(Error::Checksum { expected, computed });
    }
    if version > MAX_VERSION {
        return Err(Error::Version {
            found: version,
            supported: MAX_VERSION,
        });
    }
    let mut src = Source::new(&payload[..body_len], limits);
    let ty = src.u8("the value type")?;
    if !value::is_value_type(ty) {
        return Err(Error::corrupt(0, format!("unknown value type {ty}")));
    }
    let v = value::read(&mut src, ty, 0)?;
    if src.pos() != body_len as u64 {
        return Err(Error::corrupt(
            src.pos(),
            format!(
                "{} bytes left over after the value",
                body_len as u64 - src.pos()
            ),
        ));
    }
    Ok(v)
}
