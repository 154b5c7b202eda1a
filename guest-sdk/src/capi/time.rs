//! Time arithmetic for reconcilers: RFC 3339 timestamps (`snapshot.now`, condition transition times) and Go durations.
//!
//! Reconcilers compute waits from the host's `now` and from timestamps stored
//! in objects, never from a clock of their own, so a re-reconcile computes
//! the same result and tests drive time by changing `now`.

use std::time::Duration;

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp
/// (`2026-01-01T00:00:00Z`, optional fraction, `Z` or `±hh:mm` offset);
/// `None` when it does not parse.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = first3.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let h: i64 = o.get(1..3)?.parse().ok()?;
            let m: i64 = o.get(4..6)?.parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1_000 + millis)
}

/// RFC 3339 text (second precision, `Z`) of milliseconds since the epoch, as
/// Kubernetes writes `metav1.Time`.
pub fn format_timestamp(millis: i64) -> String {
    let secs = millis.div_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        (rem % 3_600) / 60,
        rem % 60
    )
}

/// How long from `from` until `until` (both RFC 3339); zero when `until` is
/// not later, `None` when either does not parse.
pub fn until(from: &str, until: &str) -> Option<Duration> {
    let d = parse_timestamp(until)? - parse_timestamp(from)?;
    Some(Duration::from_millis(u64::try_from(d.max(0)).unwrap_or(0)))
}

/// `base` plus `d`, as RFC 3339 text; `None` when `base` does not parse.
pub fn add(base: &str, d: Duration) -> Option<String> {
    let ms = i64::try_from(d.as_millis()).ok()?;
    Some(format_timestamp(parse_timestamp(base)?.checked_add(ms)?))
}

/// A Go duration (`time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`);
/// `None` when it does not parse or is negative.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .bytes()
            .take_while(|c| c.is_ascii_alphabetic() || *c == 0xc2 || *c == 0xb5)
            .count();
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * unit;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_format_round_trip() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_timestamp("2026-01-01T01:00:00+01:00"),
            parse_timestamp("2026-01-01T00:00:00Z")
        );
        let t = parse_timestamp("2024-02-29T23:59:59Z").expect("leap day");
        assert_eq!(format_timestamp(t), "2024-02-29T23:59:59Z");
        assert_eq!(format_timestamp(t + 1_000), "2024-03-01T00:00:00Z");
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00:00",
            "2026-01-01T00:00:00X",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert_eq!(
            until("2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            until("2026-01-01T00:00:30Z", "2026-01-01T00:00:00Z"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            add("2026-01-01T00:00:00Z", Duration::from_secs(90)).as_deref(),
            Some("2026-01-01T00:01:30Z")
        );
    }

    #[test]
    fn go_durations_parse_as_time_parse_duration() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "-1s", "1d", "s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
