//! Live rooms (SPEC §2.4): positions are program time relative to the room's
//! origin, the live point, `GoLive`, `LiveState` and the auto latency.
//!
//! **The live state is a function of the timeline.** A timeline is *at live*
//! when it plays at 1×, its anchor is a whole millisecond and its implied
//! latency (`anchor − (origin + position)`) is a whole number of ms that the
//! room's latency policy allows (the fixed latency, or within `[min, max]`
//! in auto mode). `GoLive` and latency moves build exactly such timelines;
//! every other change that would happen to be one is moved off it by 1 µs
//! ([`Room::off_live`]). So every node of a cluster, given the same committed
//! timeline, agrees on `at_live` and on the latency in force, with nothing
//! shared beyond the timeline (the origin is computed the same way on every
//! node, [`origin_for`]).
//!
//! **Auto latency.** Members' `LiveReport`s give each one's need (`now −
//! live_edge + margin`, the largest of its last 15 s so a playlist's sawtooth
//! is covered); the room's latency is the p95 of the needs, clamped, with
//! hysteresis (see [`Room::decide_latency`]). In a cluster every node decides
//! from the same needs: its own members' and the other nodes' summaries
//! ([`Room::live_needs`], [`Room::set_remote_needs`], exchanged by the
//! heartbeat), so their targets agree; a move is a committed change, and a
//! move made elsewhere counts as the last move here too, so the room moves at
//! most once per 30 s whichever node decides.
//!
//! **The clock setting** ([`ClockSetting`]: kind, latency policy, origin, DVR
//! window) starts from the server's flags and can be changed per room at run
//! time ([`Room::set_clock`], `PUT /api/live-stream/{id}/clock`). A change of
//! kind (or a latency change at live) is a timeline change like any other,
//! committed through the authority; the setting itself is stored by the
//! authority with the room and shared with the other nodes
//! ([`super::Shared::Clock`]), which adopt it without a change of their own
//! ([`Room::adopt_clock`]). A live room's origin is stored with it, so a
//! restarted server reads its saved positions on the same origin.

use std::collections::VecDeque;

use lockstep_protocol::{ChangeReason, ClockKind, LiveReport, LiveState, ServerMsg, Timeline};
use serde::{Deserialize, Serialize};

use super::{Audience, CommandError, MemberId, Room, RoomConfig};

/// One week in ms: origins are whole weeks (see [`origin_for`]).
const WEEK_MS: u64 = 7 * 86_400_000;
/// Added to each member's measured distance from its live edge.
pub(super) const LIVE_MARGIN_MS: u64 = 750;
/// The auto latency moves only for a larger difference than this.
pub(super) const HYSTERESIS_MS: u64 = 250;
/// The auto latency moves at most once per this interval (unless too low).
pub(super) const MOVE_INTERVAL_US: u64 = 30_000_000;
/// Reports every live member sends before the first auto decision (a
/// playlist's edge is a sawtooth with rare late reloads: a few seconds of
/// it, not one, say what a viewer needs).
pub(super) const FIRST_DECISION_REPORTS: u32 = 4;
/// The first auto decision comes at the latest this long after the first report.
pub(super) const SETTLE_US: u64 = 5_000_000;
/// A member's need is the largest of its reports of this window.
const NEED_WINDOW_US: u64 = 15_000_000;
/// Reports kept per member (a report a second fills the window).
const NEEDS_KEPT: usize = 32;
/// A live edge further in the future than this is absurd.
pub(super) const FUTURE_TOLERANCE_MS: u64 = 5_000;
/// A live edge older than this is absurd.
pub(super) const MAX_EDGE_AGE_MS: u64 = 3_600_000;

