//! [`FileHeader`]: the 40 bytes that open every segment and snapshot file.
//!
//! `magic [8] | version u32 | epoch u64 | number u64 | seq u64 |
//! crc32c(previous 36 bytes) u32`, little endian. For a segment `number` is
//! the segment number and `seq` the sequence number of its first record;
//! for a snapshot `number` is the base segment (the first segment not
//! folded into it) and `seq` the first sequence number of that segment.

use std::io::{self, Read};

/// Header size in bytes; the first record starts here.
pub(crate) const HEADER_LEN: u64 = 40;
/// Format version written and understood by this build.
pub(crate) const VERSION: u32 = 1;
/// Magic of segment files.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RDTJSEG\n";
/// Magic of snapshot files.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"RDTJSNP\n";

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    /// Journal epoch.
    pub epoch: u64,
    /// Segment number (segments) or base segment (snapshots).
    pub number: u64,
    /// First sequence number (segments) or the base segment's (snapshots).
    pub seq: u64,
}

impl FileHeader {
    /// The 40 header bytes for a file with `magic`.
    pub(crate) fn encode(&self, magic: [u8; 8]) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[..8].copy_from_slice(&magic);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.epoch.to_le_bytes());
        b[20..28].copy_from_slice(&self.number.to_le_bytes());
        b[28..36].copy_from_slice(&self.seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and checks a header; `Ok(Err(why))` when the bytes are there
    /// but are not a valid header of this kind.
    pub(crate) fn read(
        r: &mut impl Read,
        magic: [u8; 8],
    ) -> io::Result<Result<FileHeader, String>> {
        let mut b = [0u8; HEADER_LEN as usize];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Err("file shorter than its 40-byte header".into()))
            }
            Err(e) => return Err(e),
        }
        if b[..8] != magic {
            return Ok(Err(
                "bad magic: not a Redoubt journal file of this kind".into()
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if crc32c::crc32c(&b[..36]) != u32_at(36) {
            return Ok(Err("header checksum mismatch".into()));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Ok(Err(format!(
                "format version {version}, this build reads version {VERSION}"
            )));
        }
        Ok(Ok(FileHeader {
            epoch: u64_at(12),
            number: u64_at(20),
            seq: u64_at(28),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = FileHeader {
            epoch: 42,
            number: 7,
            seq: 1000,
        };
        let b = h.encode(SEGMENT_MAGIC);
        assert_eq!(FileHeader::read(&mut &b[..], SEGMENT_MAGIC).unwrap(), Ok(h));
        assert!(FileHeader::read(&mut &b[..], SNAPSHOT_MAGIC)
            .unwrap()
            .is_err());
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(
                FileHeader::read(&mut &d[..], SEGMENT_MAGIC)
                    .unwrap()
                    .is_err(),
                "byte {i}"
            );
        }
        assert!(FileHeader::read(&mut &b[..20], SEGMENT_MAGIC)
            .unwrap()
            .is_err());
    }
}
