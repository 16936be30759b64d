//! Commands, issuing timeline changes, scheduled changes and ticks.

use lockstep_protocol::limits::{MAX_POSITION_MS, MAX_RATE_MILLI, MIN_RATE_MILLI};
use lockstep_protocol::{
    AckOutcome, Action, ChangeReason, ControlPolicy, ErrorMsg, Role, ServerMsg, Tick, Timeline, TimelineChanged,
};

use super::buffering::Wait;
use super::{Audience, CommandError, MemberId, Queued, Room};

/// Lead added per viewer beyond 1,000 (see [`Room::lead_us`]).
const LEAD_PER_VIEWER_US: u64 = 12;
/// Lead added on top per datagram (WebTransport) member beyond 1,000: a
/// QUIC datagram costs the server about 28 µs with its ACK against 9 µs for
/// a WebSocket write, and 10,000 of them reach the last viewer after ~300 ms
/// on this project's machine (BENCHMARKS.md, issue 14).
const LEAD_PER_DATAGRAM_VIEWER_US: u64 = 20;

/// The room's state before a change.
#[derive(Debug, Clone)]
pub(super) struct Checkpoint {
    pub(super) current: Timeline,
    pub(super) pending: Option<(Change, MemberId, ChangeReason)>,
    pub(super) epoch: u32,
    pub(super) wait: Option<Wait>,
    pub(super) remote_wait: Option<u64>,
}

/// A timeline and when it takes effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Change {
    pub(super) timeline: Timeline,
    pub(super) effective_at_us: u64,
}

impl Change {
    pub(super) fn message(&self, by: MemberId, reason: ChangeReason) -> TimelineChanged {
        TimelineChanged { timeline: self.timeline, effective_at_us: self.effective_at_us, by, reason }
    }
}

/// A member's command as the room keeps it: while it is held by the budget,
/// and while the change it made is not committed (to retry it).
#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub(super) by: MemberId,
    pub(super) request_id: u32,
    pub(super) action: Action,
    /// 0, or 1 once retried after its first change was discarded.
    pub(super) attempt: u8,
    /// Commands it replaced while held, answered `Coalesced` when it runs.
    pub(super) coalesced: Vec<(MemberId, u32)>,
}

/// What a command would do to the timeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    timeline: Timeline,
    at: u64,
    reason: ChangeReason,
}

/// Which commands replace each other while held by the budget.
pub(super) fn kind(action: &Action) -> u8 {
    match action {
        Action::Play { .. } | Action::Pause { .. } | Action::GoLive => 0,
        Action::Seek { .. } => 1,
        Action::SetRate { .. } => 2,
        Action::SetRole { .. } | Action::SetPolicy { .. } | Action::DeleteChat { .. } | Action::MuteChat { .. } => 3,
    }
}

impl Room {
    /// Applies a member's command, holds it (the change budget is spent), or
    /// queues an `Error` to it and returns why not. Every command with a
    /// request id is answered exactly once: an `Error`, or an `Ack` to members
    /// that want them (after the `TimelineChanged` it made, if any).
    pub fn command(&mut self, now: u64, by: MemberId, request_id: u32, action: Action) -> Result<(), CommandError> {
        self.advance(now);
        self.run_held(now);
        let cmd = Cmd { by, request_id, action, attempt: 0, coalesced: Vec::new() };
        if kind(&action) < 3 {
            self.media_command_taken();
        }
        if kind(&action) == 3 {
            let result = match action {
                Action::SetRole { member_id, role } => self.set_role(by, member_id, role),
                Action::SetPolicy { policy } => self.set_policy(by, policy),
                Action::DeleteChat { id } => self.delete_chat(by, id),
                Action::MuteChat { member_id, muted } => self.mute_chat(by, member_id, muted),
                _ => unreachable!("kind 3"),
            };
            match &result {
                Ok(()) => self.ack(by, request_id, AckOutcome::Applied, self.epoch, false),
                Err(e) => self.answer_error(by, request_id, e),
            }
            return result;
        }
        // Checked on arrival, and again when it runs.
        let plan = match self.plan(now, by, &action) {
            Ok(plan) => plan,
            Err(e) => {
                self.answer_error(by, request_id, &e);
                return Err(e);
            }
        };
        let same_kind_held = self.budget.holds(kind(&action));
        if same_kind_held || plan.is_some() && !self.budget.may_run(now) {
            self.hold(cmd);
            return Ok(());
        }
        self.run_cmd(now, cmd)
    }

