//! [`LogTime`]: the time at the start of a log line, in the shapes Redis
//! problems show up in — ISO 8601 / RFC 3339 (most application loggers),
//! Redis's own `02 May 2024 10:06:00.000`, and syslog's `May  2 10:06:00`
//! (no year: the year of the last dated line is borrowed). Times are taken
//! as written, UTC unless the line says otherwise; an offset is applied.

use std::sync::OnceLock;

use regex::Regex;

/// Bytes at the start of a line searched for a time: loggers put it first,
/// after at most a pid, a level or a container name.
const SEARCH_BYTES: usize = 64;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// A point in time read from a log line, ordered, shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogTime {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

fn patterns() -> &'static [Regex; 3] {
    static RE: OnceLock<[Regex; 3]> = OnceLock::new();
    RE.get_or_init(|| {
        // Compiled-in patterns, covered by the tests below: they cannot fail.
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("{e}"));
        [
            re(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?"),
            re(r"(?i)\b(\d{1,2}) (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec) (\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"),
            re(r"(?i)^(?:<\d+>)?(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})"),
        ]
    })
}

impl LogTime {
    /// The time near the start of `line`, if any; `year` is used for
    /// syslog lines, which carry none.
    pub fn find(line: &str, year: Option<i64>) -> Option<LogTime> {
        let mut end = line.len().min(SEARCH_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let head = &line[..end];
        let [iso, redis, syslog] = patterns();
        let num = |s: Option<regex::Match<'_>>| s.and_then(|m| m.as_str().parse::<i64>().ok());
        let month = |s: &str| {
            let s = s.to_ascii_lowercase();
            MONTHS.iter().position(|m| *m == s).map(|i| i as i64 + 1)
        };
        let frac_ms = |m: Option<regex::Match<'_>>| {
            m.map_or(0, |m| {
                let digits: String = m.as_str().chars().chain("000".chars()).take(3).collect();
                digits.parse::<i64>().unwrap_or(0)
            })
        };
        if let Some(c) = iso.captures(head) {
            let offset_min = c.get(8).map_or(0, |m| {
                let s = m.as_str();
                if s == "Z" {
                    return 0;
                }
                let sign = if s.starts_with('-') { -1 } else { 1 };
                let digits: String = s.chars().filter(char::is_ascii_digit).collect();
                let h: i64 = digits.get(..2).and_then(|d| d.parse().ok()).unwrap_or(0);
                let m: i64 = digits.get(2..).and_then(|d| d.parse().ok()).unwrap_or(0);
                sign * (h * 60 + m)
            });
            let ms = to_ms(
                num(c.get(1))?,
                num(c.get(2))?,
                num(c.get(3))?,
                num(c.get(4))?,
                num(c.get(5))?,
                num(c.get(6))?,
            )? + frac_ms(c.get(7))
                - offset_min * 60_000;
            return Some(LogTime { unix_ms: ms });
        }
        if let Some(c) = redis.captures(head) {
            let ms = to_ms(
                num(c.get(3))?,
                month(c.get(2)?.as_str())?,
                num(c.get(1))?,
                num(c.get(4))?,
                num(c.get(5))?,
                num(c.get(6))?,
            )? + frac_ms(c.get(7));
            return Some(LogTime { unix_ms: ms });
        }
        if let Some(c) = syslog.captures(head) {
            let ms = to_ms(
                year?,
                month(c.get(1)?.as_str())?,
                num(c.get(2))?,
                num(c.get(3))?,
                num(c.get(4))?,
                num(c.get(5))?,
            )?;
            return Some(LogTime { unix_ms: ms });
        }
        None
    }

    /// The calendar year (UTC), to date a following syslog line.
    pub fn year(self) -> i64 {
        civil(self.unix_ms.div_euclid(86_400_000)).0
    }

    /// RFC 3339 in UTC, with milliseconds when the log had them.
    pub fn rfc3339(self) -> String {
        let days = self.unix_ms.div_euclid(86_400_000);
        let in_day = self.unix_ms.rem_euclid(86_400_000);
        let (y, m, d) = civil(days);
        let (h, mi, s, ms) = (
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1000 % 60,
            in_day % 1000,
        );
        if ms == 0 {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        }
    }
}

/// Milliseconds since the epoch of a UTC civil time; `None` when a field
/// is out of range (not a time after all).
fn to_ms(y: i64, m: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

/// (year, month, day) of a day count since the epoch (civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(line: &str) -> Option<String> {
        LogTime::find(line, Some(2024)).map(LogTime::rfc3339)
    }

    #[test]
    fn the_shapes_redis_problems_are_logged_in() {
        assert_eq!(
            t("2024-05-02T10:05:01Z api error x").as_deref(),
            Some("2024-05-02T10:05:01Z")
        );
        assert_eq!(
            t("2024-05-02 10:05:01,250 ERROR x").as_deref(),
            Some("2024-05-02T10:05:01.250Z")
        );
        assert_eq!(
            t("E, [2024-05-02T12:05:01.5+02:00 #12] ERROR").as_deref(),
            Some("2024-05-02T10:05:01.500Z")
        );
        assert_eq!(
            t("1:M 02 May 2024 10:06:00.123 # Out Of Memory").as_deref(),
            Some("2024-05-02T10:06:00.123Z")
        );
        assert_eq!(
            t("May  2 10:06:00 cache-1 kernel: Out of memory").as_deref(),
            Some("2024-05-02T10:06:00Z")
        );
        assert_eq!(
            LogTime::find("May  2 10:06:00 host kernel", None),
            None,
            "syslog needs a year"
        );
        assert_eq!(t("[812345.678901] oom-kill:"), None, "uptime is not a time");
        assert_eq!(t("no time here"), None);
        assert_eq!(t("2024-13-02T10:05:01Z"), None);
        assert_eq!(
            t("1970-01-01T00:00:00Z").as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            t("2000-02-29T23:59:59Z").as_deref(),
            Some("2000-02-29T23:59:59Z")
        );
        assert_eq!(
            LogTime::find("2024-05-02T10:05:01Z", None).map(LogTime::year),
            Some(2024)
        );
    }
}
