//! The room's budget of timeline changes: a token bucket (`changes_per_sec`,
//! burst as many) refilled with the time passed in.
//!
//! Rules:
//! - A member command that would change the timeline runs if a token is left
//!   and nothing is held; it spends one token. A command that changes
//!   nothing (a `Play` while playing) is answered `Unchanged` at once.
//! - Otherwise it is **held**, one per kind (play and pause are one kind,
//!   seek and rate the others). A later command of the same kind replaces the
//!   held one and takes over its list of replaced commands.
//! - Held commands run in arrival order as tokens come back
//!   ([`Room::poll_timeout`] includes the next token's time while anything is
//!   held; [`Room::handle_timeout`] and every command run them). Role and
//!   permission checks are made on arrival and again when they run.
//! - **Replaced commands are answered when the command that replaced them
//!   runs**: `Ack { Coalesced, epoch }` with the epoch of its change, or the
//!   epoch in effect if it changed nothing or failed (SPEC §6.3; the client
//!   then already holds that epoch).
//! - Held commands of a member that leaves are dropped (what they replaced
//!   is answered `Coalesced` at once, with the epoch in effect).
//! - Changes the room makes itself (buffering wait, resume) and retries
//!   after a lost race spend no token. A change made on another node spends
//!   one if any is left (it is never held), so with several nodes the
//!   budget stays about the room's, not each node's.

use super::timeline::{Cmd, kind};
use super::{MemberId, Room};

/// One token, in millionths (the bucket refills `rate` millionths per µs).
const TOKEN: u64 = 1_000_000;

#[derive(Debug)]
pub(super) struct Budget {
    /// Changes per second; 0: unlimited.
    rate: u32,
    /// Tokens left, in millionths.
    tokens: u64,
    /// When `tokens` was last refilled.
    at: u64,
    /// Held commands, in arrival order, at most one per kind.
    held: Vec<Cmd>,
}

impl Budget {
    pub(super) fn new(rate: u32, now: u64) -> Self {
        Budget { rate, tokens: u64::from(rate) * TOKEN, at: now, held: Vec::new() }
    }

    fn refill(&mut self, now: u64) {
        if now > self.at {
            let cap = u64::from(self.rate) * TOKEN;
            self.tokens = self.tokens.saturating_add((now - self.at).saturating_mul(u64::from(self.rate))).min(cap);
            self.at = now;
        }
    }

    fn has_token(&mut self, now: u64) -> bool {
        self.refill(now);
        self.rate == 0 || self.tokens >= TOKEN
    }

    /// Whether a new change may run now (a token is left and nothing is held).
    pub(super) fn may_run(&mut self, now: u64) -> bool {
        self.held.is_empty() && self.has_token(now)
    }

    /// Spends a token.
    pub(super) fn take(&mut self, now: u64) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(TOKEN);
    }

    /// Whether a command of kind `k` is held.
    pub(super) fn holds(&self, k: u8) -> bool {
        self.held.iter().any(|c| kind(&c.action) == k)
    }

    /// When the oldest held command may run.
    pub(super) fn next_run_at(&self) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        if self.rate == 0 || self.tokens >= TOKEN {
            return Some(self.at);
        }
        let rate = u64::from(self.rate);
        Some(self.at + (TOKEN - self.tokens).div_ceil(rate))
    }

    /// The oldest held command, if a token allows it to run now.
    fn pop_ready(&mut self, now: u64) -> Option<Cmd> {
        if self.held.is_empty() || !self.has_token(now) {
            return None;
        }
        Some(self.held.remove(0))
    }
}

impl Room {
    /// Holds `cmd`; a held command of the same kind is replaced by it.
    pub(super) fn hold(&mut self, mut cmd: Cmd) {
        let k = kind(&cmd.action);
        if let Some(i) = self.budget.held.iter().position(|c| kind(&c.action) == k) {
            let old = self.budget.held.remove(i);
            cmd.coalesced = old.coalesced;
            cmd.coalesced.push((old.by, old.request_id));
        }
        self.budget.held.push(cmd);
    }

    /// Runs the held commands that tokens allow.
    pub(super) fn run_held(&mut self, now: u64) {
        while let Some(cmd) = self.budget.pop_ready(now) {
            let _ = self.run_cmd(now, cmd);
        }
    }

    /// Drops the held commands of a member that left.
    pub(super) fn drop_held(&mut self, id: MemberId) {
        let (gone, kept): (Vec<Cmd>, Vec<Cmd>) =
            std::mem::take(&mut self.budget.held).into_iter().partition(|c| c.by == id);
        self.budget.held = kept;
        for cmd in gone {
            self.answer_coalesced(&cmd.coalesced, self.epoch, false);
        }
    }

    /// Member commands held by the budget.
    pub fn held_commands(&self) -> usize {
        self.budget.held.len()
    }
}
