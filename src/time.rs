//! Time and duration parameters, read and written as Prometheus reads and
//! writes them: shared by the edge, the backends and the configuration.

use std::time::{Duration, SystemTime};

/// The wall clock, in milliseconds since the epoch (0 before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds as Prometheus reads a time parameter: seconds, three decimals.
pub fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// A time parameter as milliseconds, read as Prometheus reads it: seconds
/// (`1700000000.123`, rounded to the millisecond) or RFC 3339
/// (`2023-11-14T22:13:20.123Z`, cut to the millisecond); None otherwise.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = text.parse::<f64>() {
        if !t.is_finite() || t.abs() > 1e15 {
            return None;
        }
        let whole = t.trunc();
        return Some(whole as i64 * 1000 + ((t - whole) * 1000.0).round() as i64);
    }
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(t.timestamp_millis())
}

/// A Prometheus duration ("1m30s") or a number of seconds ("2.5"), as the API's
/// `timeout` parameter accepts; None for anything else, negative included.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    promql_parser::util::parse_duration(text).ok()
}

/// Formats a duration for messages: "60s", "1.5s".
pub fn format_duration(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parameters_are_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.1236"), Some(1_700_000_000_124));
        assert_eq!(parse_time("-1.5"), Some(-1500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.1239+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(seconds(-1500), "-1.500");
        assert_eq!(parse_time(&seconds(-1500)), Some(-1500));
        assert_eq!(seconds(1_700_000_000_124), "1700000000.124");
    }
}
