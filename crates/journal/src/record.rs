//! Record framing: `len u32 | crc32c(len) u32 | crc32c(payload) u32 |
//! payload`, and [`FrameReader`], which reads frames back and says exactly
//! how a damaged one is damaged.
//!
//! The length has its own checksum so a flipped bit in it is told apart
//! from a record that was cut short: without it, a corrupt length pointing
//! past the end of the file would look like a torn tail and the records
//! after it would be dropped silently.

use std::io::{self, Read};

use bytes::Bytes;

use crate::entry::{self, Entry, MIN_PAYLOAD};

/// Bytes before each payload: length, length checksum, payload checksum.
pub(crate) const FRAME_HEADER_LEN: u64 = 12;
/// Largest payload accepted (2 GiB - 1); anything longer in a header whose
/// checksum matches is treated as corruption.
pub(crate) const MAX_PAYLOAD: u32 = (1 << 31) - 1;

/// Frames `payload` into `out`.
pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Encodes `entry` as a framed record with sequence number `seq`, appended
/// to `out`; returns the frame's length. The payload is encoded in place
/// and the header filled in afterwards, so nothing is copied twice.
pub(crate) fn encode_record(seq: u64, entry: &Entry, out: &mut Vec<u8>) -> u64 {
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN as usize + entry::payload_len(entry));
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN as usize]);
    entry::encode_payload(seq, entry, out);
    let payload_len = (out.len() - start) as u64 - FRAME_HEADER_LEN;
    let len = (payload_len as u32).to_le_bytes();
    let pcrc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN as usize..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&pcrc.to_le_bytes());
    FRAME_HEADER_LEN + payload_len
}

/// Frame length for an entry, before encoding (for size checks).
pub(crate) fn record_len(entry: &Entry) -> u64 {
    FRAME_HEADER_LEN + entry::payload_len(entry) as u64
}

/// How a frame is damaged. The reader reports this with the frame's start
/// offset; whether it is a torn tail or corruption depends on where in the
/// journal it is (see `recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Fewer than [`FRAME_HEADER_LEN`] bytes left.
    ShortHeader {
        /// Bytes left.
        available: u64,
    },
    /// The length's checksum does not match.
    HeaderChecksum,
    /// A checksummed length out of range.
    BadLength(u32),
    /// A checksummed length running past the end of the data.
    ShortPayload {
        /// Announced payload length.
        len: u32,
    },
    /// The payload's checksum does not match.
    PayloadChecksum {
        /// Announced payload length.
        len: u32,
    },
}

impl Damage {
    /// Text for reports.
    pub(crate) fn describe(&self) -> String {
        match self {
            Damage::ShortHeader { available } => {
                format!("record header cut short ({available} of 12 bytes)")
            }
            Damage::HeaderChecksum => "record length checksum mismatch".into(),
            Damage::BadLength(len) => format!("record length {len} out of range"),
            Damage::ShortPayload { len } => format!("record of {len} bytes cut short"),
            Damage::PayloadChecksum { len } => format!("record checksum mismatch ({len} bytes)"),
        }
    }
}

/// What [`FrameReader::next_frame`] found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A frame whose checksums match.
    Frame {
        /// The payload.
        payload: Bytes,
    },
    /// Exactly at `limit`: no more frames.
    End,
    /// The frame at the current offset is damaged; the reader stays there.
    Damaged(Damage),
}

/// Reads frames sequentially from `inner`, which must be positioned at
/// `offset`.
pub(crate) struct FrameReader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    /// A reader at `offset` of its underlying stream.
    pub(crate) fn new(inner: R, offset: u64) -> Self {
        FrameReader { inner, offset }
    }

    /// Offset of the next frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the frame at the current offset, looking at no byte at or past
    /// `limit`. Lengths are checked against `limit` before anything is
    /// allocated, so a corrupt length never causes a huge allocation.
    pub(crate) fn next_frame(&mut self, limit: u64) -> io::Result<Next> {
        let available = limit.saturating_sub(self.offset);
        if available == 0 {
            return Ok(Next::End);
        }
        if available < FRAME_HEADER_LEN {
            return Ok(Next::Damaged(Damage::ShortHeader { available }));
        }
        let mut h = [0u8; FRAME_HEADER_LEN as usize];
        self.inner.read_exact(&mut h)?;
        let len_bytes = [h[0], h[1], h[2], h[3]];
        let hcrc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let pcrc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if crc32c::crc32c(&len_bytes) != hcrc {
            return Ok(Next::Damaged(Damage::HeaderChecksum));
        }
        let len = u32::from_le_bytes(len_bytes);
        if (len as usize) < MIN_PAYLOAD || len > MAX_PAYLOAD {
            return Ok(Next::Damaged(Damage::BadLength(len)));
        }
        if u64::from(len) > available - FRAME_HEADER_LEN {
            return Ok(Next::Damaged(Damage::ShortPayload { len }));
        }
        let mut payload = vec![0u8; len as usize];
        self.inner.read_exact(&mut payload)?;
        if crc32c::crc32c(&payload) != pcrc {
            return Ok(Next::Damaged(Damage::PayloadChecksum { len }));
        }
        let frame_len = FRAME_HEADER_LEN + u64::from(len);
        self.offset += frame_len;
        Ok(Next::Frame {
            payload: Bytes::from(payload),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry::command(
            0,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")],
            5,
        )
    }

    #[test]
    fn frame_round_trips_and_reports_its_length() {
        let mut buf = Vec::new();
        let n = encode_record(9, &sample(), &mut buf);
        assert_eq!(n, buf.len() as u64);
        assert_eq!(n, record_len(&sample()));
        let mut r = FrameReader::new(&buf[..], 0);
        match r.next_frame(n).unwrap() {
            Next::Frame { payload } => {
                assert_eq!(r.offset(), n);
                assert_eq!(entry::decode_payload(&payload).unwrap(), (9, sample()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next_frame(n).unwrap(), Next::End));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        let n = encode_record(1, &sample(), &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let got = FrameReader::new(&b[..], 0).next_frame(n).unwrap();
                assert!(
                    matches!(got, Next::Damaged(_)),
                    "byte {i} bit {bit}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn cut_frames_are_short_not_garbage() {
        let mut buf = Vec::new();
        let n = encode_record(1, &sample(), &mut buf);
        for cut in 1..n {
            let got = FrameReader::new(&buf[..], 0).next_frame(cut).unwrap();
            let short = matches!(
                got,
                Next::Damaged(Damage::ShortHeader { .. } | Damage::ShortPayload { .. })
            );
            assert!(short, "cut {cut}: {got:?}");
        }
    }
}
