//! Reports, suspensions, the wait and the resume (SPEC §6.4).
//!
//! A member is stalled for a reason while it reports buffering (`buffering`)
//! or has suspended itself (`Suspend { reason }`; the suspension's reason
//! wins). Whether its stall makes the room wait is the server's policy: the
//! reason must be one of `wait_reasons`, the buffering policy `Wait`, and the
//! room no larger than `wait_max_members`. A wait starts on the transition
//! into such a stall only (a member stalled for a long time does not pause
//! the room again and again), ends when its last member recovers or at its
//! deadline, and a member whose stall outlived it catches up alone.
//!
//! Scaled out, each node shares its members' stalls (`Shared::Stall`): every
//! node lists every member that does not follow, the node whose wait paused
//! the room waits for the other nodes' members that stall meanwhile too, and
//! a node that sees the room paused by another node's wait resumes it itself
//! if that node has not by the wait's deadline (and a second): a wait never
//! outlives the node that started it.

use std::collections::BTreeSet;

use lockstep_protocol::{ChangeReason, Report, Timeline};
use serde::Serialize;

use super::{BufferingPolicy, MemberId, Room, Shared};

/// How long after a wait's deadline a node other than the one that started
/// it resumes the room itself, µs (that node normally has by then).
const REMOTE_WAIT_GRACE_US: u64 = 1_000_000;

/// A wait: the room paused for stalled members.
#[derive(Debug, Clone)]
pub(super) struct Wait {
    pub(super) deadline: u64,
    pub(super) members: BTreeSet<MemberId>,
}

/// Which suspension reasons make a room wait (`--wait-reasons`): names of
/// `lockstep_protocol::SUSPEND_REASONS` (never `notFollowing`),
/// `custom:<name>`, or `custom:*` for every custom reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReasons {
    names: BTreeSet<String>,
    any_custom: bool,
}

impl Default for WaitReasons {
    /// `buffering` only.
    fn default() -> Self {
        WaitReasons { names: BTreeSet::from(["buffering".to_owned()]), any_custom: false }
    }
}

impl std::str::FromStr for WaitReasons {
    type Err = String;

    /// A comma-separated list; empty: no reason makes the room wait.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut r = WaitReasons { names: BTreeSet::new(), any_custom: false };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "custom:*" {
                r.any_custom = true;
            } else if name == "notFollowing" {
                return Err("notFollowing never makes a room wait".into());
            } else if lockstep_protocol::valid_suspend_reason(name) {
                r.names.insert(name.to_owned());
            } else {
                return Err(format!(
                    "{name:?} is not a suspension reason (buffering, seeking, interstitial, userActionRequired, \
                     custom:<name>, custom:*)"
                ));
            }
        }
        Ok(r)
    }
}

impl std::fmt::Display for WaitReasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut all: Vec<&str> = self.names.iter().map(String::as_str).collect();
        if self.any_custom {
            all.push("custom:*");
        }
        f.write_str(&all.join(","))
    }
}

impl WaitReasons {
    /// Whether a stall for `reason` makes the room wait.
    pub fn waits_for(&self, reason: &str) -> bool {
        self.names.contains(reason) || self.any_custom && reason.starts_with("custom:")
    }
}

/// A suspended (or buffering) member, as the state API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspended {
    /// The member.
    pub member_id: MemberId,
    /// Its display name.
    pub name: String,
    /// Why it does not follow the room.
    pub reason: String,
    /// For how long, ms.
    pub for_ms: u64,
}

impl Room {
    /// Records a member's report; by policy, a new stall may start a wait and a
    /// recovery may end one. The reported position never moves the timeline.
    pub fn report(&mut self, now: u64, id: MemberId, report: Report) {
        self.advance(now);
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.buffering = report.buffering;
        m.last_report = Some((now, report));
        if !report.buffering && m.suspension.is_none() {
            m.settled = true;
        }
        self.restall(now, id);
    }

    /// A member suspends itself for `reason` (`Some`, already checked with
    /// `lockstep_protocol::valid_suspend_reason`) or follows again (`None`).
    pub fn suspend(&mut self, now: u64, id: MemberId, reason: Option<String>) {
        self.advance(now);
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.suspension = reason;
        self.restall(now, id);
    }

    /// Why member `id` does not follow the room, if it does not.
    fn stall_reason(&self, id: MemberId) -> Option<&str> {
        let m = self.members.get(&id)?;
        m.suspension.as_deref().or(m.buffering.then_some("buffering"))
    }

    /// Whether a stall for `reason` makes this room wait now.
    fn waits_for(&self, reason: &str) -> bool {
        self.cfg.buffering == BufferingPolicy::Wait
            && self.cfg.wait_reasons.waits_for(reason)
            && self.viewers() <= self.cfg.wait_max_members
    }