/// A live room's latency policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum LiveLatency {
    /// Always this many ms behind the live edge.
    #[serde(rename_all = "camelCase")]
    Fixed {
        /// The latency, ms.
        latency_ms: u32,
    },
    /// Picked from the members' reports, within `[min_ms, max_ms]`.
    #[serde(rename_all = "camelCase")]
    Auto {
        /// Lowest latency, ms.
        min_ms: u32,
        /// Highest latency, ms.
        max_ms: u32,
    },
}

impl Default for LiveLatency {
    /// Fixed 3 s: about one 2 s segment plus fetch time, below hls.js's
    /// default of three target durations.
    fn default() -> Self {
        LiveLatency::Fixed { latency_ms: 3_000 }
    }
}

impl LiveLatency {
    /// The latency a room starts with: the fixed one, or 3 s clamped.
    pub fn initial(&self) -> u32 {
        match *self {
            LiveLatency::Fixed { latency_ms } => latency_ms,
            LiveLatency::Auto { min_ms, max_ms } => 3_000u32.clamp(min_ms, max_ms.max(min_ms)),
        }
    }

    /// `current` kept if this policy allows it, else the nearest it does.
    fn keep(&self, current: u32) -> u32 {
        match *self {
            LiveLatency::Fixed { latency_ms } => latency_ms,
            LiveLatency::Auto { min_ms, max_ms } => current.clamp(min_ms, max_ms.max(min_ms)),
        }
    }

    fn allows(&self, latency_ms: u64) -> bool {
        match *self {
            LiveLatency::Fixed { latency_ms: l } => latency_ms == u64::from(l),
            LiveLatency::Auto { min_ms, max_ms } => (u64::from(min_ms)..=u64::from(max_ms)).contains(&latency_ms),
        }
    }
}

/// The program origin of a live room created at server time `now_us`: the
/// start of the 7-day period (counted from the Unix epoch) before the
/// current one, in Unix ms. Every node and
/// a restarted server compute the same origin (within the week), positions
/// before the room's creation (the DVR window) are expressible, and the
/// Tick's 32-bit positions last 35 days from the room's creation.
pub fn origin_for(now_us: u64) -> u64 {
    ((now_us / 1000) / WEEK_MS).saturating_sub(1) * WEEK_MS
}

/// A room's clock setting: what its positions measure and, for a live room,
/// its latency policy, program origin and DVR window. Stored by the
/// authority with the room (JSON) and shared across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockSetting {
    /// Media or program time.
    pub clock: ClockKind,
    /// The latency policy (kept in a media room for a later switch to live).
    pub latency: LiveLatency,
    /// Program time (Unix ms) of position 0; 0 in a media room.
    pub origin_ms: u64,
    /// The DVR window, ms (0: unbounded).
    #[serde(default)]
    pub dvr_window_ms: u32,
}

impl ClockSetting {
    /// `cfg` with this setting in force.
    pub fn apply_to(&self, cfg: &mut RoomConfig) {
        cfg.clock = self.clock;
        cfg.live_latency = self.latency;
        cfg.live_origin_ms = (self.clock == ClockKind::Live).then_some(self.origin_ms);
        cfg.live_dvr_window_ms = self.dvr_window_ms;
    }
}

/// A request to change a room's clock (`PUT …/clock`): what is `None` stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRequest {
    /// The clock kind.
    pub clock: ClockKind,
    /// A new latency policy.
    pub latency: Option<LiveLatency>,
    /// A new DVR window, ms.
    pub dvr_window_ms: Option<u32>,
}

/// What a live member hears when its room becomes a media room.
const MEDIA_STATE: LiveState =
    LiveState { clock: ClockKind::Media, origin_ms: 0, latency_ms: 0, auto_latency: false, at_live: false };

/// Members' needs (ms) with how many members have each: what a node shares
/// of its members for the auto latency.
pub type NeedCounts = Vec<(u32, u32)>;