    /// Runs a command now (arrived, released by the budget, or retried).
    pub(super) fn run_cmd(&mut self, now: u64, cmd: Cmd) -> Result<(), CommandError> {
        if !self.members.contains_key(&cmd.by) {
            // Left meanwhile: nobody to answer.
            self.answer_coalesced(&cmd.coalesced, self.epoch, false);
            return Err(CommandError::NotMember);
        }
        let plan = match self.plan(now, cmd.by, &cmd.action) {
            Ok(plan) => plan,
            Err(e) => {
                self.answer_error(cmd.by, cmd.request_id, &e);
                self.answer_coalesced(&cmd.coalesced, self.epoch, false);
                return Err(e);
            }
        };
        let clears_wait = matches!(cmd.action, Action::Play { .. } | Action::Pause { .. } | Action::GoLive);
        let (by, request_id, coalesced) = (cmd.by, cmd.request_id, cmd.coalesced.clone());
        let outcome = match plan {
            None => {
                // Decided on a timeline that may not be committed yet: retried
                // with the change it rests on if that one is discarded.
                self.auth.follow(cmd);
                AckOutcome::Unchanged
            }
            Some(p) => {
                if cmd.attempt == 0 {
                    self.budget.take(now);
                }
                self.issue(now, p.timeline, p.at, by, p.reason, Some(cmd));
                AckOutcome::Applied
            }
        };
        if clears_wait {
            self.wait = None;
        }
        self.ack(by, request_id, outcome, self.epoch, true);
        self.answer_coalesced(&coalesced, self.epoch, true);
        Ok(())
    }

    /// What `action` by `by` would do now: an error, nothing (`None`), or a change.
    fn plan(&self, now: u64, by: MemberId, action: &Action) -> Result<Option<Plan>, CommandError> {
        let role = self.role(by).ok_or(CommandError::NotMember)?;
        if self.cfg.policy == ControlPolicy::HostOnly && role == Role::Viewer {
            return Err(CommandError::Forbidden);
        }
        let check_pos = |p: u64| {
            if p > MAX_POSITION_MS { Err(CommandError::InvalidArgument("position out of range")) } else { Ok(p) }
        };
        let intended = self.intended();
        let lead_at = (now + self.lead_us()).max(intended.anchor_us);
        // Only `GoLive` puts a live room at live (`live.rs`).
        let plan = |timeline, at, reason| Ok(Some(Plan { timeline: self.off_live(timeline), at, reason }));
        let clamp = |p: u64, at: u64| self.clamp_to_live(p, at);
        match *action {
            Action::Play { position_ms } => {
                let position_ms = position_ms.map(check_pos).transpose()?;
                if position_ms.is_none() && !intended.paused {
                    return Ok(None);
                }
                if position_ms.is_none() && !self.current.paused {
                    // A pause was pending: cancel it, keep playing (at live, if it was).
                    return Ok(Some(Plan { timeline: self.current, at: now, reason: ChangeReason::Play }));
                }
                let position_ms = position_ms.map_or_else(|| intended.whole_ms_point(lead_at).0, |p| clamp(p, lead_at));
                plan(
                    Timeline { position_ms, anchor_us: lead_at, paused: false, ..intended },
                    lead_at,
                    ChangeReason::Play,
                )
            }
            Action::Pause { position_ms } => {
                let position_ms = position_ms.map(check_pos).transpose()?;
                if position_ms.is_none() && intended.paused {
                    if self.wait.is_some() || self.remote_wait.is_some() {
                        // The host takes over a buffering pause (this node's or another's): no resume follows.
                        return plan(intended, now.max(intended.anchor_us), ChangeReason::Pause);
                    }
                    return Ok(None);
                }
                if position_ms.is_none() && self.current.paused {
                    // A play was pending: cancel it, stay paused.
                    return plan(self.current, now, ChangeReason::Pause);
                }
                let (at_ms, at) =
                    if intended.paused { (intended.position_ms, now) } else { intended.whole_ms_point(lead_at) };
                let position_ms = position_ms.map_or(at_ms, |p| clamp(p, at));
                let t = Timeline { position_ms, anchor_us: at, paused: true, ..intended };
                plan(t, at, ChangeReason::Pause)
            }
            Action::Seek { position_ms } => {
                let at = now.max(intended.anchor_us);
                let position_ms = clamp(check_pos(position_ms)?, at);
                plan(Timeline { position_ms, anchor_us: at, ..intended }, at, ChangeReason::Seek)
            }
            Action::SetRate { rate_milli } => {
                if !(MIN_RATE_MILLI..=MAX_RATE_MILLI).contains(&rate_milli) {
                    return Err(CommandError::InvalidArgument("rate must be between 0.25 and 4"));
                }
                let (position_ms, at) = intended.whole_ms_point(now.max(intended.anchor_us));
                plan(Timeline { position_ms, anchor_us: at, rate_milli, ..intended }, at, ChangeReason::Rate)
            }
            Action::GoLive => Ok(self.go_live_timeline(lead_at)?.map(|timeline| Plan {
                at: timeline.anchor_us,
                timeline,
                reason: ChangeReason::Play,
            })),
            Action::SetRole { .. } | Action::SetPolicy { .. } | Action::DeleteChat { .. } | Action::MuteChat { .. } => {
                unreachable!("not timeline commands")
            }
        }
    }

