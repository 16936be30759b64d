//! The live source on the real loop, made by the system's ffmpeg (`.ci/test`
//! installs it) or read from the shared cache: the retimed segments run on
//! across the loop's boundaries.

use std::path::Path;
use std::time::{Duration, Instant};

use super::generate::{self, Loop, SPEC, Status};
use super::mp4;
use super::*;

/// The cache the server uses by default (so the tests share its loop).
fn default_cache() -> PathBuf {
    std::env::temp_dir().join("lockstep-live-source")
}

/// Waits for a generation to end (ready or unavailable), at most `within`.
fn settle(rx: &watch::Receiver<Status>, within: Duration) -> Status {
    let deadline = Instant::now() + within;
    loop {
        let status = rx.borrow().clone();
        if !matches!(status, Status::Generating) {
            return status;
        }
        assert!(Instant::now() < deadline, "the loop was not made within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real loop.
fn real_loop() -> Arc<Loop> {
    match settle(&generate::start(Path::new("ffmpeg"), &default_cache()), Duration::from_secs(300)) {
        Status::Ready(l) => l,
        other => panic!("the live source's loop could not be made: {other:?} (.ci/test installs ffmpeg)"),
    }
}

/// The part of a segment after its `moof`: the media data.
fn after_moof(seg: &[u8]) -> &[u8] {
    let top = mp4_boxes(seg);
    let (start, len) = top.iter().find(|(kind, ..)| kind == b"moof").map(|&(_, s, l)| (s, l)).expect("a moof");
    &seg[start + len..]
}

/// Top-level boxes: (type, start, length).
fn mp4_boxes(seg: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= seg.len() {
        let len = u32::from_be_bytes(seg[at..at + 4].try_into().unwrap()) as usize;
        out.push((seg[at + 4..at + 8].try_into().unwrap(), at, len));
        at += len;
    }
    out
}

#[test]
fn the_generated_loop_is_one_second_key_frame_segments_of_one_video_track() {
    let l = real_loop();
    assert_eq!(l.segments.len(), SPEC.segments as usize);
    assert_eq!(l.tracks.len(), 1);
    assert_eq!(l.segment_ticks, u64::from(l.timescale) * u64::from(SPEC.segment_secs));
    assert_eq!(&l.init[4..8], b"ftyp");
    // What the cache holds reads back the same.
    let again = Loop::load(&l.dir, &SPEC).unwrap();
    assert_eq!((again.init, again.segments), (l.init.clone(), l.segments.clone()));
    // A second start in this process shares the loop.
    match settle(&generate::start(Path::new("ffmpeg"), &default_cache()), Duration::from_secs(5)) {
        Status::Ready(shared) => assert!(Arc::ptr_eq(&shared, &l)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn segments_run_on_across_loop_boundaries() {
    let l = real_loop();
    let k = l.segments.len() as u64;
    let mut next_decode = 0;
    for n in 0..3 * k + 2 {
        let seg = l.segment(n).unwrap();
        let frags = mp4::fragments(&seg, &l.tracks).unwrap();
        assert_eq!(frags.len(), 1);
        let (f, t) = (&frags[0], frags[0].tracks[0]);
        assert_eq!(f.sequence as u64, n + 1, "segment {n}: mfhd sequence number");
        assert_eq!(t.decode_time, n * l.segment_ticks, "segment {n}: media time n·d");
        assert_eq!(t.decode_time, next_decode, "segment {n} starts where {} ended", n.wrapping_sub(1));
        assert_eq!(t.duration, l.segment_ticks);
        assert!(t.starts_with_sync, "segment {n} starts on a key frame");
        next_decode = t.decode_time + t.duration;
        let original = &l.segments[(n % k) as usize];
        if n < k {
            assert_eq!(&seg, original, "segment {n}: the first pass is the loop as ffmpeg made it");
        } else {
            assert_eq!(seg.len(), original.len(), "segment {n}: version 1 times are rewritten in place");
            assert_eq!(after_moof(&seg), after_moof(original), "segment {n}: the same media data");
            assert_ne!(&seg, original);
        }
    }
}

#[test]
fn segments_far_into_the_stream_keep_exact_times() {
    let l = real_loop();
    // Ten years of 1 s segments: decode times far beyond 32 bits.
    let n = 10 * 365 * 86_400 + 7;
    let frags = mp4::fragments(&l.segment(n).unwrap(), &l.tracks).unwrap();
    assert_eq!(frags[0].tracks[0].decode_time, n * l.segment_ticks);
    assert!(n * l.segment_ticks > u64::from(u32::MAX));
    assert_eq!(frags[0].sequence, (n as u32).wrapping_add(1));
}

#[test]
fn a_missing_ffmpeg_says_what_to_install() {
    let cache = std::env::temp_dir().join(format!("lockstep-live-source-missing-{}", std::process::id()));
    match settle(&generate::start(Path::new("/nonexistent/ffmpeg"), &cache), Duration::from_secs(10)) {
        Status::Unavailable { error, message } => {
            assert_eq!(error, "ffmpeg_missing");
            assert!(message.contains("apt-get install ffmpeg"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!cache.exists(), "nothing is written without ffmpeg");
}

#[test]
fn segment_names() {
    assert_eq!(parse_segment("0.m4s").ok(), Some(0));
    assert_eq!(parse_segment("1234.m4s").ok(), Some(1234));
    assert_eq!(parse_segment("007.m4s").ok(), Some(7));
    assert_eq!(parse_segment("9999999999999999999.m4s").ok(), Some(9_999_999_999_999_999_999));
    for (bad, status) in [
        ("x.m4s", StatusCode::BAD_REQUEST),
        (".m4s", StatusCode::BAD_REQUEST),
        ("-1.m4s", StatusCode::BAD_REQUEST),
        ("1.5.m4s", StatusCode::BAD_REQUEST),
        ("99999999999999999999.m4s", StatusCode::BAD_REQUEST),
        ("1.ts", StatusCode::NOT_FOUND),
        ("stream.m3u", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(parse_segment(bad).err().map(|r| r.status), Some(status), "{bad}");
    }
}
