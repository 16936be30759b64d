//! Members: join and leave, roles and policy, host election, `Welcome`.

use std::collections::BTreeMap;

use lockstep_protocol::{
    ControlPolicy, Limits, MemberJoined, MemberLeft, PolicyChanged, Report, Role, RoleChanged, ServerMsg, Welcome,
};

use super::{Audience, CommandError, ID_BLOCK, JoinInfo, MemberId, Room, Shared};

#[derive(Debug)]
pub(super) struct Member {
    pub(super) device_id: String,
    pub(super) name: String,
    pub(super) role: Role,
    /// Hosts by its credentials (a `host_of` claim, or the party's inviter),
    /// not by the first-joiner fallback.
    pub(super) claimed: bool,
    pub(super) wants_presence: bool,
    pub(super) wants_acks: bool,
    pub(super) buffering: bool,
    /// Has reported playing smoothly at least once (initial loading never
    /// starts a wait).
    pub(super) settled: bool,
    /// Cannot start a buffering wait before this time.
    pub(super) no_wait_until: u64,
    pub(super) last_report: Option<(u64, Report)>,
    pub(super) wants_live: bool,
    /// Takes ticks and changes as datagrams (counted in `datagram_members`).
    pub(super) datagrams: bool,
    /// Live rooms: its recent needs (auto latency).
    pub(super) live_needs: super::live::Needs,
    /// Its latest measured drift (sync quality).
    pub(super) drift: Option<super::quality::Drift>,
    /// Its latest measured round trip, µs (`reach.rs`).
    pub(super) rtt_us: Option<u32>,
    /// Why it suspended itself (`Suspend`), until it resumes.
    pub(super) suspension: Option<String>,
    /// Why it does not follow the room (its suspension, or buffering) and since when.
    pub(super) stall: Option<(String, u64)>,
    /// Its stall makes the room wait, by policy (as last evaluated).
    pub(super) blocking: bool,
    /// Scale-out: its stall as last shared with the other nodes (reason, holds a wait).
    pub(super) shared_stall: (Option<String>, bool),
    /// Takes `Reactions`.
    pub(super) wants_reactions: bool,
    /// Its reaction allowance.
    pub(super) reactions: super::reactions::Allowance,
    /// Takes chat.
    pub(super) wants_chat: bool,
    /// Takes media items and playlists.
    pub(super) wants_media: bool,
    /// Its user (token subject): chat mutes apply to it.
    pub(super) user: String,
    /// Its chat allowance.
    pub(super) chat: super::reactions::Allowance,
}

#[derive(Debug)]
pub(super) struct HostSlot {
    pub(super) device_id: String,
    /// When the host's last connection left; `None` while connected.
    pub(super) left_at: Option<u64>,
}

impl Room {
    /// Adds a member; queues its `Welcome` (and a pending change, if any).
    pub fn join(&mut self, now: u64, info: JoinInfo) -> MemberId {
        self.advance(now);
        let id = self.next_id();
        let role = self.role_for_joiner(&info);
        if role == Role::Host {
            self.host = Some(HostSlot { device_id: info.device_id.clone(), left_at: None });
        }
        if role == Role::Host {
            // One host at most. A host by credentials supersedes hosts by the
            // first-joiner fallback; the host's device joining again (a
            // reconnection that came before the old connection left, or a
            // second tab) takes the role, and the old connection co-hosts.
            let others: Vec<(MemberId, Role)> = self
                .members
                .iter()
                .filter(|(_, m)| m.role == Role::Host)
                .map(|(&id, m)| (id, if m.device_id == info.device_id { Role::CoHost } else { Role::Viewer }))
                .collect();
            for (other, to) in others {
                self.set_local_role(other, to);
            }
        }
        let wants_presence = info.wants_presence && self.cfg.show_members;
        self.datagram_members += u32::from(info.datagrams);
        self.members.insert(
            id,
            Member {
                device_id: info.device_id,
                name: info.name,
                role,
                claimed: info.host_claim,
                wants_presence,
                wants_acks: info.wants_acks,
                buffering: false,
                settled: false,
                no_wait_until: 0,
                last_report: None,
                wants_live: info.wants_live,
                datagrams: info.datagrams,
                live_needs: Default::default(),
                drift: None,
                rtt_us: None,
                suspension: None,
                stall: None,
                blocking: false,
                shared_stall: (None, false),
                wants_reactions: info.wants_reactions,
                reactions: Default::default(),
                wants_chat: info.wants_chat,
                wants_media: info.wants_media,
                user: info.user,
                chat: Default::default(),
            },
        );
        if self.id_base.is_some()
            && let Some(ev) = self.shared_member(id)
        {
            self.shared.push(ev);
        }
        self.to(Audience::One(id), self.welcome(id, role, now));
        if info.wants_live
            && let Some(state) = self.live_state()
        {
            self.to(Audience::One(id), ServerMsg::LiveState(state));
        }
        if let Some((c, by, reason)) = self.pending {
            self.to(Audience::One(id), ServerMsg::TimelineChanged(c.message(by, reason)));
        }
        if self.members[&id].wants_media {
            self.media_welcome(id);
        }
        if self.members[&id].wants_chat {
            self.chat_welcome(id);
        }
        if self.cfg.show_members {
            let name = self.members[&id].name.clone();
            self.to(Audience::Presence, ServerMsg::MemberJoined(MemberJoined { member_id: id, role, name }));
        }
        self.count_dirty = true;
        self.flush_count(now);
        id
    }

    /// Removes a member (its held commands are dropped).
    pub fn leave(&mut self, now: u64, id: MemberId) {
        self.advance(now);
        let Some(m) = self.members.remove(&id) else {
            return;
        };
        self.datagram_members -= u32::from(m.datagrams);
        if m.rtt_us.is_some() {
            self.reach_changed(now);
        }
        self.drop_held(id);
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
    pub(super) fn set_local_role(&mut self, id: MemberId, role: Role) {
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
            // One host at most: of two hosts by credentials (two devices of
            // the host, two users with `host_of`), the first keeps the role
            // and the other co-hosts (and is elected if the host goes).
            let claimed_host = self.members.values().any(|m| m.role == Role::Host && m.claimed)
                || self.remote.values().any(|r| r.role == Role::Host && r.claimed);
            return if claimed_host { Role::CoHost } else { Role::Host };
        }
        match &self.host {
            Some(slot) if slot.device_id == info.device_id => Role::Host,
            Some(_) => Role::Viewer,
            None if self.cfg.first_joiner_hosts && !self.has_host() => Role::Host,
            None => Role::Viewer,
        }
    }

    /// Whether some member, here or on another node, hosts.
    pub(super) fn has_host(&self) -> bool {
        self.members.values().any(|m| m.role == Role::Host) || self.remote.values().any(|r| r.role == Role::Host)
    }

    /// The last host of the room (device `device`) is gone: it keeps the role
    /// for a reconnect during the grace period, then another member is elected.
    pub(super) fn host_left(&mut self, now: u64, device: &str) {
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

    pub(super) fn elect_host(&mut self) {
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

    pub(super) fn welcome(&self, id: MemberId, role: Role, now: u64) -> ServerMsg {
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
}
