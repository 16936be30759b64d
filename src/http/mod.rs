//! HTTP routes: health, room state, metrics, the WebTransport certificate
//! hashes, the WebSocket endpoint, (from [`web`]) the demo pages and (from
//! [`live_source`]) the development live source.

pub(crate) mod api;
pub(crate) mod edge;
pub(crate) mod listener;
pub(crate) mod live_source;
pub(crate) mod ready;
pub(crate) mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::transport::Gate;
use crate::util::api_error;

/// State shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
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
    /// What links announce instead of the request's `Host` (`--public-url`,
    /// `--public-webtransport-url`).
    pub(crate) public: crate::util::PublicUrls,
    /// Verifies access tokens.
    pub auth: Arc<Authenticator>,
    /// Sessions, devices, invitations.
    pub(crate) accounts: Accounts,
    /// Per-IP limits of REST requests and connection attempts.
    pub ip_limits: Arc<IpLimits>,
    /// The development live source (`--dev`, `--live-source`), or off.
    pub(crate) live_source: live_source::LiveSource,
    /// Whether this node should be given viewers.
    pub(crate) ready: Arc<ready::Readiness>,
    /// `--cors-origins`: REST CORS and the WebSocket upgrade's Origin check.
    pub(crate) cors_origins: Arc<crate::edge::CorsOrigins>,
    /// `--trusted-proxies`: whose forwarding headers name the client.
    pub(crate) trusted_proxies: Arc<crate::edge::TrustedProxies>,
}

impl AppState {
    /// What a session needs.
    pub(crate) fn session_context(&self) -> crate::session::Context {
        crate::session::Context {
            hub: self.hub.clone(),
            accounts: self.accounts.clone(),
            auth: self.auth.clone(),
            cfg: self.session_cfg.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// This node's WebTransport base URL: `--public-webtransport-url`, else
    /// the `--public-url` host at the QUIC port, else [`webtransport_base`].
    pub(crate) fn webtransport_base(&self, headers: &axum::http::HeaderMap) -> String {
        self.public.webtransport(self.quic_port).unwrap_or_else(|| webtransport_base(headers, self.quic_port))
    }

    /// What a transport needs to admit and serve connections.
    pub(crate) fn gate(&self) -> Gate {
        Gate {
            session: self.session_context(),
            ip_limits: self.ip_limits.clone(),
            conn_limit: self.conn_limit.clone(),
            origins: self.cors_origins.clone(),
        }
    }
}

impl axum::extract::FromRef<AppState> for Gate {
    fn from_ref(app: &AppState) -> Gate {
        app.gate()
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
    public().merge(operations())
}

/// The REST routes viewers' browsers and the platform call.
fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(certificate))
        .routes(routes!(certificate_sha256))
        .merge(crate::http::api::routes())
}

/// The routes for operators: metrics, room state, the OpenAPI document.
/// With `--admin-addr` they leave the public port for the admin one.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(room_state)).routes(routes!(metrics)).routes(routes!(openapi_json))
}

/// The OpenAPI document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = documented()
        .routes(routes!(crate::transport::ws::upgrade))
        .merge(crate::http::web::documented())
        .merge(crate::http::live_source::documented())
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// How long a REST request may take before it is answered 408 (a stalled
/// store or room never holds a request, or its connection, for longer).
pub(crate) const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of the public port. REST routes are limited per client IP and
/// in time ([`REST_TIMEOUT`]), answer CORS (`--cors-origins`) and are logged
/// ([`edge`]); the WebSocket upgrade checks its Origin and counts connection
/// attempts itself; the demo pages' static files and the live source are not
/// limited. Every route sees the client's address as resolved behind trusted
/// proxies ([`crate::edge::ClientAddr`]). Without `with_operations` (an admin
/// port serves them) the operations' routes are not here.
pub(crate) fn router(state: AppState, with_operations: bool) -> Router {
    let rest = if with_operations { documented() } else { public() };
    let (rest, _) = rest.split_for_parts();
    let rest = rest
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REST_TIMEOUT))
        .layer(axum::middleware::from_fn_with_state(state.ip_limits.clone(), crate::limits::rest_limit));
    let rest = edge::layer_rest(rest, &state.cors_origins);
    rest.route("/api/live-stream/{event_id}", get(crate::transport::ws::upgrade))
        .merge(crate::http::web::router())
        .merge(crate::http::live_source::router())
        .layer(axum::middleware::from_fn_with_state(state.trusted_proxies.clone(), crate::edge::resolve_client))
        .with_state(state)
}

/// The OpenAPI document of every route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// The router of the admin port (`--admin-addr`): the operations' routes,
/// health and readiness, unlimited (the port is the operator's, not the
/// internet's).
pub(crate) fn admin_router(state: AppState) -> Router {
    let (ops, _) = operations().routes(routes!(health)).routes(routes!(ready)).split_for_parts();
    ops.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REST_TIMEOUT))
        .with_state(state)
}

/// Readiness: 200 `{"status":"ready"}` while this node should be given
/// viewers; 503 `{"status":"starting"|"draining"|"redis_unreachable"}`
/// before its state is restored, from the shutdown signal on (during
/// `--drain-ms`), and while Redis does not answer (scale-out).
#[utoipa::path(get, path = "/api/ready", tag = "meta", responses(
    (status = 200, description = "`{status: \"ready\"}`"),
    (status = 503, description = "`{status: \"starting\" | \"draining\" | \"redis_unreachable\"}`")))]
async fn ready(State(app): State<AppState>) -> Response {
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    match app.ready.check() {
        Ok(()) => (no_store, Json(json!({"status": "ready"}))).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, no_store, Json(json!({"status": why.as_str()}))).into_response(),
    }
}

