//! HTTP routes: health, room state, metrics, the WebTransport certificate
//! hashes and the WebSocket endpoint.

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

use crate::cert::CertManager;
use crate::hub::Hub;
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
}

/// The router of all HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/live-stream/{event_id}", get(crate::ws::upgrade))
        .route("/api/live-stream/{event_id}/state", get(room_state))
        .route("/api/certificate", get(certificate))
        .route("/certificate.sha256", get(certificate_sha256))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A JSON error body: `{"error": code, "message": …}`.
pub fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

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

async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// Public, changes on rotation: any origin may read it, nobody may cache it.
const CERT_HEADERS: [(header::HeaderName, &str); 2] =
    [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::CACHE_CONTROL, "no-store")];

/// `GET /api/certificate`: `{"hashes":[{"algorithm":"sha-256","value":hex},…],"notAfter":unix_seconds}`,
/// the served certificate first, then the next one while it is published.
async fn certificate(State(app): State<AppState>) -> Response {
    (CERT_HEADERS, Json(app.certs.published())).into_response()
}

/// `GET /certificate.sha256`: lowercase hex SHA-256 of the served certificate.
async fn certificate_sha256(State(app): State<AppState>) -> Response {
    let [cors, cache] = CERT_HEADERS;
    ([cors, cache, (header::CONTENT_TYPE, "text/plain; charset=utf-8")], app.certs.current_sha256()).into_response()
}
