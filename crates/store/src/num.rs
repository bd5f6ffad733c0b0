//! Numbers as Redis reads and writes them: strict integers (`string2ll`),
//! floats (`strtod`), and the `%.17g` / `%.17Lf` output forms.

/// Redis's `string2ll`: optional `-`, no `+`, no leading zeros, no spaces,
/// fits in i64. `"-0"` is rejected like Redis does.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' {
        (true, &s[1..])
    } else {
        (false, s)
    };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i128).wrapping_neg() as i64)
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Redis's `strtod`-based float parsing: no leading space, no NaN, the whole
/// string consumed. `inf`, `-inf`, `+inf` are accepted.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty()
        || t.starts_with(|c: char| c.is_ascii_whitespace())
        || t.ends_with(|c: char| c.is_ascii_whitespace())
    {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => {
            if lower.contains("inf")
                || lower.contains("nan")
                || lower.starts_with("0x")
                || lower.starts_with("-0x")
            {
                return None;
            }
            t.parse::<f64>().ok()?
        }
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// C's `%.17g`, which Redis 7.0 uses for double replies (`ZSCORE`, …).
pub fn fmt_g17(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // 17 significant digits in scientific form tells us the exponent after
    // rounding, which decides between fixed and exponent notation as %g does.
    let sci = format!("{:.16e}", d);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let mant = strip_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (16 - exp).max(0) as usize;
        strip_zeros(&format!("{:.*}", decimals, d)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The human-friendly form `INCRBYFLOAT` and `HINCRBYFLOAT` reply with
/// (`%.17Lf` with trailing zeros trimmed). Redis computes in `long double`;
/// we compute in f64 and round to 15 significant digits first, which gives
/// Redis's text for the usual decimal increments (`0.1 + 0.2` → `0.3`).
pub fn fmt_human(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return "0".into();
    }
    // 15 significant digits, correctly rounded: beyond that the digits
    // are f64's representation noise, which long double does not show.
    let exp = d.abs().log10().floor() as i32;
    let decimals = (14 - exp).clamp(0, 17) as usize;
    strip_zeros(&format!("{:.*}", decimals, d)).to_string()
}

/// Formats an i64 without allocating more than needed.
pub fn fmt_i64(i: i64) -> bytes::Bytes {
    bytes::Bytes::from(i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"+1"[..],
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"9223372036854775808",
            b"1.0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn g17_matches_c() {
        assert_eq!(fmt_g17(1.1), "1.1000000000000001");
        assert_eq!(fmt_g17(1e20), "1e+20");
        assert_eq!(fmt_g17(1e-5), "1.0000000000000001e-05");
        assert_eq!(fmt_g17(3.0), "3");
        assert_eq!(fmt_g17(0.0001), "0.0001");
        assert_eq!(fmt_g17(-2.5), "-2.5");
    }

    #[test]
    fn human_form_trims() {
        assert_eq!(fmt_human(0.1 + 0.2), "0.3");
        assert_eq!(fmt_human(10.5), "10.5");
        assert_eq!(fmt_human(3.0), "3");
        assert_eq!(fmt_human(-0.001), "-0.001");
    }
}
