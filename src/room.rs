//! The room core: one room's timeline, members, roles, buffering policy and
//! viewer-count coalescing, as a deterministic state machine.
//!
//! **Sans-IO.** Nothing here reads a clock, owns a socket or spawns a task:
//! every call takes `now` (server microseconds), effects are queued as
//! [`Output`]s for the caller to deliver, and [`Room::poll_timeout`] says when
//! to call [`Room::handle_timeout`] next. The runtime in `hub.rs` drives it;
//! the tests below drive it with simulated time and latency.
//!
//! **Authority.** Only commands from members with the right role move the
//! timeline. Reports inform (and may start a buffering wait, by policy); their
//! positions never move the timeline. Play and pause take effect at
//! `now + lead`, so every viewer starts or stops on the same frame; seeks and
//! rate changes take effect at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lockstep_protocol::limits::{MAX_POSITION_MS, MAX_RATE_MILLI, MIN_RATE_MILLI};
use lockstep_protocol::{
    Action, ChangeReason, ControlPolicy, ErrorCode, ErrorMsg, Limits, MemberJoined, MemberLeft, PolicyChanged, Report,
    Role, RoleChanged, ServerMsg, Tick, Timeline, TimelineChanged, ViewerCount, Welcome,
};
use serde::{Deserialize, Serialize};

/// A member's id within its room (never 0; 0 means "the server").
pub type MemberId = u32;

/// What a room does when a member stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
    /// Who may change the timeline.
    pub policy: ControlPolicy,
    /// What to do when a member stalls.
    pub buffering: BufferingPolicy,
    /// Longest buffering wait before the room resumes without the stalled members.
    pub buffering_wait_max_us: u64,
    /// After a member's wait timed out, it cannot start another for this long.
    pub buffering_cooldown_us: u64,
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
    /// Announced to members in `Welcome`.
    pub limits: Limits,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            lead_us: 100_000,
            policy: ControlPolicy::HostOnly,
            buffering: BufferingPolicy::Wait,
            buffering_wait_max_us: 3_000_000,
            buffering_cooldown_us: 30_000_000,
            count_interval_us: 250_000,
            tick_interval_us: 250_000,
            show_members: false,
            host_grace_us: 30_000_000,
            first_joiner_hosts: true,
            limits: Limits {
                max_frame: lockstep_protocol::limits::MAX_FRAME as u32,
                max_datagram: lockstep_protocol::limits::MAX_DATAGRAM as u32,
                max_msgs_per_sec: 50,
                tick_interval_ms: 250,
                report_interval_ms: 1000,
            },
        }
    }
}

/// Who a queued message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    All,
    /// Every member except one (used for the legacy JSON echo rule).
    One(MemberId),
    /// Members that asked for presence events.
    Presence,
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
#[derive(Debug, Clone)]
pub struct JoinInfo {
    /// Stable device id (a reconnecting host is recognised by it).
    pub device_id: String,
    /// Display name for presence events.
    pub name: String,
    /// Whether it wants member joined/left events.
    pub wants_presence: bool,
    /// Whether its credentials make it a host of this room.
    pub host_claim: bool,
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
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(&'static str),
}

impl CommandError {
    /// The protocol code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::NotMember => ErrorCode::NotJoined,
            CommandError::Forbidden => ErrorCode::Forbidden,
            CommandError::InvalidArgument(_) => ErrorCode::InvalidArgument,
        }
    }
}

#[derive(Debug)]
struct Member {
    device_id: String,
    name: String,
    role: Role,
    /// Hosts by its credentials (a `host_of` claim, or the party's inviter),
    /// not by the first-joiner fallback.
    claimed: bool,
    wants_presence: bool,
    buffering: bool,
    /// Has reported playing smoothly at least once (initial loading never
    /// starts a wait).
    settled: bool,
    /// Cannot start a buffering wait before this time.
    no_wait_until: u64,
    last_report: Option<(u64, Report)>,
}

#[derive(Debug, Clone, Copy)]
struct Change {
    timeline: Timeline,
    effective_at_us: u64,
}

#[derive(Debug)]
struct Wait {
    deadline: u64,
    members: BTreeSet<MemberId>,
}

