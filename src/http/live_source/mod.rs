//! The development live source: a real HLS live stream served by the server
//! itself (`--dev`, or `--live-source`), so live rooms, the `/live` demo page
//! and the browser tests have a live stream without any other service.
//!
//! A loop made once with ffmpeg ([`generate`]) is served as an endless live
//! stream: a sliding playlist computed from the server clock ([`playlist`]),
//! each media segment the loop's segment `n mod K` retimed so that media time
//! runs on across the repetitions ([`mp4`]). Media sequence `n` has program
//! date-time `origin + n·d`, where the origin is the server's start aligned
//! down to the segment duration `d`, and media time `n·d`: program time is
//! origin plus media time, on the same clock as the rooms.
//!
//! - `GET /dev/live-source/stream.m3u8`: the live playlist (the last 120 s);
//! - `GET /dev/live-source/init.mp4`: the init segment;
//! - `GET /dev/live-source/{n}.m4s`: media segment `n`, once complete and
//!   until it left the playlist longer ago than the playlist lasts (RFC 8216
//!   §6.2.2); else 404, and 400 for a name that is not `{n}.m4s`.
//!
//! While the loop is being made: 503 with `Retry-After`; without ffmpeg: 503
//! saying what to install. Like the demo's static files, these routes are
//! outside the per-IP REST limit.

mod generate;
mod mp4;
mod playlist;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::ServerClock;
use crate::http::AppState;
use crate::util::api_error;

use generate::{Loop, Status};
use playlist::Timing;

/// The segment duration, µs.
const SEGMENT_US: u64 = generate::SPEC.segment_secs as u64 * 1_000_000;

/// The source's DVR window (what its playlist lists), ms.
pub(crate) const DVR_WINDOW_MS: u64 = playlist::WINDOW * SEGMENT_US / 1000;

/// The live source of a server (cheap to clone): off, or a loop (being made,
/// ready or unavailable) and the timing of its segments.
#[derive(Debug, Clone)]
pub(crate) struct LiveSource {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    timing: Timing,
    clock: ServerClock,
    status: watch::Receiver<Status>,
}

impl LiveSource {
    /// No live source: its routes answer 404.
    pub(crate) fn off() -> LiveSource {
        LiveSource { inner: None }
    }

    /// Starts the live source now on `clock`: its origin is now aligned down
    /// to the segment duration; the loop is made (or read from `cache`) in
    /// the background with `ffmpeg`.
    pub(crate) fn start(ffmpeg: PathBuf, cache: PathBuf, clock: ServerClock) -> LiveSource {
        let timing = Timing::starting_at(clock.now_us(), SEGMENT_US);
        let status = generate::start(&ffmpeg, &cache);
        LiveSource { inner: Some(Arc::new(Inner { timing, clock, status })) }
    }
}

/// The source's routes, documented.
pub(crate) fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream)).routes(routes!(init)).routes(routes!(segment))
}

/// The source's routes.
pub(crate) fn router() -> Router<AppState> {
    documented().split_for_parts().0
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const MP4_TYPE: &str = "video/mp4";

/// A request the source does not answer with media: an error body
/// (`{"error", "message"}`), and `Retry-After` when retrying will help.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
    retry_after_secs: Option<u32>,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, error, message: message.into(), retry_after_secs: None }
    }

    /// 503: not yet, retry after this many seconds.
    fn starting(message: &str, retry_after_secs: u32) -> Refusal {
        Refusal {
            retry_after_secs: Some(retry_after_secs),
            ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "live_source_starting", message)
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = api_error(self.status, self.error, &self.message);
        if let Some(secs) = self.retry_after_secs {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// The loop and timing, or why not.
fn loaded(source: &LiveSource) -> Result<(Arc<Loop>, &Inner), Refusal> {
    let Some(inner) = source.inner.as_deref() else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the dev live source is off: start the server with --dev or --live-source",
        ));
    };
    match &*inner.status.borrow() {
        Status::Ready(l) => Ok((l.clone(), inner)),
        Status::Generating => {
            Err(Refusal::starting("the live source's loop is being made with ffmpeg (a few seconds); retry shortly", 2))
        }
        Status::Unavailable { error, message } => {
            Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, error, message.clone()))
        }
    }
}

fn media(content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store")),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, Body::from(body.into())).into_response()
}

/// The live playlist: the complete segments of the last 120 s, each with its
/// program date-time.
#[utoipa::path(get, path = "/dev/live-source/stream.m3u8", tag = "demo",
    responses((status = 200, description = "The live HLS playlist (sliding, no-cache)", content_type = "application/vnd.apple.mpegurl"),
        (status = 404, description = "The live source is off", body = crate::util::ApiError),
        (status = 503, description = "The loop is being made (`Retry-After`), or ffmpeg is missing", body = crate::util::ApiError)))]
async fn stream(State(app): State<AppState>) -> Result<Response, Refusal> {
    let (_, inner) = loaded(&app.live_source)?;
    match inner.timing.playlist(inner.clock.now_us()) {
        Some(p) => Ok(media(PLAYLIST_TYPE, p)),
        None => Err(Refusal::starting("the first segment is not complete yet; retry shortly", 1)),
    }
}

/// The init segment (`ftyp` + `moov`: one VP9 track).
#[utoipa::path(get, path = "/dev/live-source/init.mp4", tag = "demo",
    responses((status = 200, description = "The init segment", content_type = "video/mp4"),
        (status = 404, body = crate::util::ApiError), (status = 503, body = crate::util::ApiError)))]
async fn init(State(app): State<AppState>) -> Result<Response, Refusal> {
    let (l, _) = loaded(&app.live_source)?;
    Ok(media(MP4_TYPE, l.init.clone()))
}

/// A media segment (`n.m4s`): 1 s of fragmented MP4 at media time `n` s.
#[utoipa::path(get, path = "/dev/live-source/{segment}", tag = "demo",
    params(("segment" = String, Path, description = "`{n}.m4s`: media sequence number n")),
    responses((status = 200, description = "The media segment", content_type = "video/mp4"),
        (status = 400, description = "Not `{n}.m4s`", body = crate::util::ApiError),
        (status = 404, description = "Not in the live window (or not a file of the source)", body = crate::util::ApiError),
        (status = 503, body = crate::util::ApiError)))]
async fn segment(State(app): State<AppState>, Path(file): Path<String>) -> Result<Response, Refusal> {
    let n = parse_segment(&file)?;
    let (l, inner) = loaded(&app.live_source)?;
    let now = inner.clock.now_us();
    if !inner.timing.servable(n, now) {
        let window = match inner.timing.window(now) {
            Some((first, last)) => format!("segments {first} to {last} are listed now"),
            None => "no segment is complete yet".to_owned(),
        };
        let message = format!("segment {n} is not in the live window: {window}");
        return Err(Refusal::new(StatusCode::NOT_FOUND, "segment_not_available", message));
    }
    match l.segment(n) {
        Ok(bytes) => Ok(media(MP4_TYPE, bytes)),
        Err(e) => Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("segment {n}: {e}"))),
    }
}

/// `{n}.m4s` → n; anything else is refused (404 for another file, 400 for a
/// bad number).
fn parse_segment(file: &str) -> Result<u64, Refusal> {
    let Some(digits) = file.strip_suffix(".m4s") else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file: the live source serves stream.m3u8, init.mp4 and {n}.m4s",
        ));
    };
    let bad = || {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_segment",
            "a segment is {n}.m4s, n a media sequence number (at most 19 decimal digits)",
        )
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests;
