//! The dev live source over real HTTP: a sliding live playlist whose program
//! date-times follow the server clock, its init and media segments (media
//! time n·d), the window's bounds, bad names, the 503s while the loop is made
//! and without ffmpeg, and the `/live` page's routes.
//!
//! The loop is made by the system's ffmpeg (`.ci/test` installs it) into the
//! shared cache the first time, then read from there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestServer, WAIT, fresh_dir};

/// How long the loop may take to be made (the first run on a machine).
const MADE_WITHIN: Duration = Duration::from_secs(180);

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8")
    }
}

/// A plain HTTP/1.1 GET; the body as bytes.
async fn get(server: &TestServer, path: &str) -> Answer {
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.http);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.expect("an answer in time").unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let body = buf[split + 4..].to_vec();
    assert!(!headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")), "answers have a length");
    Answer { status, headers, body }
}

/// Waits until the playlist is served (the loop made or read).
async fn playlist_when_ready(server: &TestServer) -> Answer {
    let deadline = tokio::time::Instant::now() + MADE_WITHIN;
    loop {
        let a = get(server, "/dev/live-source/stream.m3u8").await;
        if a.status == 200 {
            return a;
        }
        assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
        assert!(a.header("retry-after").is_some(), "503 while starting says when to retry: {}", a.text());
        assert!(tokio::time::Instant::now() < deadline, "the live source did not start within {MADE_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A parsed live playlist: media sequence, and each segment's program
/// date-time (Unix ms) and URI.
#[derive(Debug)]
struct Playlist {
    sequence: u64,
    segments: Vec<(u64, String)>,
}

fn parse(text: &str) -> Playlist {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"));
    let tag =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    assert_eq!(tag("#EXT-X-TARGETDURATION:"), "1");
    assert_eq!(tag("#EXT-X-MAP:"), "URI=\"init.mp4\"");
    assert!(!text.contains("#EXT-X-ENDLIST"), "live: no end");
    let sequence = tag("#EXT-X-MEDIA-SEQUENCE:").parse().unwrap();
    let mut segments = Vec::new();
    let mut pdt = None;
    for l in text.lines() {
        if let Some(date) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(unix_ms(date));
        } else if let Some(d) = l.strip_prefix("#EXTINF:") {
            assert_eq!(d, "1.000,");
        } else if !l.starts_with('#') && !l.is_empty() {
            segments.push((pdt.take().expect("a program date-time before each segment"), l.to_owned()));
        }
    }
    Playlist { sequence, segments }
}

/// `2026-05-01T12:00:00.000Z` → Unix ms (days from the civil date).
fn unix_ms(date: &str) -> u64 {
    let b = date.as_bytes();
    assert!(date.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z', "{date}");
    let n = |r: std::ops::Range<usize>| date[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23);
    ms as u64
}

fn system_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The first box of `kind` anywhere in a (shallow) MP4 buffer: its body.
fn find_box<'a>(buf: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    let at = buf.windows(4).position(|w| w == kind).unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(kind)));
    let len = u32::from_be_bytes(buf[at - 4..at].try_into().unwrap()) as usize;
    &buf[at + 4..at - 4 + len]
}

/// The init segment's timescale (`mdhd`).
fn timescale(init: &[u8]) -> u64 {
    let b = find_box(init, b"mdhd");
    let at = if b[0] == 1 { 20 } else { 12 };
    u64::from(u32::from_be_bytes(b[at..at + 4].try_into().unwrap()))
}

/// A media segment's `mfhd` sequence number and `tfdt` decode time.
fn sequence_and_decode_time(seg: &[u8]) -> (u32, u64) {
    let mfhd = find_box(seg, b"mfhd");
    let tfdt = find_box(seg, b"tfdt");
    let decode = if tfdt[0] == 1 {
        u64::from_be_bytes(tfdt[4..12].try_into().unwrap())
    } else {
        u64::from(u32::from_be_bytes(tfdt[4..8].try_into().unwrap()))
    };
    (u32::from_be_bytes(mfhd[4..8].try_into().unwrap()), decode)
}

#[tokio::test]
async fn the_live_playlist_follows_the_server_clock_and_its_segments_run_on() {
    let before_us = system_us();
    let server = TestServer::start().await;
    let clock = server.clock.unwrap();
    let a = playlist_when_ready(&server).await;
    let after_us = clock.now_us();
    assert_eq!(a.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert!(a.header("cache-control").is_some_and(|v| v.contains("no-cache")), "{:?}", a.headers);
    let p = parse(a.text());

    // Sequence n has program date-time origin + n s; the origin is the
    // server's start aligned down to the second.
    let origin_ms = p.segments[0].0 - p.sequence * 1000;
    assert_eq!(origin_ms % 1000, 0);
    assert!(origin_ms * 1000 <= after_us && origin_ms * 1000 + 1_000_000 > before_us, "origin {origin_ms}");
    for (i, (pdt, uri)) in p.segments.iter().enumerate() {
        let n = p.sequence + i as u64;
        assert_eq!(*uri, format!("{n}.m4s"));
        assert_eq!(*pdt, origin_ms + n * 1000, "segment {n}");
    }
    // Listed once complete: the newest ended by now, the next one had not.
    let last = p.sequence + p.segments.len() as u64 - 1;
    let last_end_us = (origin_ms + (last + 1) * 1000) * 1000;
    assert!(last_end_us <= after_us, "segment {last} is listed before it is complete");
    assert!(last_end_us + 1_000_000 > after_us - 200_000, "segment {} was complete but not listed", last + 1);
    assert_eq!(p.sequence, 0, "the window starts at 0 for the first 120 s");

    // The playlist slides with the clock, with the same origin.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let slid = loop {
        let q = parse(get(&server, "/dev/live-source/stream.m3u8").await.text());
        if q.sequence + q.segments.len() as u64 - 1 > last {
            break q;
        }
        assert!(tokio::time::Instant::now() < deadline, "the playlist did not grow within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, (pdt, _)) in slid.segments.iter().enumerate() {
        assert_eq!(*pdt, origin_ms + (slid.sequence + i as u64) * 1000);
    }

    // The init segment and the segments: media time n·d, fragment n + 1.
    let init = get(&server, "/dev/live-source/init.mp4").await;
    assert_eq!((init.status, init.header("content-type")), (200, Some("video/mp4")));
    assert_eq!(&init.body[4..8], b"ftyp");
    let ts = timescale(&init.body);
    let newest = slid.sequence + slid.segments.len() as u64 - 1;
    for n in [0, newest] {
        let seg = get(&server, &format!("/dev/live-source/{n}.m4s")).await;
        assert_eq!((seg.status, seg.header("content-type")), (200, Some("video/mp4")), "segment {n}");
        assert_eq!(sequence_and_decode_time(&seg.body), (n as u32 + 1, n * ts), "segment {n}");
    }

    // Not complete yet, far future: 404 naming the window.
    for n in [newest + 5, 1_000_000_000] {
        let a = get(&server, &format!("/dev/live-source/{n}.m4s")).await;
        assert_eq!(a.status, 404, "segment {n}");
        let body = a.json();
        assert_eq!(body["error"], "segment_not_available");
        assert!(body["message"].as_str().unwrap().contains("listed now"), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_names_get_clear_errors() {
    let server = TestServer::start().await;
    playlist_when_ready(&server).await;
    for (path, status, error) in [
        ("/dev/live-source/abc.m4s", 400, "invalid_segment"),
        ("/dev/live-source/-1.m4s", 400, "invalid_segment"),
        ("/dev/live-source/1.5.m4s", 400, "invalid_segment"),
        ("/dev/live-source/123456789012345678901.m4s", 400, "invalid_segment"),
        ("/dev/live-source/1.ts", 404, "not_found"),
        ("/dev/live-source/index.m3u8", 404, "not_found"),
    ] {
        let a = get(&server, path).await;
        assert_eq!(a.status, status, "{path}");
        let body = a.json();
        assert_eq!(body["error"], error, "{path}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(".m4s")), "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn while_the_loop_is_made_the_source_answers_503_with_retry_after() {
    // A fresh cache: this server makes its own loop with ffmpeg (seconds).
    let cache = fresh_dir("live-cache");
    let server = TestServer::with(|c| c.live_source_cache = cache.clone()).await;
    let a = get(&server, "/dev/live-source/stream.m3u8").await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.json()["error"], "live_source_starting");
    let a = get(&server, "/dev/live-source/init.mp4").await;
    assert_eq!((a.status, a.json()["error"].as_str()), (503, Some("live_source_starting")));
    playlist_when_ready(&server).await;
    let loops: Vec<_> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(
        loops.len() == 1 && loops[0].starts_with("loop-"),
        "one finished loop in the cache, no leftovers: {loops:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_ffmpeg_the_source_says_what_to_install() {
    let server = TestServer::with(|c| c.live_source_ffmpeg = "/nonexistent/bin/ffmpeg".into()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let a = loop {
        let a = get(&server, "/dev/live-source/stream.m3u8").await;
        if a.json()["error"] != "live_source_starting" {
            break a;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_none(), "retrying does not help");
    let body = a.json();
    assert_eq!(body["error"], "ffmpeg_missing");
    assert!(body["message"].as_str().unwrap().contains("apt-get install ffmpeg"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn the_source_is_off_without_dev_and_on_with_its_flag() {
    let off = TestServer::with(|c| c.dev = false).await;
    let a = get(&off, "/dev/live-source/stream.m3u8").await;
    assert_eq!(a.status, 404);
    assert!(a.json()["message"].as_str().unwrap().contains("--live-source"));
    off.stop().await;
    let on = TestServer::with(|c| {
        c.dev = false;
        c.live_source = true;
    })
    .await;
    playlist_when_ready(&on).await;
    on.stop().await;
}

#[tokio::test]
async fn the_source_is_outside_the_rest_limit() {
    let server = TestServer::with(|c| {
        c.rest_per_ip_per_sec = 1;
        c.rest_burst = 1;
    })
    .await;
    playlist_when_ready(&server).await;
    // This client's REST budget is spent…
    let mut limited = false;
    for _ in 0..5 {
        limited = get(&server, "/api/health").await.status == 429;
        if limited {
            break;
        }
    }
    assert!(limited, "the REST limit of 1/s applies to /api/health");
    // …and the source still answers every request.
    for _ in 0..20 {
        assert_eq!(get(&server, "/dev/live-source/stream.m3u8").await.status, 200);
        assert_eq!(get(&server, "/dev/live-source/init.mp4").await.status, 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_live_page_and_hls_js_are_served() {
    let server = TestServer::start().await;
    for path in ["/live", "/live/ev-1"] {
        let a = get(&server, path).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("content-type").unwrap().starts_with("text/html"));
        assert!(a.text().contains("/demo/live.js") && a.text().contains("/demo/vendor/hls.min.js"));
        let csp = a.header("content-security-policy").unwrap();
        assert!(csp.contains("https://cdn.jsdelivr.net") && csp.contains("worker-src 'self' blob:"), "{csp}");
    }
    assert_eq!(get(&server, "/live/bad%20id").await.json()["error"], "invalid_event_id");
    for path in ["/demo/live.js", "/demo/live.css"] {
        assert_eq!(get(&server, path).await.status, 200, "{path}");
    }
    let hls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("client-js/node_modules/hls.js/dist/hls.min.js");
    let a = get(&server, "/demo/vendor/hls.min.js").await;
    match std::fs::read(&hls) {
        Ok(bytes) => {
            assert_eq!(a.status, 200);
            assert!(a.header("content-type").unwrap().starts_with("text/javascript"));
            assert_eq!(a.body, bytes);
        }
        Err(_) => {
            assert_eq!(a.status, 404);
            assert!(a.json()["message"].as_str().unwrap().contains("npm ci"), "says how to install it");
        }
    }
    // Documented, as every route.
    let doc = get(&server, "/api/openapi.json").await.json();
    for path in [
        "/dev/live-source/stream.m3u8",
        "/dev/live-source/init.mp4",
        "/dev/live-source/{segment}",
        "/live",
        "/live/{event_id}",
        "/demo/vendor/hls.min.js",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} is not in the OpenAPI document");
    }
    server.stop().await;
}
