//! The room core: one room's timeline, members, roles, buffering policy,
//! change budget and viewer-count coalescing, as a deterministic state machine.
//!
//! **Sans-IO.** Nothing here reads a clock, owns a socket or spawns a task:
//! every call takes `now` (server microseconds), effects are queued as
//! [`Output`]s for the caller to deliver, and [`Room::poll_timeout`] says when
//! to call [`Room::handle_timeout`] next. The runtime in `hub.rs` drives it;
//! the tests drive it with simulated time and latency (`tests/sim.rs` runs
//! several nodes against a simulated authority).
//!
//! **Authority.** Only commands from members with the right role move the
//! timeline. Reports inform (and may start a buffering wait, by policy); their
//! positions never move the timeline. Play and pause take effect at
//! `now + lead`, so every viewer starts or stops on the same frame; seeks and
//! rate changes take effect at once. Every change is committed to an
//! authority before anyone hears of it ([`authority`]: `poll_commit`,
//! `on_commit`); a single node answers at once.
//!
//! # Layout
//! - `mod.rs`: the [`Room`], its settings, outputs and driving API.
//! - `timeline.rs`: commands, issuing changes, scheduled changes, ticks.
//! - `members.rs`: join and leave, roles, host election, `Welcome`.
//! - `buffering.rs`: reports, suspensions, the wait and the resume.
//! - `budget.rs`: the per-room budget of timeline changes, held commands, `Ack`s.
//! - `authority.rs`: the commit protocol (staged output, rollback, external changes).
//! - `counts.rs`: viewer counts, coalesced.
//! - `shared.rs`: scale-out: members, roles and policy shared across nodes.
//! - `live.rs`: live rooms: program time, the live point, `GoLive`, the auto latency.
//! - `quality.rs`: sync quality: members' measured drifts and the room's summary.
//! - `reactions.rs`: reactions, counted per window and per member allowance.
//! - `media.rs`: what plays next: the current item, the playlist, auto-advance.
//! - `chat.rs`: chat: ordered messages, history for joiners, limits, moderation.

use std::collections::{BTreeMap, VecDeque};

use lockstep_protocol::{
    ChangeReason, ClockKind, ControlPolicy, ErrorCode, ErrorMsg, Limits, Role, ServerMsg, Timeline, TimelineChanged,
};
use serde::{Deserialize, Serialize};

mod authority;
mod budget;
mod buffering;
mod chat;
mod counts;
mod live;
mod media;
mod members;
mod quality;
mod reach;
mod reactions;
mod shared;
mod timeline;

pub use authority::{CommitRequest, CommitResult};
pub use chat::{ChatLoad, ChatOp, ChatRecord};
pub use live::{ClockRequest, ClockSetting, LiveLatency, LiveView, NeedCounts, origin_for};
pub use media::MediaState;
pub use quality::{OUT_OF_SYNC_US, SyncQuality};
pub use reach::ReachView;
pub use reactions::{REACTION_WINDOW_US, Reacted};
pub use shared::Shared;

use authority::Authority;
use budget::Budget;
use buffering::Wait;
pub use buffering::{Suspended, WaitReasons};
use members::{HostSlot, Member};
use shared::Remote;
use timeline::Change;

/// A member's id within its room (never 0; 0 means "the server").
pub type MemberId = u32;

/// What a room does when a member stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BufferingPolicy {
    /// Pause everyone until the member recovers or the wait times out.
    Wait,
    /// Carry on; the member catches up alone.
    Ignore,
}

