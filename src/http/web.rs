//! The demo watch page and the browser client, embedded in the binary at
//! compile time (no build step, no npm: the files are included as they are in
//! the repository):
//!
//! - `GET /` (the `demo` event) and `GET /watch/{eventId}`: the watch page,
//!   `client-js/demo/index.html`;
//! - `GET /demo/{file}`: its script and style sheet (`watch.js`, `watch.css`);
//! - `GET /live` (the `live-demo` event) and `GET /live/{eventId}`: the live
//!   page, `client-js/demo/live.html` (with `live.js`, `live.css`), which
//!   plays an HLS live stream (the dev live source) with hls.js;
//! - `GET /demo/vendor/hls.min.js`: hls.js, read at request time from
//!   `client-js/node_modules` (a dev dependency; the live page falls back to
//!   a CDN without it);
//! - `GET /demo/video.webm`: the demo video, with single-range requests
//!   (206 Partial Content) so that browsers can seek in it;
//! - `GET /client/lockstep.js`: the browser client as one ES module, a
//!   re-export of `/client/src/index.js`;
//! - `GET /client/src/{path}`: the client's ES modules exactly as in
//!   `client-js/src` (the client needs no bundler).
//!
//! Every answer has an `ETag` (`If-None-Match` gets 304) and
//! `Cache-Control: no-cache`, so a browser revalidates but never re-downloads
//! an unchanged file. These routes serve static bytes from memory: they are
//! outside the per-IP REST limit.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::util::api_error;
use crate::util::valid_event_id;

const PAGE: &str = include_str!("../../client-js/demo/index.html");
const PAGE_JS: &str = include_str!("../../client-js/demo/watch.js");
const PAGE_CSS: &str = include_str!("../../client-js/demo/watch.css");
const VIDEO: &[u8] = include_bytes!("../../client-js/demo/video.webm");
const LIVE_PAGE: &str = include_str!("../../client-js/demo/live.html");
const LIVE_JS: &str = include_str!("../../client-js/demo/live.js");
const LIVE_CSS: &str = include_str!("../../client-js/demo/live.css");
/// hls.js, for the live page: the client's dev dependency, read when asked for.
const HLS_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/client-js/node_modules/hls.js/dist/hls.min.js");
/// `/client/lockstep.js`: the package's entry point, served at a stable URL.
const CLIENT_ENTRY: &str = "// lockstep-client, served by the Lockstep server: the ES modules of client-js/src.\n\
                            export * from './src/index.js';\n";

/// Embeds the files of `client-js/src` by their path below it. A test checks
/// that the list names every `.js` file there, so a new module cannot be
/// forgotten.
macro_rules! client_src {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../client-js/src/", $path)))),*]
    };
}

const CLIENT_SRC: &[(&str, &str)] = client_src![
    "cadence.js",
    "chat.js",
    "check.js",
    "clock.js",
    "codec.js",
    "codes.js",
    "commands.js",
    "connect.js",
    "connection.js",
    "constants.js",
    "controls.js",
    "dashjs.js",
    "drift.js",
    "element.js",
    "emitter.js",
    "environment.js",
    "errors.js",
    "framing.js",
    "hls.js",
    "index.js",
    "live.js",
    "media.js",
    "options.js",
    "position.js",
    "react.js",
    "room.js",
    "session.js",
    "shaka.js",
    "timeline.js",
    "timers.js",
    "tracker.js",
    "transport/types.js",
    "transport/websocket.js",
    "transport/webtransport.js",
    "types.js",
    "videojs.js",
    "wire.js",
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page's Content-Security-Policy: its own scripts and styles only;
/// WebSocket and WebTransport (another port, so `https:`) connections; media
/// from anywhere (`?src=`).
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                        media-src * blob: data:; connect-src 'self' https: wss: ws:; object-src 'none'; \
                        base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The live page's: the watch page's, plus hls.js from the CDN (the fallback
/// when the server has none) and its worker (a blob: URL).
const LIVE_CSP: &str = "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; worker-src 'self' blob:; \
                        style-src 'self'; img-src 'self' data:; media-src * blob: data:; \
                        connect-src 'self' https: wss: ws:; object-src 'none'; base-uri 'none'; form-action 'self'; \
                        frame-ancestors 'none'";

/// An embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static [u8]) -> Asset {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let hex: String = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value");
        Asset { content_type, body, etag }
    }
}

