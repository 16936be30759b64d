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

use super::{MemberId, NeedCounts, Room};

/// The unit of the drifts nodes share, µs (a member's |drift| rounded up to it).
const DRIFT_UNIT_US: u32 = 100;

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
/// members with a fresh drift measured against the timeline in effect: this
/// node's, and scaled out the other nodes' as of their last heartbeat (to
/// 0.1 ms).
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

    /// This node's members' fresh absolute drifts, µs.
    fn local_drifts(&self, now: u64) -> impl Iterator<Item = u32> + '_ {
        let fresh_us = 3 * 1_000 * u64::from(self.cfg.limits.report_interval_ms.max(1));
        let epoch = self.current.epoch;
        self.members
            .values()
            .filter_map(|m| m.drift)
            .filter(move |d| d.epoch == epoch && now.saturating_sub(d.at) <= fresh_us)
            .map(|d| d.drift_us.unsigned_abs())
    }

    /// Scale-out: this node's members' fresh drifts as the other nodes get
    /// them: (|drift| in 0.1 ms, members), ascending.
    pub fn sync_counts(&self, now: u64) -> NeedCounts {
        let mut counts = std::collections::BTreeMap::<u32, u32>::new();
        for us in self.local_drifts(now) {
            *counts.entry(us.div_ceil(DRIFT_UNIT_US)).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Scale-out: the other nodes' members' drifts ([`Room::sync_counts`]
    /// theirs, merged), as of their last heartbeat; they replace the last.
    pub fn set_remote_sync(&mut self, counts: NeedCounts) {
        self.remote_sync = counts;
    }

    /// The room's sync quality now (see [`SyncQuality`]).
    pub fn sync_quality(&self, now: u64) -> SyncQuality {
        let mut abs: Vec<(u32, u64)> = self.local_drifts(now).map(|us| (us, 1)).collect();
        abs.extend(self.remote_sync.iter().map(|&(t, n)| (t.saturating_mul(DRIFT_UNIT_US), u64::from(n))));
        abs.sort_unstable();
        let total: u64 = abs.iter().map(|&(_, n)| n).sum();
        let rank = |q: f64| {
            (total > 0).then(|| f64::from(kth_counted(&abs, nearest_rank(total as usize, q) as u64 + 1)) / 1e3)
        };
        SyncQuality {
            reporting: u32::try_from(total).unwrap_or(u32::MAX),
            p50_ms: rank(0.5),
            p95_ms: rank(0.95),
            max_ms: abs.last().map(|&(us, _)| f64::from(us) / 1e3),
            out_of_sync: u32::try_from(
                abs.iter().filter(|&&(us, _)| us > OUT_OF_SYNC_US).map(|&(_, n)| n).sum::<u64>(),
            )
            .unwrap_or(u32::MAX),
            out_of_sync_ms: f64::from(OUT_OF_SYNC_US) / 1e3,
        }
    }
}
