//! The seeded PromQL generator behind `generated.rs` and the first-ask
//! battery benchmark (`battery_bench.rs`): expressions over the data set's
//! metrics, asked as ranges and instants in and around the holes.

use crate::harness::{Hole, Timeline};
use fastrand::Rng;

/// Builds one expression at a time from a seeded generator.
pub struct Gen {
    pub rng: Rng,
    /// Whether the expression is for a range query; see [`Gen::modifier`].
    pub ranged: bool,
}

/// Range windows: every one of them, with any offset and subquery below,
/// reads less than the 70 minutes between the two holes, so at every step
/// some replica holds all the data the expression reads.
const WINDOWS: [&str; 7] = ["30s", "1m", "2m", "5m", "10m", "15m", "30m"];

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.usize(..xs.len())]
    }

    fn selector(&mut self, kind: usize) -> String {
        let (name, matchers): (&str, &[&str]) = match kind {
            0 => (
                "http_requests_total",
                &[
                    "",
                    r#"{code="200"}"#,
                    r#"{method=~"G.*"}"#,
                    r#"{instance!="host-1:9100"}"#,
                    r#"{code="500",method="POST"}"#,
                ],
            ),
            1 => (
                "temperature_celsius",
                &["", r#"{room="room-1"}"#, r#"{room=~"room-[02]"}"#],
            ),
            2 => (
                "request_duration_seconds_sum",
                &["", r#"{instance="host-0:9100"}"#],
            ),
            3 => (
                "request_duration_seconds_bucket",
                &["", r#"{le="+Inf"}"#, r#"{instance="host-1:9100"}"#],
            ),
            _ => ("up", &["", r#"{instance="host-2:9100"}"#]),
        };
        format!("{name}{}", self.pick(matchers))
    }

    /// In a range query, `@ end()` pins a read to the range's end, which
    /// lies 15 minutes past hole b: with a window reaching into hole b, and
    /// another read in hole a, no replica could answer, so ranges get only
    /// `@ start()` (the range starts before any data). In an instant query
    /// both are the instant itself.
    fn modifier(&mut self) -> &'static str {
        let modifiers: &[&'static str] = &[
            "",
            "",
            "",
            "",
            " offset 5m",
            " offset 30s",
            " offset -2m",
            " @ start()",
            " @ end()",
        ];
        let n = modifiers.len() - usize::from(self.ranged);
        modifiers[self.rng.usize(..n)]
    }

    /// A function of a range selector.
    fn over_range(&mut self) -> String {
        let (f, s) = if self.rng.bool() {
            let f = self.pick(&[
                "rate",
                "increase",
                "irate",
                "resets",
                "changes",
                "delta",
                "idelta",
                "deriv",
                "count_over_time",
                "last_over_time",
                "present_over_time",
            ]);
            (f, self.selector(0))
        } else {
            let f = self.pick(&[
                "avg_over_time",
                "min_over_time",
                "max_over_time",
                "sum_over_time",
                "count_over_time",
                "stddev_over_time",
                "stdvar_over_time",
                "last_over_time",
                "changes",
                "deriv",
                "delta",
                "idelta",
                "quantile_over_time",
                "predict_linear",
                "absent_over_time",
                "holt_winters",
            ]);
            let kind = [1, 2, 4][self.rng.usize(..3)];
            (f, self.selector(kind))
        };
        let range = format!("{s}[{}]{}", self.pick(&WINDOWS), self.modifier());
        match f {
            "quantile_over_time" => {
                format!("{f}({}, {range})", self.pick(&["0", "0.5", "0.9", "1"]))
            }
            "predict_linear" => format!("{f}({range}, {})", self.pick(&["60", "600"])),
            "holt_winters" => format!("{f}({range}, 0.5, 0.5)"),
            _ => format!("{f}({range})"),
        }
    }

    /// An expression of instant-vector (or scalar) type.
    pub fn expr(&mut self, depth: usize) -> String {
        let r = self.rng.f64();
        if depth > 2 || r < 0.25 {
            return if self.rng.usize(..3) == 0 {
                let kind = self.rng.usize(..5);
                format!("{}{}", self.selector(kind), self.modifier())
            } else {
                self.over_range()
            };
        }
        let sub = |g: &mut Gen| g.expr(depth + 1);
        match r {
            r if r < 0.45 => {
                let agg = self.pick(&[
                    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
                ]);
                let by = self.pick(&[
                    "",
                    " by (instance)",
                    " by (code)",
                    " without (instance)",
                    " by (job)",
                    " by (le)",
                    " by (room)",
                ]);
                format!("{agg}{by} ({})", sub(self))
            }
            // Outermost only (see the module's doc).
            r if r < 0.52 && depth == 0 => {
                format!("{}({})", self.pick(&["sort", "sort_desc"]), sub(self))
            }
            r if r < 0.56 => format!("quantile({}, {})", self.pick(&["0.5", "0.9"]), sub(self)),
            r if r < 0.60 => format!(
                r#"count_values("v", {})"#,
                self.pick(&["up", "changes(up[10m])", "round(temperature_celsius)"])
            ),
            r if r < 0.68 => {
                let f = self.pick(&[
                    "abs",
                    "ceil",
                    "floor",
                    "round",
                    "sqrt",
                    "exp",
                    "ln",
                    "log2",
                    "sgn",
                    "timestamp",
                ]);
                let x = sub(self);
                match f {
                    "exp" => format!("exp(({x}) / 1e6)"),
                    _ => format!("{f}({x})"),
                }
            }
            r if r < 0.70 => format!(
                "clamp_max({}, {})",
                sub(self),
                self.pick(&["1", "20", "100"])
            ),
            r if r < 0.72 => match self.rng.usize(..5) {
                0 => format!("clamp({}, 0, {})", sub(self), self.pick(&["1", "20"])),
                1 => format!("clamp_min({}, 10)", sub(self)),
                2 => format!("-({})", sub(self)),
                3 => format!(
                    r#"label_join({}, "y", "-", "instance", "job")"#,
                    sub(self)
                ),
                _ => format!(
                    "{}(timestamp({}))",
                    self.pick(&["day_of_week", "day_of_month", "days_in_month", "month", "year"]),
                    sub(self)
                ),
            },
            r if r < 0.76 => format!(
                "histogram_quantile({}, {}(request_duration_seconds_bucket{}[{}]))",
                self.pick(&["0.5", "0.9", "0.99"]),
                self.pick(&["rate", "increase"]),
                self.pick(&["", r#"{instance="host-0:9100"}"#]),
                self.pick(&["1m", "5m", "10m"]),
            ),
            r if r < 0.80 => {
                let inner = if self.rng.bool() {
                    let kind = self.rng.usize(..5);
                    self.selector(kind)
                } else {
                    self.over_range()
                };
                format!("absent({inner})")
            }
            r if r < 0.86 => {
                let op = self.pick(&[
                    "+",
                    "-",
                    "*",
                    "/",
                    "%",
                    "^",
                    "atan2",
                    ">",
                    "<",
                    ">=",
                    "!=",
                    "== bool",
                    "> bool",
                    "and",
                    "or",
                    "unless",
                    "+ ignoring (code)",
                    "and on (instance)",
                    "or ignoring (le)",
                    "* on (instance) group_left",
                ]);
                let a = sub(self);
                let b = if self.rng.bool() {
                    sub(self)
                } else {
                    self.pick(&["1", "10", "0.5"]).to_string()
                };
                format!("({a}) {op} ({b})")
            }
            r if r < 0.90 => {
                let f = self.pick(&[
                    "max_over_time",
                    "avg_over_time",
                    "min_over_time",
                    "count_over_time",
                    "rate",
                    "deriv",
                    "changes",
                    "last_over_time",
                ]);
                let inner = self.over_range();
                let inner = if self.rng.bool() {
                    inner
                } else {
                    format!("sum({inner})")
                };
                format!(
                    "{f}(({inner})[{}:{}])",
                    self.pick(&["5m", "10m", "20m"]),
                    self.pick(&["30s", "1m", "2m", ""])
                )
            }
            r if r < 0.93 => format!(
                r#"label_replace({}, "x", "$1", "instance", "host-(.*):.*")"#,
                sub(self)
            ),
            r if r < 0.95 => self
                .pick(&[
                    "vector(1)",
                    "time()",
                    "scalar(sum(up))",
                    "1+1",
                    "vector(time())",
                    "minute()",
                    "hour(timestamp(up))",
                ])
                .to_string(),
            r if r < 0.97 => "sum by (instance) (rate(http_requests_total[5m])) / on (instance) group_left sum by (instance) (up)".to_string(),
            _ => format!("{} {} {}", sub(self), self.pick(&[">", "<"]), self.pick(&["15", "20", "0.1"])),
        }
    }

    /// The next query of the battery: an expression, and how it is asked
    /// (a range over `tl` at one of several steps, or an instant, most often
    /// one of `instants_ms`), with times in the forms Prometheus takes.
    pub fn ask(
        &mut self,
        tl: &Timeline,
        instants_ms: &[i64],
    ) -> (String, &'static str, Vec<(&'static str, String)>) {
        self.ranged = self.rng.bool();
        let q = self.expr(0);
        let (path, params) = if self.ranged {
            let step = [7, 15, 30, 45, 60, 120, 300][self.rng.usize(..7)];
            // `@ start()` pins a read to the range's start: at the data's start
            // that reads no hole.
            let pinned = q.contains('@');
            let mut start =
                tl.start + [0, 17, 600, 3000][self.rng.usize(..if pinned { 2 } else { 4 })];
            let mut end = tl.end - [0, 33, 1200][self.rng.usize(..3)];
            // A third of ranges span 15 to 60 minutes somewhere, often clear
            // of every hole (a dashboard's last hour, long after a restart):
            // there the coarse coverage alone decides.
            if !pinned && self.rng.usize(..3) == 0 {
                let minutes = self.rng.i64(15..=60);
                start = self.rng.i64(tl.start..=tl.end - minutes * 60);
                end = start + minutes * 60;
            }
            // Seconds, as Grafana sends them, or the other forms Prometheus takes.
            let (start, end, step) = match self.rng.usize(..4) {
                0 => (
                    rfc3339(start * 1000),
                    rfc3339(end * 1000),
                    format!("{step}s"),
                ),
                _ => (start.to_string(), end.to_string(), step.to_string()),
            };
            (
                "/api/v1/query_range",
                vec![
                    ("query", q.clone()),
                    ("start", start),
                    ("end", end),
                    ("step", step),
                ],
            )
        } else {
            let t_ms = if self.rng.usize(..4) == 0 {
                self.rng.i64((tl.start + 600) * 1000..tl.end * 1000)
            } else {
                instants_ms[self.rng.usize(..instants_ms.len())]
            };
            // As Grafana sends it (seconds), or as RFC 3339, which Prometheus takes too.
            let t = match self.rng.usize(..3) {
                0 => rfc3339(t_ms),
                _ => format!("{}.{:03}", t_ms / 1000, t_ms % 1000),
            };
            ("/api/v1/query", vec![("query", q.clone()), ("time", t)])
        };
        (q, path, params)
    }
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Instants in and around each hole: its first missing scrape and the one
/// before, inside, its last moments, and the steps after its end where look-back
/// windows still reach into it.
pub fn instants_around(holes: &[Hole]) -> Vec<i64> {
    holes
        .iter()
        .flat_map(|h| {
            [
                h.start * 1000 - 1000,
                h.start * 1000 + 17_500,
                (h.start + 30) * 1000,
                (h.start + 7 * 60) * 1000,
                (h.end - 15) * 1000,
                (h.end + 1) * 1000,
                (h.end + 59) * 1000,
                (h.end + 5 * 60) * 1000,
            ]
        })
        .collect()
}
