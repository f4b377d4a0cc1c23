//! Points in time and durations as artifacts carry them.
//!
//! Timestamps are whole seconds, UTC, written as RFC 3339 in exactly one form
//! (`2025-01-31T12:00:00Z`) so that the text and the signed bytes correspond
//! one to one. Durations given by people (`--ttl 12h`, `max_ttl = "30d"`) use
//! humantime's syntax (`90d`, `12h 30m`, `45s`) and must be whole seconds.
use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A point in time: whole seconds since 1970-01-01T00:00:00Z, at most the last
/// second of year 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

/// The text is not a timestamp in the one accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 UTC time with whole seconds, like 2025-01-31T12:00:00Z")]
pub struct BadTimestamp(pub String);

/// The text is not a duration of whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration of whole seconds, like 90d, 12h, 30m or 1h 30m")]
pub struct BadDuration(pub String);

impl Timestamp {
    /// 9999-12-31T23:59:59Z, the last second RFC 3339's four-digit year can write.
    pub const MAX_UNIX: u64 = 253_402_300_799;

    /// The timestamp `secs` seconds after the Unix epoch, if representable.
    pub fn from_unix(secs: u64) -> Option<Self> {
        (secs <= Self::MAX_UNIX).then_some(Self(secs))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> u64 {
        self.0
    }

    /// `t` rounded down to the second; times before 1970 become the epoch and
    /// times after year 9999 the last representable second.
    pub fn from_system_time(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self(secs.min(Self::MAX_UNIX))
    }

    /// The current time, rounded down to the second.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0)
    }

    /// `self + secs`, if still representable.
    pub fn checked_add(self, secs: u64) -> Option<Self> {
        self.0.checked_add(secs).and_then(Self::from_unix)
    }

    /// Seconds from `earlier` to `self`, or `None` when `earlier` is later.
    pub fn seconds_since(self, earlier: Self) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_seconds(self.to_system_time()).fmt(f)
    }
}

impl FromStr for Timestamp {
    type Err = BadTimestamp;

    /// Accepts exactly what `Display` writes: `YYYY-MM-DDTHH:MM:SSZ`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadTimestamp(s.to_owned());
        let t = humantime::parse_rfc3339(s).map_err(|_| bad())?;
        let ts = Self::from_system_time(t);
        // Only the canonical spelling: no fractions, no `+00:00`, no leap second.
        if ts.to_string() != s {
            return Err(bad());
        }
        Ok(ts)
    }
}

/// Parses a duration such as `90d`, `12h`, `1h 30m` into whole seconds (> 0).
pub fn parse_duration(s: &str) -> Result<u64, BadDuration> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| BadDuration(s.to_owned()))?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(BadDuration(s.to_owned()));
    }
    Ok(d.as_secs())
}

/// A number of seconds as people read it: `1day 12h`, `30m`.
pub fn format_duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_one_spelling() {
        let t: Timestamp = "2025-01-31T12:00:00Z".parse().unwrap();
        assert_eq!(t.unix(), 1_738_324_800);
        assert_eq!(t.to_string(), "2025-01-31T12:00:00Z");
        for bad in [
            "2025-01-31T12:00:00.5Z",
            "2025-01-31T12:00:00+00:00",
            "2025-01-31 12:00:00Z",
            "2025-01-31T12:00:00",
            "2025-02-30T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2016-12-31T23:59:60Z",
            "",
            "2025-01-31T12:00:00Zjunk",
            "２０２５-01-31T12:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        let last: Timestamp = "9999-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(last.unix(), Timestamp::MAX_UNIX);
        assert_eq!(last.checked_add(1), None);
        assert_eq!(Timestamp::from_unix(Timestamp::MAX_UNIX + 1), None);
    }

    #[test]
    fn durations_are_whole_seconds() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("1h 30m"), Ok(5_400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(5_400), "1h 30m");
    }
}
