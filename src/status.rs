//! The HTML status page at `/`: each upstream's health, why and since when,
//! its latency and error counts, and the configuration in effect (secrets
//! masked by [`crate::config::Config::describe`]).
//!
//! Pure rendering: snapshots in, a self-contained page out (no scripts, no
//! external assets, so it works behind any firewall). Knows nothing about actix.

use crate::backend::HealthSnapshot;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Renders the page. `upstreams` in priority order.
pub fn render(
    upstreams: &[(String, HealthSnapshot)],
    config: &[(String, String)],
    started: SystemTime,
    now: SystemTime,
) -> String {
    let healthy = upstreams.iter().filter(|(_, h)| h.healthy).count();
    let mut page = String::with_capacity(8 << 10);
    page.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"5\">",
        "<title>prom-ha-proxy</title><style>",
        "body{font-family:sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin-bottom:2em}",
        "th,td{border:1px solid #ccc;padding:.4em .8em;text-align:left;vertical-align:top}",
        "th{background:#f0f0f0}",
        ".state{font-weight:bold;color:#fff;padding:.2em .6em;border-radius:.3em}",
        ".healthy{background:#1a7f37}.down{background:#cf222e}",
        "code{font-size:.95em}</style></head><body>\n",
    ));
    let _ = write!(
        page,
        "<h1>prom-ha-proxy</h1>\n<p id=\"summary\">{healthy} of {} upstreams healthy; up since {} ({} ago); version {}.</p>\n",
        upstreams.len(),
        timestamp(started),
        ago(now, started),
        env!("CARGO_PKG_VERSION"),
    );
    page.push_str(concat!(
        "<h2>Upstreams, highest priority first</h2>\n<table id=\"upstreams\"><tr>",
        "<th>#</th><th>URL</th><th>state</th><th>since</th><th>why</th>",
        "<th>last latency</th><th>requests</th><th>failed</th><th>last failure</th></tr>\n",
    ));
    for (i, (name, h)) in upstreams.iter().enumerate() {
        let (class, state) = if h.healthy {
            ("healthy", "healthy")
        } else {
            ("down", "down")
        };
        let latency = h.last_latency.map_or("–".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        });
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td><code>{}</code></td><td><span class=\"state {class}\">{state}</span></td><td>{} ({} ago)</td><td>{}</td><td>{latency}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            escape(name),
            timestamp(h.since),
            ago(now, h.since),
            escape(&h.reason),
            h.requests,
            h.failures,
            escape(&h.last_failure),
        );
    }
    page.push_str("</table>\n<h2>Configuration in effect</h2>\n<table id=\"config\"><tr><th>key</th><th>value</th></tr>\n");
    for (key, value) in config {
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            escape(key),
            escape(value)
        );
    }
    page.push_str("</table>\n<p><a href=\"/metrics\">/metrics</a> · <a href=\"/-/ready\">/-/ready</a> · <a href=\"/-/healthy\">/-/healthy</a></p>\n</body></html>\n");
    page
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: SystemTime, then: SystemTime) -> String {
    crate::time::format_duration(Duration::from_secs(
        now.duration_since(then).unwrap_or_default().as_secs(),
    ))
}

/// `2026-11-25T01:02:03Z`.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(healthy: bool, reason: &str) -> HealthSnapshot {
        HealthSnapshot {
            healthy,
            reason: reason.into(),
            since: UNIX_EPOCH + Duration::from_secs(1_764_032_523),
            requests: 12,
            failures: 3,
            last_latency: Some(Duration::from_micros(2500)),
            last_failure: "connection failed: refused".into(),
        }
    }

    #[test]
    fn the_page_shows_each_upstream_and_escapes_what_it_shows() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_032_583);
        let page = render(
            &[
                (
                    "http://a:9090".into(),
                    snapshot(true, "ready probe answered 200 2 times in a row"),
                ),
                (
                    "http://b:9090".into(),
                    snapshot(false, "ready probe failed: <HTTP 503>"),
                ),
            ],
            &[("upstreams.b.bearer_token".into(), "***".into())],
            now,
            now,
        );
        assert!(page.contains("1 of 2 upstreams healthy"));
        assert!(page.contains("<span class=\"state down\">down</span>"));
        assert!(page.contains("ready probe failed: &lt;HTTP 503&gt;"));
        assert!(page.contains("2025-11-25T01:02:03Z (60s ago)"));
        assert!(page.contains("2.5 ms"));
        assert!(!page.contains("<HTTP"));
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600); // 2000-02-29T12:00:00Z
        assert_eq!(timestamp(leap), "2000-02-29T12:00:00Z");
    }
}
