//! A room's mailbox: bounded, and never able to grow with the traffic.
//!
//! - **Commands** queue up to [`MAX_COMMANDS`]; beyond, a command is refused
//!   at once (the sender gets `RateLimited` for it), so a flood of senders
//!   cannot grow the queue. The room's change budget then coalesces what it
//!   takes (SPEC §6.3).
//! - **Reports** are latest-wins slots, one per member: 10,000 reports a
//!   second from a room's viewers hold at most one report per viewer.
//! - **Joins and leaves** are one per connection (the connection cap bounds
//!   them); **state queries** are bounded by [`MAX_QUERIES`].
//! - **Remote events** (the authority, other nodes) are bounded by
//!   [`MAX_REMOTE`]; an overflow drops them and asks the room to reload
//!   everything from the authority instead, which is what they would have
//!   told it. A commit answer and a load never overflow: at most one of each
//!   is ever outstanding.
//!
//! The room actor takes everything at once ([`Inbox::take`]) after a wake.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use lockstep_protocol::{Action, LiveReport, Report, SyncReport};
use tokio::sync::{Notify, oneshot};

use super::link::{Extra, Link};
use crate::authority::{Remote, RemoteSink};
use crate::room::{ChatRecord, ClockRequest, JoinInfo, MemberId, RoomState};

/// Most commands queued for a room.
pub(crate) const MAX_COMMANDS: usize = 1024;
/// Most state queries waiting.
pub(crate) const MAX_QUERIES: usize = 64;
/// Most reactions waiting for the room (beyond, they are dropped: the
/// room's window would count them into one message anyway).
pub(crate) const MAX_REACTIONS: usize = 4096;
/// Most chat messages waiting for the room (beyond, the sender is told the
/// room is busy; the room's own rate limit is far below).
pub(crate) const MAX_CHATS: usize = 1024;
/// Most remote events waiting.
pub(crate) const MAX_REMOTE: usize = 4096;

/// A member joining.
#[derive(Debug)]
pub(crate) struct Join {
    pub(crate) info: JoinInfo,
    pub(crate) link: Arc<dyn Link>,
    pub(crate) reply: oneshot::Sender<MemberId>,
}

/// A member's command.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) member: MemberId,
    pub(crate) request_id: u32,
    pub(crate) action: Action,
    /// Legacy JSON fields to pass through to the change it causes.
    pub(crate) extra: Option<Arc<Extra>>,
}

/// Everything the room was sent since it last looked.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) remote: VecDeque<Remote>,
    /// Set when remote events were dropped: reload from the authority.
    pub(crate) resync: bool,
    pub(crate) joins: Vec<Join>,
    pub(crate) commands: Vec<Command>,
    pub(crate) reports: HashMap<MemberId, Report>,
    /// Live rooms: each member's latest live report (latest wins).
    pub(crate) live_reports: HashMap<MemberId, LiveReport>,
    /// Each member's latest measured drift (latest wins).
    pub(crate) sync_reports: HashMap<MemberId, SyncReport>,
    /// Each member's latest measured round trip, µs (latest wins).
    pub(crate) rtts: HashMap<MemberId, u32>,
    /// Each member's latest suspension (`Some(reason)`) or resume (`None`).
    pub(crate) suspensions: HashMap<MemberId, Option<String>>,
    /// Reactions, in order (at most `MAX_REACTIONS`; each member's allowance
    /// is the room's to enforce).
    pub(crate) reactions: Vec<(MemberId, String)>,
    /// Media commands `(member, request id, op)`, in order (they count with
    /// the commands).
    pub(crate) media: Vec<(MemberId, u32, lockstep_protocol::MediaOp)>,
    /// Chat messages `(member, request id, text)`, in order (at most `MAX_CHATS`).
    pub(crate) chats: Vec<(MemberId, u32, String)>,
    pub(crate) leaves: Vec<MemberId>,
    pub(crate) queries: Vec<oneshot::Sender<RoomState>>,
    /// Chat history pages `(before, limit)` (they count with the queries).
    pub(crate) chat_pages: Vec<(Option<u64>, usize, oneshot::Sender<Vec<ChatRecord>>)>,
    /// Clock changes (`PUT …/clock`), answered with the room's state, or
    /// `None` when the shared state is unreachable.
    pub(crate) clocks: Vec<(ClockRequest, oneshot::Sender<Option<RoomState>>)>,
}

impl Taken {
    fn is_empty(&self) -> bool {
        self.remote.is_empty()
            && !self.resync
            && self.joins.is_empty()
            && self.commands.is_empty()
            && self.reports.is_empty()
            && self.live_reports.is_empty()
            && self.sync_reports.is_empty()
            && self.rtts.is_empty()
            && self.suspensions.is_empty()
            && self.reactions.is_empty()
            && self.chats.is_empty()
            && self.media.is_empty()
            && self.leaves.is_empty()
            && self.queries.is_empty()
            && self.chat_pages.is_empty()
            && self.clocks.is_empty()
    }
}

