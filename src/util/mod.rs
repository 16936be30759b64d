//! Small helpers shared by several layers, each with no home of its own:
//! the shutdown signal, event-id checks, the REST error body and the public
//! addresses (`--public-url`).
//!
//! Nothing here imports another module of the crate.

mod http_error;
mod public_url;
pub(crate) mod ws_frame;

pub(crate) use http_error::{ApiError, api_error};
use lockstep_protocol::limits::MAX_EVENT_ID;
pub(crate) use public_url::PublicUrls;
use tokio::sync::watch;

/// Resolves once `rx` reads `true` (or its sender is gone): the shutdown
/// signal every long-lived task selects on.
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Whether `id` is a valid event (room) id: 1–128 printable ASCII bytes.
pub(crate) fn valid_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_EVENT_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The message every route answers an invalid event id with.
pub(crate) const INVALID_EVENT_ID: &str = "event ids are 1-128 printable ASCII bytes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_printable_ascii_of_bounded_length() {
        assert!(valid_event_id("ev-1~ab"));
        assert!(!valid_event_id(""));
        assert!(!valid_event_id("a b"));
        assert!(!valid_event_id("é"));
        assert!(valid_event_id(&"e".repeat(MAX_EVENT_ID)));
        assert!(!valid_event_id(&"e".repeat(MAX_EVENT_ID + 1)));
    }
}