    /// The timeline after any pending change.
    pub(super) fn intended(&self) -> Timeline {
        self.pending.map(|(c, ..)| c.timeline).unwrap_or(self.current)
    }

    /// Issues a new timeline (new epoch) taking effect at `at`, made by
    /// member command `cmd` or (`None`) by the room itself. It is uncommitted
    /// until the authority says otherwise (`authority.rs`).
    pub(super) fn issue(
        &mut self,
        now: u64,
        mut timeline: Timeline,
        at: u64,
        by: MemberId,
        reason: ChangeReason,
        cmd: Option<Cmd>,
    ) {
        let checkpoint = Checkpoint {
            current: self.current,
            pending: self.pending,
            epoch: self.epoch,
            wait: self.wait.clone(),
            remote_wait: self.remote_wait,
        };
        // This node's own change ends another node's wait here, but a seek or a rate change while paused.
        if !timeline.paused || !matches!(reason, ChangeReason::Seek | ChangeReason::Rate) {
            self.remote_wait = None;
        }
        self.epoch = self.epoch.wrapping_add(1);
        timeline.epoch = self.epoch;
        let change = Change { timeline, effective_at_us: at };
        let seq = self.next_seq();
        self.to(Audience::All, ServerMsg::TimelineChanged(change.message(by, reason)));
        self.auth.record(change.message(by, reason), checkpoint, seq, cmd);
        if at <= now {
            // In effect at once: the change is its own tick (it carries the
            // whole timeline), so no tick follows it, and the next periodic
            // one is a whole interval away.
            self.current = timeline;
            self.pending = None;
            self.next_tick_at = now + self.tick_interval_us();
        } else {
            self.pending = Some((change, by, reason));
        }
        self.sync_live(false);
    }