/// Every embedded file by its URL path.
static ASSETS: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| {
    let mut m = HashMap::new();
    m.insert("/watch".to_owned(), Asset::new("text/html; charset=utf-8", PAGE.as_bytes()));
    m.insert("/demo/watch.js".to_owned(), Asset::new(JS, PAGE_JS.as_bytes()));
    m.insert("/demo/watch.css".to_owned(), Asset::new("text/css; charset=utf-8", PAGE_CSS.as_bytes()));
    m.insert("/demo/video.webm".to_owned(), Asset::new("video/webm", VIDEO));
    m.insert("/live".to_owned(), Asset::new("text/html; charset=utf-8", LIVE_PAGE.as_bytes()));
    m.insert("/demo/live.js".to_owned(), Asset::new(JS, LIVE_JS.as_bytes()));
    m.insert("/demo/live.css".to_owned(), Asset::new("text/css; charset=utf-8", LIVE_CSS.as_bytes()));
    m.insert("/client/lockstep.js".to_owned(), Asset::new(JS, CLIENT_ENTRY.as_bytes()));
    for (path, text) in CLIENT_SRC {
        m.insert(format!("/client/src/{path}"), Asset::new(JS, text.as_bytes()));
    }
    m
});

/// The documented routes but the client's modules (a wildcard route that
/// OpenAPI cannot express; [`router`] adds it).
fn documented_but_modules() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(watch))
        .routes(routes!(video))
        .routes(routes!(demo_asset))
        .routes(routes!(live_index))
        .routes(routes!(live_watch))
        .routes(routes!(hls_js))
        .routes(routes!(client_entry))
}

/// The routes of this module with their OpenAPI descriptions (for the document).
pub(crate) fn documented() -> OpenApiRouter<AppState> {
    documented_but_modules().routes(routes!(client_module))
}

/// The routes of this module.
pub(crate) fn router() -> Router<AppState> {
    let (router, _) = documented_but_modules().split_for_parts();
    router.route("/client/src/{*path}", get(client_module))
}

fn asset(path: &str) -> &'static Asset {
    ASSETS.get(path).expect("embedded asset")
}

/// The demo watch page, joining the `demo` event.
#[utoipa::path(get, path = "/", tag = "demo",
    responses((status = 200, description = "The demo watch page (event `demo`)", content_type = "text/html")))]
async fn index(headers: HeaderMap) -> Response {
    page(&headers)
}

/// The demo watch page for an event or a watch party's room; `?invite=ID`
/// accepts an invitation, `?src=URL` plays other media.
#[utoipa::path(get, path = "/watch/{event_id}", tag = "demo",
    params(("event_id" = String, Path, description = "The event (room) id"),
        ("invite" = Option<String>, Query, description = "An invitation to accept"),
        ("src" = Option<String>, Query, description = "The media URL (default `/demo/video.webm`)")),
    responses((status = 200, description = "The demo watch page", content_type = "text/html"),
        (status = 400, body = crate::util::ApiError)))]
async fn watch(Path(event_id): Path<String>, headers: HeaderMap) -> Response {
    if !valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    page(&headers)
}

fn page(headers: &HeaderMap) -> Response {
    html(asset("/watch"), PAGE_CSP, headers)
}

fn html(a: &'static Asset, csp: &'static str, headers: &HeaderMap) -> Response {
    let mut r = serve(a, headers);
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    // Invitation ids are in the page's URL: never send it to the media's host.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// The live page, joining the `live-demo` event.
#[utoipa::path(get, path = "/live", tag = "demo",
    responses((status = 200, description = "The live demo page (event `live-demo`)", content_type = "text/html")))]
async fn live_index(headers: HeaderMap) -> Response {
    html(asset("/live"), LIVE_CSP, &headers)
}

/// The live page for an event; `?src=URL` plays another HLS stream.
#[utoipa::path(get, path = "/live/{event_id}", tag = "demo",
    params(("event_id" = String, Path, description = "The event (room) id"),
        ("src" = Option<String>, Query, description = "The HLS stream (default `/dev/live-source/stream.m3u8`)")),
    responses((status = 200, description = "The live demo page", content_type = "text/html"),
        (status = 400, body = crate::util::ApiError)))]
