//! Why one upstream gave no usable answer: one variant per way an upstream
//! can fail or be skipped, and which of them say something of its health.

use crate::answer::{Answer, AnswerError};
use std::time::Duration;

/// Why one upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect or send.
    Connect(String),
    /// The whole request (body included) did not finish within the deadline.
    Timeout(Duration),
    /// A Prometheus error answer (`"status":"error"`), with its HTTP status.
    Rejected {
        status: u16,
        error_type: String,
        error: String,
    },
    /// A non-2xx answer that is not a Prometheus error.
    Status { status: u16, detail: String },
    /// A redirect (3xx), never followed; where it pointed.
    Redirect { status: u16, location: String },
    /// The body was larger than the configured limit.
    TooLarge { limit: usize },
    /// The connection broke while the body was being read.
    Body(String),
    /// A 2xx body that is not a Prometheus query answer.
    Answer(AnswerError),
    /// The backend actor was gone (it is restarted by its supervisor).
    Unavailable,
    /// Skipped: the upstream is marked down, for this reason.
    Down(String),
    /// Not read: the proxy's in-flight bytes budget (this many bytes) was spent.
    OverBudget { limit: usize },
    /// No answer within the straggler timeout after the first upstream answered.
    Straggler(Duration),
    /// Dropped unread: another upstream's answer went out alone.
    NotNeeded,
    /// The proxy broke reading this upstream's answer (its parser panicked):
    /// the proxy's fault, never the upstream's.
    Proxy(String),
}

impl UpstreamError {
    /// The error a non-2xx answer stands for: a Prometheus error answer keeps
    /// its type and message; anything else is summarised.
    pub fn from_status(status: u16, body: &[u8]) -> UpstreamError {
        match Answer::parse(body.to_vec()) {
            Err(AnswerError::Status { error_type, error }) => UpstreamError::Rejected {
                status,
                error_type,
                error,
            },
            _ => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                let detail = text.split_whitespace().collect::<Vec<_>>().join(" ");
                UpstreamError::Status {
                    status,
                    detail: if detail.is_empty() {
                        actix_web::http::StatusCode::from_u16(status)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("")
                            .to_string()
                    } else {
                        detail
                    },
                }
            }
        }
    }

    /// A panic's payload, caught where the proxy parsed an answer.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> UpstreamError {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        UpstreamError::Proxy(format!("the parser panicked: {why}"))
    }

    /// A short name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Status { .. } => "http_error",
            UpstreamError::Redirect { .. } => "redirect",
            UpstreamError::TooLarge { .. } => "too_large",
            UpstreamError::Body(_) => "cut_off",
            UpstreamError::Answer(_) => "bad_answer",
            UpstreamError::Unavailable => "unavailable",
            UpstreamError::Down(_) => "down",
            UpstreamError::OverBudget { .. } => "over_budget",
            UpstreamError::Straggler(_) => "straggler",
            UpstreamError::NotNeeded => "not_needed",
            UpstreamError::Proxy(_) => "proxy_fault",
        }
    }

    /// Says nothing about the upstream's health: the client's mistake, or the
    /// proxy's own limit.
    pub fn is_not_the_upstreams_fault(&self) -> bool {
        self.is_client_error()
            || matches!(
                self,
                UpstreamError::OverBudget { .. }
                    | UpstreamError::NotNeeded
                    | UpstreamError::Proxy(_)
            )
    }

    /// A client's mistake (bad PromQL, bad parameters), not an outage.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            UpstreamError::Rejected {
                status: 400 | 422,
                ..
            }
        )
    }
}

/// A 2xx body that is not a usable answer: a Prometheus error answer keeps its
/// type and message (as a rejection with status 200); anything else is a bad answer.
impl From<AnswerError> for UpstreamError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Status { error_type, error } => UpstreamError::Rejected {
                status: 200,
                error_type,
                error,
            },
            AnswerError::Panicked(why) => UpstreamError::Proxy(why),
            other => UpstreamError::Answer(other),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout(d) => {
                write!(f, "timeout after {}", crate::time::format_duration(*d))
            }
            UpstreamError::Rejected {
                status,
                error_type,
                error,
            } => {
                write!(f, "HTTP {status}: {error_type}: {error}")
            }
            UpstreamError::Status { status, detail } => write!(f, "HTTP {status}: {detail}"),
            UpstreamError::Redirect { status, location } => {
                write!(f, "HTTP {status}: redirect to {location:?} not followed")
            }
            UpstreamError::TooLarge { limit } => {
                write!(f, "answer larger than the {limit}-byte limit")
            }
            UpstreamError::Body(e) => write!(f, "answer cut off: {e}"),
            UpstreamError::Answer(e) => write!(f, "{e}"),
            UpstreamError::Unavailable => f.write_str("backend unavailable"),
            UpstreamError::Down(why) => write!(f, "down, not asked ({why})"),
            UpstreamError::OverBudget { limit } => write!(
                f,
                "answer not read: the proxy's {limit}-byte budget for answers in flight is spent"
            ),
            UpstreamError::Straggler(d) => write!(
                f,
                "no answer within {} of the first upstream's; answered without it",
                crate::time::format_duration(*d)
            ),
            UpstreamError::NotNeeded => {
                write!(f, "not read: another upstream's answer went out alone")
            }
            UpstreamError::Proxy(why) => write!(f, "the proxy failed reading its answer: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_told_apart_from_outages() {
        let bad = UpstreamError::Rejected {
            status: 400,
            error_type: "bad_data".into(),
            error: "x".into(),
        };
        assert!(bad.is_client_error());
        assert!(!UpstreamError::Timeout(Duration::from_secs(1)).is_client_error());
        assert_eq!(
            UpstreamError::Timeout(Duration::from_secs(60)).to_string(),
            "timeout after 60s"
        );
    }
}
