//! Sync quality: each member's latest measured drift (`SyncReport`, SPEC
//! §6.1) and the room's summary of them, so that an operator sees how well
//! the room plays together, not only how many are connected.
//!
//! A drift counts while it is fresh (reported within three report intervals)
//! and measured against the timeline in effect (a report of an older epoch
//! describes a timeline nobody follows any more). Like `Report`s, drifts
//! inform; they never move the timeline.

use lockstep_protocol::SyncReport;
use serde::Serialize;

use super::{MemberId, Room};

/// Beyond this drift (either way) a member counts as out of sync: about
/// where a viewer beside another notices the difference (ITU-R BT.1359 puts
/// the detectability of audio ahead of video at 45 ms) and well outside what
/// the client's drift control holds in steady state (a few ms).
pub const OUT_OF_SYNC_US: u32 = 40_000;

/// A member's latest `SyncReport`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drift {
    /// When it arrived (server µs).
    at: u64,
    epoch: u32,
    drift_us: i32,
}

/// The room's sync quality (in `GET /api/live-stream/{id}/state`), over the
/// members of this node with a fresh drift measured against the timeline in
/// effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncQuality {
    /// Members whose drift counts.
    pub reporting: u32,
    /// Median of their absolute drifts, ms (`None` with no member reporting).
    pub p50_ms: Option<f64>,
    /// 95th percentile of their absolute drifts, ms.
    pub p95_ms: Option<f64>,
    /// The largest absolute drift, ms.
    pub max_ms: Option<f64>,
    /// Members beyond [`OUT_OF_SYNC_US`] either way.
    pub out_of_sync: u32,
    /// The out-of-sync threshold, ms.
    pub out_of_sync_ms: f64,
}

/// The index of the nearest-rank `q` quantile among `len` sorted values: the
/// smallest value with at least `q` of them at or below it (0 when `len` is 0).
pub(super) fn nearest_rank(len: usize, q: f64) -> usize {
    ((q * len as f64).ceil() as usize).clamp(1, len.max(1)) - 1
}

/// The `k`-th smallest value (1-based) among `sorted` (value, how many) pairs
/// (the default past the last).
pub(super) fn kth_counted<T: Copy + Default>(sorted: &[(T, u64)], k: u64) -> T {
    let mut seen = 0;
    sorted
        .iter()
        .find(|&&(_, n)| {
            seen += n;
            seen >= k
        })
        .map_or_else(T::default, |&(v, _)| v)
}

impl Room {
    /// Records a member's measured drift (the latest wins).
    pub fn sync_report(&mut self, now: u64, id: MemberId, report: SyncReport) {
        self.advance(now);
        if let Some(m) = self.members.get_mut(&id) {
            m.drift = Some(Drift { at: now, epoch: report.epoch, drift_us: report.drift_us });
        }
    }

    /// The room's sync quality now (see [`SyncQuality`]).
    pub fn sync_quality(&self, now: u64) -> SyncQuality {
        let fresh_us = 3 * 1_000 * u64::from(self.cfg.limits.report_interval_ms.max(1));
        let epoch = self.current.epoch;
        let mut abs: Vec<u32> = self
            .members
            .values()
            .filter_map(|m| m.drift)
            .filter(|d| d.epoch == epoch && now.saturating_sub(d.at) <= fresh_us)
            .map(|d| d.drift_us.unsigned_abs())
            .collect();
        abs.sort_unstable();
        let rank = |q: f64| abs.get(nearest_rank(abs.len(), q)).map(|&us| f64::from(us) / 1e3);
        SyncQuality {
            reporting: abs.len() as u32,
            p50_ms: rank(0.5),
            p95_ms: rank(0.95),
            max_ms: abs.last().map(|&us| f64::from(us) / 1e3),
            out_of_sync: abs.iter().filter(|&&us| us > OUT_OF_SYNC_US).count() as u32,
            out_of_sync_ms: f64::from(OUT_OF_SYNC_US) / 1e3,
        }
    }
}