/// A live room's own state (only timeline-independent parts: the live state
/// itself is derived from the timeline, see the module docs).
#[derive(Debug)]
pub(super) struct Live {
    pub(super) origin_ms: u64,
    /// The latency in force: derived from the timeline while at live, else the
    /// last one decided (the next `GoLive` uses it).
    pub(super) latency_ms: u32,
    /// The last `LiveState` queued.
    sent: Option<LiveState>,
    first_report_at: Option<u64>,
    decided: bool,
    last_move_at: Option<u64>,
    ignored: u64,
    /// The other nodes' members' needs, and when they were received.
    remote_needs: Option<(u64, NeedCounts)>,
}

/// A member's recent needs (auto latency).
#[derive(Debug, Default)]
pub(super) struct Needs {
    /// `(server time, need in ms)`, oldest first.
    recent: VecDeque<(u64, u64)>,
    reports: u32,
}

/// The room's members' needs at a glance.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedStats {
    /// Members whose reports count (on every node).
    pub reporting: u64,
    /// The 95th percentile of their needs, ms: what the auto latency follows.
    pub p95: u64,
    /// The median need, ms.
    pub median: u64,
    /// The largest need, ms: a viewer above the room's latency stalls and
    /// catches up alone.
    pub max: u64,
}

/// A live room in `GET …/state`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveView {
    /// Program time (Unix ms) of position 0.
    pub origin_ms: u64,
    /// The latency in force, ms.
    pub latency_ms: u32,
    /// Whether the latency is picked from the members' reports.
    pub auto_latency: bool,
    /// Whether the room follows the live point.
    pub at_live: bool,
    /// The program time (Unix ms) the timeline shows now.
    pub program_time_ms: u64,
    /// Live reports ignored for absurd live edges.
    pub ignored_reports: u64,
    /// The members' needs (`None` until someone reports).
    pub needs: Option<NeedStats>,
}

/// Whole ms at or after `us`, in µs.
fn ceil_ms(us: u64) -> u64 {
    us.div_ceil(1000).saturating_mul(1000)
}

impl Live {
    pub(super) fn new(cfg: &RoomConfig, now: u64) -> Self {
        Live {
            origin_ms: cfg.live_origin_ms.unwrap_or_else(|| origin_for(now)),
            latency_ms: cfg.live_latency.initial(),
            sent: None,
            first_report_at: None,
            decided: false,
            last_move_at: None,
            ignored: 0,
            remote_needs: None,
        }
    }

    /// The timeline at the live point from `at_us` on (anchored at the first
    /// whole ms at or after it), with latency `latency_ms`.
    pub(super) fn timeline_at(&self, at_us: u64, latency_ms: u32, epoch: u32) -> Timeline {
        let anchor_us = ceil_ms(at_us);
        let position_ms = (anchor_us / 1000).saturating_sub(self.origin_ms + u64::from(latency_ms));
        Timeline { epoch, position_ms, anchor_us, rate_milli: 1000, paused: false }
    }
}

impl Room {
    /// Whether the room's positions are program time.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Live reports ignored for absurd live edges (for metrics).
    pub fn ignored_live_reports(&self) -> u64 {
        self.live.as_ref().map_or(0, |l| l.ignored)
    }

    /// The latency `t` is at live with, if it is (see the module docs).
    pub(super) fn live_latency_of(&self, t: &Timeline) -> Option<u32> {
        let live = self.live.as_ref()?;
        if t.paused || t.rate_milli != 1000 || !t.anchor_us.is_multiple_of(1000) {
            return None;
        }
        let implied = (t.anchor_us / 1000).checked_sub(live.origin_ms + t.position_ms)?;
        if !self.cfg.live_latency.allows(implied) {
            return None;
        }
        u32::try_from(implied).ok()
    }

    /// `t`, moved off the live point by 1 µs if it happens to be on it: only
    /// `GoLive` and latency moves put a room at live.
    pub(super) fn off_live(&self, mut t: Timeline) -> Timeline {
        if self.live_latency_of(&t).is_some() {
            t.anchor_us += 1;
        }
        t
    }