/// Per-room settings.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Delay before play and pause take effect, so every viewer gets them in time.
    pub lead_us: u64,
    /// The most the lead grows to for the members' round trips (`reach.rs`).
    pub lead_max_us: u64,
    /// Who may change the timeline.
    pub policy: ControlPolicy,
    /// What to do when a member stalls.
    pub buffering: BufferingPolicy,
    /// Longest buffering wait before the room resumes without the stalled members.
    pub buffering_wait_max_us: u64,
    /// After a member's wait timed out, it cannot start another for this long.
    pub buffering_cooldown_us: u64,
    /// Which reasons of a stall make the room wait.
    pub wait_reasons: WaitReasons,
    /// Above this many viewers nobody waits.
    pub wait_max_members: u32,
    /// Shortest interval between two viewer-count messages (grows with room size).
    pub count_interval_us: u64,
    /// Interval between periodic ticks.
    pub tick_interval_us: u64,
    /// Whether members see each other join and leave.
    pub show_members: bool,
    /// How long a departed host keeps the role for a reconnect.
    pub host_grace_us: u64,
    /// Whether the first member (or the longest present, after the grace) hosts
    /// a room that has no host.
    pub first_joiner_hosts: bool,
    /// Timeline changes members may make per second (a token bucket with a
    /// burst of as many); commands beyond it are held and coalesced
    /// (`budget.rs`). 0: unlimited.
    pub changes_per_sec: u32,
    /// Announced to members in `Welcome`.
    pub limits: Limits,
    /// What positions measure: media time, or program time (a live room,
    /// `live.rs`, SPEC §2.4).
    pub clock: ClockKind,
    /// A live room's latency policy (ignored in a media room).
    pub live_latency: LiveLatency,
    /// A live room's program origin (Unix ms); `None`: [`origin_for`] the
    /// room's creation. Set from the room's stored [`ClockSetting`].
    pub live_origin_ms: Option<u64>,
    /// The auto latency's bounds `(min, max)` in ms, for a room switched to
    /// auto at run time without bounds of its own.
    pub live_latency_range_ms: (u32, u32),
    /// A live room's DVR window, ms: seeks and pauses further back than this
    /// behind the live point clamp to its start. 0: no bound (the stream's
    /// own window, unknown to the server).
    pub live_dvr_window_ms: u32,
    /// How long after a switch a playing room starts the new item (members
    /// load it meanwhile).
    pub media_start_us: u64,
    /// Chat messages replayed to a joiner (the room's latest).
    pub chat_history: u32,
    /// Longest chat message, bytes (≤ `MAX_CHAT_TEXT`).
    pub chat_max_bytes: u32,
    /// Chat messages the room takes per second (bursts of twice as many);
    /// 0: chat is off.
    pub chat_room_per_sec: u32,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            lead_us: 100_000,
            lead_max_us: 1_000_000,
            policy: ControlPolicy::HostOnly,
            buffering: BufferingPolicy::Wait,
            buffering_wait_max_us: 3_000_000,
            buffering_cooldown_us: 30_000_000,
            wait_reasons: WaitReasons::default(),
            wait_max_members: 100,
            count_interval_us: 250_000,
            tick_interval_us: 250_000,
            show_members: false,
            host_grace_us: 30_000_000,
            first_joiner_hosts: true,
            changes_per_sec: 10,
            limits: Limits {
                max_frame: lockstep_protocol::limits::MAX_FRAME as u32,
                max_datagram: lockstep_protocol::limits::MAX_DATAGRAM as u32,
                max_msgs_per_sec: 50,
                tick_interval_ms: 250,
                report_interval_ms: 1000,
            },
            clock: ClockKind::Media,
            live_latency: LiveLatency::default(),
            live_origin_ms: None,
            live_latency_range_ms: (1_000, 30_000),
            live_dvr_window_ms: 0,
            media_start_us: 1_500_000,
            chat_history: 100,
            chat_max_bytes: 500,
            chat_room_per_sec: 20,
        }
    }
}

/// Who a queued message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    All,
    /// One member.
    One(MemberId),
    /// Members that asked for presence events.
    Presence,
    /// Members that understand live messages (the `LIVE` capability).
    Live,
    /// Members that take `Reactions` (the `REACTIONS` capability).
    Reactions,
    /// Members that take chat (the `CHAT` capability).
    Chat,
    /// Members that take media items and playlists (the `MEDIA` capability).
    Media,
}

/// One effect for the runtime to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Recipients.
    pub to: Audience,
    /// The message.
    pub msg: ServerMsg,
}

