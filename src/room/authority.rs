//! The commit protocol: every timeline change the room makes is committed to
//! an authority before anyone hears of it, without the runtime ever awaiting
//! it inside the room (sans-IO: the request is polled, the answer comes back
//! as an event).
//!
//! With several nodes the authority is the room's record in Redis, changed by
//! compare-and-set on its epoch (`crate::cluster`); a single node commits
//! every request at once ([`CommitResult::Committed`] in the same step), so
//! there is one path.
//!
//! Rules:
//! - A change the room makes (member command, buffering wait, resume) is
//!   applied at once to the room's state but stays **uncommitted**, with a
//!   checkpoint of the state before it (current, pending, epoch, wait) and the
//!   member commands whose outcome rests on it: the one that made it and the
//!   ones answered `Unchanged` on top of it.
//! - **Output from the first uncommitted change onward is staged**:
//!   [`Room::poll_output`] returns only what was queued before it.
//! - [`Room::poll_commit`] hands out the oldest uncommitted change, once; one
//!   request is in flight at a time, `expected` being the epoch the authority
//!   last confirmed.
//! - [`Room::on_commit`]: `Committed` confirms it and releases its output (up
//!   to the next uncommitted change). `Conflict(winner)` and `Failed` **roll
//!   back** to its checkpoint: this and every later uncommitted change is
//!   discarded, and so is their staged `TimelineChanged`, `Tick` and `Ack`
//!   output (other staged output is kept: member events, counts, errors,
//!   role and policy `Ack`s with their epoch set to the restored one, and
//!   `Welcome`s of members who joined meanwhile, patched to the restored
//!   timeline and followed by its pending change). Then, on `Conflict`, the
//!   winner is applied as a change made elsewhere and each discarded member
//!   command is retried once on the new state (a second loss is answered
//!   `Error(Internal, CONFLICT)`); on `Failed` the room stays on the
//!   confirmed timeline silently and the discarded member commands get
//!   `Error(Internal, UNREACHABLE)`. Discarded changes the room made itself
//!   are not retried (a buffering wait or resume that could not be committed
//!   leaves the room on the confirmed timeline; members can play again).
//! - [`Room::apply_external`] (a change committed by another node, by
//!   pub/sub, possibly before or after this node's own commit reply, and also
//!   this node's own publications) is ignored unless newer (wrapping) than the
//!   confirmed epoch. With nothing uncommitted it applies at once. With a
//!   request in flight, the newest such change is kept until the reply: after
//!   `Committed`, one newer than the new confirmed epoch means the remaining
//!   uncommitted changes lost (handled as a `Conflict` with it); after a
//!   `Conflict` or `Failed`, it is applied if newer than the winner (a
//!   `Failed` request that did commit is adopted that way). With changes
//!   uncommitted but none in flight, they cannot commit over it: it is
//!   handled as a `Conflict` at once.
//! - [`Room::confirm`] sets the authority's record (after loading it, at start
//!   or when the authority is reachable again).

use std::collections::VecDeque;

use lockstep_protocol::{ErrorCode, ServerMsg, TimelineChanged};

use super::timeline::{Checkpoint, Cmd};
use super::{Queued, Room};

/// Answer to a command whose change lost a race twice.
pub(crate) const CONFLICT: &str = "the timeline changed on another node at the same time; try again";
/// Answer to a command whose change could not be committed.
pub(crate) const UNREACHABLE: &str = "the shared state (Redis) is unreachable; try again shortly";

/// Whether epoch `a` is newer than `b` (wrapping).
pub(crate) fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A change for the authority to commit: compare-and-set from `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRequest {
    /// The epoch the authority last confirmed (the change's predecessor).
    pub expected: u32,
    /// The change.
    pub change: TimelineChanged,
}

/// The authority's answer to a [`CommitRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum CommitResult {
    /// Committed (and published to the other nodes).
    Committed,
    /// The authority holds another change (its record): another node won.
    Conflict(TimelineChanged),
    /// The authority could not be reached; nothing is known to be committed.
    Failed,
}

