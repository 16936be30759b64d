//! The REST session API: viewing sessions, devices, invitations, dev tokens.
//!
//! Every route needs `Authorization: Bearer <token>` (401 otherwise) except
//! `GET /api/invitations/{id}` and, in `--dev` mode, `POST /api/dev/token`.
//! Errors are `{"error": <code>, "message": …}` with the codes documented on
//! each route; the OpenAPI document at `GET /api/openapi.json` is generated
//! from the same router, so it covers every route.

mod chat;
mod clock;
mod invitations;

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lockstep_protocol::Timeline;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{AcceptError, Started};
use crate::auth::{AuthError, Claims, Plan};
use crate::http::AppState;
use crate::store::{DeviceInfo, StartError, UnixMs};
use crate::util::valid_event_id;
use crate::util::{ApiError, api_error};

/// The 409 body when an account is at its device limit.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceLimitError {
    /// Always `device_limit`.
    pub error: String,
    /// The devices holding the slots.
    pub(crate) devices: Vec<DeviceInfo>,
    /// The account's limit.
    #[serde(rename = "maxDevices")]
    pub max_devices: u32,
}

/// `POST /api/live-stream/session` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartSession {
    /// The event to watch.
    pub event_id: String,
    /// This device's stable id.
    pub device_id: String,
}

/// How to reach the realtime transports.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Transports {
    /// WebTransport, when the server runs QUIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportInfo>,
    /// The WebSocket fallback.
    pub websocket: WebSocketInfo,
}

/// The WebTransport endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebTransportInfo {
    /// `https://host:port/api/live-stream/{roomId}` (`--public-webtransport-url` when set).
    pub url: String,
    /// SHA-256 hashes (hex) of the certificates to accept (`serverCertificateHashes`); empty when
    /// `hashesApply` is false.
    pub certificate_hashes: Vec<CertHash>,
    /// Whether the served certificate is one browsers accept by hash (ECDSA P-256, valid at most 14 days,
    /// as generated certificates are). When false (a CA-issued certificate), pass no
    /// `serverCertificateHashes`: the browser validates the certificate normally.
    pub hashes_apply: bool,
}

/// A certificate hash as the browser API wants it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CertHash {
    /// Always `sha-256`.
    pub algorithm: String,
    /// Lowercase hex.
    pub value: String,
}

/// The WebSocket endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebSocketInfo {
    /// `ws://host/api/live-stream/{roomId}` (from `--public-url` when set).
    pub url: String,
}

/// A viewing session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    /// The session id.
    pub session_id: String,
    /// The room to join: the event id, or a watch party's room id.
    pub event_id: String,
    /// The device.
    pub device_id: String,
    /// The room's current timeline (the fallback position), if it is live or saved.
    #[schema(value_type = Option<Object>)]
    pub timeline: Option<Timeline>,
    /// The media position now, in seconds, from that timeline.
    pub position: Option<f64>,
    /// How to connect.
    pub transports: Transports,
    /// When the session expires if idle, Unix milliseconds.
    pub expires_at: UnixMs,
}

/// `POST …/heartbeat` body.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Heartbeat {
    /// The viewer's position in seconds.
    pub position: Option<f64>,
    /// Whether the viewer is buffering.
    #[serde(default)]
    pub buffering: bool,
}

/// `GET /api/account/devices` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Devices {
    /// Active devices.
    pub(crate) devices: Vec<DeviceInfo>,
    /// The account's limit.
    pub max_devices: u32,
}

/// `POST /api/dev/token` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DevTokenRequest {
    /// The user id (a random demo user if absent).
    pub sub: Option<String>,
    /// The plan (premium if absent, so the demo can invite).
    pub plan: Option<Plan>,
    /// Events this user hosts.
    #[serde(default)]
    pub host_of: Vec<String>,
}

/// A minted token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DevToken {
    /// The JWT.
    pub token: String,
    /// Its user id.
    pub sub: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SessionPath {
    /// The session id.
    session_id: String,
}

/// The routes of this module, with their OpenAPI descriptions.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_session))
        .routes(routes!(heartbeat))
        .routes(routes!(end_session))
        .routes(routes!(list_devices))
        .routes(routes!(remove_device))
        .routes(routes!(dev_token))
        .merge(invitations::routes())
        .merge(clock::routes())
        .merge(chat::routes())
}

/// Parses `data` as each REST body (and query) the API takes; nothing may
/// panic (the fuzz target `rest_bodies`).
pub(crate) fn parse_bodies_for_fuzzing(data: &[u8]) {
    let _ = serde_json::from_slice::<StartSession>(data);
    let _ = serde_json::from_slice::<Heartbeat>(data);
    let _ = serde_json::from_slice::<DevTokenRequest>(data);
    let _ = serde_json::from_slice::<invitations::CreateInvitation>(data);
    let _ = serde_json::from_slice::<invitations::AcceptInvitation>(data);
    if let Ok(body) = serde_json::from_slice::<clock::SetClock>(data) {
        let _ = clock::check_for_fuzzing(&body);
    }
    if let Ok(uri) = format!("/chat?{}", String::from_utf8_lossy(data)).parse::<axum::http::Uri>() {
        let _ = axum::extract::Query::<chat::ChatQuery>::try_from_uri(&uri);
    }
}

