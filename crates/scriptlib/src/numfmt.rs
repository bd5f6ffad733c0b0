//! C's `%.<p>g` and `strtod`, as glibc does them in the C locale.
//!
//! lua-cjson prints numbers with `snprintf("%.14g")` and reads them with
//! `strtod`, so its output and the numbers it accepts follow glibc, not
//! JSON: `1e+15`, `-0`, `inf`, hex (`0x1F`), `Infinity`, a leading `+`.
//! Rust's exact formatting (`{:.*e}`) rounds the exact binary value half to
//! even, as glibc does, so the digits are the same; the `%g` layout rules
//! are applied on top of them.

use std::fmt::Write;

/// `printf("%.<precision>g", x)`.
pub(crate) fn format_g(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    let p = precision.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Scientific form with p significant digits decides the exponent X:
    // %g uses %e when X < -4 or X >= p, else %f with p-1-X decimals.
    let sci = format!("{:.*e}", p - 1, x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    let trimmed = |d: &[u8]| -> String {
        let mut end = d.len();
        while end > 0 && d[end - 1] == b'0' {
            end -= 1;
        }
        String::from_utf8_lossy(&d[..end]).into_owned()
    };
    if exp < -4 || exp >= p as i32 {
        out.push(char::from(digits[0]));
        let rest = trimmed(&digits[1..]);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(&rest);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        out.push_str(&String::from_utf8_lossy(&digits[..int_len]));
        let frac = trimmed(&digits[int_len..]);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(&frac);
        }
    } else {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&trimmed(&digits));
    }
    out
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn starts_with_ci(s: &[u8], i: usize, word: &[u8]) -> bool {
    word.iter()
        .enumerate()
        .all(|(k, w)| at(s, i + k).to_ascii_lowercase() == *w)
}

fn hex_value(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

/// `strtod(s, &end)` in the C locale, without leading white space (cjson
/// calls it at a token's first character). Returns the value and the
/// number of bytes read; 0 bytes means no number.
pub(crate) fn strtod(s: &[u8]) -> (f64, usize) {
    let mut i = 0;
    let negative = match at(s, 0) {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let signed = |v: f64| if negative { -v } else { v };
    if starts_with_ci(s, i, b"inf") {
        let len = if starts_with_ci(s, i, b"infinity") {
            8
        } else {
            3
        };
        return (signed(f64::INFINITY), i + len);
    }
    if starts_with_ci(s, i, b"nan") {
        let mut end = i + 3;
        // "nan(chars)" is read whole when the parenthesis closes.
        if at(s, end) == b'(' {
            let mut j = end + 1;
            while at(s, j).is_ascii_alphanumeric() || at(s, j) == b'_' {
                j += 1;
            }
            if at(s, j) == b')' {
                end = j + 1;
            }
        }
        return (signed(f64::NAN), end);
    }
    if at(s, i) == b'0'
        && (at(s, i + 1) | 0x20) == b'x'
        && (hex_value(at(s, i + 2)).is_some()
            || (at(s, i + 2) == b'.' && hex_value(at(s, i + 3)).is_some()))
    {
        return hex_float(s, i + 2, negative);
    }
    let start = i;
    let mut digits = 0;
    while at(s, i).is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if at(s, i) == b'.' {
        i += 1;
        while at(s, i).is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return (0.0, 0);
    }
    if at(s, i) | 0x20 == b'e' {
        let mut j = i + 1;
        if matches!(at(s, j), b'+' | b'-') {
            j += 1;
        }
        if at(s, j).is_ascii_digit() {
            while at(s, j).is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    // Rust's parser is correctly rounded like glibc's; it wants at least
    // one digit before an exponent, which "digits > 0" guarantees, and a
    // form like "5." or ".5", which it accepts.
    let text = String::from_utf8_lossy(&s[start..i]);
    let v = text.parse::<f64>().unwrap_or(0.0);
    (signed(v), i)
}

/// The hex form after "0x": hex digits, an optional fraction, an optional
/// binary exponent `p[+-]digits`.
fn hex_float(s: &[u8], mut i: usize, negative: bool) -> (f64, usize) {
    let mut value = 0.0f64;
    let mut scale = 0i32;
    while let Some(d) = hex_value(at(s, i)) {
        value = value * 16.0 + f64::from(d);
        i += 1;
    }
    if at(s, i) == b'.' {
        i += 1;
        while let Some(d) = hex_value(at(s, i)) {
            value = value * 16.0 + f64::from(d);
            scale -= 4;
            i += 1;
        }
    }
    if at(s, i) | 0x20 == b'p' {
        let mut j = i + 1;
        let exp_negative = at(s, j) == b'-';
        if matches!(at(s, j), b'+' | b'-') {
            j += 1;
        }
        if at(s, j).is_ascii_digit() {
            let mut e = 0i32;
            while at(s, j).is_ascii_digit() {
                e = e
                    .saturating_mul(10)
                    .saturating_add(i32::from(at(s, j) - b'0'));
                j += 1;
            }
            scale = scale.saturating_add(if exp_negative { -e } else { e });
            i = j;
        }
    }
    let v = value * 2f64.powi(scale);
    (if negative { -v } else { v }, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_g_follows_printf() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (100.0, "100"),
            (1e14, "1e+14"),
            (123456789012345.0, "1.2345678901234e+14"),
            (12345678901234.0, "12345678901234"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.234_567_890_123_456_7, "1.2345678901235"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (f64::INFINITY, "inf"),
        ];
        for (x, want) in cases {
            assert_eq!(format_g(*x, 14), *want, "{x}");
        }
        assert_eq!(format_g(2.5, 1), "2");
        assert_eq!(format_g(123.456, 4), "123.5");
    }

    #[test]
    fn strtod_reads_what_glibc_reads() {
        assert_eq!(strtod(b"12abc"), (12.0, 2));
        assert_eq!(strtod(b"-1.5e3,"), (-1500.0, 6));
        assert_eq!(strtod(b"1e"), (1.0, 1));
        assert_eq!(strtod(b"1e+"), (1.0, 1));
        assert_eq!(strtod(b".5"), (0.5, 2));
        assert_eq!(strtod(b"5."), (5.0, 2));
        assert_eq!(strtod(b"0x1F"), (31.0, 4));
        assert_eq!(strtod(b"0x"), (0.0, 1));
        assert_eq!(strtod(b"-Infinity"), (f64::NEG_INFINITY, 9));
        assert_eq!(strtod(b"infx"), (f64::INFINITY, 3));
        assert!(strtod(b"nan").0.is_nan());
        assert_eq!(strtod(b"-"), (0.0, 0));
        assert_eq!(strtod(b"+"), (0.0, 0));
        assert_eq!(strtod(b"."), (0.0, 0));
    }
}
