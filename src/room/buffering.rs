//! Reports, the buffering wait and the resume.

use std::collections::BTreeSet;

use lockstep_protocol::{ChangeReason, Report, Timeline};

use super::{BufferingPolicy, MemberId, Room};

/// A buffering wait: the room paused for stalled members.
#[derive(Debug, Clone)]
pub(super) struct Wait {
    pub(super) deadline: u64,
    pub(super) members: BTreeSet<MemberId>,
}

impl Room {
    /// Records a member's report; by policy, a new stall may start a wait and a
    /// recovery may end one. The reported position never moves the timeline.
    pub fn report(&mut self, now: u64, id: MemberId, report: Report) {
        self.advance(now);
        let in_wait = self.wait.as_ref().is_some_and(|w| w.members.contains(&id));
        let cooldown = self.cfg.buffering_cooldown_us;
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        let was = m.buffering;
        m.buffering = report.buffering;
        m.last_report = Some((now, report));
        if !report.buffering {
            m.settled = true;
            if was {
                if in_wait {
                    // A member whose network flaps must not make the room
                    // stutter: after a wait it caused, it catches up alone
                    // for a while, however the wait ended.
                    m.no_wait_until = now + cooldown;
                }
                self.unblock(now, id);
            }
            return;
        }
        let may_wait = m.settled && now >= m.no_wait_until;
        if was
            || !may_wait
            || self.cfg.buffering != BufferingPolicy::Wait
            || self.intended().paused && self.wait.is_none()
        {
            return;
        }
        if let Some(w) = &mut self.wait {
            w.members.insert(id);
            return;
        }
        let lead_at = (now + self.lead_us()).max(self.intended().anchor_us);
        let intended = self.intended();
        let (position_ms, at) = intended.whole_ms_point(lead_at);
        let t = Timeline { position_ms, anchor_us: at, paused: true, ..intended };
        self.issue(now, t, at, id, ChangeReason::BufferingWait, None);
        self.wait = Some(Wait { deadline: now + self.cfg.buffering_wait_max_us, members: BTreeSet::from([id]) });
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