/// What a joining member brings.
#[derive(Debug, Clone, Default)]
pub struct JoinInfo {
    /// Stable device id (a reconnecting host is recognised by it).
    pub device_id: String,
    /// Display name for presence events.
    pub name: String,
    /// Whether it wants member joined/left events.
    pub wants_presence: bool,
    /// Whether its credentials make it a host of this room.
    pub host_claim: bool,
    /// Whether it understands `Ack` (the `ACKS` capability): its commands with
    /// a request id are answered by an `Ack` when they do not fail.
    pub wants_acks: bool,
    /// Whether it understands `LiveState` and `GoLive` (the `LIVE` capability).
    pub wants_live: bool,
    /// Whether it takes `Reactions` (the `REACTIONS` capability).
    pub wants_reactions: bool,
    /// Whether it takes chat (the `CHAT` capability).
    pub wants_chat: bool,
    /// Whether it takes media items and playlists (the `MEDIA` capability).
    pub wants_media: bool,
    /// Its user (token subject): chat mutes apply to it.
    pub user: String,
    /// Whether it takes ticks and changes as QUIC datagrams (the `DATAGRAMS`
    /// capability, WebTransport): its share of a fan-out costs the server
    /// more than a WebSocket write, so it lengthens the lead more (see
    /// [`Room::lead_us`]).
    pub datagrams: bool,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such member.
    #[error("not a member of this room")]
    NotMember,
    /// The member's role does not allow it.
    #[error("your role may not change the timeline in this room")]
    Forbidden,
    /// The member's role does not allow it, for this reason.
    #[error("{0}")]
    Denied(&'static str),
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(&'static str),
}

impl CommandError {
    /// The protocol code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::NotMember => ErrorCode::NotJoined,
            CommandError::Forbidden | CommandError::Denied(_) => ErrorCode::Forbidden,
            CommandError::InvalidArgument(_) => ErrorCode::InvalidArgument,
        }
    }
}

/// A snapshot of a room for the REST API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomState {
    /// The timeline in effect.
    pub timeline: Timeline,
    /// A scheduled change, if any.
    pub pending: Option<TimelineChanged>,
    /// The media position now, in seconds.
    pub position: f64,
    /// Server time of this snapshot, in microseconds.
    pub server_time_us: u64,
    /// Viewers in the room.
    pub viewers: u32,
    /// Who may change the timeline.
    pub policy: ControlPolicy,
    /// Members by role.
    pub members: MembersByRole,
    /// Whether the room is paused waiting for buffering members.
    pub buffering_wait: bool,
    /// What positions measure.
    pub clock: ClockKind,
    /// A live room's origin, latency and live point (`None` in a media room).
    pub live: Option<LiveView>,
    /// How closely this node's members play together (their measured drifts).
    pub sync: SyncQuality,
    /// This node's members' round trips and the lead they give changes.
    pub reach: ReachView,
    /// The members that do not follow the room (scaled out, every node's), and why.
    pub suspended: Vec<Suspended>,
    /// The current media item and the playlist (SPEC §6.7).
    pub media: MediaState,
}

/// Member ids grouped by role.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersByRole {
    /// Hosts.
    pub host: Vec<MemberId>,
    /// Co-hosts.
    pub co_host: Vec<MemberId>,
    /// Viewers.
    pub viewer: Vec<MemberId>,
}

/// Member ids of one node's block (scale-out): `base..base + ID_BLOCK`.
pub const ID_BLOCK: u32 = 1 << 20;

/// A queued output and whether a rollback drops it (see `authority.rs`).
#[derive(Debug)]
struct Queued {
    out: Output,
    /// An `Ack` whose command is retried if the change it rests on is discarded.
    bound: bool,
}

/// One room. See the module docs.
#[derive(Debug)]
pub struct Room {
    cfg: RoomConfig,
    current: Timeline,
    pending: Option<(Change, MemberId, lockstep_protocol::ChangeReason)>,
    /// The epoch of the latest change issued (in effect or pending), committed or not.
    epoch: u32,
    members: BTreeMap<MemberId, Member>,
    next_member: MemberId,
    host: Option<HostSlot>,
    wait: Option<Wait>,
    /// Scale-out: the room is paused by a wait another node started; when
    /// this node resumes it, should that node not have by then (it died).
    remote_wait: Option<u64>,
    next_tick_at: u64,
    count_sent: Option<(u64, u32)>,
    count_dirty: bool,
    /// Viewers on other nodes (scale-out); counted in [`Room::viewers`].
    remote_viewers: u32,
    /// Members that take datagrams (see [`JoinInfo::datagrams`]).
    datagram_members: u32,
    /// The members' round trips, for the lead (`reach.rs`).
    reach: reach::Reach,
    /// Scale-out: the other nodes' members' round trips (`reach.rs`).
    remote_reach: NeedCounts,
    /// Scale-out: the other nodes' members' drifts (|drift| in 0.1 ms, members), for the sync quality.
    remote_sync: NeedCounts,
    /// Reactions waiting for their window to be sent.
    reactions: reactions::Window,
    /// The chat: latest messages, mutes, operations for the authority.
    chat: chat::Chat,
    /// The current media item and the playlist.
    media: media::Media,
    /// Scale-out: members on other nodes, by id.
    remote: BTreeMap<MemberId, Remote>,
    /// Scale-out: this node's id block (`None`: ids from 1, nothing shared).
    id_base: Option<MemberId>,
    /// Scale-out: changes to share with the other nodes.
    shared: Vec<Shared>,
    /// Changes members may still make, and commands held for lack of them.
    budget: Budget,
    /// Changes not yet committed, and what the authority holds.
    auth: Authority,
    /// A live room's state (`None`: a media room).
    live: Option<live::Live>,
    out: VecDeque<Queued>,
    /// Sequence number of `out[0]`: every output ever queued has one.
    out_seq: u64,
}