/// Liveness (200 while the process serves HTTP) and a few figures; `status`
/// is `ok` when ready, otherwise why not (as `/api/ready` says).
#[utoipa::path(get, path = "/api/health", tag = "meta", responses((status = 200, description = "`{status: \"ok\" | \"starting\" | \"draining\" | \"redis_unreachable\", ready, version, protocolVersion, uptimeSeconds, rooms, connections, serverTimeUs}`")))]
async fn health(State(app): State<AppState>) -> Response {
    let ready = app.ready.check();
    Json(json!({
        "status": ready.err().map_or("ok", ready::NotReady::as_str),
        "ready": ready.is_ok(),
        "version": env!("CARGO_PKG_VERSION"),
        "protocolVersion": lockstep_protocol::PROTOCOL_VERSION,
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "rooms": app.hub.room_count(),
        "connections": app.max_connections - app.conn_limit.available_permits(),
        "serverTimeUs": app.hub.clock().now_us(),
    }))
    .into_response()
}

/// A live room's timeline, viewer count, members by role and sync quality.
#[utoipa::path(get, path = "/api/live-stream/{event_id}/state", tag = "rooms",
    params(("event_id" = String, Path, description = "The event (room) id")),
    responses((status = 200, description = "`{eventId, timeline, pending, position, serverTimeUs, viewers, policy, members, bufferingWait, clock, live, sync: {reporting, p50Ms, p95Ms, maxMs, outOfSync, outOfSyncMs}, reach: {leadMs, rttP95Ms, measured}, mailbox: {commands, reports, remote}}` (sync: this node's members' measured drifts from their `SyncReport`s, fresh and of the timeline in effect; mailbox: the most of each the room took at once)"),
        (status = 400, body = crate::util::ApiError), (status = 404, body = crate::util::ApiError)))]
async fn room_state(State(app): State<AppState>, Path(event_id): Path<String>) -> Response {
    if !crate::util::valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    let Some(room) = app.hub.existing(&event_id) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "no live room for this event");
    };
    match room.state().await {
        Some(state) => {
            let mut v = serde_json::to_value(state).unwrap_or_default();
            v["eventId"] = event_id.into();
            v["mailbox"] = serde_json::to_value(room.mailbox_peaks()).unwrap_or_default();
            Json(v).into_response()
        }
        None => api_error(StatusCode::NOT_FOUND, "not_found", "no live room for this event"),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(app): State<AppState>) -> Response {
    let _ = app.ready.check(); // `lockstep_ready` as of this scrape
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&app.metrics)).into_response()
}

/// Public, changes on rotation: any origin may read it, nobody may cache it.
const CERT_HEADERS: [(header::HeaderName, &str); 2] =
    [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::CACHE_CONTROL, "no-store")];

/// The WebTransport base URL of this node as a browser that reached it at
/// `Host` sees it: `https://HOST:QUIC_PORT` (the host of the `Host` header,
/// IPv6 in brackets; the port the QUIC endpoint actually bound).
pub(crate) fn webtransport_base(headers: &axum::http::HeaderMap, quic_port: u16) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let hostname = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => rest.split_once(']').map_or(host, |(v6, _)| v6),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if hostname.contains(':') {
        format!("https://[{hostname}]:{quic_port}")
    } else {
        format!("https://{hostname}:{quic_port}")
    }
}

/// `GET /api/certificate`: `{"hashes":[{"algorithm":"sha-256","value":hex},…],"notAfter":unix_seconds,
/// "hashesApply":bool,"webtransport":"https://host:port"}`, the served certificate first, then the next
/// one while it is published. `hashesApply` says whether browsers accept the served certificate by hash
/// (ECDSA P-256, valid at most 14 days, as generated certificates are): clients pass the hashes as
/// `serverCertificateHashes` only then, and otherwise rely on normal certificate validation (the hashes
/// stay listed, for information). `webtransport` is this node's WebTransport base URL:
/// `--public-webtransport-url`, else the `--public-url` host or the request's `Host`, at the bound QUIC port.
#[utoipa::path(get, path = "/api/certificate", tag = "webtransport",
    responses((status = 200, description = "`{hashes: [{algorithm: \"sha-256\", value: hex}], notAfter: unix seconds, hashesApply: bool, webtransport: \"https://host:port\"}`; pass `hashes` as `serverCertificateHashes` only when `hashesApply` is true")))]
async fn certificate(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let mut body = serde_json::to_value(app.certs.published()).unwrap_or_default();
    body["webtransport"] = app.webtransport_base(&headers).into();
    (CERT_HEADERS, Json(body)).into_response()
}

/// `GET /certificate.sha256`: lowercase hex SHA-256 of the served certificate.
#[utoipa::path(get, path = "/certificate.sha256", tag = "webtransport",
    responses((status = 200, description = "lowercase hex SHA-256 of the served certificate", content_type = "text/plain")))]
async fn certificate_sha256(State(app): State<AppState>) -> Response {
    let [cors, cache] = CERT_HEADERS;
    ([cors, cache, (header::CONTENT_TYPE, "text/plain; charset=utf-8")], app.certs.current_sha256()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    #[test]
    fn the_webtransport_base_keeps_the_host_and_takes_the_quic_port() {
        let base = |host: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(host) = host {
                h.insert(header::HOST, host.parse().unwrap());
            }
            webtransport_base(&h, 4500)
        };
        assert_eq!(base(Some("sync.example:8080")), "https://sync.example:4500");
        assert_eq!(base(Some("127.0.0.1")), "https://127.0.0.1:4500");
        assert_eq!(base(Some("[::1]:8080")), "https://[::1]:4500");
        assert_eq!(base(Some("[::1]")), "https://[::1]:4500");
        assert_eq!(base(None), "https://localhost:4500");
    }
}
