//! Reactions (SPEC §6.5): counted per emoji over a window and sent as one
//! `Reactions` message per member per window, so a 10,000-viewer room's
//! reaction storm costs O(members) per window, not O(members × reactions).
//! Each member may react 5 times a second (bursts of 10); beyond that its
//! reactions are dropped, so one member cannot decide the counts.

use std::collections::BTreeMap;

use lockstep_protocol::limits::MAX_REACTION_KINDS;
use lockstep_protocol::{ReactionCount, Reactions, ServerMsg};

use super::{Audience, MemberId, Room};

/// How long reactions are gathered before they are sent.
pub const REACTION_WINDOW_US: u64 = 250_000;
/// A member's sustained reactions per second.
const REACTIONS_PER_SEC: u64 = 5;
/// A member's burst of reactions.
const REACTION_BURST: u64 = 10;

/// A member's reaction allowance (a token bucket in simulated time).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Allowance {
    /// When the bucket was last topped up (server µs).
    at: u64,
    /// Reactions allowed, in millionths of a reaction.
    tokens: u64,
    started: bool,
}

/// The room's window of reactions.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// When it is sent (`None`: no reaction since the last one).
    due: Option<u64>,
    counts: BTreeMap<String, u32>,
}

/// What became of a reaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reacted {
    /// Counted into the window.
    Counted,
    /// Beyond the member's allowance: dropped.
    RateLimited,
    /// Not a member (left meanwhile).
    NotMember,
}

impl Room {
    /// Counts member `id`'s reaction (`emoji` already checked with
    /// `lockstep_protocol::valid_emoji`) into the room's window.
    pub fn react(&mut self, now: u64, id: MemberId, emoji: &str) -> Reacted {
        let Some(m) = self.members.get_mut(&id) else {
            return Reacted::NotMember;
        };
        let a = &mut m.reactions;
        const ONE: u64 = 1_000_000;
        if !a.started {
            *a = Allowance { at: now, tokens: REACTION_BURST * ONE, started: true };
        }
        a.tokens = (a.tokens + now.saturating_sub(a.at) * REACTIONS_PER_SEC).min(REACTION_BURST * ONE);
        a.at = now;
        if a.tokens < ONE {
            return Reacted::RateLimited;
        }
        a.tokens -= ONE;
        let w = &mut self.reactions;
        match w.counts.get_mut(emoji) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                w.counts.insert(emoji.to_owned(), 1);
            }
        }
        w.due.get_or_insert(now + REACTION_WINDOW_US);
        Reacted::Counted
    }

    /// When the window is due, if reactions wait.
    pub(super) fn reactions_due(&self) -> Option<u64> {
        self.reactions.due
    }

    /// Sends the window's counts once it is due: the most frequent kinds
    /// first (ties by emoji), at most [`MAX_REACTION_KINDS`].
    pub(super) fn flush_reactions(&mut self, now: u64) {
        if self.reactions.due.is_none_or(|due| now < due) {
            return;
        }
        self.reactions.due = None;
        let mut counts: Vec<ReactionCount> = std::mem::take(&mut self.reactions.counts)
            .into_iter()
            .map(|(emoji, count)| ReactionCount { emoji, count })
            .collect();
        counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
        counts.truncate(MAX_REACTION_KINDS);
        self.to(Audience::Reactions, ServerMsg::Reactions(Reactions { counts }));
    }
}
