//! How far ahead play and pause (and the room's other scheduled changes) are
//! scheduled for the members' network paths: a change must reach every member before it takes effect, or the
//! members it reaches late start behind the others (and catch up alone).
//!
//! The transports measure each member's round trip (QUIC's smoothed RTT for
//! WebTransport, timed WebSocket pings: server-side, so a client's clock or
//! word is never taken) and the room keeps the latest per member. The lead
//! of a change is the configured one (`--lead-ms`), grown to the 95th
//! percentile of the members' round trips (below: on every node), capped at `--lead-max-ms`:
//! a round trip is about twice the path a change takes (the other half is
//! margin for jitter and the client's start-up pre-roll), and a few far-off
//! members of a large room do not hold everyone else back (they hear the
//! change late and start on the room's frame by seeking ahead). Nearby rooms
//! keep the configured lead: the same lead as before on a LAN or loopback.
//!
//! Scaled out, each node shares its members' round trips every heartbeat
//! ([`Room::reach_counts`], whole milliseconds, those within the configured
//! lead counted as the lead) and takes the other nodes' in
//! ([`Room::set_remote_reach`]): the percentile is over the room's members on
//! every node, so a far member on another node lengthens a change scheduled
//! here too.

use super::quality::{kth_counted, nearest_rank};
use super::{MemberId, NeedCounts, Room};

/// Up to this many members the percentile is computed at every sample;
/// beyond it at most once per [`RECOMPUTE_US`] (a 10,000-member room gets a
/// sample every millisecond or so).
const SMALL_ROOM: usize = 256;
/// See [`SMALL_ROOM`].
const RECOMPUTE_US: u64 = 1_000_000;
/// A round trip beyond this is not believed (a stalled connection, not a path).
const MAX_RTT_US: u32 = 10_000_000;

/// The room's view of its members' paths.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reach {
    /// The 95th percentile of the members' latest round trips, µs (0: none measured).
    p95_rtt_us: u32,
    /// Members with a measured round trip, at the last computation.
    measured: u32,
    /// When the percentile is next recomputed in a large room.
    due_at: u64,
    /// A sample or a departure since the last computation.
    dirty: bool,
    /// Scale-out: the other nodes' members with a measured round trip, at the last computation.
    remote: u32,
}

/// The members' paths as `GET …/state` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReachView {
    /// The lead the next play or pause gets, ms.
    pub lead_ms: f64,
    /// The 95th percentile of the members' round trips, ms (scaled out: on every node; `None`: none measured).
    pub rtt_p95_ms: Option<f64>,
    /// Members with a measured round trip (scaled out: on every node).
    pub measured: u32,
    /// Scale-out: how many of them are on other nodes (their round trips
    /// shared in whole milliseconds at the nodes' heartbeats).
    pub remote: u32,
}

impl Room {
    /// Records a member's measured round trip (the latest wins).
    pub fn member_rtt(&mut self, now: u64, id: MemberId, rtt_us: u64) {
        self.advance(now);
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.rtt_us = Some(rtt_us.min(u64::from(MAX_RTT_US)) as u32);
        self.reach_changed(now);
    }

    /// A member's round trip came or went: recomputes the percentile now in a
    /// small room, at most once a second in a large one.
    pub(super) fn reach_changed(&mut self, now: u64) {
        self.reach.dirty = true;
        self.update_reach(now);
    }

    fn update_reach(&mut self, now: u64) {
        if !self.reach.dirty || (self.members.len() > SMALL_ROOM && now < self.reach.due_at) {
            return;
        }
        let mut rtts: Vec<(u32, u64)> = self.members.values().filter_map(|m| m.rtt_us).map(|r| (r, 1)).collect();
        let local = rtts.len() as u32;
        rtts.extend(self.remote_reach.iter().map(|&(ms, n)| (ms.saturating_mul(1_000).min(MAX_RTT_US), u64::from(n))));
        let remote = self.remote_reach.iter().fold(0u32, |sum, &(_, n)| sum.saturating_add(n));
        let total = local.saturating_add(remote);
        let p95 = if total == 0 {
            0
        } else {
            // The nearest rank over the members of every node.
            rtts.sort_unstable();
            kth_counted(&rtts, nearest_rank(total as usize, 0.95) as u64 + 1)
        };
        self.reach = Reach { p95_rtt_us: p95, measured: total, due_at: now + RECOMPUTE_US, dirty: false, remote };
    }

    /// Scale-out: this node's members' round trips for the other nodes, as
    /// (whole milliseconds, rounded up; members): those within the configured
    /// lead counted as the lead, those beyond the cap as the cap (either way the
    /// lead comes out the same), so a nearby room's share is one pair.
    pub fn reach_counts(&self) -> NeedCounts {
        let lead_ms = self.cfg.lead_us.div_ceil(1_000);
        let cap_ms = self.cfg.lead_max_us.max(self.cfg.lead_us).div_ceil(1_000);
        let mut counts = std::collections::BTreeMap::<u32, u32>::new();
        for rtt in self.members.values().filter_map(|m| m.rtt_us) {
            let ms = u64::from(rtt).div_ceil(1_000).clamp(lead_ms, cap_ms);
            *counts.entry(ms as u32).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Scale-out: the other nodes' members' round trips (merged, as
    /// [`Room::reach_counts`] gives them), as of `now`; they replace the last.
    pub fn set_remote_reach(&mut self, now: u64, counts: NeedCounts) {
        self.advance(now);
        if counts == self.remote_reach {
            return;
        }
        self.remote_reach = counts;
        self.reach_changed(now);
    }

    /// The lead the members' paths ask for: the configured lead, grown to
    /// their round trips' 95th percentile, at most the configured maximum
    /// (never below the configured lead).
    pub(super) fn network_lead_us(&self) -> u64 {
        let cap = self.cfg.lead_max_us.max(self.cfg.lead_us);
        u64::from(self.reach.p95_rtt_us).clamp(self.cfg.lead_us, cap)
    }

    /// The members' paths and the lead they give (for the REST API).
    pub fn reach_view(&self) -> ReachView {
        let r = self.reach;
        ReachView {
            lead_ms: self.lead_us() as f64 / 1e3,
            rtt_p95_ms: (r.measured > 0).then(|| f64::from(r.p95_rtt_us) / 1e3),
            measured: r.measured,
            remote: r.remote,
        }
    }
}
