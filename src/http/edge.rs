//! The REST routes' edge layers: CORS (`--cors-origins`) and the access log
//! (one line per request at target `lockstep::access`).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::edge::{ClientAddr, CorsOrigins};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The CORS layer of `origins`, or none when no origin is configured (then
/// no route but the public certificate ones sends CORS headers). Preflights
/// are answered for the methods and headers the API uses; `Retry-After` (on
/// 429) is readable by the page. Requests from other origins get no CORS
/// headers (the browser then hides the answer from the page).
pub(crate) fn cors(origins: &CorsOrigins) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.is_any() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.origins().iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Wraps `rest` (the REST routes) in the CORS layer of `origins` (if any)
/// and the access log, outermost, so that refusals (429, preflights) are
/// logged and carry CORS headers.
pub(crate) fn layer_rest<S: Clone + Send + Sync + 'static>(rest: Router<S>, origins: &CorsOrigins) -> Router<S> {
    let rest = match cors(origins) {
        Some(cors) => rest.layer(cors),
        None => rest,
    };
    rest.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<Body>| {
                let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
                tracing::info_span!(target: "lockstep::access", "http", method = %req.method(),
                    path = %req.uri().path(), client = tracing::field::display(DisplayOpt(client)))
            })
            .on_request(())
            .on_response(|res: &Response<Body>, latency: Duration, _: &Span| {
                tracing::info!(target: "lockstep::access", status = res.status().as_u16(),
                    latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), "request");
            })
            .on_failure(()),
    )
}

/// An optional value shown as itself or `-`.
struct DisplayOpt<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for DisplayOpt<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
