//! The proxy's own port: plain HTTP, or TLS from the web configuration
//! file, and the guard every request passes first: basic authentication
//! (when users are configured, every path needs it, as in Prometheus) and
//! the configured response headers.

use crate::auth::{BasicAuth, Verdict};
use crate::web_config::WebConfig;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, web};
use futures_util::future::{LocalBoxFuture, Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

/// Binds `listen`, with TLS when the web configuration has it.
pub fn bind<F, I, S, B>(
    server: actix_web::HttpServer<F, I, S, B>,
    listen: &str,
    web: Option<&WebConfig>,
) -> std::io::Result<actix_web::HttpServer<F, I, S, B>>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig>
        + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    B: MessageBody + 'static,
{
    let cannot = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}"))
    };
    match web.and_then(|w| w.tls.as_ref()) {
        Some(tls) => {
            let config = tls.server_config().map_err(|(key, e)| {
                std::io::Error::other(format!("tls_server_config.{key}: {e}"))
            })?;
            log::info!("listening on {listen} with TLS ({:?})", tls.client_auth);
            server.bind_rustls_0_23(listen, config).map_err(cannot)
        }
        None => {
            log::info!("listening on {listen}");
            server.bind(listen).map_err(cannot)
        }
    }
}

/// What the guard holds: the users (None: open) and the headers to add.
pub struct Guard {
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Guard {
    pub fn new(web: Option<&WebConfig>) -> Rc<Guard> {
        let auth = web
            .filter(|w| !w.users.is_empty())
            .map(|w| Arc::new(BasicAuth::new(w.users.clone())));
        let headers = web
            .map(|w| {
                w.headers
                    .iter()
                    // Checked when the file was read.
                    .filter_map(|(n, v)| Some((n.parse().ok()?, v.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        Rc::new(Guard { auth, headers })
    }

    /// Whether the request's credentials pass; bcrypt, when needed, runs
    /// on the blocking pool.
    async fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        match auth.judge(authorization.map(HeaderValue::as_bytes)) {
            Verdict::Allowed => true,
            Verdict::Denied => false,
            Verdict::Unknown { user, password } => {
                let auth = auth.clone();
                web::block(move || auth.verify(&user, &password))
                    .await
                    .unwrap_or(false)
            }
        }
    }
}

/// The guard as actix middleware; `Rc`, since an App is built per worker.
#[derive(Clone)]
pub struct GuardLayer(pub Rc<Guard>);

impl<S, B> Transform<S, ServiceRequest> for GuardLayer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            inner: Rc::new(service),
            guard: self.0.clone(),
        }))
    }
}

pub struct GuardService<S> {
    inner: Rc<S>,
    guard: Rc<Guard>,
}

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (inner, guard) = (self.inner.clone(), self.guard.clone());
        Box::pin(async move {
            let admitted = guard.admits(req.headers().get(header::AUTHORIZATION)).await;
            let mut res = if admitted {
                inner.call(req).await?.map_into_left_body()
            } else {
                req.into_response(unauthorized()).map_into_right_body()
            };
            for (name, value) in &guard.headers {
                res.headers_mut().insert(name.clone(), value.clone());
            }
            Ok(res)
        })
    }
}

/// As Prometheus answers: the challenge, and a one-word body.
fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Basic"))
        .content_type("text/plain; charset=utf-8")
        .body("Unauthorized\n")
}