#[derive(Debug)]
struct HostSlot {
    device_id: String,
    /// When the host's last connection left; `None` while connected.
    left_at: Option<u64>,
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

/// Scale-out: a membership or control change that this node shares with the
/// other nodes serving the room (see `crate::cluster`), and that they apply
/// with [`Room::apply_shared`]. Idempotent: applying one twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Shared {
    /// A member joined (or, on a snapshot, is present) on the sending node.
    #[serde(rename_all = "camelCase")]
    Joined {
        /// Its id (unique across nodes: each node's room has its own id block).
        id: MemberId,
        /// Its role.
        role: Role,
        /// Whether it hosts by its credentials.
        claimed: bool,
        /// Display name.
        name: String,
        /// Device id (a host reconnecting on another node keeps the role).
        device: String,
    },
    /// A member left the sending node.
    Left {
        /// Its id.
        id: MemberId,
    },
    /// A member's role changed (on any node, for a member on any node).
    Role {
        /// Its id.
        id: MemberId,
        /// The new role.
        role: Role,
    },
    /// The room's control policy changed.
    Policy {
        /// The new policy.
        policy: ControlPolicy,
        /// Who changed it.
        by: MemberId,
    },
}

/// A member of the room on another node.
#[derive(Debug)]
struct Remote {
    node: String,
    role: Role,
    claimed: bool,
    name: String,
    device: String,
}

/// Lead added per viewer beyond 1,000 (see [`Room::lead_us`]).
const LEAD_PER_VIEWER_US: u64 = 12;

/// Member ids of one node's block (scale-out): `base..base + ID_BLOCK`.
pub const ID_BLOCK: u32 = 1 << 20;

/// One room. See the module docs.
#[derive(Debug)]
pub struct Room {
    cfg: RoomConfig,
    current: Timeline,
    pending: Option<(Change, u32, ChangeReason)>,
    epoch: u32,
    members: BTreeMap<MemberId, Member>,
    next_member: MemberId,
    host: Option<HostSlot>,
    wait: Option<Wait>,
    next_tick_at: u64,
    count_sent: Option<(u64, u32)>,
    count_dirty: bool,
    /// Viewers on other nodes (scale-out); counted in [`Room::viewers`].
    remote_viewers: u32,
    /// Scale-out: members on other nodes, by id.
    remote: BTreeMap<MemberId, Remote>,
    /// Scale-out: this node's id block (`None`: ids from 1, nothing shared).
    id_base: Option<MemberId>,
    /// Scale-out: changes to share with the other nodes.
    shared: Vec<Shared>,
    out: VecDeque<Output>,
}

impl Room {
    /// A new, empty, paused room.
    pub fn new(cfg: RoomConfig, now: u64) -> Self {
        Self::with_timeline(cfg, now, Timeline::start(now))
    }

