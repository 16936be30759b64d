//! Viewer counts: local members plus those on other nodes, coalesced (large
//! rooms coalesce harder).

use lockstep_protocol::{ServerMsg, ViewerCount};

use super::{Audience, Room};

impl Room {
    /// Number of viewers: members, plus those on other nodes (scale-out).
    pub fn viewers(&self) -> u32 {
        self.members.len() as u32 + self.remote_viewers
    }

    /// Members of this room on this node.
    pub fn local_viewers(&self) -> u32 {
        self.members.len() as u32
    }

    /// Sets the number of viewers on other nodes; the count output (still
    /// coalesced) carries the total.
    pub fn set_remote_viewers(&mut self, now: u64, n: u32) {
        if self.remote_viewers != n {
            self.remote_viewers = n;
            self.count_dirty = true;
            self.flush_count(now);
        }
    }

    pub(super) fn count_due(&self) -> u64 {
        match self.count_sent {
            None => 0,
            Some((at, _)) => {
                // Large rooms coalesce harder: 250 ms up to 2,500 viewers, then
                // growing to 1 s at 10,000.
                let scale = (u64::from(self.viewers()) / 2_500).clamp(1, 4);
                at + self.cfg.count_interval_us * scale
            }
        }
    }

    pub(super) fn flush_count(&mut self, now: u64) {
        if !self.count_dirty || now < self.count_due() {
            return;
        }
        self.count_dirty = false;
        let count = self.viewers();
        if self.count_sent.is_some_and(|(_, c)| c == count) {
            return;
        }
        self.count_sent = Some((now, count));
        self.to(Audience::All, ServerMsg::ViewerCount(ViewerCount { count }));
    }
}
