//! CRC-64 as Redis computes it (`crc64.c`, the "Jones" polynomial):
//! reflected input and output, initial value 0, no final xor.

const POLY: u64 = 0xad93_d235_94c9_35a9u64.reverse_bits();

const TABLE: [u64; 256] = make_table();

const fn make_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// Continues a CRC-64 over more bytes (start with 0).
pub fn crc64_update(mut crc: u64, data: &[u8]) -> u64 {
    for &b in data {
        crc = TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC-64 Redis writes at the end of an RDB file and a DUMP payload.
pub fn crc64(data: &[u8]) -> u64 {
    crc64_update(0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let (a, b) = b"123456789".split_at(4);
        assert_eq!(
            super::crc64_update(super::crc64(a), b),
            0xe9c6_d914_c4b8_d9ca
        );
    }
}
