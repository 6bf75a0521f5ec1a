//! Time arguments of the audit CLI (`--from`, `--to`, `--since`): an
//! RFC 3339 time (`2026-11-23T00:00:00Z`, any offset), a date
//! (`2026-11-23`, midnight UTC), a time relative to now (`-90s`, `-30m`,
//! `-24h`, `-7d`, `-2w`), or `now`. All become milliseconds since the Unix
//! epoch.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::AuditError;

/// `spec` as milliseconds since the Unix epoch, relative forms counted back
/// from `now_ms`.
pub fn parse_time(spec: &str, now_ms: i64) -> Result<i64, AuditError> {
    let bad = |detail: &str| AuditError::Time {
        spec: spec.to_owned(),
        detail: detail.to_owned(),
    };
    let s = spec.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let unit_at = rel
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad("a relative time needs a unit: s, m, h, d or w (e.g. -24h)"))?;
        let (n, unit) = rel.split_at(unit_at);
        let n: i64 = n
            .parse()
            .map_err(|_| bad("a relative time is -<number><unit>, e.g. -24h or -7d"))?;
        let unit_ms: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad("unknown unit (use s, m, h, d or w)")),
        };
        let back = n.checked_mul(unit_ms).ok_or_else(|| bad("too far back"))?;
        return now_ms.checked_sub(back).ok_or_else(|| bad("too far back"));
    }
    let t = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => match Date::parse(s, format_description!("[year]-[month]-[day]")) {
            Ok(d) => d.midnight().assume_utc(),
            Err(_) => {
                return Err(bad(
                    "expected RFC 3339 (2026-11-23T00:00:00Z), a date (2026-11-23), a relative \
                     time (-24h, -7d) or now",
                ));
            }
        },
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_957_502_123;

    #[test]
    fn absolute_relative_and_now() {
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("NOW", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("2026-11-23T00:00:00Z", NOW).unwrap(),
            1_795_392_000_000
        );
        assert_eq!(
            parse_time("2026-11-23T01:00:00.250+01:00", NOW).unwrap(),
            1_795_392_000_250
        );
        assert_eq!(parse_time("2026-11-23", NOW).unwrap(), 1_795_392_000_000);
        assert_eq!(parse_time("-90s", NOW).unwrap(), NOW - 90_000);
        assert_eq!(parse_time("-30m", NOW).unwrap(), NOW - 1_800_000);
        assert_eq!(parse_time("-24h", NOW).unwrap(), NOW - 86_400_000);
        assert_eq!(parse_time("-7d", NOW).unwrap(), NOW - 7 * 86_400_000);
        assert_eq!(parse_time("-2w", NOW).unwrap(), NOW - 14 * 86_400_000);
        assert_eq!(parse_time(" -0h ", NOW).unwrap(), NOW);
    }

    #[test]
    fn nonsense_is_refused_with_the_spec() {
        for bad in [
            "",
            "yesterday",
            "-24",
            "-h",
            "-24x",
            "24h",
            "-1.5h",
            "2026-13-01",
            "2026-11-23 00:00",
            "-99999999999999999d",
        ] {
            let err = parse_time(bad, NOW).unwrap_err();
            assert!(matches!(err, AuditError::Time { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
