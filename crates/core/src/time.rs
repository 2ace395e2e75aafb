use serde::Serializer;

/// Milliseconds since the Unix epoch, as stored in the database. Times that order events across
/// nodes (queue time, last seen) are taken from the database clock, never a node's.
pub type UnixMs = i64;

/// Serializes a time as the API shows it: [`format_rfc3339_ms`].
pub(crate) fn ser_time<S: Serializer>(ms: &UnixMs, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_ms(*ms))
}

/// [`ser_time`], or `null`.
pub(crate) fn ser_opt_time<S: Serializer>(ms: &Option<UnixMs>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_rfc3339_ms(*ms)),
        None => s.serialize_none(),
    }
}

/// A time's schema as [`ser_time`] writes it (`#[schemars(with = "Rfc3339")]`).
#[cfg(feature = "schema")]
pub(crate) struct Rfc3339;

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Rfc3339 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rfc3339".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

/// Formats a Unix time in milliseconds as an RFC 3339 UTC string, e.g.
/// `2026-11-26T07:35:00.123Z`.
pub fn format_rfc3339_ms(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Milliseconds in a day.
pub const DAY_MS: UnixMs = 86_400_000;

/// The UTC date (year, month, day) of the day `day` (days since 1970-01-01).
pub fn civil_date(day: i64) -> (i64, u32, u32) {
    civil_from_days(day)
}

/// The day (days since 1970-01-01) of a UTC date; Howard Hinnant's days-from-civil.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC time given as `YYYY-MM-DD` (its start) or `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn parse_time(text: &str) -> Result<UnixMs, crate::ValidationError> {
    let bad = || {
        crate::ValidationError::new(format!(
            "{text:?} is not a UTC time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[.mmm]Z"
        ))
    };
    let (date, clock) = match text.split_once('T') {
        Some((d, c)) => (d, Some(c.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let num = |s: &str, len: usize| -> Result<i64, crate::ValidationError> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let day = days_from_civil(y, m as u32, d as u32);
    if civil_from_days(day) != (y, m as u32, d as u32) {
        return Err(bad()); // 2026-02-30
    }
    let mut ms = 0;
    if let Some(c) = clock {
        let (hms, frac) = match c.split_once('.') {
            Some((h, f)) => (h, Some(f)),
            None => (c, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let [h, mi, se] = parts[..] else {
            return Err(bad());
        };
        let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
        if h > 23 || mi > 59 || se > 59 {
            return Err(bad());
        }
        ms = ((h * 60 + mi) * 60 + se) * 1000;
        if let Some(f) = frac {
            ms += num(f, 3)?;
        }
    }
    Ok(day * DAY_MS + ms)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_764_403_200_123, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_time(&format_rfc3339_ms(ms)).unwrap(), ms);
        }
        assert_eq!(parse_time("2026-11-29").unwrap() % DAY_MS, 0);
        assert_eq!(
            civil_date(parse_time("2024-02-29").unwrap() / DAY_MS),
            (2024, 2, 29)
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-11-29",
            "2026-11-29T25:00:00Z",
            "2026-11-29T10:00:00",
            "x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(
            format_rfc3339_ms(951_827_696_789),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_795_678_500_001),
            "2026-11-26T07:35:00.001Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
