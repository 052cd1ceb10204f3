//! Human-readable durations for serde: `"2s"`, `"500ms"`, `"1m30s"`, `"1.5s"`, `"0s"`.
//!
//! Reading is [`humantime`]'s (`h`, `m`/`min`, `s`, `ms`, `us`/`µs`, `ns`, and longer spellings
//! such as `hours` or `days`; parts may be separated by spaces; a number may have a decimal
//! fraction, `"1.5s"`; a bare `0` is zero). Writing is the compact form, largest units first
//! (`"1m30s"`, `"250ms"`), which reads back to the same duration.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write it like \"2s\", \"500ms\" or \"1m30s\")")]
pub struct ParseDurationError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses a human duration.
///
/// ```
/// use std::time::Duration;
/// use parti_core::config::duration::parse;
/// assert_eq!(parse("1m30s")?, Duration::from_secs(90));
/// assert_eq!(parse("1.5s")?, Duration::from_millis(1500));
/// assert_eq!(parse("250us")?, Duration::from_micros(250));
/// assert!(parse("10").is_err()); // a unit is required (except for a bare 0)
/// # Ok::<(), parti_core::config::duration::ParseDurationError>(())
/// ```
pub fn parse(text: &str) -> Result<Duration, ParseDurationError> {
    humantime::parse_duration(text.trim()).map_err(|e| ParseDurationError {
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Formats a duration the way [`parse`] reads it: largest units first, zero parts left out.
///
/// ```
/// use std::time::Duration;
/// use parti_core::config::duration::format;
/// assert_eq!(format(Duration::from_secs(90)), "1m30s");
/// assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
/// assert_eq!(format(Duration::ZERO), "0s");
/// ```
#[must_use]
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (v, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (u64::from(ms), "ms"),
        (u64::from(us), "us"),
        (u64::from(ns), "ns"),
    ] {
        if v != 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    out
}

/// `#[serde(with = "duration")]` for a `Duration` field.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// `#[serde(with = "duration")]` for a `Duration` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(with = "duration::option")]` for an `Option<Duration>` field, where the text `"off"`
/// means `None`.
pub mod option {
    use super::*;

    /// Serialises `None` as `"off"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_str("off"),
        }
    }

    /// Reads `"off"` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(None);
        }
        parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse("1h2m3s4ms").unwrap(),
            Duration::from_millis(3_723_004)
        );
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("0ms").unwrap(), Duration::ZERO);
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse(" 1m 30s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("10µs").unwrap(), Duration::from_micros(10));
    }

    #[test]
    fn an_error_says_what_is_wrong_and_how_to_write_it() {
        let e = parse("5 parsecs").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"5 parsecs\"") && text.contains("parsecs"),
            "{text}"
        );
        assert!(text.contains("write it like \"2s\""), "{text}");
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "s",
            "10",
            "1.2.3s",
            ".5s",
            "5 parsecs",
            "-1s",
            "1x",
            "99999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(secs in 0u64..10_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