    /// A room that resumes a saved timeline.
    pub fn with_timeline(cfg: RoomConfig, now: u64, timeline: Timeline) -> Self {
        Room {
            next_tick_at: now + cfg.tick_interval_us,
            cfg,
            epoch: timeline.epoch,
            current: timeline,
            pending: None,
            members: BTreeMap::new(),
            next_member: 1,
            host: None,
            wait: None,
            count_sent: None,
            count_dirty: false,
            remote_viewers: 0,
            remote: BTreeMap::new(),
            id_base: None,
            shared: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// The room's settings.
    pub fn config(&self) -> &RoomConfig {
        &self.cfg
    }

    /// Number of viewers: members, plus those on other nodes (scale-out).
    pub fn viewers(&self) -> u32 {
        self.members.len() as u32 + self.remote_viewers
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The timeline in effect at `now` (after applying due changes).
    pub fn timeline(&self) -> Timeline {
        self.current
    }

    /// The member's role, if it is a member.
    pub fn role(&self, id: MemberId) -> Option<Role> {
        self.members.get(&id).map(|m| m.role)
    }

    /// The next queued output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
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
        if self.count_dirty {
            t = t.min(self.count_due());
        }
        if let Some(HostSlot { left_at: Some(left), .. }) = &self.host {
            t = t.min(left + self.cfg.host_grace_us);
        }
        t
    }

    /// Runs everything due at `now`: scheduled changes, ticks, count flushes,
    /// wait deadlines and host hand-over.
    pub fn handle_timeout(&mut self, now: u64) {
        self.advance(now);
        if let Some(w) = &self.wait
            && now >= w.deadline
        {
            let stalled = std::mem::take(&mut self.wait).map(|w| w.members).unwrap_or_default();
            for id in stalled {
                if let Some(m) = self.members.get_mut(&id) {
                    m.no_wait_until = now + self.cfg.buffering_cooldown_us;
                }
            }
            self.resume(now);
        }
        if let Some(HostSlot { left_at: Some(left), .. }) = &self.host
            && now >= left + self.cfg.host_grace_us
        {
            self.host = None;
            self.elect_host();
        }
        if now >= self.next_tick_at {
            self.emit_tick(now);
        }
        self.flush_count(now);
    }

    // ------------------------------------------------------------ members

    /// Adds a member; queues its `Welcome` (and a pending change, if any).
    pub fn join(&mut self, now: u64, info: JoinInfo) -> MemberId {
        self.advance(now);
        let id = self.next_id();
        let role = self.role_for_joiner(&info);
        if role == Role::Host {
            self.host = Some(HostSlot { device_id: info.device_id.clone(), left_at: None });
        }
        if info.host_claim {
            // A host by credentials supersedes hosts by the first-joiner fallback.
            let fallback: Vec<MemberId> =
                self.members.iter().filter(|(_, m)| m.role == Role::Host && !m.claimed).map(|(&id, _)| id).collect();
            for other in fallback {
                self.set_local_role(other, Role::Viewer);
            }
        }
        let wants_presence = info.wants_presence && self.cfg.show_members;
        self.members.insert(
            id,
            Member {
                device_id: info.device_id,
                name: info.name,
                role,
                claimed: info.host_claim,
                wants_presence,
                buffering: false,
                settled: false,
                no_wait_until: 0,
                last_report: None,
            },
        );
        if self.id_base.is_some()
            && let Some(ev) = self.shared_member(id)
        {
            self.shared.push(ev);
        }
        self.to(Audience::One(id), self.welcome(id, role, now));
        if let Some((c, by, reason)) = self.pending {
            self.to(Audience::One(id), changed(c, by, reason));
        }
        if self.cfg.show_members {
            let name = self.members[&id].name.clone();
            self.to(Audience::Presence, ServerMsg::MemberJoined(MemberJoined { member_id: id, role, name }));
        }
        self.count_dirty = true;
        self.flush_count(now);
        id
    }

    /// Removes a member.
    pub fn leave(&mut self, now: u64, id: MemberId) {
        self.advance(now);
        let Some(m) = self.members.remove(&id) else {
            return;
        };
        self.share(|| Shared::Left { id });
        if m.role == Role::Host {
            self.host_left(now, &m.device_id);
        }
        if self.cfg.show_members {
            self.to(Audience::Presence, ServerMsg::MemberLeft(MemberLeft { member_id: id }));
        }
        self.unblock(now, id);
        self.count_dirty = true;
        self.flush_count(now);
    }

    /// Changes a member's role (`by` must be the host; host moves are not
    /// done here). Queues `RoleChanged` to everyone.
    pub fn set_role(&mut self, by: MemberId, target: MemberId, role: Role) -> Result<(), CommandError> {
        if self.role(by) != Some(Role::Host) {
            return Err(CommandError::Forbidden);
        }
        if role == Role::Host {
            return Err(CommandError::InvalidArgument("use host hand-over to move the host role"));
        }
        let current = match (self.members.get(&target), self.remote.get(&target)) {
            (Some(m), _) => m.role,
            (None, Some(r)) => r.role,
            (None, None) => return Err(CommandError::NotMember),
        };
        if current == Role::Host {
            return Err(CommandError::InvalidArgument("the host cannot be demoted"));
        }
        if let Some(r) = self.remote.get_mut(&target) {
            r.role = role;
            self.to(Audience::All, ServerMsg::RoleChanged(RoleChanged { member_id: target, role }));
            self.share(|| Shared::Role { id: target, role });
        } else {
            self.set_local_role(target, role);
        }
        Ok(())
    }

    /// Sets a local member's role, tells everyone here and shares it.
    fn set_local_role(&mut self, id: MemberId, role: Role) {
        let Some(m) = self.members.get_mut(&id) else { return };
        if m.role == role {
            return;
        }
        m.role = role;
        self.to(Audience::All, ServerMsg::RoleChanged(RoleChanged { member_id: id, role }));
        self.share(|| Shared::Role { id, role });
    }

    /// Switches who may change the timeline (host only). Queues
    /// `PolicyChanged` to everyone.
    pub fn set_policy(&mut self, by: MemberId, policy: ControlPolicy) -> Result<(), CommandError> {
        if self.role(by) != Some(Role::Host) {
            return Err(CommandError::Forbidden);
        }
        self.cfg.policy = policy;
        self.to(Audience::All, ServerMsg::PolicyChanged(PolicyChanged { policy, by }));
        self.share(|| Shared::Policy { policy, by });
        Ok(())
    }

    fn role_for_joiner(&self, info: &JoinInfo) -> Role {
        if info.host_claim {
            return Role::Host;
        }
        match &self.host {
            Some(slot) if slot.device_id == info.device_id => Role::Host,
            Some(_) => Role::Viewer,
            None if self.cfg.first_joiner_hosts && !self.has_host() => Role::Host,
            None => Role::Viewer,
        }
    }

    /// Whether some member, here or on another node, hosts.
    fn has_host(&self) -> bool {
        self.members.values().any(|m| m.role == Role::Host) || self.remote.values().any(|r| r.role == Role::Host)
    }

    /// The last host of the room (device `device`) is gone: it keeps the role
    /// for a reconnect during the grace period, then another member is elected.
    fn host_left(&mut self, now: u64, device: &str) {
        if self.has_host() {
            return;
        }
        match &mut self.host {
            Some(slot) if slot.device_id == device => slot.left_at = Some(now),
            Some(_) => {}
            None => self.host = Some(HostSlot { device_id: device.to_owned(), left_at: Some(now) }),
        }
    }

    /// The next free id of this node's block.
    fn next_id(&mut self) -> MemberId {
        loop {
            let id = self.next_member;
            self.next_member = match self.id_base {
                Some(base) if id + 1 >= base + ID_BLOCK => base,
                _ => id.wrapping_add(1).max(1),
            };
            if !self.members.contains_key(&id) && !self.remote.contains_key(&id) {
                return id;
            }
        }
    }

    fn elect_host(&mut self) {
        if !self.cfg.first_joiner_hosts {
            return;
        }
        if self.has_host() {
            return;
        }
        // Co-hosts first, then the longest-present member (smallest id). With
        // several nodes every node sees the same members, so every node picks
        // the same one, and only its own node promotes it.
        let co_host = |role: &Role| *role == Role::CoHost;
        let local = self.members.iter().map(|(&id, m)| (id, m.role));
        let remote = self.remote.iter().map(|(&id, r)| (id, r.role));
        let all: BTreeMap<MemberId, Role> = local.chain(remote).collect();
        let pick = all.iter().find(|(_, r)| co_host(r)).or_else(|| all.iter().next()).map(|(&id, _)| id);
        if let Some(id) = pick
            && let Some(m) = self.members.get(&id)
        {
            self.host = Some(HostSlot { device_id: m.device_id.clone(), left_at: None });
            self.set_local_role(id, Role::Host);
        }
    }

    fn welcome(&self, id: MemberId, role: Role, now: u64) -> ServerMsg {
        ServerMsg::Welcome(Welcome {
            member_id: id,
            role,
            timeline: self.current,
            server_time_us: now,
            viewers: self.viewers(),
            policy: self.cfg.policy,
            limits: Limits { tick_interval_ms: (self.tick_interval_us() / 1000) as u32, ..self.cfg.limits },
        })
    }

    // ------------------------------------------------------------ commands

    /// Applies a member's command, or queues an `Error` to it and returns why not.
    pub fn command(&mut self, now: u64, by: MemberId, request_id: u32, action: Action) -> Result<(), CommandError> {
        self.advance(now);
        let result = self.try_command(now, by, action);
        if let Err(e) = &result {
            let msg = ErrorMsg::new(e.code(), e.to_string(), request_id);
            self.to(Audience::One(by), ServerMsg::Error(msg));
        }
        result
    }

    fn try_command(&mut self, now: u64, by: MemberId, action: Action) -> Result<(), CommandError> {
        let role = self.role(by).ok_or(CommandError::NotMember)?;
        match action {
            Action::SetRole { member_id, role } => return self.set_role(by, member_id, role),
            Action::SetPolicy { policy } => return self.set_policy(by, policy),
            _ => {}
        }
        if self.cfg.policy == ControlPolicy::HostOnly && role == Role::Viewer {
            return Err(CommandError::Forbidden);
        }
        let check_pos = |p: u64| {
            if p > MAX_POSITION_MS { Err(CommandError::InvalidArgument("position out of range")) } else { Ok(p) }
        };
        let intended = self.intended();
        let lead_at = (now + self.lead_us()).max(intended.anchor_us);
        match action {
            Action::Play { position_ms } => {
                let position_ms = position_ms.map(check_pos).transpose()?;
                self.wait = None;
                if position_ms.is_none() && !intended.paused {
                    return Ok(());
                }
                if position_ms.is_none() && !self.current.paused {
                    // A pause was pending: cancel it, keep playing.
                    self.issue(now, self.current, now, by, ChangeReason::Play);
                    return Ok(());
                }
                let position_ms = position_ms.unwrap_or_else(|| intended.whole_ms_point(lead_at).0);
                let t = Timeline { position_ms, anchor_us: lead_at, paused: false, ..intended };
                self.issue(now, t, lead_at, by, ChangeReason::Play);
            }
            Action::Pause { position_ms } => {
                let position_ms = position_ms.map(check_pos).transpose()?;
                let was_waiting = self.wait.take().is_some();
                if position_ms.is_none() && intended.paused {
                    if was_waiting {
                        // The host takes over a buffering pause: no resume follows.
                        self.issue(now, intended, now.max(intended.anchor_us), by, ChangeReason::Pause);
                    }
                    return Ok(());
                }
                if position_ms.is_none() && self.current.paused {
                    // A play was pending: cancel it, stay paused.
                    self.issue(now, self.current, now, by, ChangeReason::Pause);
                    return Ok(());
                }
                let (at_ms, at) =
                    if intended.paused { (intended.position_ms, now) } else { intended.whole_ms_point(lead_at) };
                let t = Timeline { position_ms: position_ms.unwrap_or(at_ms), anchor_us: at, paused: true, ..intended };
                self.issue(now, t, at, by, ChangeReason::Pause);
            }
            Action::Seek { position_ms } => {
                let position_ms = check_pos(position_ms)?;
                let at = now.max(intended.anchor_us);
                let t = Timeline { position_ms, anchor_us: at, ..intended };
                self.issue(now, t, at, by, ChangeReason::Seek);
            }
            Action::SetRole { .. } | Action::SetPolicy { .. } => unreachable!("handled above"),
            Action::SetRate { rate_milli } => {
                if !(MIN_RATE_MILLI..=MAX_RATE_MILLI).contains(&rate_milli) {
                    return Err(CommandError::InvalidArgument("rate must be between 0.25 and 4"));
                }
                let (position_ms, at) = intended.whole_ms_point(now.max(intended.anchor_us));
                let t = Timeline { position_ms, anchor_us: at, rate_milli, ..intended };
                self.issue(now, t, at, by, ChangeReason::Rate);
            }
        }
        Ok(())
    }

    /// The timeline after any pending change.
    fn intended(&self) -> Timeline {
        self.pending.map(|(c, ..)| c.timeline).unwrap_or(self.current)
    }

    /// Issues a new timeline (new epoch) taking effect at `at`.
    fn issue(&mut self, now: u64, mut timeline: Timeline, at: u64, by: MemberId, reason: ChangeReason) {
        self.epoch = self.epoch.wrapping_add(1);
        timeline.epoch = self.epoch;
        let change = Change { timeline, effective_at_us: at };
        self.to(Audience::All, changed(change, by, reason));
        if at <= now {
            // In effect at once: the change is its own tick (it carries the
            // whole timeline), so no tick follows it, and the next periodic
            // one is a whole interval away.
            self.current = timeline;
            self.pending = None;
            self.next_tick_at = now + self.tick_interval_us();
        } else {
            self.pending = Some((change, by, reason));
        }
    }

    /// Promotes a due scheduled change and ticks at once when it takes effect.
    fn advance(&mut self, now: u64) {
        if let Some((c, ..)) = self.pending
            && c.effective_at_us <= now
        {
            self.current = c.timeline;
            self.pending = None;
            self.emit_tick(now.max(c.effective_at_us));
        }
    }

    /// How far ahead play and pause are scheduled: the configured lead, plus
    /// 12 µs per viewer beyond 1,000 (a fan-out costs about that per viewer
    /// on one core, BENCHMARKS.md), so that in a large room the change still
    /// reaches the last viewer before it takes effect: 208 ms at 10,000
    /// viewers with the default 100 ms.
    pub fn lead_us(&self) -> u64 {
        self.cfg.lead_us + u64::from(self.viewers().saturating_sub(1_000)) * LEAD_PER_VIEWER_US
    }

    /// Interval between periodic ticks: the configured one up to 2,500
    /// viewers, then growing with the room to 4× at 10,000 (ticks are
    /// snapshots for drift checks; in a large room they are most of the
    /// traffic, and the clock estimate does not depend on them).
    pub fn tick_interval_us(&self) -> u64 {
        self.cfg.tick_interval_us * (u64::from(self.viewers()) / 2_500).clamp(1, 4)
    }

    fn emit_tick(&mut self, now: u64) {
        let tick = Tick::new(&self.current, now, self.viewers());
        self.to(Audience::All, ServerMsg::Tick(tick));
        self.next_tick_at = now + self.tick_interval_us();
    }

    // ------------------------------------------------------------ reports and buffering

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
        self.issue(now, t, at, id, ChangeReason::BufferingWait);
        self.wait = Some(Wait { deadline: now + self.cfg.buffering_wait_max_us, members: BTreeSet::from([id]) });
    }

    /// A member stopped blocking the wait (recovered or left).
    fn unblock(&mut self, now: u64, id: MemberId) {
        let Some(w) = &mut self.wait else { return };
        w.members.remove(&id);
        if w.members.is_empty() {
            self.wait = None;
            self.resume(now);
        }
    }

    fn resume(&mut self, now: u64) {
        let intended = self.intended();
        if !intended.paused {
            return;
        }
        let at = (now + self.lead_us()).max(intended.anchor_us);
        let t = Timeline { anchor_us: at, paused: false, ..intended };
        self.issue(now, t, at, 0, ChangeReason::Resume);
    }

    // ------------------------------------------------------------ counts

    fn count_due(&self) -> u64 {
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

    fn flush_count(&mut self, now: u64) {
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

    // ------------------------------------------------------------ misc

    fn to(&mut self, to: Audience, msg: ServerMsg) {
        self.out.push_back(Output { to, msg });
    }

    /// Whether member `id` should receive a message for `to`.
    pub fn is_recipient(&self, to: Audience, id: MemberId) -> bool {
        match to {
            Audience::All => true,
            Audience::One(one) => one == id,
            Audience::Presence => self.members.get(&id).is_some_and(|m| m.wants_presence),
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
            pending: self.pending.map(|(c, by, reason)| match changed(c, by, reason) {
                ServerMsg::TimelineChanged(tc) => tc,
                _ => unreachable!("changed() builds a TimelineChanged"),
            }),
            position: self.current.position_us_at(now) as f64 / 1e6,
            server_time_us: now,
            viewers: self.viewers(),
            policy: self.cfg.policy,
            members,
            buffering_wait: self.wait.is_some(),
        }
    }
}

/// Scale-out: several nodes each run a `Room` for their own members of one
/// room; a shared authority (see `crate::cluster`) orders the timeline
/// changes. The runtime commits a change this room made (found with
/// [`Room::change_since`]) before delivering it, discards it if the authority
/// refused it, and applies changes made elsewhere with [`Room::apply_external`].
impl Room {
    /// The epoch of the latest change issued (in effect or pending).
    pub fn epoch(&self) -> u32 {
        self.epoch
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

    /// A mark in the output queue (valid until the next [`Room::poll_output`]).
    pub fn output_mark(&self) -> usize {
        self.out.len()
    }

    /// The last timeline change queued since `mark`, if the epoch moved.
    pub fn change_since(&self, mark: usize) -> Option<TimelineChanged> {
        self.out.range(mark.min(self.out.len())..).rev().find_map(|o| match &o.msg {
            ServerMsg::TimelineChanged(c) if c.timeline.epoch == self.epoch => Some(c.clone()),
            _ => None,
        })
    }

    /// Drops the output queued since `mark` (a change the authority refused).
    pub fn discard_since(&mut self, mark: usize) {
        self.out.truncate(mark);
    }

    /// Applies a change decided elsewhere, exactly as decided: same timeline,
    /// epoch and effective time, so scheduled play and pause land on the same
    /// position on every node. Queues it to every member (as made by the
    /// server) and, if it is scheduled, a tick once it takes effect.
    pub fn apply_external(&mut self, now: u64, change: TimelineChanged) {
        self.set_change(now, change, true);
    }

    /// Returns to a change the authority holds without announcing it (after a
    /// local change could not be committed and was discarded).
    pub fn restore(&mut self, now: u64, change: TimelineChanged) {
        self.set_change(now, change, false);
    }

    fn set_change(&mut self, now: u64, c: TimelineChanged, announce: bool) {
        self.epoch = c.timeline.epoch;
        self.wait = None;
        let change = Change { timeline: c.timeline, effective_at_us: c.effective_at_us };
        if c.effective_at_us <= now {
            self.current = c.timeline;
            self.pending = None;
        } else {
            self.pending = Some((change, 0, c.reason));
        }
        if announce {
            self.to(Audience::All, changed(change, 0, c.reason));
            if self.pending.is_none() {
                // The change is its own tick (see `issue`).
                self.next_tick_at = now + self.tick_interval_us();
            }
        }
    }

    /// Scale-out: from now on, members get ids from the block starting at
    /// `base` (unique across the nodes serving the room) and membership and
    /// control changes are queued for [`Room::take_shared`].
    pub fn enable_sharing(&mut self, base: MemberId) {
        self.id_base = Some(base);
        self.next_member = base;
    }

    fn share(&mut self, ev: impl FnOnce() -> Shared) {
        if self.id_base.is_some() {
            self.shared.push(ev());
        }
    }

    /// Scale-out: the changes to share with the other nodes since the last call.
    pub fn take_shared(&mut self) -> Vec<Shared> {
        std::mem::take(&mut self.shared)
    }

    /// Whether `id` is a member on this node.
    pub fn is_local(&self, id: MemberId) -> bool {
        self.members.contains_key(&id)
    }

    /// A local member as the other nodes see it (for their snapshots).
    pub fn shared_member(&self, id: MemberId) -> Option<Shared> {
        let m = self.members.get(&id)?;
        Some(Shared::Joined { id, role: m.role, claimed: m.claimed, name: m.name.clone(), device: m.device_id.clone() })
    }

    /// Every local member as the other nodes see it (to re-announce them).
    pub fn shared_members(&self) -> Vec<Shared> {
        self.members.keys().filter_map(|&id| self.shared_member(id)).collect()
    }

    /// Applies a change shared by another node, `node`.
    pub fn apply_shared(&mut self, now: u64, node: &str, ev: Shared) {
        match ev {
            Shared::Joined { id, role, claimed, name, device } => {
                if self.members.contains_key(&id) {
                    return;
                }
                let new = !self.remote.contains_key(&id);
                let remote = Remote { node: node.to_owned(), role, claimed, name, device };
                if role == Role::Host {
                    self.remote_host(id, &remote);
                }
                if new && self.cfg.show_members {
                    let joined = MemberJoined { member_id: id, role, name: remote.name.clone() };
                    self.to(Audience::Presence, ServerMsg::MemberJoined(joined));
                }
                self.remote.insert(id, remote);
            }
            Shared::Left { id } => self.remote_left(now, id),
            Shared::Role { id, role } => {
                if let Some(r) = self.remote.get_mut(&id) {
                    if r.role != role {
                        r.role = role;
                        self.to(Audience::All, ServerMsg::RoleChanged(RoleChanged { member_id: id, role }));
                    }
                } else if self.members.contains_key(&id) {
                    // Set by a host on another node; this node owns the member.
                    self.set_local_role(id, role);
                }
                if role == Role::Host
                    && let Some(r) = self.remote.get(&id)
                {
                    self.host = Some(HostSlot { device_id: r.device.clone(), left_at: None });
                }
            }
            Shared::Policy { policy, by } => {
                if self.cfg.policy != policy {
                    self.cfg.policy = policy;
                    self.to(Audience::All, ServerMsg::PolicyChanged(PolicyChanged { policy, by }));
                }
            }
        }
    }

    /// A host joined on another node: hosts by the first-joiner fallback here
    /// step down for a host by credentials, and of two fallback hosts elected
    /// at once on two nodes the smaller id keeps the role (every node decides
    /// the same way, so exactly one remains).
    fn remote_host(&mut self, id: MemberId, remote: &Remote) {
        let step_down: Vec<MemberId> = self
            .members
            .iter()
            .filter(|&(&mine, m)| m.role == Role::Host && !m.claimed && (remote.claimed || id < mine))
            .map(|(&mine, _)| mine)
            .collect();
        for mine in step_down {
            self.set_local_role(mine, Role::Viewer);
        }
        if !self.members.values().any(|m| m.role == Role::Host) {
            self.host = Some(HostSlot { device_id: remote.device.clone(), left_at: None });
        }
    }

    fn remote_left(&mut self, now: u64, id: MemberId) {
        let Some(r) = self.remote.remove(&id) else { return };
        if r.role == Role::Host {
            self.host_left(now, &r.device);
        }
        if self.cfg.show_members {
            self.to(Audience::Presence, ServerMsg::MemberLeft(MemberLeft { member_id: id }));
        }
    }

    /// Scale-out: node `node` is gone (its presence expired): its members leave.
    pub fn node_gone(&mut self, now: u64, node: &str) {
        let gone: Vec<MemberId> = self.remote.iter().filter(|(_, r)| r.node == node).map(|(&id, _)| id).collect();
        for id in gone {
            self.remote_left(now, id);
        }
    }

    /// Scale-out: replaces what this room knows of other nodes' members with
    /// a snapshot (on start, and when Redis is back after an outage).
    pub fn set_remote_members(&mut self, now: u64, snapshot: Vec<(String, Shared)>) {
        let keep: BTreeSet<MemberId> = snapshot
            .iter()
            .filter_map(|(_, ev)| match ev {
                Shared::Joined { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        let gone: Vec<MemberId> = self.remote.keys().filter(|id| !keep.contains(id)).copied().collect();
        for id in gone {
            self.remote_left(now, id);
        }
        for (node, ev) in snapshot {
            let role = match &ev {
                Shared::Joined { id, role, .. } => self.remote.get(id).map(|r| (*id, r.role, *role)),
                _ => None,
            };
            match role {
                // Known already: only the role may have changed.
                Some((id, was, now_role)) if was != now_role => {
                    self.apply_shared(now, &node, Shared::Role { id, role: now_role })
                }
                Some(_) => {}
                None => self.apply_shared(now, &node, ev),
            }
        }
    }

    /// Queues an `Error` to a member (a command refused outside the core,
    /// e.g. while the shared state is unreachable).
    pub fn refuse(&mut self, to: MemberId, request_id: u32, code: ErrorCode, message: &str) {
        self.to(Audience::One(to), ServerMsg::Error(ErrorMsg::new(code, message.to_owned(), request_id)));
    }
}

fn changed(c: Change, by: MemberId, reason: ChangeReason) -> ServerMsg {
    ServerMsg::TimelineChanged(TimelineChanged { timeline: c.timeline, effective_at_us: c.effective_at_us, by, reason })
}

#[cfg(test)]
mod tests;
