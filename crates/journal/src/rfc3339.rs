//! Times for people: Unix milliseconds as RFC 3339 in UTC. Journal
//! records and `/status` keep epoch milliseconds (exact, sortable); a
//! person reading `journal inspect` or `redoubt status` gets a date.

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SSZ` (seconds: enough to place an
/// outage in other logs).
pub fn rfc3339_secs(unix_ms: u64) -> String {
    let (date, (h, m, s)) = split(unix_ms);
    format!("{date}T{h:02}:{m:02}:{s:02}Z")
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds: journal records
/// are stamped to the millisecond).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let (date, (h, m, s)) = split(unix_ms);
    format!("{date}T{h:02}:{m:02}:{s:02}.{:03}Z", unix_ms % 1000)
}

fn split(unix_ms: u64) -> (String, (u64, u64, u64)) {
    let secs = unix_ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60),
    )
}

/// Proleptic Gregorian date of `days` after 1970-01-01: eras of 400
/// years (146 097 days) from 0000-03-01, so the leap day ends a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // Checked against `date -u -d @SECONDS`.
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339_secs(secs * 1000 + 999), want, "{secs}");
        }
        assert_eq!(
            rfc3339_millis(1_700_000_000_042),
            "2023-11-14T22:13:20.042Z"
        );
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // 1970 to 2400: dates strictly increase and no day is skipped.
        let mut prev = civil_from_days(0);
        for days in 1..157_000 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let next_month = (y, m, d) == (prev.0, prev.1 + 1, 1);
            let next_year = (y, m, d) == (prev.0 + 1, 1, 1) && prev.1 == 12 && prev.2 == 31;
            assert!(
                next_day || next_month || next_year,
                "{prev:?} -> {:?}",
                (y, m, d)
            );
            prev = (y, m, d);
        }
        assert_eq!(prev.0, 2399);
    }
}
