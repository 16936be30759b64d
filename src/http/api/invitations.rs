//! Watch-party invitations: create (premium hosts), show (public), accept
//! (joins the party's room), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;

/// The routes of invitations, with their OpenAPI descriptions.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invitation))
        .routes(routes!(show_invitation, revoke_invitation))
        .routes(routes!(accept_invitation))
}

/// `POST /api/live-stream/{eventId}/invitations` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateInvitation {
    /// How many times it may be accepted (unlimited if absent).
    pub max_uses: Option<u32>,
    /// Lifetime in seconds (default 24 h, at most 7 days).
    pub ttl: Option<u64>,
}

/// A created invitation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvitationCreated {
    /// The invitation id.
    pub invitation_id: String,
    /// A link to the watch page that accepts it.
    pub url: String,
    /// The watch party's room id; the inviter hosts it.
    pub room_id: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: UnixMs,
}

/// An invitation as anyone with its id may see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvitationView {
    /// The invitation id.
    pub invitation_id: String,
    /// The event.
    pub event_id: String,
    /// The host's display id.
    pub host: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: UnixMs,
    /// Uses left (absent: unlimited).
    pub uses_left: Option<u32>,
}

/// `POST /api/invitations/{id}/accept` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AcceptInvitation {
    /// The invitee's device id.
    pub device_id: String,
}

/// Invite others to watch with you (premium only). The inviter hosts the watch party's room.
#[utoipa::path(post, path = "/api/live-stream/{event_id}/invitations", tag = "invitations",
    params(("event_id" = String, Path, description = "The event")), request_body = CreateInvitation,
    responses((status = 201, body = InvitationCreated), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"),
        (status = 403, body = ApiError, description = "not a premium account")),
    security(("bearer" = [])))]
async fn create_invitation(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    body: Option<Json<CreateInvitation>>,
) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if claims.plan != Plan::Premium {
        return api_error(StatusCode::FORBIDDEN, "premium_required", "inviting others needs a premium account");
    }
    if !valid_event_id(&event_id) || event_id.contains(crate::accounts::PARTY_SEP) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", "not an event id");
    }
    let req = body.map(|b| b.0).unwrap_or_default();
    if req.max_uses == Some(0) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_argument", "maxUses must be at least 1");
    }
    let ttl = req.ttl.unwrap_or(DEFAULT_INVITE_TTL).clamp(1, MAX_INVITE_TTL);
    match app.accounts.invite(&claims, &event_id, req.max_uses, Duration::from_secs(ttl)).await {
        Ok(inv) => {
            let url = format!("{}/watch/{}?invite={}", http_base(&app, &headers), event_id, inv.id);
            let body =
                InvitationCreated { invitation_id: inv.id, url, room_id: inv.room_id, expires_at: inv.expires_at };
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => internal(e),
    }
}

fn gone() -> Response {
    api_error(StatusCode::GONE, "invitation_gone", "the invitation was revoked, has expired or is used up")
}

/// Show an invitation: the event, the host's display id, the expiry.
#[utoipa::path(get, path = "/api/invitations/{id}", tag = "invitations",
    params(("id" = String, Path, description = "The invitation id")),
    responses((status = 200, body = InvitationView), (status = 404, body = ApiError), (status = 410, body = ApiError)))]
async fn show_invitation(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.accounts.store().invitation(&id).await {
        Ok(Some(inv)) if inv.usable(crate::store::unix_ms()) => Json(InvitationView {
            invitation_id: inv.id,
            event_id: inv.event_id,
            host: display_id(&inv.host_user),
            expires_at: inv.expires_at,
            uses_left: inv.max_uses.map(|m| m.saturating_sub(inv.uses)),
        })
        .into_response(),
        Ok(Some(_)) => gone(),
        Ok(None) => api_error(StatusCode::NOT_FOUND, "not_found", "no such invitation"),
        Err(e) => internal(e),
    }
}

/// A display id for a user: the part before any `@`, at most 32 characters.
fn display_id(user: &str) -> String {
    user.split('@').next().unwrap_or(user).chars().take(32).collect()
}

/// Accept an invitation: a session in the host's room, synced to the host's position.
#[utoipa::path(post, path = "/api/invitations/{id}/accept", tag = "invitations",
    params(("id" = String, Path, description = "The invitation id")), request_body = AcceptInvitation,
    responses((status = 201, body = SessionView), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"),
        (status = 404, body = ApiError), (status = 409, body = DeviceLimitError), (status = 410, body = ApiError)),
    security(("bearer" = [])))]
async fn accept_invitation(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<AcceptInvitation>,
) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_device(&req.device_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_argument", "deviceId is 1-128 bytes");
    }
    match app.accounts.accept(&claims, &id, &req.device_id).await {
        Ok((_, started)) => (StatusCode::CREATED, Json(session_view(&app, &headers, started).await)).into_response(),
        Err(AcceptError::NotFound) => api_error(StatusCode::NOT_FOUND, "not_found", "no such invitation"),
        Err(AcceptError::Gone) => gone(),
        Err(AcceptError::DeviceLimit(d)) => device_limit(&app, &claims, d),
        Err(AcceptError::Store(e)) => internal(e),
    }
}

/// Revoke an invitation (its host only).
#[utoipa::path(delete, path = "/api/invitations/{id}", tag = "invitations",
    params(("id" = String, Path, description = "The invitation id")),
    responses((status = 204), (status = 401, body = ApiError), (status = 503, body = ApiError, description = "JWKS not fetched yet"), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn revoke_invitation(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.accounts.store().invitation(&id).await {
        Ok(None) => api_error(StatusCode::NOT_FOUND, "not_found", "no such invitation"),
        Ok(Some(inv)) if inv.host_user != claims.sub => {
            api_error(StatusCode::FORBIDDEN, "forbidden", "only the host can revoke an invitation")
        }
        Ok(Some(_)) => match app.accounts.store().revoke_invitation(&id).await {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => internal(e),
        },
        Err(e) => internal(e),
    }
}