#[derive(Debug)]
struct Uncommitted {
    change: TimelineChanged,
    checkpoint: Checkpoint,
    /// Sequence number of its `TimelineChanged` output.
    seq: u64,
    /// Member commands to retry if it is discarded, in arrival order.
    cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(super) struct Authority {
    /// The epoch the authority last confirmed.
    confirmed: u32,
    uncommitted: VecDeque<Uncommitted>,
    /// Whether the oldest uncommitted change was handed out.
    in_flight: bool,
    /// The newest change made elsewhere that arrived while a request was in flight.
    external: Option<TimelineChanged>,
}

impl Authority {
    pub(super) fn new(confirmed: u32) -> Self {
        Authority { confirmed, uncommitted: VecDeque::new(), in_flight: false, external: None }
    }

    /// Output from this sequence number on is staged.
    pub(super) fn staged_from(&self) -> Option<u64> {
        self.uncommitted.front().map(|u| u.seq)
    }

    pub(super) fn record(&mut self, change: TimelineChanged, checkpoint: Checkpoint, seq: u64, cmd: Option<Cmd>) {
        self.uncommitted.push_back(Uncommitted { change, checkpoint, seq, cmds: cmd.into_iter().collect() });
    }

    /// A command answered `Unchanged` on the current (maybe uncommitted) state.
    pub(super) fn follow(&mut self, cmd: Cmd) {
        if let Some(last) = self.uncommitted.back_mut() {
            last.cmds.push(cmd);
        }
    }
}

impl Room {
    /// The oldest uncommitted change, for the authority; `None` while a
    /// request is in flight or nothing is uncommitted. Answer with
    /// [`Room::on_commit`].
    pub fn poll_commit(&mut self) -> Option<CommitRequest> {
        if self.auth.in_flight {
            return None;
        }
        let u = self.auth.uncommitted.front()?;
        self.auth.in_flight = true;
        Some(CommitRequest { expected: self.auth.confirmed, change: u.change.clone() })
    }

    /// The authority's answer to the request in flight (see the module docs).
    pub fn on_commit(&mut self, now: u64, result: CommitResult) {
        self.advance(now);
        if !std::mem::take(&mut self.auth.in_flight) {
            return;
        }
        match result {
            CommitResult::Committed => {
                let done = self.auth.uncommitted.pop_front().expect("a request in flight");
                self.auth.confirmed = done.change.timeline.epoch;
                if let Some(ext) = self.auth.external.take()
                    && newer(ext.timeline.epoch, self.auth.confirmed)
                {
                    if self.auth.uncommitted.is_empty() {
                        self.adopt(now, ext);
                    } else {
                        self.lose(now, Some(ext));
                    }
                }
            }
            CommitResult::Conflict(winner) => self.lose(now, Some(winner)),
            CommitResult::Failed => self.lose(now, None),
        }
    }

    /// A change committed by another node (or this node's own publication).
    pub fn apply_external(&mut self, now: u64, change: TimelineChanged) {
        self.advance(now);
        if !newer(change.timeline.epoch, self.auth.confirmed) {
            return;
        }
        if self.auth.uncommitted.is_empty() {
            self.adopt(now, change);
        } else if self.auth.in_flight {
            if self.auth.external.as_ref().is_none_or(|e| newer(change.timeline.epoch, e.timeline.epoch)) {
                self.auth.external = Some(change);
            }
        } else {
            self.lose(now, Some(change));
        }
    }

    /// The authority holds `change` (loaded at start, or again after it was
    /// unreachable). With nothing uncommitted, the room adopts it if it
    /// differs from its own latest change; otherwise as [`Room::apply_external`].
    ///
    /// A record older than the epoch the room last confirmed means the
    /// authority lost committed changes (Redis restarted empty, or a replica
    /// that was behind took over): the room keeps its timeline (it never goes
    /// back), and the node writes it forward (see [`Room::confirmed_change`]).
    pub fn confirm(&mut self, now: u64, change: TimelineChanged) {
        self.advance(now);
        if !self.auth.uncommitted.is_empty() {
            return self.apply_external(now, change);
        }
        if newer(self.auth.confirmed, change.timeline.epoch) {
            return;
        }
        let ours = self.pending.map(|(c, ..)| c.timeline).unwrap_or(self.current);
        if change.timeline != ours {
            self.set_change(now, change);
        }
        self.auth.confirmed = self.epoch;
    }

