//! LZF decompression (the format of `lzf_d.c`), with every reference and
//! run checked against the input and the promised output length.

/// Decompresses `input`, which must expand to exactly `out_len` bytes.
/// The error text says what was wrong, for the caller to place.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    // Grows as output is produced; the claimed length only caps it.
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(1 << 16));
    let mut i = 0usize;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            let literal = input
                .get(i..i + run)
                .ok_or("an LZF literal run goes past the end of the compressed data")?;
            if out.len() + run > out_len {
                return Err(format!(
                    "LZF data expands past the {out_len} bytes it claims"
                ));
            }
            out.extend_from_slice(literal);
            i += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(
                    *input
                        .get(i)
                        .ok_or("an LZF back reference is cut off at the end")?,
                );
                i += 1;
            }
            let low = usize::from(
                *input
                    .get(i)
                    .ok_or("an LZF back reference is cut off at the end")?,
            );
            i += 1;
            let distance = ((ctrl & 0x1f) << 8) + low + 1;
            len += 2;
            if distance > out.len() {
                return Err(format!(
                    "an LZF back reference points {distance} bytes back, before the start of the output ({} bytes so far)",
                    out.len()
                ));
            }
            if out.len() + len > out_len {
                return Err(format!(
                    "LZF data expands past the {out_len} bytes it claims"
                ));
            }
            let start = out.len() - distance;
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(format!(
            "LZF data expands to {} bytes, not the {out_len} it claims",
            out.len()
        ));
    }
    Ok(out)
}

/// The most output `compressed_len` bytes of LZF can expand to: a 3-byte
/// back reference copies at most 264 bytes.
pub fn max_expansion(compressed_len: u64) -> u64 {
    compressed_len.saturating_mul(88)
}

#[cfg(test)]
mod tests {
    use super::decompress;

    #[test]
    fn literal_and_reference() {
        // "abc" literal, then copy 6 bytes from 3 back: "abcabcabc".
        let data = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&data, 9).unwrap(), b"abcabcabc");
        assert!(decompress(&data, 8).is_err());
        assert!(decompress(&data, 10).is_err());
        assert!(decompress(&[(1 << 5), 5], 3).is_err());
        assert!(decompress(&[5, b'a'], 6).is_err());
    }
}