async fn live_watch(Path(event_id): Path<String>, headers: HeaderMap) -> Response {
    if !valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    html(asset("/live"), LIVE_CSP, &headers)
}

/// hls.js (`client-js/node_modules/hls.js/dist/hls.min.js`, read at request
/// time: a dev dependency of the client, not embedded).
#[utoipa::path(get, path = "/demo/vendor/hls.min.js", tag = "demo",
    responses((status = 200, description = "hls.js", content_type = "text/javascript"),
        (status = 404, description = "hls.js is not installed in client-js/node_modules", body = crate::util::ApiError)))]
async fn hls_js() -> Response {
    match tokio::task::spawn_blocking(|| std::fs::read(HLS_JS)).await {
        Ok(Ok(body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(JS)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            Body::from(body),
        )
            .into_response(),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "hls.js is not installed in client-js/node_modules (cd client-js && npm ci); the live page falls back to \
             cdn.jsdelivr.net",
        ),
    }
}

/// The demo video: WebM (VP9), 480x270, 120 s, with a burned-in timecode and
/// frame counter. Single byte ranges get 206, unsatisfiable ones 416.
#[utoipa::path(get, path = "/demo/video.webm", tag = "demo",
    params(("Range" = Option<String>, Header, description = "`bytes=first-last`, `bytes=first-` or `bytes=-suffix`")),
    responses((status = 200, description = "The whole video", content_type = "video/webm"),
        (status = 206, description = "The requested byte range", content_type = "video/webm"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 416, description = "Range not satisfiable")))]
async fn video(headers: HeaderMap) -> Response {
    serve(asset("/demo/video.webm"), &headers)
}

/// The demo pages' scripts and style sheets.
#[utoipa::path(get, path = "/demo/{file}", tag = "demo",
    params(("file" = String, Path, description = "`watch.js`, `watch.css`, `live.js` or `live.css`")),
    responses((status = 200, description = "The file"), (status = 304, description = "Not modified"),
        (status = 404, body = crate::util::ApiError)))]
async fn demo_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.get(&format!("/demo/{file}")) {
        Some(a) => serve(a, &headers),
        None => not_found(),
    }
}

/// The browser client as one ES module (`import { connect } from '/client/lockstep.js'`).
#[utoipa::path(get, path = "/client/lockstep.js", tag = "demo",
    responses((status = 200, description = "ES module re-exporting the client", content_type = "text/javascript"),
        (status = 304, description = "Not modified")))]
async fn client_entry(headers: HeaderMap) -> Response {
    serve(asset("/client/lockstep.js"), &headers)
}

/// One of the client's ES modules, as in `client-js/src` (`path` may have slashes).
#[utoipa::path(get, path = "/client/src/{path}", tag = "demo",
    params(("path" = String, Path, description = "A module path, e.g. `session.js` or `transport/websocket.js`")),
    responses((status = 200, description = "The module", content_type = "text/javascript"),
        (status = 304, description = "Not modified"), (status = 404, body = crate::util::ApiError)))]
async fn client_module(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.get(&format!("/client/src/{path}")) {
        Some(a) => serve(a, &headers),
        None => not_found(),
    }
}

fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", "no such file")
}

/// A byte range request, resolved against the length of the file.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No (usable) range: the whole file.
    Whole,
    /// First and last byte, inclusive.
    Part(usize, usize),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 14.2) for a file of `len` bytes. Only a