fn unauthorized(e: &AuthError) -> Response {
    // The identity provider's keys not fetched yet: not the caller's fault.
    let status =
        if *e == AuthError::KeysUnavailable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::UNAUTHORIZED };
    let mut r = api_error(status, e.api_code(), &e.to_string());
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

/// The caller's claims from `Authorization: Bearer`; the error is the 401
/// to return as is (an axum handler's early return).
#[allow(clippy::result_large_err)]
pub(crate) async fn bearer(app: &AppState, headers: &HeaderMap) -> Result<Claims, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match token {
        Some(t) if !t.is_empty() => app.auth.check(t).await.map_err(|e| unauthorized(&e)),
        _ => Err(unauthorized(&AuthError::Missing)),
    }
}

/// `("https", "wss")` behind a TLS-terminating proxy that says so
/// (`X-Forwarded-Proto: https`), else `("http", "ws")`.
fn schemes(headers: &HeaderMap) -> (&'static str, &'static str) {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
    if tls { ("https", "wss") } else { ("http", "ws") }
}

fn host_of(headers: &HeaderMap) -> String {
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned()
}

/// This node's HTTP base URL as links announce it (no trailing slash):
/// `--public-url` when set, else the request's scheme and `Host`.
fn http_base(app: &AppState, headers: &HeaderMap) -> String {
    match app.public.http() {
        Some(public) => public.to_owned(),
        None => format!("{}://{}", schemes(headers).0, host_of(headers)),
    }
}

/// The WebSocket counterpart of [`http_base`] (`ws`/`wss`).
fn websocket_base(app: &AppState, headers: &HeaderMap) -> String {
    match app.public.websocket() {
        Some(public) => public,
        None => format!("{}://{}", schemes(headers).1, host_of(headers)),
    }
}

fn device_limit(app: &AppState, claims: &Claims, devices: Vec<DeviceInfo>) -> Response {
    let body =
        DeviceLimitError { error: "device_limit".into(), devices, max_devices: app.accounts.max_devices(claims) };
    (StatusCode::CONFLICT, Json(body)).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "storage failure");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage failure")
}

/// The room's timeline: live if the room is, else saved.
async fn current_timeline(app: &AppState, room_id: &str) -> Option<Timeline> {
    if let Some(room) = app.hub.existing(room_id)
        && let Some(s) = room.state().await
    {
        return Some(s.timeline);
    }
    app.accounts.store().timeline(room_id).await.ok().flatten().map(|c| c.timeline)
}

async fn session_view(app: &AppState, headers: &HeaderMap, started: Started) -> SessionView {
    let room = started.session.room_id.clone();
    let timeline = current_timeline(app, &room).await;
    let published = app.certs.published();
    let webtransport = Some(WebTransportInfo {
        url: format!("{}/api/live-stream/{room}", app.webtransport_base(headers)),
        // Only hashes a browser accepts: none for a CA-issued certificate.
        certificate_hashes: if published.hashes_apply {
            published.hashes.into_iter().map(|h| CertHash { algorithm: h.algorithm.into(), value: h.value }).collect()
        } else {
            Vec::new()
        },
        hashes_apply: published.hashes_apply,
    });
    SessionView {
        position: timeline.map(|t| t.position_us_at(app.hub.clock().now_us()) as f64 / 1e6),
        timeline,
        session_id: started.session.session_id,
        event_id: room.clone(),
        device_id: started.session.device_id,
        transports: Transports {
            webtransport,
            websocket: WebSocketInfo { url: format!("{}/api/live-stream/{room}", websocket_base(app, headers)) },
        },
        expires_at: started.expires_at,
    }
}

fn valid_device(d: &str) -> bool {
    !d.is_empty() && d.len() <= lockstep_protocol::limits::MAX_DEVICE_ID
}

/// Start (or resume) a viewing session on a device.
#[utoipa::path(post, path = "/api/live-stream/session", tag = "sessions", request_body = StartSession,
    responses((status = 201, body = SessionView), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"),
        (status = 403, body = ApiError, description = "a watch party the caller was not invited to"),
        (status = 409, body = DeviceLimitError)),
    security(("bearer" = [])))]