impl Room {
    /// A new, empty room: paused at 0, or a live room at the live point.
    pub fn new(cfg: RoomConfig, now: u64) -> Self {
        let timeline = match cfg.clock {
            ClockKind::Media => Timeline::start(now),
            ClockKind::Live => live::Live::new(&cfg, now).timeline_at(now, cfg.live_latency.initial(), 0),
        };
        Self::with_timeline(cfg, now, timeline)
    }

    /// A room that starts from the authority's record (scale-out: the room
    /// another node serves, or served; one node: the change it saved before
    /// it stopped): on its timeline, and, if a wait paused it, in that wait
    /// as another node's (its state says the room waits, and it resumes the
    /// room a second after the wait's deadline should that node be gone, or
    /// be this one, restarted).
    pub fn from_record(cfg: RoomConfig, now: u64, record: &TimelineChanged) -> Self {
        let mut room = Room::with_timeline(cfg, now, record.timeline);
        if record.reason == ChangeReason::BufferingWait && record.timeline.paused {
            room.note_remote_wait(now, true);
        }
        room
    }

    /// A room that resumes a saved timeline (which the authority is taken to
    /// hold; see [`Room::confirm`]).
    pub fn with_timeline(cfg: RoomConfig, now: u64, timeline: Timeline) -> Self {
        let live = (cfg.clock == ClockKind::Live).then(|| live::Live::new(&cfg, now));
        let mut room = Room {
            live,
            next_tick_at: now + cfg.tick_interval_us,
            budget: Budget::new(cfg.changes_per_sec, now),
            cfg,
            epoch: timeline.epoch,
            auth: Authority::new(timeline.epoch),
            current: timeline,
            pending: None,
            members: BTreeMap::new(),
            next_member: 1,
            host: None,
            wait: None,
            remote_wait: None,
            count_sent: None,
            count_dirty: false,
            remote_viewers: 0,
            datagram_members: 0,
            reach: Default::default(),
            remote_reach: Vec::new(),
            remote_sync: Vec::new(),
            reactions: Default::default(),
            chat: Default::default(),
            media: Default::default(),
            remote: BTreeMap::new(),
            id_base: None,
            shared: Vec::new(),
            out: VecDeque::new(),
            out_seq: 0,
        };
        room.live_settled();
        room
    }

    /// The room's settings.
    pub fn config(&self) -> &RoomConfig {
        &self.cfg
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The timeline in effect (including changes not yet committed).
    pub fn timeline(&self) -> Timeline {
        self.current
    }

    /// The epoch of the latest change issued (in effect or pending,
    /// committed or not).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The member's role, if it is a member here.
    pub fn role(&self, id: MemberId) -> Option<Role> {
        self.members.get(&id).map(|m| m.role)
    }

    /// Every member here and its role, in id order.
    pub fn roles(&self) -> impl Iterator<Item = (MemberId, Role)> + '_ {
        self.members.iter().map(|(&id, m)| (id, m.role))
    }