    /// Applies a change decided elsewhere (committed by the authority),
    /// exactly as decided: same timeline, epoch and effective time. Queues it
    /// to every member as made by the server.
    pub(super) fn set_change(&mut self, now: u64, c: TimelineChanged) {
        let latency_before = self.live_latency_of(&self.intended());
        self.epoch = c.timeline.epoch;
        if matches!(c.reason, ChangeReason::Play | ChangeReason::Pause) {
            // A member's play or pause takes over a buffering wait here too;
            // a seek, a rate change or another node's wait keeps it (or the
            // room would stay paused once the stalled member recovers).
            self.wait = None;
        }
        if c.reason == ChangeReason::BufferingWait && c.timeline.paused && self.wait.is_none() {
            self.note_remote_wait(now, true);
        } else if !c.timeline.paused || !matches!(c.reason, ChangeReason::Seek | ChangeReason::Rate) {
            // Anything but a seek or a rate change while paused ends it (a switch, a play, a pause, the resume).
            self.note_remote_wait(now, false);
        }
        let change = Change { timeline: c.timeline, effective_at_us: c.effective_at_us };
        // Members see who made it, on whichever node (member ids are the room's).
        self.to(Audience::All, ServerMsg::TimelineChanged(change.message(c.by, c.reason)));
        if c.effective_at_us <= now {
            self.current = c.timeline;
            self.pending = None;
            // The change is its own tick (see `issue`).
            self.next_tick_at = now + self.tick_interval_us();
        } else {
            self.pending = Some((change, c.by, c.reason));
        }
        self.sync_live(false);
        self.note_latency_move(now, latency_before);
    }

    /// Promotes a due scheduled change and ticks at once when it takes effect.
    pub(super) fn advance(&mut self, now: u64) {
        if let Some((c, ..)) = self.pending
            && c.effective_at_us <= now
        {
            self.current = c.timeline;
            self.pending = None;
            self.emit_tick(now.max(c.effective_at_us));
        }
    }

    /// How far ahead play and pause are scheduled: the configured lead (grown
    /// to the members' round trips, [`Room::network_lead_us`]), plus
    /// 12 µs per viewer beyond 1,000 (a fan-out costs about that per viewer
    /// on one core, BENCHMARKS.md), plus 20 µs more per datagram member
    /// beyond 1,000 on this node, so that in a large room the change still
    /// reaches the last viewer before it takes effect: 208 ms at 10,000
    /// WebSocket viewers with the default 100 ms, 388 ms at 10,000 over
    /// WebTransport.
    pub fn lead_us(&self) -> u64 {
        self.network_lead_us()
            + u64::from(self.viewers().saturating_sub(1_000)) * LEAD_PER_VIEWER_US
            + u64::from(self.datagram_members.saturating_sub(1_000)) * LEAD_PER_DATAGRAM_VIEWER_US
    }

    /// Interval between periodic ticks: the configured one up to 2,500
    /// viewers, then growing with the room to 4× at 10,000 (ticks are
    /// snapshots for drift checks; in a large room they are most of the
    /// traffic, and the clock estimate does not depend on them).
    pub fn tick_interval_us(&self) -> u64 {
        self.cfg.tick_interval_us * (u64::from(self.viewers()) / 2_500).clamp(1, 4)
    }

    pub(super) fn emit_tick(&mut self, now: u64) {
        let tick = Tick::new(&self.current, now, self.viewers());
        self.to(Audience::All, ServerMsg::Tick(tick));
        self.next_tick_at = now + self.tick_interval_us();
    }

    /// Queues an `Ack` if the member wants them and the command has a
    /// request id. `bound`: dropped with the change it rests on (see
    /// `authority.rs`).
    pub(super) fn ack(&mut self, to: MemberId, request_id: u32, outcome: AckOutcome, epoch: u32, bound: bool) {
        if request_id == 0 || !self.members.get(&to).is_some_and(|m| m.wants_acks) {
            return;
        }
        let msg = ServerMsg::Ack(lockstep_protocol::Ack { request_id, outcome, epoch });
        self.out.push_back(Queued { out: super::Output { to: Audience::One(to), msg }, bound });
    }

    /// Answers the commands a command replaced while held.
    pub(super) fn answer_coalesced(&mut self, coalesced: &[(MemberId, u32)], epoch: u32, bound: bool) {
        for &(to, request_id) in coalesced {
            self.ack(to, request_id, AckOutcome::Coalesced, epoch, bound);
        }
    }

    pub(super) fn answer_error(&mut self, to: MemberId, request_id: u32, e: &CommandError) {
        self.to(Audience::One(to), ServerMsg::Error(ErrorMsg::new(e.code(), e.to_string(), request_id)));
    }
}