    /// Re-evaluates member `id`'s stall after a report or a suspension.
    fn restall(&mut self, now: u64, id: MemberId) {
        let reason = self.stall_reason(id).map(str::to_owned);
        let blocking = reason.as_deref().is_some_and(|r| self.waits_for(r));
        let in_wait = self.wait.as_ref().is_some_and(|w| w.members.contains(&id));
        let cooldown = self.cfg.buffering_cooldown_us;
        let remote_wait = self.remote_wait.is_some();
        let paused_without_wait = self.intended().paused && self.wait.is_none() && !remote_wait;
        // Only a room small enough to wait shares its stalls (a premiere's viewers buffering on and off would
        // otherwise flood every node with them); an end is shared whatever the size.
        let small = self.viewers() <= self.cfg.wait_max_members;
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.stall.as_ref().map(|(r, _)| r) != reason.as_ref() {
            m.stall = reason.clone().map(|r| (r, now));
        }
        let was = std::mem::replace(&mut m.blocking, blocking);
        let may_wait = m.settled && now >= m.no_wait_until;
        // What the other nodes learn: why it stalls, and whether it holds a wait (the one it is in, or one it may
        // start or join).
        let shared = (reason, blocking && (in_wait || may_wait));
        if m.shared_stall != shared && (small || m.shared_stall.0.is_some()) {
            m.shared_stall = shared.clone();
            self.share(|| Shared::Stall { id, reason: shared.0, holds: shared.1 });
        }
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if !blocking {
            if in_wait {
                // A member whose network flaps must not make the room
                // stutter: after a wait it caused, it catches up alone for a
                // while, however the wait ended.
                m.no_wait_until = now + cooldown;
                self.unblock(now, id);
            } else if was && remote_wait {
                // The same after holding another node's wait.
                m.no_wait_until = now + cooldown;
            }
            return;
        }
        if was || in_wait || !may_wait || paused_without_wait {
            return;
        }
        if let Some(w) = &mut self.wait {
            w.members.insert(id);
            return;
        }
        if remote_wait {
            // Another node's wait paused the room: that node waits for it (shared above).
            return;
        }
        let lead_at = (now + self.lead_us()).max(self.intended().anchor_us);
        let intended = self.intended();
        let (position_ms, at) = intended.whole_ms_point(lead_at);
        let t = Timeline { position_ms, anchor_us: at, paused: true, ..intended };
        self.issue(now, t, at, id, ChangeReason::BufferingWait, None);
        // The other nodes' members stalled already (their node's own wait may have lost the race to this one).
        let members = std::iter::once(id).chain(self.remote_holders()).collect();
        self.wait = Some(Wait { deadline: now + self.cfg.buffering_wait_max_us, members });
    }

    /// The members that do not follow the room, and why (scaled out, the
    /// other nodes' too: since this node learned it), by id.
    pub fn suspended(&self, now: u64) -> Vec<Suspended> {
        let local = self
            .members
            .iter()
            .filter_map(|(&id, m)| m.stall.as_ref().map(|(r, since)| (id, m.name.as_str(), r.as_str(), *since)));
        let mut all: Vec<Suspended> = local
            .chain(self.remote_stalls())
            .map(|(member_id, name, reason, since)| Suspended {
                member_id,
                name: name.to_owned(),
                reason: reason.to_owned(),
                for_ms: now.saturating_sub(since) / 1_000,
            })
            .collect();
        all.sort_by_key(|s| s.member_id);
        all
    }

    /// Scale-out: another node's member `id` stalled or follows again; as one
    /// of this node's, it joins or leaves this node's wait.
    pub(super) fn remote_stall(&mut self, now: u64, id: MemberId, reason: Option<String>, holds: bool) {
        if !self.set_remote_stall(now, id, reason, holds) {
            return;
        }
        match &mut self.wait {
            Some(w) if holds => {
                w.members.insert(id);
            }
            Some(w) if w.members.contains(&id) => self.unblock(now, id),
            _ => {}
        }
    }

    /// A wait another node started paused the room at `now` (`started`), or
    /// the room is no longer paused by one: the members still stalled in it
    /// catch up alone for the cool-down, as after a wait of this node's.
    pub(super) fn note_remote_wait(&mut self, now: u64, started: bool) {
        if started {
            self.remote_wait = Some(now + self.cfg.buffering_wait_max_us + REMOTE_WAIT_GRACE_US);
            return;
        }
        if self.remote_wait.take().is_some() {
            let until = now + self.cfg.buffering_cooldown_us;
            for m in self.members.values_mut().filter(|m| m.blocking) {
                m.no_wait_until = until;
            }
        }
    }

    /// Ends a wait another node started that outlived its deadline (that node
    /// is gone, or cut off): the room resumes.
    pub(super) fn remote_wait_deadline(&mut self, now: u64) {
        if self.remote_wait.is_some_and(|at| now >= at) {
            self.note_remote_wait(now, false);
            self.resume(now);
        }
    }

    /// A member stopped blocking the wait (recovered or left).
    pub(super) fn unblock(&mut self, now: u64, id: MemberId) {
        let Some(w) = &mut self.wait else { return };
        w.members.remove(&id);
        if w.members.is_empty() {
            self.wait = None;
            self.resume(now);
        }
    }

    /// Ends a wait that reached its deadline: the stalled members catch up alone.
    pub(super) fn wait_deadline(&mut self, now: u64) {
        if self.wait.as_ref().is_none_or(|w| now < w.deadline) {
            return;
        }
        let stalled = std::mem::take(&mut self.wait).map(|w| w.members).unwrap_or_default();
        for id in stalled {
            if let Some(m) = self.members.get_mut(&id) {
                m.no_wait_until = now + self.cfg.buffering_cooldown_us;
            }
        }
        self.resume(now);
    }

    fn resume(&mut self, now: u64) {
        let intended = self.intended();
        if !intended.paused {
            return;
        }
        let at = (now + self.lead_us()).max(intended.anchor_us);
        let t = self.off_live(Timeline { anchor_us: at, paused: false, ..intended });
        self.issue(now, t, at, 0, ChangeReason::Resume, None);
    }
}