    /// The newest change the authority confirmed, a scheduled one included,
    /// as its record would hold it: what a node offers when it loads the
    /// record again, to be written forward if the record fell behind.
    pub fn confirmed_change(&self) -> TimelineChanged {
        let (current, pending) = match self.auth.uncommitted.front() {
            Some(u) => (u.checkpoint.current, u.checkpoint.pending),
            None => (self.current, self.pending),
        };
        match pending {
            Some((c, by, reason)) => c.message(by, reason),
            None => TimelineChanged {
                timeline: current,
                effective_at_us: current.anchor_us,
                by: 0,
                reason: lockstep_protocol::ChangeReason::Seek,
            },
        }
    }

    /// The epoch the authority last confirmed.
    pub fn confirmed_epoch(&self) -> u32 {
        self.auth.confirmed
    }

    /// Whether every change the room made is committed.
    pub fn is_committed(&self) -> bool {
        self.auth.uncommitted.is_empty()
    }

    fn adopt(&mut self, now: u64, change: TimelineChanged) {
        self.auth.confirmed = change.timeline.epoch;
        // Another node's member spent it: the budget is the room's, not the node's.
        self.budget.take(now);
        self.set_change(now, change);
    }

    /// The uncommitted changes lost to `winner` (`None`: the authority is
    /// unreachable): roll back, adopt the newest change known to be
    /// committed, and retry or answer the discarded commands.
    fn lose(&mut self, now: u64, winner: Option<TimelineChanged>) {
        let failed = winner.is_none();
        let cmds = self.rollback(now);
        let mut newest = winner;
        if let Some(ext) = self.auth.external.take()
            && newest.as_ref().is_none_or(|w| newer(ext.timeline.epoch, w.timeline.epoch))
        {
            newest = Some(ext);
        }
        if let Some(c) = newest
            && newer(c.timeline.epoch, self.auth.confirmed)
        {
            self.adopt(now, c);
        }
        for mut cmd in cmds {
            let why = match (failed, cmd.attempt) {
                (true, _) => UNREACHABLE,
                (false, 0) => {
                    cmd.attempt = 1;
                    let _ = self.run_cmd(now, cmd);
                    continue;
                }
                (false, _) => CONFLICT,
            };
            if self.members.contains_key(&cmd.by) {
                self.refuse(cmd.by, cmd.request_id, ErrorCode::Internal, why);
            }
            self.answer_coalesced(&cmd.coalesced, self.epoch, false);
        }
    }

    /// Restores the checkpoint of the oldest uncommitted change, discards it
    /// and every later one with their staged timeline output, and returns the
    /// member commands they rested on.
    fn rollback(&mut self, now: u64) -> Vec<Cmd> {
        self.auth.in_flight = false;
        let Some(first) = self.auth.uncommitted.front() else { return Vec::new() };
        let cp = first.checkpoint.clone();
        let from = (first.seq - self.out_seq) as usize;
        let cmds = self.auth.uncommitted.drain(..).flat_map(|u| u.cmds).collect();
        self.current = cp.current;
        self.pending = cp.pending;
        self.epoch = cp.epoch;
        self.wait = cp.wait;
        self.remote_wait = cp.remote_wait;
        let staged: Vec<Queued> = self.out.drain(from..).collect();
        for mut q in staged {
            match &mut q.out.msg {
                ServerMsg::TimelineChanged(_) | ServerMsg::Tick(_) | ServerMsg::LiveState(_) => continue,
                ServerMsg::Ack(_) if q.bound => continue,
                ServerMsg::Ack(a) => a.epoch = cp.epoch,
                ServerMsg::Welcome(w) => {
                    w.timeline = self.current;
                    let to = q.out.to;
                    self.out.push_back(q);
                    if let Some((c, by, reason)) = self.pending {
                        self.to(to, ServerMsg::TimelineChanged(c.message(by, reason)));
                    }
                    continue;
                }
                _ => {}
            }
            self.out.push_back(q);
        }
        self.advance(now);
        // Live members may have been told of a discarded change: tell them again.
        self.sync_live(true);
        cmds
    }
}
