//! HTTP routes: health, room state, metrics, the WebTransport certificate
//! hashes, the WebSocket endpoint and (from [`crate::web`]) the demo page.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::cert::CertManager;
use crate::hub::Hub;
use crate::limits::IpLimits;
use crate::session::SessionConfig;

/// State shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The rooms.
    pub hub: Hub,
    /// Session settings.
    pub session_cfg: Arc<SessionConfig>,
    /// Caps concurrent connections.
    pub conn_limit: Arc<Semaphore>,
    /// Turns true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// When the server started.
    pub started: Instant,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// The WebTransport certificate.
    pub certs: CertManager,
    /// The WebTransport (UDP) port, for the URLs the session API hands out.
    pub quic_port: u16,
    /// Verifies access tokens.
    pub auth: Arc<Authenticator>,
    /// Sessions, devices, invitations.
    pub(crate) accounts: Accounts,
    /// Per-IP limits of REST requests and connection attempts.
    pub ip_limits: Arc<IpLimits>,
}

impl AppState {
    /// The host of `room_id` if it is a watch party's room.
    pub async fn party_host(&self, room_id: &str) -> Option<String> {
        if !room_id.contains(crate::accounts::PARTY_SEP) {
            return None;
        }
        self.accounts.store().party_host(room_id).await.ok().flatten()
    }
}

/// The OpenAPI document's frame; the paths come from the router itself.
#[derive(OpenApi)]
#[openapi(
    info(title = "Lockstep", description = "Watch-together playback sync: REST session API beside the realtime transports."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Every route with its OpenAPI description; the document is generated from
/// this same router, so it covers every route.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(room_state))
        .routes(routes!(certificate))
        .routes(routes!(certificate_sha256))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(crate::api::routes())
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) =
        documented().routes(routes!(crate::ws::upgrade)).merge(crate::web::documented()).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// The router of all HTTP routes. REST routes are limited per client IP; the
/// WebSocket upgrade counts connection attempts itself; the demo page's static
/// files are not limited.
pub fn router(state: AppState) -> Router {
    let (rest, _) = documented().split_for_parts();
    let rest = rest.layer(axum::middleware::from_fn_with_state(state.ip_limits.clone(), crate::limits::rest_limit));
    rest.route("/api/live-stream/{event_id}", get(crate::ws::upgrade)).merge(crate::web::router()).with_state(state)
}

/// The OpenAPI document of every route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// A JSON error body: `{"error": code, "message": …}`.
pub fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// Liveness and a few figures.
#[utoipa::path(get, path = "/api/health", tag = "meta", responses((status = 200, description = "`{status, version, protocolVersion, uptimeSeconds, rooms, connections, serverTimeUs}`")))]
async fn health(State(app): State<AppState>) -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "protocolVersion": lockstep_protocol::PROTOCOL_VERSION,
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "rooms": app.hub.room_count(),
        "connections": app.max_connections - app.conn_limit.available_permits(),
        "serverTimeUs": app.hub.clock().now_us(),
    }))
    .into_response()
}

/// A live room's timeline, viewer count and members by role.
#[utoipa::path(get, path = "/api/live-stream/{event_id}/state", tag = "rooms",
    params(("event_id" = String, Path, description = "The event (room) id")),
    responses((status = 200, description = "`{eventId, timeline, pending, position, serverTimeUs, viewers, policy, members, bufferingWait}`"),
        (status = 400, body = crate::api::ApiError), (status = 404, body = crate::api::ApiError)))]
async fn room_state(State(app): State<AppState>, Path(event_id): Path<String>) -> Response {
    if !crate::ws::valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", "event ids are 1-128 printable ASCII bytes");
    }
    let Some(room) = app.hub.existing(&event_id) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "no live room for this event");
    };
    match room.state().await {
        Some(state) => {
            let mut v = serde_json::to_value(state).unwrap_or_default();
            v["eventId"] = event_id.into();
            Json(v).into_response()
        }
        None => api_error(StatusCode::NOT_FOUND, "not_found", "no live room for this event"),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// Public, changes on rotation: any origin may read it, nobody may cache it.
const CERT_HEADERS: [(header::HeaderName, &str); 2] =
    [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::CACHE_CONTROL, "no-store")];

/// `GET /api/certificate`: `{"hashes":[{"algorithm":"sha-256","value":hex},…],"notAfter":unix_seconds}`,
/// the served certificate first, then the next one while it is published.
#[utoipa::path(get, path = "/api/certificate", tag = "webtransport",
    responses((status = 200, description = "`{hashes: [{algorithm: \"sha-256\", value: hex}], notAfter: unix seconds}`")))]
async fn certificate(State(app): State<AppState>) -> Response {
    (CERT_HEADERS, Json(app.certs.published())).into_response()
}

/// `GET /certificate.sha256`: lowercase hex SHA-256 of the served certificate.
#[utoipa::path(get, path = "/certificate.sha256", tag = "webtransport",
    responses((status = 200, description = "lowercase hex SHA-256 of the served certificate", content_type = "text/plain")))]
async fn certificate_sha256(State(app): State<AppState>) -> Response {
    let [cors, cache] = CERT_HEADERS;
    ([cors, cache, (header::CONTENT_TYPE, "text/plain; charset=utf-8")], app.certs.current_sha256()).into_response()
}