    /// The live point's position (ms) at server time `at_us`.
    fn live_point_ms(&self, at_us: u64) -> Option<u64> {
        let live = self.live.as_ref()?;
        Some((at_us / 1000).saturating_sub(live.origin_ms + u64::from(live.latency_ms)))
    }

    /// A command's position, clamped in a live room to the live point at
    /// `at_us` and, with a DVR window, to the window's start.
    pub(super) fn clamp_to_live(&self, position_ms: u64, at_us: u64) -> u64 {
        let Some(live) = self.live_point_ms(at_us) else { return position_ms };
        let window = u64::from(self.cfg.live_dvr_window_ms);
        let start = if window == 0 { 0 } else { live.saturating_sub(window) };
        position_ms.clamp(start, live)
    }

    /// The room's clock setting in force.
    pub fn clock_setting(&self) -> ClockSetting {
        ClockSetting {
            clock: self.cfg.clock,
            latency: self.cfg.live_latency,
            origin_ms: self.live.as_ref().map_or(0, |l| l.origin_ms),
            dvr_window_ms: self.cfg.live_dvr_window_ms,
        }
    }

    /// Changes the room's clock (`PUT …/clock`); returns the setting now in
    /// force if anything changed. A switch to live puts the room at the live
    /// point (scheduled with the lead, like `GoLive`); a switch to media
    /// pauses it at 0 (positions of one kind mean nothing in the other); a new
    /// latency policy while at live moves the room to the new latency. The
    /// change is made by the server (member 0) and committed like any other;
    /// the setting is shared with the other nodes.
    pub fn set_clock(&mut self, now: u64, req: ClockRequest) -> Option<ClockSetting> {
        self.advance(now);
        let old = self.clock_setting();
        let origin_ms = match (req.clock, old.clock) {
            (ClockKind::Live, ClockKind::Live) => old.origin_ms,
            (ClockKind::Live, ClockKind::Media) => origin_for(now),
            (ClockKind::Media, _) => 0,
        };
        let new = ClockSetting {
            clock: req.clock,
            latency: req.latency.unwrap_or(old.latency),
            origin_ms,
            dvr_window_ms: req.dvr_window_ms.unwrap_or(old.dvr_window_ms),
        };
        if new == old {
            return None;
        }
        let was_at_live = self.live_latency_of(&self.intended()).is_some();
        self.apply_clock(now, new);
        match (old.clock, new.clock) {
            (ClockKind::Media, ClockKind::Media) => {}
            (ClockKind::Live, ClockKind::Live) if !was_at_live || old.latency == new.latency => self.sync_live(false),
            (_, ClockKind::Live) => self.restart_clock(now),
            (_, ClockKind::Media) => {
                self.to(Audience::Live, ServerMsg::LiveState(MEDIA_STATE));
                self.restart_clock(now);
            }
        }
        self.share(|| super::Shared::Clock { setting: new });
        Some(new)
    }

    /// Adopts a clock setting decided elsewhere (another node, or the one the
    /// authority stored) without a timeline change: the timeline that goes
    /// with it comes from the authority. Live members hear the new
    /// `LiveState`.
    pub fn adopt_clock(&mut self, now: u64, s: ClockSetting) {
        if self.clock_setting() == s {
            return;
        }
        let was_live = self.live.is_some();
        self.apply_clock(now, s);
        if self.live.is_some() {
            self.sync_live(true);
        } else if was_live {
            self.to(Audience::Live, ServerMsg::LiveState(MEDIA_STATE));
        }
    }

    /// Puts `s` in force (settings and live state; no message).
    fn apply_clock(&mut self, now: u64, s: ClockSetting) {
        s.apply_to(&mut self.cfg);
        match (&mut self.live, s.clock) {
            (Some(live), ClockKind::Live) if live.origin_ms == s.origin_ms => {
                live.latency_ms = s.latency.keep(live.latency_ms);
            }
            (live, ClockKind::Live) => *live = Some(Live::new(&self.cfg, now)),
            (live, ClockKind::Media) => *live = None,
        }
    }

