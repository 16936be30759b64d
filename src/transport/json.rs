//! The JSON dialect of the original Next.js app, spoken on WebSocket text
//! frames by connections without the `lockstep.v1` subprotocol.
//!
//! In: `{"type":"playbackSync","position":<seconds>,"eventId":…,"deviceId":…}`,
//! a seek to `position`; any other fields are passed through to the broadcast.
//! Out: `playbackSync` with the room's position (on join and on every change,
//! not to the member that caused it), `viewerCount`, and `error`.

use std::sync::Arc;

use bytes::Bytes;
use lockstep_protocol::limits::MAX_POSITION_MS;
use lockstep_protocol::{ErrorCode, ServerMsg, Timeline};
use serde_json::{Map, Value};

pub(crate) use crate::hub::Extra;
use crate::hub::Outgoing;
use crate::room::MemberId;
use crate::session::{Encoder, Wire};

/// The JSON dialect's encoder for the members of room `event_id`.
#[derive(Debug)]
pub(crate) struct JsonEncoder {
    event_id: Arc<str>,
}

impl JsonEncoder {
    /// The encoder of a connection to room `event_id`.
    pub(crate) fn new(event_id: &str) -> Self {
        JsonEncoder { event_id: event_id.into() }
    }
}

impl Encoder for JsonEncoder {
    fn encode(&self, out: &Outgoing, me: MemberId) -> Option<Wire> {
        if let ServerMsg::TimelineChanged(c) = &out.msg
            && c.by == me
        {
            // The original app never echoed a change to its sender.
            return None;
        }
        // Every JSON member of the room gets the same bytes: encoded once.
        let text = out
            .dialect_cache()
            .get_or_init(|| encode(&self.event_id, &out.msg, out.extra.as_deref()).map(Bytes::from))
            .clone()?;
        Some(Wire::Text(text))
    }

    fn error(&self, code: ErrorCode, message: &str, _request_id: u32) -> Wire {
        Wire::Text(Bytes::from(error(code.as_u16(), message)))
    }

    fn is_binary(&self) -> bool {
        false
    }
}

/// A parsed inbound JSON message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonIn {
    /// Seek to `position_ms`, passing `extra` through.
    PlaybackSync {
        /// Target position.
        position_ms: u64,
        /// Fields to pass through.
        extra: Extra,
    },
}

/// Why a text frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct JsonError {
    /// The protocol code.
    pub(crate) code: ErrorCode,
    /// An explanation.
    pub(crate) message: String,
}

fn err(code: ErrorCode, message: impl Into<String>) -> JsonError {
    JsonError { code, message: message.into() }
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<JsonIn, JsonError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| err(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(err(ErrorCode::UnexpectedMessage, "expected a JSON object"));
    };
    match map.remove("type") {
        Some(Value::String(t)) if t == "playbackSync" => {}
        Some(Value::String(t)) => {
            return Err(err(ErrorCode::UnexpectedMessage, format!("unknown message type {t:?}")));
        }
        _ => return Err(err(ErrorCode::UnexpectedMessage, "missing \"type\"")),
    }
    let seconds = map
        .remove("position")
        .and_then(|p| p.as_f64())
        .ok_or_else(|| err(ErrorCode::InvalidArgument, "playbackSync needs a numeric \"position\""))?;
    let ms = (seconds * 1000.0).round();
    if !ms.is_finite() || ms < 0.0 || ms > MAX_POSITION_MS as f64 {
        return Err(err(ErrorCode::InvalidArgument, "position out of range"));
    }
    map.remove("eventId");
    Ok(JsonIn::PlaybackSync { position_ms: ms as u64, extra: map })
}

/// The outbound `playbackSync` for a timeline: `position` is the media
/// position (seconds) at server time `serverTimeUs` (the timeline's anchor).
pub(crate) fn playback_sync(event_id: &str, timeline: &Timeline, at_us: u64, extra: Option<&Extra>) -> String {
    let mut m = Map::new();
    m.insert("type".into(), "playbackSync".into());
    m.insert("position".into(), (timeline.position_ms as f64 / 1000.0).into());
    m.insert("paused".into(), timeline.paused.into());
    m.insert("rate".into(), (f64::from(timeline.rate_milli) / 1000.0).into());
    m.insert("epoch".into(), timeline.epoch.into());
    m.insert("serverTimeUs".into(), at_us.into());
    m.insert("eventId".into(), event_id.into());
    if let Some(extra) = extra {
        for (k, v) in extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(m).to_string()
}

/// The JSON form of a server message, if the dialect has one.
pub(crate) fn encode(event_id: &str, msg: &ServerMsg, extra: Option<&Extra>) -> Option<String> {
    Some(match msg {
        ServerMsg::Welcome(w) => playback_sync(event_id, &w.timeline, w.timeline.anchor_us, None),
        ServerMsg::TimelineChanged(c) => playback_sync(event_id, &c.timeline, c.timeline.anchor_us, extra),
        ServerMsg::ViewerCount(c) => serde_json::json!({"type": "viewerCount", "count": c.count}).to_string(),
        ServerMsg::Error(e) => error(e.code, &e.message),
        _ => return None,
    })
}

/// The JSON error frame.
pub(crate) fn error(code: u16, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_playback_sync_and_keeps_extra_fields() {
        let m = parse(r#"{"type":"playbackSync","position":12.3456,"eventId":"e","deviceId":"d","sentAt":5}"#).unwrap();
        let JsonIn::PlaybackSync { position_ms, extra } = m;
        assert_eq!(position_ms, 12_346);
        assert_eq!(extra.get("sentAt"), Some(&Value::from(5)));
        assert_eq!(extra.get("deviceId"), Some(&Value::from("d")));
        assert!(!extra.contains_key("eventId"));
    }

    #[test]
    fn refuses_bad_json_wrong_types_and_ranges() {
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse("[1]").unwrap_err().code, ErrorCode::UnexpectedMessage);
        assert_eq!(parse(r#"{"type":"chat"}"#).unwrap_err().code, ErrorCode::UnexpectedMessage);
        assert_eq!(parse(r#"{"type":"playbackSync"}"#).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(parse(r#"{"type":"playbackSync","position":-1}"#).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(parse(r#"{"type":"playbackSync","position":1e300}"#).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn outbound_playback_sync_carries_the_timeline() {
        let t = Timeline { epoch: 3, position_ms: 1500, anchor_us: 77, rate_milli: 1250, paused: false };
        let mut extra = Extra::new();
        extra.insert("sentAt".into(), 9.into());
        extra.insert("type".into(), "spoof".into());
        let v: Value = serde_json::from_str(&playback_sync("ev", &t, 77, Some(&extra))).unwrap();
        assert_eq!(v["type"], "playbackSync");
        assert_eq!(v["position"], 1.5);
        assert_eq!(v["rate"], 1.25);
        assert_eq!(v["epoch"], 3);
        assert_eq!(v["eventId"], "ev");
        assert_eq!(v["sentAt"], 9);
    }
}
