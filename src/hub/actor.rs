//! One room's actor: the only task that touches its [`Room`]. It wakes on
//! its mailbox, its room's timers or shutdown, takes everything queued at
//! once, feeds it to the room with the real clock, hands the room's
//! tentative changes to the [`Authority`] (never awaiting it: answers come
//! back through the mailbox), and delivers what the room released.
//!
//! There is one dispatch path for one node and for many: only the authority
//! differs.

use std::sync::Arc;
use std::time::Instant;

use lockstep_protocol::{ChangeReason, ErrorCode, ServerMsg, TimelineChanged};
use tokio::sync::watch;
use tracing::{debug, info};

use super::Hub;
use super::fanout::{Fanout, Plan, Recipients};
use super::inbox::{Inbox, Taken};
use super::link::{Extra, Outgoing};
use crate::authority::{Announce, Authority, ChatAnswer, Loaded, Remote, RemoteSink};
use crate::clock::ServerClock;
use crate::room::{Audience, MemberId, Room, RoomConfig, Shared};

/// Scale-out: how often a room hands its members' round trips (and a live
/// room their needs) to the authority (which shares them at its heartbeat,
/// every second).
const NEEDS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a command was refused while the shared state is unreachable.
const AUTHORITY_DOWN: &str = "the shared state (Redis) is unreachable; try again shortly";

pub(super) struct RoomActor {
    event_id: Arc<str>,
    generation: u64,
    cfg: RoomConfig,
    room: Room,
    links: Fanout,
    hub: Hub,
    inbox: Arc<Inbox>,
    sink: Arc<dyn RemoteSink>,
    authority: Arc<dyn Authority>,
    /// Whether the authority's state has been loaded (joins wait until then).
    loaded: bool,
    empty_since: Option<Instant>,
    /// A legacy JSON command's pass-through fields, for the next change its
    /// member causes.
    legacy_extra: Option<(MemberId, Arc<Extra>)>,
    /// Scale-out: when a live room last handed its needs to the authority.
    needs_shared_at: Option<Instant>,
}

impl RoomActor {
    pub(super) fn new(
        event_id: Arc<str>,
        generation: u64,
        cfg: RoomConfig,
        hub: Hub,
        inbox: Arc<Inbox>,
        authority: Arc<dyn Authority>,
    ) -> Self {
        let now = hub.clock().now_us();
        RoomActor {
            event_id,
            generation,
            room: Room::new(cfg.clone(), now),
            cfg,
            links: Fanout::default(),
            hub,
            sink: inbox.clone(),
            inbox,
            authority,
            loaded: false,
            empty_since: Some(Instant::now()),
            legacy_extra: None,
            needs_shared_at: None,
        }
    }