async fn start_session(State(app): State<AppState>, headers: HeaderMap, Json(req): Json<StartSession>) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_event_id(&req.event_id) || !valid_device(&req.device_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_argument", "eventId and deviceId are 1-128 bytes");
    }
    let party_host = crate::session::party_host(&app.accounts, &req.event_id).await;
    if !app.accounts.may_join(&claims.sub, &req.event_id, party_host.as_deref()).await {
        return api_error(StatusCode::FORBIDDEN, "not_invited", "this watch party needs an invitation");
    }
    match app.accounts.start(&claims, &req.device_id, &req.event_id).await {
        Ok(s) => (StatusCode::CREATED, Json(session_view(&app, &headers, s).await)).into_response(),
        Err(StartError::DeviceLimit(d)) => device_limit(&app, &claims, d),
        Err(StartError::Store(e)) => internal(e),
    }
}

async fn owned_session(app: &AppState, headers: &HeaderMap, id: &str) -> Result<Claims, Response> {
    let claims = bearer(app, headers).await?;
    match app.accounts.session(id).await {
        None => Err(api_error(StatusCode::NOT_FOUND, "not_found", "no such session (it may have expired)")),
        Some(s) if s.user != claims.sub => Err(api_error(StatusCode::FORBIDDEN, "forbidden", "not your session")),
        Some(_) => Ok(claims),
    }
}

/// Keep a session alive and record the viewer's position (the fallback while realtime is down).
#[utoipa::path(post, path = "/api/live-stream/session/{session_id}/heartbeat", tag = "sessions", params(SessionPath),
    request_body = Heartbeat,
    responses((status = 200, body = SessionView), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"), (status = 403, body = ApiError),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(SessionPath { session_id }): Path<SessionPath>,
    Json(hb): Json<Heartbeat>,
) -> Response {
    if let Err(r) = owned_session(&app, &headers, &session_id).await {
        return r;
    }
    let position_ms = hb.position.filter(|p| p.is_finite() && *p >= 0.0).map(|p| (p * 1000.0).round() as u64);
    match app.accounts.heartbeat(&session_id, position_ms, hb.buffering).await {
        Some(s) => Json(session_view(&app, &headers, s).await).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not_found", "no such session (it may have expired)"),
    }
}

/// End a session and free its device slot.
#[utoipa::path(delete, path = "/api/live-stream/session/{session_id}", tag = "sessions", params(SessionPath),
    responses((status = 204), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn end_session(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(SessionPath { session_id }): Path<SessionPath>,
) -> Response {
    if let Err(r) = owned_session(&app, &headers, &session_id).await {
        return r;
    }
    match app.accounts.end(&session_id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(e),
    }
}

/// List the account's active devices.
#[utoipa::path(get, path = "/api/account/devices", tag = "account",
    responses((status = 200, body = Devices), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet")), security(("bearer" = [])))]
async fn list_devices(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.accounts.devices(&claims.sub).await {
        Ok(devices) => Json(Devices { devices, max_devices: app.accounts.max_devices(&claims) }).into_response(),
        Err(e) => internal(e),
    }
}

/// End a device's sessions and close its connections (close code 4016).
#[utoipa::path(delete, path = "/api/account/devices/{device_id}", tag = "account",
    params(("device_id" = String, Path, description = "The device id")),
    responses((status = 204), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"), (status = 404, body = ApiError)), security(("bearer" = [])))]
async fn remove_device(State(app): State<AppState>, headers: HeaderMap, Path(device_id): Path<String>) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.accounts.remove_device(&claims.sub, &device_id).await {
        Ok(0) => api_error(StatusCode::NOT_FOUND, "not_found", "no active device with that id"),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(e),
    }
}

const DEFAULT_INVITE_TTL: u64 = 24 * 3600;
const MAX_INVITE_TTL: u64 = 7 * 24 * 3600;

/// Mint a demo token (only with `--dev`).
#[utoipa::path(post, path = "/api/dev/token", tag = "dev", request_body = DevTokenRequest,
    responses((status = 200, body = DevToken), (status = 404, body = ApiError, description = "not in dev mode")))]
async fn dev_token(State(app): State<AppState>, body: Option<Json<DevTokenRequest>>) -> Response {
    if !app.auth.dev {
        return api_error(StatusCode::NOT_FOUND, "not_found", "dev tokens need --dev");
    }
    let req = body.map(|b| b.0).unwrap_or_default();
    let sub = req
        .sub
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or_else(|| format!("demo-{}", &crate::store::random_id()[..8]));
    let mut claims = app.auth.claims_for(&sub, req.plan.unwrap_or(Plan::Premium), 24 * 3600);
    claims.host_of = req.host_of;
    match app.auth.mint(&claims) {
        Some(token) => Json(DevToken { token, sub }).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server verifies tokens with a public key and cannot mint",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_use_tls_schemes_behind_a_tls_proxy() {
        let mut h = HeaderMap::new();
        assert_eq!(schemes(&h), ("http", "ws"));
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(schemes(&h), ("https", "wss"));
        h.insert("x-forwarded-proto", "HTTPS, http".parse().unwrap());
        assert_eq!(schemes(&h), ("https", "wss"));
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        assert_eq!(schemes(&h), ("http", "ws"));
    }
}
