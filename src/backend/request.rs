//! A client's read request as it goes upstream, and the rewrites the
//! supervisor asks of it: another query, some of its steps, an instant's
//! history as a range.

use crate::time::seconds;
use actix_web::http::Method;
use bytes::Bytes;

/// A client's read request, as it is forwarded: path, method, and the exact
/// query string and form body the client sent.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Path below the upstream's base URL, e.g. `/api/v1/query`.
    pub path: String,
    pub method: Method,
    pub query_string: String,
    /// The `application/x-www-form-urlencoded` body of a POST; empty for GET.
    pub form_body: Bytes,
    /// The client's `Authorization` header: sent on only to upstreams whose
    /// config says `forward_authorization = true`.
    pub authorization: Option<String>,
}

impl ApiRequest {
    /// The same request with its `query` parameter replaced, every other
    /// parameter kept (same time range, step, timeout, look-back).
    pub fn with_query(&self, query: &str) -> ApiRequest {
        self.rewritten(&self.path, Some(query), &[], &[])
    }

    /// This range query over its steps from `start_ms` to `end_ms` alone,
    /// everything else kept (its query, step, look-back, timeout, …).
    pub fn over_steps(&self, start_ms: i64, end_ms: i64) -> ApiRequest {
        let added = [("start", seconds(start_ms)), ("end", seconds(end_ms))];
        self.rewritten(&self.path, None, &["start", "end"], &added)
    }

    /// The same request as a range query of `query` from `start_ms` to
    /// `end_ms` every `step_ms`, its other parameters (look-back, timeout, …)
    /// kept: an instant query's coverage, asked over the steps before it.
    pub fn as_range(&self, query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> ApiRequest {
        let added = [
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", seconds(step_ms)),
        ];
        let drop = ["time", "start", "end", "step"];
        self.rewritten("/api/v1/query_range", Some(query), &drop, &added)
    }

    /// This request at `path` with `query` for its query (None: its own),
    /// the parameters in `drop` (and `stats`, `limit`) removed, and `add`
    /// added where the client put its parameters (the form body of a POST,
    /// else the query string).
    fn rewritten(
        &self,
        path: &str,
        query: Option<&str>,
        drop: &[&str],
        add: &[(&str, String)],
    ) -> ApiRequest {
        let rewrite = |encoded: &[u8], add: &[(&str, String)]| {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(encoded).unwrap_or_default();
            let mut pairs: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(k, _)| k != "stats" && k != "limit" && !drop.contains(&k.as_str()))
                .map(|(k, v)| match query {
                    Some(query) if k == "query" => (k, query.to_string()),
                    _ => (k, v),
                })
                .collect();
            pairs.extend(add.iter().map(|(k, v)| (k.to_string(), v.clone())));
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        };
        let (in_url, in_form) = if self.method == Method::POST {
            (&[][..], add)
        } else {
            (add, &[][..])
        };
        ApiRequest {
            path: path.to_string(),
            method: self.method.clone(),
            query_string: rewrite(self.query_string.as_bytes(), in_url),
            form_body: Bytes::from(rewrite(&self.form_body, in_form)),
            authorization: self.authorization.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_over_some_of_its_steps_keeps_its_query_and_step() {
        for method in [Method::GET, Method::POST] {
            let params = "query=rate(x%5B5m%5D)&start=100&end=200&step=15&timeout=9s";
            let (query_string, form_body) = match method {
                Method::GET => (params.to_string(), Bytes::new()),
                _ => (String::new(), Bytes::from(params)),
            };
            let r = ApiRequest {
                path: "/api/v1/query_range".into(),
                method: method.clone(),
                query_string,
                form_body,
                authorization: None,
            };
            let over = r.over_steps(130_000, 160_000);
            let sent = match method {
                Method::GET => over.query_string.clone(),
                _ => String::from_utf8(over.form_body.to_vec()).unwrap(),
            };
            assert_eq!(
                sent, "query=rate%28x%5B5m%5D%29&step=15&timeout=9s&start=130.000&end=160.000",
                "{method}"
            );
            assert_eq!(over.path, "/api/v1/query_range");
        }
    }

    #[test]
    fn with_query_replaces_only_the_query() {
        let r = ApiRequest {
            path: "/api/v1/query_range".into(),
            method: Method::POST,
            query_string: "x=1".into(),
            form_body: Bytes::from_static(b"query=up&start=1&end=2&step=15&stats=all"),
            authorization: None,
        };
        let c = r.with_query("sum(up)");
        assert_eq!(
            c.form_body,
            Bytes::from_static(b"query=sum%28up%29&start=1&end=2&step=15")
        );
        assert_eq!(c.query_string, "x=1");
    }

    #[test]
    fn an_instants_coverage_is_a_range_ending_at_the_instant() {
        let post = ApiRequest {
            path: "/api/v1/query".into(),
            method: Method::POST,
            query_string: "x=1".into(),
            form_body: Bytes::from_static(b"query=up&time=1700000000.5&lookback_delta=1m"),
            authorization: None,
        };
        let c = post.as_range("sum(up)", 1_699_999_944_500, 1_700_000_000_500, 7000);
        assert_eq!(c.path, "/api/v1/query_range");
        assert_eq!(
            c.form_body,
            Bytes::from_static(
                b"query=sum%28up%29&lookback_delta=1m&start=1699999944.500&end=1700000000.500&step=7.000"
            )
        );
        assert_eq!(c.query_string, "x=1");
        let get = ApiRequest {
            method: Method::GET,
            query_string: "query=up&time=1700000000".into(),
            form_body: Bytes::new(),
            ..post
        };
        let c = get.as_range("sum(up)", 0, 56_000, 7000);
        assert_eq!(
            c.query_string,
            "query=sum%28up%29&start=0.000&end=56.000&step=7.000"
        );
    }
}