    /// The room's own latest change, to seed an authority that has none.
    fn ours(&self) -> TimelineChanged {
        let t = self.room.timeline();
        TimelineChanged { timeline: t, effective_at_us: t.anchor_us, by: 0, reason: ChangeReason::Seek }
    }

    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let clock = self.hub.clock();
        let grace = self.hub.inner.cfg.room_grace;
        self.authority.load(&self.event_id, self.sink.clone(), self.ours(), None, true);
        loop {
            let mut wake = if self.loaded {
                clock.instant_at(self.room.poll_timeout())
            } else {
                Instant::now() + std::time::Duration::from_secs(3600)
            };
            if let Some(since) = self.empty_since.filter(|_| self.loaded) {
                wake = wake.min(since + grace);
            }
            tokio::select! {
                _ = self.inbox.wait() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = crate::util::wait_true(&mut shutdown) => break,
            }
            let taken = self.inbox.take();
            self.process(taken, clock);
            let now = clock.now_us();
            if self.loaded && now >= self.room.poll_timeout() {
                self.room.handle_timeout(now);
            }
            self.drive_commits(now);
            self.drive_chat();
            if let Some(media) = self.room.take_media_save()
                && !self.authority.is_shared()
            {
                self.authority.save_media(&self.event_id, media);
            }
            self.share_out();
            self.flush();
            match self.empty_since {
                Some(since)
                    if self.loaded
                        && since.elapsed() >= grace
                        && self.hub.try_remove(&self.event_id, self.generation, &self.inbox) =>
                {
                    info!(event_id = %self.event_id, "room dropped after being empty");
                    break;
                }
                _ => {}
            }
        }
        self.inbox.close();
        self.authority.detach(&self.event_id, &self.sink);
    }

    /// Feeds everything taken from the mailbox to the room.
    fn process(&mut self, taken: Taken, clock: ServerClock) {
        let now = clock.now_us();
        for ev in taken.remote {
            self.remote(ev, now);
        }
        if taken.resync {
            let chat = self.loaded.then(|| self.room.chat_state());
            self.authority.load(&self.event_id, self.sink.clone(), self.ours(), chat, false);
        }
        for join in taken.joins {
            let id = self.room.join(now, join.info);
            self.links.insert(id, join.link);
            self.empty_since = None;
            if join.reply.send(id).is_err() {
                // The session went away before it learned its id.
                self.leave(id, now);
            }
        }
        let shared = self.authority.is_shared();
        for c in taken.commands {
            if shared && !self.authority.is_up() {
                self.room.refuse(c.member, c.request_id, ErrorCode::Internal, AUTHORITY_DOWN);
                crate::metrics::error(ErrorCode::Internal);
                continue;
            }
            if let Some(extra) = c.extra {
                self.legacy_extra = Some((c.member, extra));
            }
            if let Err(e) = self.room.command(now, c.member, c.request_id, c.action) {
                debug!(member = c.member, error = %e, "command refused");
                crate::metrics::error(e.code());
            }
        }
        for (member, report) in taken.reports {
            self.room.report(now, member, report);
        }
        if !taken.live_reports.is_empty() {
            let ignored = self.room.ignored_live_reports();
            for (member, report) in taken.live_reports {
                self.room.live_report(now, member, report);
            }
            let ignored = self.room.ignored_live_reports() - ignored;
            if ignored > 0 {
                metrics::counter!("lockstep_live_reports_ignored_total").increment(ignored);
            }
        }
        for (member, report) in taken.sync_reports {
            metrics::histogram!("lockstep_sync_drift_seconds").record(f64::from(report.drift_us.unsigned_abs()) / 1e6);
            self.room.sync_report(now, member, report);
        }
        for (member, rtt_us) in taken.rtts {
            metrics::histogram!("lockstep_member_rtt_seconds").record(f64::from(rtt_us) / 1e6);
            self.room.member_rtt(now, member, u64::from(rtt_us));
        }
        for (member, emoji) in taken.reactions {
            if self.room.react(now, member, &emoji) == crate::room::Reacted::RateLimited {
                crate::metrics::drop("reaction_rate");
            }
        }
        for (member, request_id, op) in taken.media {
            if shared && !self.authority.is_up() {
                self.room.refuse(member, request_id, ErrorCode::Internal, AUTHORITY_DOWN);
                continue;
            }
            if let Err(e) = self.room.media_command(now, member, request_id, op) {
                debug!(member, error = %e, "media command refused");
                crate::metrics::error(e.code());
            }
        }
        for (member, request_id, text) in taken.chats {
            if shared && !self.authority.is_up() {
                self.room.refuse(member, request_id, ErrorCode::Internal, AUTHORITY_DOWN);
                continue;
            }
            match self.room.chat(now, member, request_id, text) {
                Ok(()) => metrics::counter!("lockstep_chat_messages_total").increment(1),
                Err(code) => {
                    crate::metrics::error(code);
                    if code == ErrorCode::RateLimited {
                        crate::metrics::drop("chat_rate");
                    }
                }
            }
        }
        for (member, reason) in taken.suspensions {
            self.room.suspend(now, member, reason);
        }
        for id in taken.leaves {
            self.leave(id, now);
        }
        for (before, limit, reply) in taken.chat_pages {
            let _ = reply.send(self.room.chat_page(before, limit));
        }
        for reply in taken.queries {
            let _ = reply.send(self.room.state(now));
        }
        for (req, reply) in taken.clocks {
            if shared && !self.authority.is_up() {
                let _ = reply.send(None);
                continue;
            }
            if let Some(setting) = self.room.set_clock(now, req) {
                info!(event_id = %self.event_id, clock = ?setting.clock, latency = ?setting.latency, "room clock set");
                self.authority.save_clock(&self.event_id, setting);
            }
            let _ = reply.send(Some(self.room.state(now)));
        }
        if shared {
            self.authority.set_local_count(&self.event_id, self.room.local_viewers());
            if self.needs_shared_at.is_none_or(|at| at.elapsed() >= NEEDS_INTERVAL) {
                self.needs_shared_at = Some(Instant::now());
                if self.room.is_live() {
                    self.authority.set_local_needs(&self.event_id, self.room.live_needs(now));
                }
                self.authority.set_local_reach(&self.event_id, self.room.reach_counts());
                self.authority.set_local_sync(&self.event_id, self.room.sync_counts(now));
            }
        }
    }

    fn remote(&mut self, ev: Remote, now: u64) {
        match ev {
            Remote::Loaded(loaded) => self.loaded(loaded, now),
            Remote::Committed(result) => self.room.on_commit(now, result),
            Remote::External(change) => self.room.apply_external(now, change),
            Remote::Viewers(n) => self.room.set_remote_viewers(now, n),
            Remote::Needs(needs) => self.room.set_remote_needs(now, needs),
            Remote::Reach(reach) => self.room.set_remote_reach(now, reach),
            Remote::Sync(drifts) => self.room.set_remote_sync(drifts),
            // Again: offered is what the authority last confirmed, written
            // forward if its record fell behind (Redis lost changes).
            Remote::Resync => {
                let chat = self.loaded.then(|| self.room.chat_state());
                self.authority.load(&self.event_id, self.sink.clone(), self.room.confirmed_change(), chat, false)
            }
            Remote::Shared { node, events } => {
                for ev in events {
                    self.room.apply_shared(now, &node, ev);
                }
            }
            Remote::NodeGone(node) => self.room.node_gone(now, &node),
            Remote::Chat(op) => self.room.apply_chat(op),
            Remote::ChatFailed(op) => self.room.chat_failed(op),
        }
    }

    /// The authority's state arrived: at start, the room begins from it (and
    /// the joins waiting meanwhile are served); later, the room adopts it.
    fn loaded(&mut self, mut l: Loaded, now: u64) {
        let first = !self.loaded;
        if first {
            // The stored clock setting applies to the record (a live room's
            // positions are relative to its stored origin).
            let mut cfg = self.cfg.clone();
            if let Some(setting) = l.clock {
                setting.apply_to(&mut cfg);
            }
            match &l.record {
                Some(record) => {
                    if record.timeline.epoch != self.room.timeline().epoch {
                        info!(event_id = %self.event_id, epoch = record.timeline.epoch, "room starts from its record");
                    }
                    self.room = Room::from_record(cfg, now, record);
                }
                None => self.room = Room::new(cfg, now),
            }
            if let Some(base) = l.id_base {
                self.room.enable_sharing(base);
            }
            match l.clock {
                // Our seed was made on the server's default clock: start
                // afresh on the stored one (a committed change).
                Some(s) if l.seeded && (s.clock != self.cfg.clock || self.room.is_live()) => {
                    self.room.restart_clock(now);
                }
                Some(_) => {}
                // A live room stores the origin its positions are relative to.
                None if self.room.is_live() => {
                    self.room.share_clock();
                    self.authority.save_clock(&self.event_id, self.room.clock_setting());
                }
                None => {}
            }
            if let Some(chat) = l.chat.take() {
                self.room.load_chat(chat);
            }
            if let Some(media) = l.media.take() {
                self.room.load_media(media);
            }
            self.loaded = true;
            self.inbox.loaded();
        } else {
            if let Some(setting) = l.clock {
                self.room.adopt_clock(now, setting);
            }
            if let Some(record) = l.record {
                self.room.confirm(now, record);
            }
            if let Some(chat) = l.chat.take() {
                self.room.load_chat(chat);
            }
        }
        if !self.authority.is_shared() || !l.reachable {
            return;
        }
        // Learn the other nodes' members and the policy; tell them ours
        // (they may have dropped them while the authority was away).
        self.room.set_remote_members(now, l.members);
        if let Some(policy) = l.policy {
            self.room.apply_shared(now, "", Shared::Policy { policy, by: 0 });
        }
        let mine = self.room.shared_members();
        if !first || !mine.is_empty() {
            let upserts = mine.iter().filter_map(|m| match m {
                Shared::Joined { id, .. } => Some((*id, m.clone())),
                _ => None,
            });
            let a = Announce { upserts: upserts.collect(), events: mine, ..Announce::default() };
            self.authority.announce(&self.event_id, a);
        }
    }

    /// Hands the room's tentative changes to the authority, one at a time;
    /// answers given at once are applied at once, the others arrive later.
    fn drive_commits(&mut self, now: u64) {
        while let Some(req) = self.room.poll_commit() {
            match self.authority.commit(&self.event_id, req, &self.sink) {
                Some(result) => self.room.on_commit(now, result),
                None => break,
            }
        }
    }

    /// Hands the room's chat operations to the authority, in order.
    fn drive_chat(&mut self) {
        while let Some(op) = self.room.poll_chat() {
            match self.authority.chat(&self.event_id, op, &self.sink) {
                ChatAnswer::Applied(op) => self.room.apply_chat(op),
                ChatAnswer::Failed(op) => self.room.chat_failed(op),
                ChatAnswer::Later => {}
            }
        }
    }

    /// Scale-out: shares the membership and control changes the room made.
    fn share_out(&mut self) {
        let events = self.room.take_shared();
        if events.is_empty() {
            return;
        }
        let mut a = Announce::default();
        for ev in &events {
            match ev {
                // A stall is stored with its member (a node loading the room lists it).
                Shared::Joined { id, .. } | Shared::Role { id, .. } | Shared::Stall { id, .. } => {
                    if let Some(record) = self.room.shared_member(*id) {
                        a.upserts.push((*id, record));
                    }
                }
                Shared::Left { id } => a.removes.push(*id),
                Shared::Policy { policy, .. } => a.policy = Some(*policy),
                Shared::Clock { setting } => a.clock = Some(*setting),
                Shared::Media { state, .. } => a.media = Some(state.clone()),
                Shared::Reactions { .. } => {}
            }
        }
        a.events = events;
        self.authority.announce(&self.event_id, a);
    }

    fn leave(&mut self, id: MemberId, now: u64) {
        self.links.remove(id);
        self.room.leave(now, id);
        if self.room.is_empty() {
            self.empty_since = Some(Instant::now());
            // No round trips here from now on (the room lingers for its grace).
            self.authority.set_local_reach(&self.event_id, Vec::new());
            self.authority.set_local_sync(&self.event_id, Vec::new());
        }
    }

    /// Delivers what the room released: one shared [`Outgoing`] per output,
    /// gathered per recipient and, in large rooms, split across cores
    /// ([`Fanout`]).
    fn flush(&mut self) {
        let mut plan: Plan = Vec::new();
        while let Some(out) = self.room.poll_output() {
            let extra = match (&out.msg, &self.legacy_extra) {
                (ServerMsg::TimelineChanged(c), Some((by, _))) if c.by == *by => {
                    self.legacy_extra.take().map(|(_, e)| e)
                }
                _ => None,
            };
            let to = match out.to {
                Audience::All => Recipients::All,
                Audience::One(id) => Recipients::One(id),
                to => Recipients::Only(self.links.ids().filter(|&id| self.room.is_recipient(to, id)).collect()),
            };
            plan.push((Outgoing::with_extra(out.msg, extra), to));
        }
        if plan.is_empty() {
            return;
        }
        let started = Instant::now();
        let broadcast = plan.iter().any(|(_, to)| !matches!(to, Recipients::One(_)));
        self.links.flush(plan);
        if broadcast {
            metrics::histogram!("lockstep_fanout_seconds").record(started.elapsed().as_secs_f64());
        }
    }
}
