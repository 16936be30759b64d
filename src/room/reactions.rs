//! Reactions (SPEC §6.5): counted per emoji over a window and sent as one
//! `Reactions` message per member per window, so a 10,000-viewer room's
//! reaction storm costs O(members) per window, not O(members × reactions).
//! Each member may react 5 times a second (bursts of 10); beyond that its
//! reactions are dropped, so one member cannot decide the counts.
//!
//! Scale-out: a node shares its own members' counts of each window with the
//! other nodes serving the room ([`Shared::Reactions`]), which count them into
//! their next window; only local counts are shared, so nothing echoes.

use std::collections::BTreeMap;

use lockstep_protocol::limits::MAX_REACTION_KINDS;
use lockstep_protocol::{ReactionCount, Reactions, ServerMsg};

use super::{Audience, MemberId, Room, Shared};

/// How long reactions are gathered before they are sent.
pub const REACTION_WINDOW_US: u64 = 250_000;
/// A member's sustained reactions per second.
const REACTIONS_PER_SEC: u64 = 5;
/// A member's burst of reactions.
const REACTION_BURST: u64 = 10;

/// An allowance (a token bucket in simulated time): a member's reactions
/// or chat messages, a room's chat messages.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Allowance {
    /// When the bucket was last topped up (server µs).
    at: u64,
    /// What is allowed, in millionths of one.
    tokens: u64,
    started: bool,
}

impl Allowance {
    /// Takes one at `now` from a bucket of `burst` refilled at `per_sec`;
    /// `false` if it is empty (a full bucket to start with).
    pub(super) fn take(&mut self, now: u64, per_sec: u64, burst: u64) -> bool {
        const ONE: u64 = 1_000_000;
        if !self.started {
            *self = Allowance { at: now, tokens: burst * ONE, started: true };
        }
        self.tokens = (self.tokens + now.saturating_sub(self.at) * per_sec).min(burst * ONE);
        self.at = now;
        if self.tokens < ONE {
            return false;
        }
        self.tokens -= ONE;
        true
    }
}

/// The room's window of reactions.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// When it is sent (`None`: no reaction since the last one).
    due: Option<u64>,
    /// This node's members' reactions.
    counts: BTreeMap<String, u32>,
    /// Other nodes' (scale-out), counted in but not shared again.
    remote: BTreeMap<String, u32>,
}

fn add(counts: &mut BTreeMap<String, u32>, emoji: &str, n: u32) {
    match counts.get_mut(emoji) {
        Some(c) => *c = c.saturating_add(n),
        None => {
            counts.insert(emoji.to_owned(), n);
        }
    }
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
        if !m.reactions.take(now, REACTIONS_PER_SEC, REACTION_BURST) {
            return Reacted::RateLimited;
        }
        let w = &mut self.reactions;
        add(&mut w.counts, emoji, 1);
        w.due.get_or_insert(now + REACTION_WINDOW_US);
        Reacted::Counted
    }

    /// Scale-out: another node's window, counted into this node's next one
    /// (at most `MAX_REACTION_KINDS` kinds of valid emoji are taken).
    pub(super) fn remote_reactions(&mut self, now: u64, counts: Vec<(String, u32)>) {
        let w = &mut self.reactions;
        for (emoji, n) in counts.into_iter().take(MAX_REACTION_KINDS) {
            if n > 0 && lockstep_protocol::valid_emoji(&emoji) {
                add(&mut w.remote, &emoji, n);
                w.due.get_or_insert(now + REACTION_WINDOW_US);
            }
        }
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
        let local = std::mem::take(&mut self.reactions.counts);
        let mut all = std::mem::take(&mut self.reactions.remote);
        if self.id_base.is_some() && !local.is_empty() {
            let mut shared: Vec<(String, u32)> = local.iter().map(|(e, &n)| (e.clone(), n)).collect();
            shared.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            shared.truncate(MAX_REACTION_KINDS);
            self.shared.push(Shared::Reactions { counts: shared });
        }
        for (emoji, n) in local {
            add(&mut all, &emoji, n);
        }
        let mut counts: Vec<ReactionCount> =
            all.into_iter().map(|(emoji, count)| ReactionCount { emoji, count }).collect();
        counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
        counts.truncate(MAX_REACTION_KINDS);
        self.to(Audience::Reactions, ServerMsg::Reactions(Reactions { counts }));
    }
}