    /// Starts the room afresh on its clock, as a change by the server: at the
    /// live point (scheduled with the lead) in a live room, paused at 0 now
    /// in a media room. Ends a buffering wait.
    pub fn restart_clock(&mut self, now: u64) {
        let intended = self.intended();
        match &self.live {
            Some(live) => {
                let lead_at = (now + self.lead_us()).max(intended.anchor_us);
                let t = live.timeline_at(lead_at, live.latency_ms, 0);
                self.issue(now, t, t.anchor_us, 0, ChangeReason::Play, None);
            }
            None => {
                let at = now.max(intended.anchor_us);
                let t = Timeline { epoch: 0, position_ms: 0, anchor_us: at, rate_milli: 1000, paused: true };
                self.issue(now, t, at, 0, ChangeReason::Seek, None);
            }
        }
        self.wait = None;
    }

    /// Shares the clock setting in force with the other nodes (a live room
    /// started from the server's flags stores its origin this way).
    pub fn share_clock(&mut self) {
        let setting = self.clock_setting();
        self.share(|| super::Shared::Clock { setting });
    }

    /// `GoLive`: the live timeline taking effect at `lead_at`, or `None` when
    /// the room already is (or will be) at live with its latency.
    pub(super) fn go_live_timeline(&self, lead_at: u64) -> Result<Option<Timeline>, CommandError> {
        let live = self.live.as_ref().ok_or(CommandError::InvalidArgument("not a live room"))?;
        if self.live_latency_of(&self.intended()) == Some(live.latency_ms) {
            return Ok(None);
        }
        Ok(Some(live.timeline_at(lead_at, live.latency_ms, 0)))
    }

    /// The room's `LiveState` now (`None` in a media room).
    pub fn live_state(&self) -> Option<LiveState> {
        let live = self.live.as_ref()?;
        let at = self.live_latency_of(&self.intended());
        Some(LiveState {
            clock: ClockKind::Live,
            origin_ms: live.origin_ms,
            latency_ms: at.unwrap_or(live.latency_ms),
            auto_latency: matches!(self.cfg.live_latency, LiveLatency::Auto { .. }),
            at_live: at.is_some(),
        })
    }

    /// Queues a `LiveState` to live members if it changed (after every
    /// timeline change; `force`: also if it did not, after a rollback).
    pub(super) fn sync_live(&mut self, force: bool) {
        let Some(state) = self.live_state() else { return };
        let live = self.live.as_mut().expect("a live room");
        if state.at_live {
            live.latency_ms = state.latency_ms;
        }
        if force || live.sent != Some(state) {
            live.sent = Some(state);
            self.to(Audience::Live, ServerMsg::LiveState(state));
        }
    }

    /// Marks the current state as known to everyone (at creation).
    pub(super) fn live_settled(&mut self) {
        let state = self.live_state();
        if let Some(live) = self.live.as_mut() {
            live.sent = state;
        }
    }

    /// A member's `LiveReport`: its need, for the auto latency. Ignored in a
    /// media room; absurd live edges are ignored and counted.
    pub fn live_report(&mut self, now: u64, id: MemberId, report: LiveReport) {
        self.advance(now);
        let Some(live) = self.live.as_mut() else { return };
        let Some(m) = self.members.get_mut(&id) else { return };
        let now_ms = now / 1000;
        let edge = report.live_edge_ms;
        if edge > now_ms.saturating_add(FUTURE_TOLERANCE_MS) || edge.saturating_add(MAX_EDGE_AGE_MS) < now_ms {
            live.ignored += 1;
            return;
        }
        let need = now_ms.saturating_sub(edge) + LIVE_MARGIN_MS;
        let needs = &mut m.live_needs;
        needs.recent.push_back((now, need));
        while needs.recent.len() > NEEDS_KEPT || needs.recent.front().is_some_and(|&(at, _)| at + NEED_WINDOW_US < now)
        {
            needs.recent.pop_front();
        }
        needs.reports = needs.reports.saturating_add(1);
        live.first_report_at.get_or_insert(now);
    }

