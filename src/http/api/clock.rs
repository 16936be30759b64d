//! `PUT /api/live-stream/{eventId}/clock`: a host switches a room between
//! media time and program time (a live room) and sets its latency policy.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lockstep_protocol::ClockKind;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;
use crate::room::{ClockRequest, LiveLatency};

/// Highest latency, and longest DVR window, a room may be given: the
/// program origin is a week before the room's creation.
const MAX_LATENCY_MS: u32 = 600_000;
const MAX_DVR_WINDOW_MS: u32 = 6 * 86_400_000;

/// The routes of this module, with their OpenAPI descriptions.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_clock))
}

/// `PUT /api/live-stream/{eventId}/clock` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SetClock {
    /// `"live"` (positions are program time) or `"media"` (media time).
    pub clock: String,
    /// Live rooms: a fixed latency in ms (100–600000), or `"auto"` (picked
    /// from the viewers' live edges within the bounds). Absent: unchanged.
    #[schema(value_type = Option<Object>, example = json!("auto"))]
    pub latency_ms: Option<Value>,
    /// Auto latency: the lowest, ms (default `--live-latency-min-ms`).
    pub latency_min_ms: Option<u32>,
    /// Auto latency: the highest, ms (default `--live-latency-max-ms`).
    pub latency_max_ms: Option<u32>,
    /// The stream's DVR window, ms: seeks further back clamp to its start
    /// (0: no bound). Absent: unchanged (default `--live-dvr-window-ms`).
    pub dvr_window_ms: Option<u32>,
}

fn bad(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "invalid_argument", message)
}

/// The request's checks, for the fuzz target: `true` if accepted.
pub(crate) fn check_for_fuzzing(body: &SetClock) -> bool {
    request(body, (1_000, 30_000)).is_ok()
}

/// The request, checked; the error is the 400 to answer.
#[allow(clippy::result_large_err)]
fn request(body: &SetClock, range: (u32, u32)) -> Result<ClockRequest, Response> {
    let clock = match body.clock.as_str() {
        "live" => ClockKind::Live,
        "media" => ClockKind::Media,
        _ => return Err(bad("clock must be \"live\" or \"media\"")),
    };
    let (min_ms, max_ms) = (body.latency_min_ms.unwrap_or(range.0), body.latency_max_ms.unwrap_or(range.1));
    let latency = match &body.latency_ms {
        None if body.latency_min_ms.is_some() || body.latency_max_ms.is_some() => {
            return Err(bad("latencyMinMs and latencyMaxMs go with latencyMs \"auto\""));
        }
        None => None,
        Some(Value::String(s)) if s == "auto" => {
            if !(100..=MAX_LATENCY_MS).contains(&min_ms) || !(min_ms..=MAX_LATENCY_MS).contains(&max_ms) {
                return Err(bad("auto latency bounds must satisfy 100 <= latencyMinMs <= latencyMaxMs <= 600000"));
            }
            Some(LiveLatency::Auto { min_ms, max_ms })
        }
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(latency_ms) if (100..=MAX_LATENCY_MS).contains(&latency_ms) => {
                if body.latency_min_ms.is_some() || body.latency_max_ms.is_some() {
                    return Err(bad("latencyMinMs and latencyMaxMs go with latencyMs \"auto\""));
                }
                Some(LiveLatency::Fixed { latency_ms })
            }
            _ => return Err(bad("latencyMs must be a whole number of ms from 100 to 600000, or \"auto\"")),
        },
        Some(_) => return Err(bad("latencyMs must be a whole number of ms from 100 to 600000, or \"auto\"")),
    };
    if body.dvr_window_ms.is_some_and(|w| w > MAX_DVR_WINDOW_MS) {
        return Err(bad("dvrWindowMs must be at most 518400000 (6 days)"));
    }
    Ok(ClockRequest { clock, latency, dvr_window_ms: body.dvr_window_ms })
}

/// Sets the room's clock: `live` (program time at the live point, with a
/// fixed or auto latency) or `media`. Only a host of the event (the token's
/// `host_of`). Switching kind restarts the room's timeline (live: at the live
/// point; media: paused at 0); the setting is stored with the room and holds
/// for every node until changed.
#[utoipa::path(put, path = "/api/live-stream/{event_id}/clock", tag = "rooms",
    params(("event_id" = String, Path, description = "The event (room) id")),
    request_body = SetClock, security(("bearer" = [])),
    responses(
        (status = 200, description = "The room's state after the change, as `GET …/state` shows it (`clock`, `live: {originMs, latencyMs, autoLatency, atLive, programTimeMs}`)"),
        (status = 400, body = crate::util::ApiError), (status = 401, body = crate::util::ApiError),
        (status = 503, body = crate::util::ApiError, description = "JWKS not fetched yet"),
        (status = 403, body = crate::util::ApiError, description = "the token does not host this event"),
        (status = 503, body = crate::util::ApiError, description = "the shared state is unreachable or the room is busy")))]
async fn set_clock(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    body: Result<Json<SetClock>, JsonRejection>,
) -> Response {
    if !crate::util::valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    let claims = match bearer(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !claims.hosts(&event_id) {
        return api_error(StatusCode::FORBIDDEN, "forbidden", "only a host of this event (host_of) can set its clock");
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return bad(&format!("invalid body: {}", e.body_text())),
    };
    let req = match request(&body, app.hub.live_latency_range()) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match app.hub.set_clock(&event_id, req).await {
        Some(state) => {
            tracing::info!(event_id = %event_id, user = %claims.sub, clock = %body.clock, "clock set");
            let mut v = serde_json::to_value(state).unwrap_or_default();
            v["eventId"] = event_id.into();
            Json(v).into_response()
        }
        None => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the room cannot take the change now (shared state unreachable, or too many requests); try again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: Value) -> SetClock {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn requests_are_checked() {
        let r = request(&body(json!({"clock": "live", "latencyMs": "auto"})), (1000, 30000)).ok().unwrap();
        assert_eq!(r.latency, Some(LiveLatency::Auto { min_ms: 1000, max_ms: 30000 }));
        let r = request(&body(json!({"clock": "live", "latencyMs": 4500})), (1000, 30000)).ok().unwrap();
        assert_eq!((r.clock, r.latency), (ClockKind::Live, Some(LiveLatency::Fixed { latency_ms: 4500 })));
        let r = request(&body(json!({"clock": "media"})), (1000, 30000)).ok().unwrap();
        assert_eq!((r.clock, r.latency, r.dvr_window_ms), (ClockKind::Media, None, None));
        for bad in [
            json!({"clock": "wall"}),
            json!({"clock": "live", "latencyMs": 50}),
            json!({"clock": "live", "latencyMs": -1}),
            json!({"clock": "live", "latencyMs": 2.5}),
            json!({"clock": "live", "latencyMs": "fast"}),
            json!({"clock": "live", "latencyMs": "auto", "latencyMinMs": 5000, "latencyMaxMs": 4000}),
            json!({"clock": "live", "latencyMs": 3000, "latencyMinMs": 1000}),
            json!({"clock": "live", "latencyMinMs": 1000}),
            json!({"clock": "live", "dvrWindowMs": 700000000}),
        ] {
            assert!(request(&body(bad.clone()), (1000, 30000)).is_err(), "{bad} refused");
        }
        assert!(serde_json::from_value::<SetClock>(json!({"clock": "live", "latency": 1})).is_err(), "unknown field");
    }
}
