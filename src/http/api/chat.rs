//! `GET /api/live-stream/{eventId}/chat`: a room's chat history, paged
//! backwards from the newest message (SPEC §6.6).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;

/// Most messages one page holds.
const MAX_PAGE: usize = 200;

/// The routes of this module, with their OpenAPI descriptions.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_history))
}

/// `GET …/chat` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChatQuery {
    /// Messages before this id (absent: the newest).
    before: Option<u64>,
    /// How many, 1–200 (default 50).
    limit: Option<usize>,
}

/// A room's chat messages, oldest first: the newest `limit` before `before`
/// (deleted ones left out). `more` says whether older ones exist; page back
/// with `before` = the first message's id. Any valid token may read an
/// event's chat; a watch party's only its host and the users it let in.
#[utoipa::path(get, path = "/api/live-stream/{event_id}/chat", tag = "rooms",
    params(("event_id" = String, Path, description = "The event (room) id"), ChatQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{eventId, messages: [{id, atMs, memberId, name, role, text}], more}`"),
        (status = 400, body = crate::util::ApiError), (status = 401, body = crate::util::ApiError),
        (status = 403, body = crate::util::ApiError, description = "a watch party the user was not let into"),
        (status = 503, body = crate::util::ApiError, description = "the store is unavailable")))]
async fn chat_history(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    query: Result<Query<ChatQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    let Ok(Query(q)) = query else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "query: before (a message id) and limit (1-200) only",
        );
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_argument", "limit must be 1-200");
    }
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let party_host = crate::session::party_host(&app.accounts, &event_id).await;
    if event_id.contains(crate::accounts::PARTY_SEP)
        && (party_host.is_none() || !app.accounts.may_join(&claims.sub, &event_id, party_host.as_deref()).await)
    {
        return api_error(StatusCode::FORBIDDEN, "not_invited", "this watch party needs an invitation");
    }
    // One more than asked: whether older ones exist. The newest come from
    // the room, if it is live here (the store may not have them yet), the
    // older ones from the store.
    let want = limit + 1;
    let mut rows = match app.hub.existing(&event_id) {
        Some(room) => room.chat_page(q.before, want).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let stored = match rows.len() {
        n if n >= want => Ok(Vec::new()),
        n => app.accounts.store().chat_page(&event_id, rows.first().map(|r| r.id).or(q.before), want - n).await,
    };
    match stored {
        Ok(mut older) => {
            older.append(&mut rows);
            let mut rows = older;
            let more = rows.len() > limit;
            if more {
                rows.remove(0);
            }
            let messages: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.id, "atMs": r.at_ms, "memberId": r.member_id, "name": r.name,
                        "role": r.role, "text": r.text,
                    })
                })
                .collect();
            Json(serde_json::json!({ "eventId": event_id, "messages": messages, "more": more })).into_response()
        }
        Err(e) => {
            tracing::warn!(event_id = %event_id, error = %e, "chat history unavailable");
            api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the chat history is unavailable; try again")
        }
    }
}
