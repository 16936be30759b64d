//! The sliding live playlist, computed from the clock alone.
//!
//! Media sequence `n` covers program time `[origin + n·d, origin + (n+1)·d)`
//! (its `EXT-X-PROGRAM-DATE-TIME` is `origin + n·d`) and is listed once it is
//! complete, when `now ≥ origin + (n+1)·d`. The playlist lists the last
//! [`WINDOW`] complete segments (fewer right after the start). A segment that
//! left the playlist stays available for as long as RFC 8216 §6.2.2 asks (its
//! duration plus the playlist's), so a player that read the playlist just
//! before it slid still gets it; anything older, or not complete yet, is
//! refused.

use std::fmt::Write as _;

/// Segments in the playlist (the DVR window): 120 s of 1 s segments.
pub(crate) const WINDOW: u64 = 120;

/// The segment timing of a live source: `origin_us` (Unix µs, a multiple of
/// `segment_us`) and the segment duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Program time of the start of segment 0, Unix µs.
    pub origin_us: u64,
    /// Duration of every segment, µs.
    pub segment_us: u64,
}

impl Timing {
    /// The timing of a source started at `start_us`: its origin is the start
    /// aligned down to the segment duration.
    pub(crate) fn starting_at(start_us: u64, segment_us: u64) -> Timing {
        assert!(segment_us > 0, "segments have a duration");
        Timing { origin_us: start_us - start_us % segment_us, segment_us }
    }

    /// Program time of the start of segment `n`, Unix µs.
    pub(crate) fn start_us(&self, n: u64) -> u64 {
        self.origin_us + n * self.segment_us
    }

    /// The segments complete at `now_us` (first and last, inclusive) within
    /// the window; `None` before the first one is complete.
    pub(crate) fn window(&self, now_us: u64) -> Option<(u64, u64)> {
        let complete = now_us.checked_sub(self.origin_us)? / self.segment_us;
        let last = complete.checked_sub(1)?;
        Some((last.saturating_sub(WINDOW - 1), last))
    }

    /// Whether segment `n` may be served at `now_us`: complete, and listed
    /// now or removed from the playlist less than its own duration plus the
    /// playlist's ago (RFC 8216 §6.2.2).
    pub(crate) fn servable(&self, n: u64, now_us: u64) -> bool {
        match self.window(now_us) {
            Some((first, last)) => n <= last && n + (WINDOW + 1) >= first,
            None => false,
        }
    }

    /// The live playlist at `now_us` (`None` before the first segment is
    /// complete): sequence numbers, program date-times and the init segment.
    pub(crate) fn playlist(&self, now_us: u64) -> Option<String> {
        let (first, last) = self.window(now_us)?;
        let d = self.segment_us as f64 / 1e6;
        let mut p = String::with_capacity(128 + 80 * (last - first + 1) as usize);
        p.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{}", self.segment_us.div_ceil(1_000_000));
        let _ = writeln!(p, "#EXT-X-MEDIA-SEQUENCE:{first}");
        p.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        for n in first..=last {
            let _ = writeln!(p, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(self.start_us(n) / 1000));
            let _ = writeln!(p, "#EXTINF:{d:.3},\n{n}.m4s");
        }
        Some(p)
    }
}

/// Unix milliseconds as an ISO 8601 UTC date-time with milliseconds
/// (`2026-05-01T12:00:00.000Z`).
pub(crate) fn iso8601_ms(unix_ms: u64) -> String {
    let (days, ms) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    let (y, m, d) = civil_from_days(days as i64);
    let (h, min, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso8601_ms(1_777_636_800_123), "2026-05-01T12:00:00.123Z");
        assert_eq!(iso8601_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_origin_is_the_start_aligned_down() {
        let t = Timing::starting_at(1_777_636_800_123_456, S);
        assert_eq!(t.origin_us, 1_777_636_800_000_000);
        assert_eq!(t.start_us(3), 1_777_636_803_000_000);
    }

    #[test]
    fn segments_are_listed_once_complete_and_the_window_slides() {
        let t = Timing { origin_us: 1_000 * S, segment_us: S };
        assert_eq!(t.window(1_000 * S), None, "nothing complete at the origin");
        assert_eq!(t.window(1_000 * S + S - 1), None);
        assert_eq!(t.window(1_001 * S), Some((0, 0)));
        assert_eq!(t.window(1_010 * S + 500_000), Some((0, 9)));
        assert_eq!(t.window(1_000 * S + WINDOW * S), Some((0, WINDOW - 1)), "a full window");
        assert_eq!(t.window(1_000 * S + (WINDOW + 1) * S), Some((1, WINDOW)), "then it slides");
        assert_eq!(t.window(1_500 * S), Some((500 - WINDOW, 499)));
        assert_eq!(t.window(999 * S), None, "before the origin");
    }

    #[test]
    fn servable_segments_are_complete_and_not_long_gone() {
        let t = Timing { origin_us: 1_000 * S, segment_us: S };
        let now = 1_500 * S + 1;
        let (first, last) = t.window(now).unwrap();
        assert!(t.servable(last, now));
        assert!(!t.servable(last + 1, now), "not complete");
        assert!(t.servable(first, now));
        assert!(t.servable(first - WINDOW - 1, now), "just removed: RFC 8216 §6.2.2");
        assert!(!t.servable(first - WINDOW - 2, now));
        assert!(!t.servable(0, 1_000 * S), "nothing before the first is complete");
    }

    #[test]
    fn the_playlist_names_the_map_sequence_and_program_date_times() {
        let t = Timing { origin_us: 1_777_636_800 * S, segment_us: S };
        assert_eq!(t.playlist(t.origin_us), None);
        let p = t.playlist(t.origin_us + 3 * S + 10).unwrap();
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-05-01T12:00:00.000Z\n#EXTINF:1.000,\n0.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-05-01T12:00:01.000Z\n#EXTINF:1.000,\n1.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-05-01T12:00:02.000Z\n#EXTINF:1.000,\n2.m4s\n"
        );
        let p = t.playlist(t.origin_us + 1_000 * S).unwrap();
        assert!(p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}\n", 1_000 - WINDOW)));
        assert_eq!(p.matches("#EXTINF").count() as u64, WINDOW);
        assert!(p.ends_with("#EXT-X-PROGRAM-DATE-TIME:2026-05-01T12:16:39.000Z\n#EXTINF:1.000,\n999.m4s\n"));
        assert!(!p.contains("ENDLIST"), "a live playlist");
    }
}
