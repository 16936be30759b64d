//! The playback timeline and its arithmetic.
//!
//! A timeline says: at server time `anchor_us` the media position is
//! `position_ms`, and from then on it advances at `rate_milli / 1000` media
//! seconds per server second, unless `paused`. Every computation is integer
//! arithmetic so that the server, every client and the test vectors agree to
//! the microsecond. Positions at anchors are whole milliseconds; the server
//! picks anchors (to the nearest microsecond) so that this holds.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// A room's playback timeline. See the module docs for its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// Increases by one with every change; a larger epoch is newer.
    pub epoch: u32,
    /// Media position at the anchor, in milliseconds.
    pub position_ms: u64,
    /// Server time of the anchor, in microseconds.
    pub anchor_us: u64,
    /// Playback rate in thousandths (1000 = normal speed).
    pub rate_milli: u16,
    /// Whether playback is paused.
    pub paused: bool,
}

impl Timeline {
    /// A paused timeline at position zero, as a new room starts.
    pub fn start(now_us: u64) -> Self {
        Timeline { epoch: 0, position_ms: 0, anchor_us: now_us, rate_milli: 1000, paused: true }
    }

    /// Media position in microseconds at server time `t_us` (clamped at 0).
    ///
    /// Defined for any `t_us`, also before the anchor (extrapolating backwards).
    pub fn position_us_at(&self, t_us: u64) -> u64 {
        let base = i128::from(self.position_ms) * 1000;
        if self.paused {
            return base.min(i128::from(u64::MAX)) as u64;
        }
        let dt = i128::from(t_us) - i128::from(self.anchor_us);
        let pos = base + dt * i128::from(self.rate_milli) / 1000;
        pos.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The first anchor at or after `t_us` whose position is a whole
    /// millisecond, as `(position_ms, anchor_us)`.
    ///
    /// Paused timelines re-anchor at `t_us` exactly. For playing ones the
    /// anchor is rounded to the nearest microsecond, so the represented
    /// position is exact to within `rate` microseconds.
    pub fn whole_ms_point(&self, t_us: u64) -> (u64, u64) {
        if self.paused || self.rate_milli == 0 {
            return (self.position_ms, t_us);
        }
        let rate = i128::from(self.rate_milli);
        let p0 = i128::from(self.position_ms) * 1_000_000; // nanoseconds
        let dt = i128::from(t_us) - i128::from(self.anchor_us);
        let pos_ns = (p0 + dt * rate).max(0);
        let pos_ms = (pos_ns + 999_999) / 1_000_000; // ceil
        let d_anchor = div_round(pos_ms * 1_000_000 - p0, rate);
        let anchor = i128::from(self.anchor_us) + d_anchor;
        let max = i128::from(u64::MAX);
        (pos_ms.min(max) as u64, anchor.clamp(0, max) as u64)
    }

    /// The same timeline (same epoch) re-anchored at the first whole
    /// millisecond at or after `t_us`.
    pub fn reanchored(&self, t_us: u64) -> Self {
        let (position_ms, anchor_us) = self.whole_ms_point(t_us);
        Timeline { position_ms, anchor_us, ..*self }
    }
}

/// `n / d` rounded to the nearest integer, halves away from zero (`d > 0`).
fn div_round(n: i128, d: i128) -> i128 {
    if n >= 0 { (n + d / 2) / d } else { (n - d / 2) / d }
}

/// Recovers a full server time from its low 32 bits, given an estimate of the
/// server's current time that is within ±35 minutes of it.
///
/// Ticks carry only the low 32 bits of their anchor (a 71.6-minute cycle);
/// clients know the server time far better than that from clock sync.
pub fn unwrap_anchor(anchor_lo: u32, server_now_estimate_us: u64) -> u64 {
    let diff = anchor_lo.wrapping_sub(server_now_estimate_us as u32) as i32;
    server_now_estimate_us.saturating_add_signed(i64::from(diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playing(position_ms: u64, anchor_us: u64, rate_milli: u16) -> Timeline {
        Timeline { epoch: 1, position_ms, anchor_us, rate_milli, paused: false }
    }

    #[test]
    fn extrapolates_at_rate() {
        let t = playing(10_000, 1_000_000, 1000);
        assert_eq!(t.position_us_at(1_000_000), 10_000_000);
        assert_eq!(t.position_us_at(3_500_000), 12_500_000);
        let fast = playing(0, 0, 1250);
        assert_eq!(fast.position_us_at(4_000_000), 5_000_000);
        let paused = Timeline { paused: true, ..t };
        assert_eq!(paused.position_us_at(99_000_000), 10_000_000);
    }

    #[test]
    fn before_anchor_extrapolates_backwards_and_clamps() {
        let t = playing(1, 10_000_000, 1000);
        assert_eq!(t.position_us_at(9_999_500), 500);
        assert_eq!(t.position_us_at(0), 0);
    }

    #[test]
    fn whole_ms_point_is_at_or_after_and_close() {
        for &rate in &[250u16, 999, 1000, 1001, 1250, 1500, 3999, 4000] {
            let t = playing(123_456, 7_000_123, rate);
            for k in 0..200u64 {
                let now = 7_000_123 + k * 3_337;
                let (p, a) = t.whole_ms_point(now);
                assert!(a + 1 >= now, "anchor {a} before {now}");
                // At the new anchor the true position is p ms to within rate µs.
                let truth = t.position_us_at(a) as i128;
                assert!((truth - (p as i128) * 1000).abs() <= i128::from(rate / 1000 + 1));
                // And it is no more than one millisecond of media ahead.
                assert!((p * 1000) as i128 - t.position_us_at(now) as i128 <= 1000);
            }
        }
    }

    #[test]
    fn reanchoring_keeps_epoch_rate_and_pause() {
        let t = playing(5, 0, 1500);
        let r = t.reanchored(1_000_000);
        assert_eq!((r.epoch, r.rate_milli, r.paused), (1, 1500, false));
        let p = Timeline { paused: true, ..t }.reanchored(42);
        assert_eq!((p.position_ms, p.anchor_us), (5, 42));
    }

    #[test]
    fn huge_positions_saturate_instead_of_wrapping() {
        let t = playing(u64::MAX, 0, 1000);
        assert_eq!(t.position_us_at(5), u64::MAX);
        let paused = Timeline { paused: true, ..t };
        assert_eq!(paused.position_us_at(5), u64::MAX);
        assert_eq!(t.whole_ms_point(1_000_000).0, u64::MAX);
    }

    #[test]
    fn unwraps_across_the_32_bit_boundary() {
        let full = (5u64 << 32) + 100;
        assert_eq!(unwrap_anchor(full as u32, full - 5_000), full);
        assert_eq!(unwrap_anchor(full as u32, full + 5_000), full);
        let before = (5u64 << 32) - 50;
        assert_eq!(unwrap_anchor(before as u32, full), before);
        assert_eq!(unwrap_anchor(10, 0), 10);
    }
}