    /// The auto latency's decision (from `handle_timeout`): the p95 of the
    /// members' needs, clamped to `[min, max]`; it moves only by more than
    /// 250 ms, at most once per 30 s unless it is below the median need (then
    /// at once). The first decision comes once every reporting member sent
    /// four reports, or 5 s after the first report. At live, a move is a new
    /// live timeline scheduled with the lead; otherwise only the latency (and
    /// `LiveState`) changes.
    pub(super) fn decide_latency(&mut self, now: u64) {
        let LiveLatency::Auto { min_ms, max_ms } = self.cfg.live_latency else { return };
        let Some(live) = self.live.as_ref() else { return };
        let Some(first) = live.first_report_at else { return };
        // Every live member (not only those heard from so far) reports twice
        // before the first decision, or the settling time runs out.
        let all_twice =
            self.members.values().filter(|m| m.wants_live).all(|m| m.live_needs.reports >= FIRST_DECISION_REPORTS);
        let Some(NeedStats { p95, median, .. }) = self.need_stats(now) else { return };
        if !live.decided && !all_twice && now < first + SETTLE_US {
            return;
        }
        let target = p95.div_ceil(10).saturating_mul(10).clamp(u64::from(min_ms), u64::from(max_ms.max(min_ms)));
        let current = u64::from(live.latency_ms);
        if target.abs_diff(current) <= HYSTERESIS_MS {
            self.live.as_mut().expect("live").decided = true;
            return;
        }
        let too_low = target > current && median > current;
        let may_move = !live.decided || too_low || live.last_move_at.is_none_or(|t| now >= t + MOVE_INTERVAL_US);
        if !may_move {
            return;
        }
        let target = target as u32;
        // At live, or playing ahead of the new live point (a room that
        // resumed off live before the latency rose): it moves with it.
        let intended = self.intended();
        let ahead = !intended.paused && {
            let at = now.max(intended.anchor_us);
            let live_point_us = (at / 1000).saturating_sub(live.origin_ms + u64::from(target)) * 1000;
            intended.position_us_at(at) > live_point_us
        };
        let at_live = ahead || self.live_latency_of(&intended).is_some();
        let live = self.live.as_mut().expect("live");
        live.decided = true;
        live.last_move_at = Some(now);
        live.latency_ms = target;
        if at_live {
            let lead_at = (now + self.lead_us()).max(self.intended().anchor_us);
            let t = self.live.as_ref().expect("live").timeline_at(lead_at, target, 0);
            self.issue(now, t, t.anchor_us, 0, ChangeReason::Seek, None);
        } else {
            self.sync_live(false);
        }
    }