#[derive(Debug, Default)]
struct State {
    queued: Taken,
    peaks: Peaks,
    /// Remote events only (the room has not loaded yet: the rest waits).
    loading: bool,
    closed: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    notify: Notify,
}

/// The most of each kind the room ever took at once: what its mailbox held
/// at its fullest (`GET /api/live-stream/{id}/state` shows them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Peaks {
    pub(crate) commands: usize,
    pub(crate) reports: usize,
    pub(crate) remote: usize,
}

impl Inbox {
    /// A mailbox whose room is loading: until [`Inbox::loaded`], only
    /// remote events are taken.
    pub(crate) fn loading() -> Self {
        Inbox { state: Mutex::new(State { loading: true, ..State::default() }), ..Inbox::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues with `f` unless the room has closed; wakes the room.
    fn put(&self, f: impl FnOnce(&mut Taken) -> bool) -> bool {
        let mut g = self.lock();
        if g.closed || !f(&mut g.queued) {
            return false;
        }
        drop(g);
        self.notify.notify_one();
        true
    }

    pub(crate) fn join(&self, join: Join) -> bool {
        self.put(|q| {
            q.joins.push(join);
            true
        })
    }

    /// `false` if the room is gone or its command queue is full.
    pub(crate) fn command(&self, cmd: Command) -> bool {
        self.put(|q| {
            if q.commands.len() >= MAX_COMMANDS {
                return false;
            }
            q.commands.push(cmd);
            true
        })
    }

    pub(crate) fn report(&self, member: MemberId, report: Report) {
        self.put(|q| {
            q.reports.insert(member, report);
            true
        });
    }

    /// A live report: one latest-wins slot per member, like reports.
    pub(crate) fn live_report(&self, member: MemberId, report: LiveReport) {
        self.put(|q| {
            q.live_reports.insert(member, report);
            true
        });
    }

    /// A measured drift: one latest-wins slot per member, like reports.
    pub(crate) fn sync_report(&self, member: MemberId, report: SyncReport) {
        self.put(|q| {
            q.sync_reports.insert(member, report);
            true
        });
    }

    /// A measured round trip: one latest-wins slot per member.
    pub(crate) fn rtt(&self, member: MemberId, rtt_us: u32) {
        self.put(|q| {
            q.rtts.insert(member, rtt_us);
            true
        });
    }

    /// A suspension or a resume: one latest-wins slot per member.
    pub(crate) fn suspend(&self, member: MemberId, reason: Option<String>) {
        self.put(|q| {
            q.suspensions.insert(member, reason);
            true
        });
    }

    /// A reaction; `false` (dropped) while `MAX_REACTIONS` wait already.
    pub(crate) fn react(&self, member: MemberId, emoji: String) -> bool {
        self.put(|q| {
            if q.reactions.len() >= MAX_REACTIONS {
                return false;
            }
            q.reactions.push((member, emoji));
            true
        })
    }

    /// A media command; `false` if the command queue is full.
    pub(crate) fn media(&self, member: MemberId, request_id: u32, op: lockstep_protocol::MediaOp) -> bool {
        self.put(|q| {
            if q.commands.len() + q.media.len() >= MAX_COMMANDS {
                return false;
            }
            q.media.push((member, request_id, op));
            true
        })
    }

    /// A chat message; `false` while `MAX_CHATS` wait already.
    pub(crate) fn chat(&self, member: MemberId, request_id: u32, text: String) -> bool {
        self.put(|q| {
            if q.chats.len() >= MAX_CHATS {
                return false;
            }
            q.chats.push((member, request_id, text));
            true
        })
    }

    pub(crate) fn leave(&self, member: MemberId) {
        self.put(|q| {
            q.leaves.push(member);
            true
        });
    }

    /// A clock change; `false` if the room is gone or too many are waiting
    /// (they count with the state queries).
    pub(crate) fn set_clock(&self, req: ClockRequest, reply: oneshot::Sender<Option<RoomState>>) -> bool {
        self.put(|q| {
            if q.queries.len() + q.clocks.len() >= MAX_QUERIES {
                return false;
            }
            q.clocks.push((req, reply));
            true
        })
    }

    /// A page of the room's chat history; `false` if the room is gone or
    /// too many queries are waiting.
    pub(crate) fn chat_page(&self, before: Option<u64>, limit: usize, reply: oneshot::Sender<Vec<ChatRecord>>) -> bool {
        self.put(|q| {
            if q.queries.len() + q.chat_pages.len() >= MAX_QUERIES {
                return false;
            }
            q.chat_pages.push((before, limit, reply));
            true
        })
    }

    pub(crate) fn query(&self, reply: oneshot::Sender<RoomState>) -> bool {
        self.put(|q| {
            if q.queries.len() >= MAX_QUERIES {
                return false;
            }
            q.queries.push(reply);
            true
        })
    }

    /// Waits until something was queued (or [`Inbox::wake`] was called).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Takes everything queued (only remote events while loading).
    pub(crate) fn take(&self) -> Taken {
        let mut g = self.lock();
        let taken = if g.loading {
            let remote = std::mem::take(&mut g.queued.remote);
            let resync = std::mem::take(&mut g.queued.resync);
            Taken { remote, resync, ..Taken::default() }
        } else {
            std::mem::take(&mut g.queued)
        };
        let p = &mut g.peaks;
        p.commands = p.commands.max(taken.commands.len());
        p.reports = p.reports.max(taken.reports.len()).max(taken.live_reports.len()).max(taken.sync_reports.len());
        p.remote = p.remote.max(taken.remote.len());
        taken
    }

    /// The mailbox's high-water marks so far.
    pub(crate) fn peaks(&self) -> Peaks {
        self.lock().peaks
    }

    /// The room has loaded: everything is taken from now on.
    pub(crate) fn loaded(&self) {
        self.lock().loading = false;
        self.notify.notify_one();
    }

    /// Closes the mailbox if nothing is queued: later sends fail. Returns
    /// whether it closed.
    pub(crate) fn close_if_empty(&self) -> bool {
        let mut g = self.lock();
        if !g.queued.is_empty() {
            return false;
        }
        g.closed = true;
        true
    }

    /// Closes the mailbox (the room stops); later sends fail.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether the room has stopped taking anything.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

impl RemoteSink for Inbox {
    fn deliver(&self, ev: Remote) -> bool {
        let mut g = self.lock();
        if g.closed {
            return false;
        }
        let must_keep = matches!(ev, Remote::Committed(_) | Remote::Loaded(_));
        if must_keep || g.queued.remote.len() < MAX_REMOTE {
            g.queued.remote.push_back(ev);
        } else {
            crate::metrics::drop("room_remote_overflow");
            g.queued.resync = true;
        }
        drop(g);
        self.notify.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(epoch: u32) -> Report {
        Report { epoch, position_us: 0, rate_milli: 1000, buffering: false }
    }

    #[test]
    fn reports_are_latest_wins_per_member_and_commands_are_bounded() {
        let inbox = Inbox::default();
        for i in 0..10_000u32 {
            inbox.report(i % 100, report(i));
        }
        let cmd = |member| Command { member, request_id: 0, action: Action::Seek { position_ms: 1 }, extra: None };
        let accepted = (0..MAX_COMMANDS as u32 + 10).filter(|&i| inbox.command(cmd(i))).count();
        assert_eq!(accepted, MAX_COMMANDS);
        let taken = inbox.take();
        assert_eq!(taken.reports.len(), 100, "one slot per member");
        assert_eq!(taken.reports[&7].epoch, 9_907, "the latest report wins");
        assert_eq!(taken.commands.len(), MAX_COMMANDS);
        assert!(inbox.command(cmd(1)), "room again once taken");
    }

    #[test]
    fn live_reports_are_latest_wins_per_member() {
        let inbox = Inbox::default();
        for i in 0..5_000u64 {
            inbox.live_report((i % 50) as u32, LiveReport { live_edge_ms: i, buffer_ms: 0 });
        }
        let taken = inbox.take();
        assert_eq!(taken.live_reports.len(), 50, "one slot per member");
        assert_eq!(taken.live_reports[&7].live_edge_ms, 4_957, "the latest wins");
        assert!(inbox.take().is_empty());
        assert_eq!(inbox.peaks().reports, 50);
    }

    #[test]
    fn while_loading_only_remote_events_are_taken_and_overflow_asks_for_a_reload() {
        let inbox = Inbox::loading();
        inbox.leave(3);
        for _ in 0..MAX_REMOTE + 5 {
            inbox.deliver(Remote::Viewers(1));
        }
        inbox.deliver(Remote::Committed(crate::room::CommitResult::Committed));
        let taken = inbox.take();
        assert_eq!(taken.remote.len(), MAX_REMOTE + 1, "a commit answer is never dropped");
        assert!(taken.resync);
        assert!(taken.leaves.is_empty(), "not while loading");
        inbox.loaded();
        assert_eq!(inbox.take().leaves, vec![3]);
        assert!(inbox.close_if_empty());
        assert!(!inbox.command(Command {
            member: 1,
            request_id: 0,
            action: Action::Play { position_ms: None },
            extra: None
        }));
    }
}