    /// The next output to deliver. Output queued from the first change not
    /// yet committed onward is held back until that change is committed (or
    /// dropped if it is discarded; see `authority.rs`).
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.auth.staged_from().is_some_and(|seq| self.out_seq >= seq) {
            return None;
        }
        let q = self.out.pop_front()?;
        self.out_seq += 1;
        Some(q.out)
    }

    /// When [`Room::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_tick_at;
        if let Some((c, ..)) = &self.pending {
            t = t.min(c.effective_at_us);
        }
        if let Some(w) = &self.wait {
            t = t.min(w.deadline);
        }
        if let Some(at) = self.remote_wait {
            t = t.min(at);
        }
        if self.count_dirty {
            t = t.min(self.count_due());
        }
        if let Some(HostSlot { left_at: Some(left), .. }) = &self.host {
            t = t.min(left + self.cfg.host_grace_us);
        }
        if let Some(at) = self.budget.next_run_at() {
            t = t.min(at);
        }
        if let Some(at) = self.reactions_due() {
            t = t.min(at);
        }
        if let Some(at) = self.media_due() {
            t = t.min(at);
        }
        if let Some(cross) = self.live_overrun_at() {
            t = t.min(cross.saturating_sub(self.lead_us()));
        }
        t
    }

    /// Runs everything due at `now`: scheduled changes, held commands, ticks,
    /// count flushes, wait deadlines and host hand-over.
    pub fn handle_timeout(&mut self, now: u64) {
        self.advance(now);
        self.wait_deadline(now);
        self.remote_wait_deadline(now);
        if let Some(HostSlot { left_at: Some(left), .. }) = &self.host
            && now >= left + self.cfg.host_grace_us
        {
            self.host = None;
            self.elect_host();
        }
        self.run_held(now);
        self.decide_latency(now);
        self.catch_live(now);
        if now >= self.next_tick_at {
            self.emit_tick(now);
        }
        self.flush_count(now);
        self.flush_reactions(now);
        self.media_timeout(now);
    }

    /// Whether member `id` should receive a message for `to`.
    pub fn is_recipient(&self, to: Audience, id: MemberId) -> bool {
        match to {
            Audience::All => true,
            Audience::One(one) => one == id,
            Audience::Presence => self.members.get(&id).is_some_and(|m| m.wants_presence),
            Audience::Live => self.members.get(&id).is_some_and(|m| m.wants_live),
            Audience::Reactions => self.members.get(&id).is_some_and(|m| m.wants_reactions),
            Audience::Chat => self.members.get(&id).is_some_and(|m| m.wants_chat),
            Audience::Media => self.members.get(&id).is_some_and(|m| m.wants_media),
        }
    }

    /// A snapshot for the REST API.
    pub fn state(&self, now: u64) -> RoomState {
        let mut members = MembersByRole::default();
        let local = self.members.iter().map(|(&id, m)| (id, m.role));
        let remote = self.remote.iter().map(|(&id, r)| (id, r.role));
        let all: BTreeMap<MemberId, Role> = local.chain(remote).collect();
        for (id, role) in all {
            match role {
                Role::Host => members.host.push(id),
                Role::CoHost => members.co_host.push(id),
                Role::Viewer => members.viewer.push(id),
            }
        }
        RoomState {
            timeline: self.current,
            pending: self.pending.map(|(c, by, reason)| c.message(by, reason)),
            position: self.current.position_us_at(now) as f64 / 1e6,
            server_time_us: now,
            viewers: self.viewers(),
            policy: self.cfg.policy,
            members,
            buffering_wait: self.wait.is_some() || self.remote_wait.is_some(),
            clock: self.cfg.clock,
            live: self.live_view(now),
            sync: self.sync_quality(now),
            reach: self.reach_view(),
            suspended: self.suspended(now),
            media: self.media.state.clone(),
        }
    }

    /// Queues an `Error` to a member (a command refused outside the core,
    /// e.g. while the shared state is unreachable).
    pub fn refuse(&mut self, to: MemberId, request_id: u32, code: ErrorCode, message: &str) {
        self.to(Audience::One(to), ServerMsg::Error(ErrorMsg::new(code, message.to_owned(), request_id)));
    }

    fn to(&mut self, to: Audience, msg: ServerMsg) {
        self.out.push_back(Queued { out: Output { to, msg }, bound: false });
    }

    /// Sequence number the next queued output gets.
    fn next_seq(&self) -> u64 {
        self.out_seq + self.out.len() as u64
    }
}

#[cfg(test)]
mod tests;