    /// The needs of every reporting member of the room (this node's and, in
    /// a cluster, the other nodes'), `None` if nobody reports.
    fn need_stats(&self, now: u64) -> Option<NeedStats> {
        let live = self.live.as_ref()?;
        let mut needs: Vec<(u64, u64)> = self.local_needs(now).map(|n| (n, 1)).collect();
        if let Some((at, remote)) = &live.remote_needs
            && at + NEED_WINDOW_US >= now
        {
            needs.extend(remote.iter().map(|&(n, c)| (u64::from(n), u64::from(c))));
        }
        let total: u64 = needs.iter().map(|&(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        needs.sort_unstable();
        // The need of the k-th member (1-based) in order of need.
        let kth = |k: u64| super::quality::kth_counted(&needs, k);
        Some(NeedStats {
            reporting: total,
            p95: kth((total * 95).div_ceil(100).max(1)),
            median: kth(total.div_ceil(2)),
            max: needs.last().map_or(0, |&(n, _)| n),
        })
    }

    /// Each local member's need now (the largest of its recent reports).
    fn local_needs(&self, now: u64) -> impl Iterator<Item = u64> + '_ {
        let fresh = move |n: &Needs| n.recent.back().is_some_and(|&(at, _)| at + NEED_WINDOW_US >= now);
        self.members.values().filter(move |m| fresh(&m.live_needs)).map(move |m| {
            let window = m.live_needs.recent.iter().filter(|&&(at, _)| at + NEED_WINDOW_US >= now);
            window.map(|&(_, n)| n).max().unwrap_or(0)
        })
    }

    /// Scale-out: this node's members' needs, for the other nodes (empty in
    /// a media room or without reports).
    pub fn live_needs(&self, now: u64) -> NeedCounts {
        let mut counts = std::collections::BTreeMap::<u32, u32>::new();
        for n in self.local_needs(now) {
            *counts.entry(u32::try_from(n).unwrap_or(u32::MAX)).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Scale-out: the other nodes' members' needs (merged), as of `now`. They
    /// count like reports for the first decision.
    pub fn set_remote_needs(&mut self, now: u64, needs: NeedCounts) {
        let Some(live) = self.live.as_mut() else { return };
        if needs.is_empty() {
            live.remote_needs = None;
            return;
        }
        live.first_report_at.get_or_insert(now);
        live.remote_needs = Some((now, needs));
    }

    /// A change made elsewhere moved the latency at live: that is the room's
    /// last move here too (the 30 s rule holds whichever node decides).
    pub(super) fn note_latency_move(&mut self, now: u64, before: Option<u32>) {
        let after = self.live_latency_of(&self.intended());
        if let (Some(a), Some(b), Some(live)) = (after, before, self.live.as_mut())
            && a != b
        {
            live.last_move_at = Some(now);
            live.decided = true;
        }
    }

    /// When the intended timeline, playing faster than 1×, reaches the live
    /// point (server µs; possibly already past).
    pub(super) fn live_overrun_at(&self) -> Option<u64> {
        let live = self.live.as_ref()?;
        let t = self.intended();
        if t.paused || t.rate_milli <= 1000 {
            return None;
        }
        // position_us(x) = p + (x − a)·r/1000 meets live_us(x) = x − k.
        let r = i128::from(t.rate_milli);
        let k = i128::from(live.origin_ms + u64::from(live.latency_ms)) * 1000;
        let (p, a) = (i128::from(t.position_ms) * 1000, i128::from(t.anchor_us));
        let cross = (a * r - 1000 * (p + k)) / (r - 1000);
        Some(cross.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// Nothing plays ahead of the live point: a room catching up faster than
    /// 1× returns to live when it gets there (a change by the server, reason
    /// `play`, scheduled with the lead from `cross − lead` on, so it lands on
    /// the crossing).
    pub(super) fn catch_live(&mut self, now: u64) {
        let Some(cross) = self.live_overrun_at() else { return };
        let lead = self.lead_us();
        if now + lead < cross {
            return;
        }
        let live = self.live.as_ref().expect("live");
        let at = cross.max(now + lead).max(self.intended().anchor_us);
        let t = live.timeline_at(at, live.latency_ms, 0);
        self.issue(now, t, t.anchor_us, 0, ChangeReason::Play, None);
    }

    /// The live part of `GET …/state`.
    pub(super) fn live_view(&self, now: u64) -> Option<LiveView> {
        let state = self.live_state()?;
        Some(LiveView {
            origin_ms: state.origin_ms,
            latency_ms: state.latency_ms,
            auto_latency: state.auto_latency,
            at_live: state.at_live,
            program_time_ms: state.origin_ms + self.current.position_us_at(now) / 1000,
            ignored_reports: self.ignored_live_reports(),
            needs: self.need_stats(now),
        })
    }
}