/// single range is served as such; a header that does not parse, a
/// multi-range request or another unit gets the whole file, as the RFC allows.
fn parse_range(value: &str, len: usize) -> ByteRange {
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return ByteRange::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-N`: the last N bytes.
        if !digits(last) {
            return ByteRange::Whole;
        }
        return match last.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            _ if len == 0 => ByteRange::Unsatisfiable,
            Ok(n) => ByteRange::Part(len - (n.min(len as u64) as usize), len - 1),
            Err(_) => ByteRange::Part(0, len - 1), // more digits than u64: the whole file
        };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return ByteRange::Whole;
    }
    let Ok(first) = first.parse::<u64>() else {
        return ByteRange::Unsatisfiable; // past any file's end
    };
    let last = if last.is_empty() { u64::MAX } else { last.parse::<u64>().unwrap_or(u64::MAX) };
    if last < first {
        return ByteRange::Whole; // invalid: ignored
    }
    if first >= len as u64 {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(first as usize, last.min(len as u64 - 1) as usize)
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison).
fn etag_matches(value: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else { return false };
    let tag = etag.to_str().unwrap_or_default();
    v.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// Serves an asset: 304 when the client has it, 206/416 for a byte range
/// (unless `If-Range` names another version), else 200.
fn serve(a: &'static Asset, req: &HeaderMap) -> Response {
    let common: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
        (header::ETAG, a.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if req.get(header::IF_NONE_MATCH).is_some_and(|v| etag_matches(v, &a.etag)) {
        let [_, etag, cache, ..] = common;
        return (StatusCode::NOT_MODIFIED, [etag, cache]).into_response();
    }
    let len = a.body.len();
    let range = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        // `If-Range` with another validator (or a date, which we do not keep): the whole file.
        Some(_) if req.get(header::IF_RANGE).is_some_and(|v| v != a.etag) => ByteRange::Whole,
        Some(v) => parse_range(v, len),
        None => ByteRange::Whole,
    };
    match range {
        ByteRange::Whole => (common, Body::from(Bytes::from_static(a.body))).into_response(),
        ByteRange::Part(first, last) => {
            let content_range = format!("bytes {first}-{last}/{len}");
            let mut r = (StatusCode::PARTIAL_CONTENT, common, Body::from(Bytes::from_static(&a.body[first..=last])))
                .into_response();
            r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("ascii"));
            r
        }
        ByteRange::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 1000), Part(100, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(parse_range("Bytes = 5-5", 1000), Part(5, 5));
        assert_eq!(parse_range("bytes=999-", 1000), Part(999, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-99999999999999999999999", 1000), Part(0, 999));
        // Ignored: the whole file.
        for h in ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=a-b", "bytes=-", "bytes", "bytes=+1-2", "bytes=-x"]
        {
            assert_eq!(parse_range(h, 1000), Whole, "{h}");
        }
    }

    fn get(path: &str, headers: &[(HeaderName, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        serve(asset(path), &h)
    }

    #[test]
    fn serves_ranges_validators_and_types() {
        let len = VIDEO.len();
        let r = get("/demo/video.webm", &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "video/webm");
        assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();

        let r = get("/demo/video.webm", &[(header::RANGE, "bytes=100-")]);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], format!("bytes 100-{}/{len}", len - 1).as_str());

        let r = get("/demo/video.webm", &[(header::RANGE, "bytes=0-0"), (header::IF_RANGE, &etag)]);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let r = get("/demo/video.webm", &[(header::RANGE, "bytes=0-0"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(r.status(), StatusCode::OK, "another version: the whole file");

        let r = get("/demo/video.webm", &[(header::RANGE, &format!("bytes={len}-"))]);
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], format!("bytes */{len}").as_str());

        for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".into()] {
            assert_eq!(get("/demo/video.webm", &[(header::IF_NONE_MATCH, &inm)]).status(), StatusCode::NOT_MODIFIED);
        }
        assert_eq!(get("/demo/video.webm", &[(header::IF_NONE_MATCH, "\"x\"")]).status(), StatusCode::OK);

        assert!(
            get("/client/lockstep.js", &[]).headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(
            get("/client/src/transport/webtransport.js", &[]).headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
    }

    #[test]
    fn every_client_module_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("client-js/src");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).expect("client-js/src") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "js") {
                    found.push(p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        let mut embedded: Vec<String> = CLIENT_SRC.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, found, "CLIENT_SRC in src/http/web.rs must list every module of client-js/src");
    }

    #[test]
    fn the_demo_video_stays_small() {
        assert!(VIDEO.len() <= 3 * 1024 * 1024, "the committed demo video must stay under 3 MB");
        assert_eq!(&VIDEO[..4], &[0x1a, 0x45, 0xdf, 0xa3], "an EBML (WebM) file");
    }
}
