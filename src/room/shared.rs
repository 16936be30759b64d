//! Scale-out: members, roles and policy shared across the nodes serving a
//! room. Each node's room has its own block of member ids, queues its joins,
//! leaves, role and policy changes for [`Room::take_shared`], and applies the
//! other nodes' with [`Room::apply_shared`]. Host election is deterministic:
//! every node sees the same members and picks the same one.

use std::collections::BTreeSet;

use lockstep_protocol::{ControlPolicy, MemberJoined, MemberLeft, PolicyChanged, Role, RoleChanged, ServerMsg};
use serde::{Deserialize, Serialize};

use super::members::HostSlot;
use super::{Audience, MemberId, Room};

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
        /// Its user (token subject): a chat mute decided on another node
        /// applies to it. Empty from nodes that do not share it.
        #[serde(default)]
        user: String,
        /// Why it does not follow the room, if it stalled (as
        /// [`Shared::Stall`] shares it): stored with the member, so a node
        /// that loads the room later lists it and waits for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stall: Option<String>,
        /// Whether that stall holds the room's wait.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        holds: bool,
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
    /// The room's clock setting changed (`PUT …/clock`), or a live room
    /// stored the origin it started with.
    Clock {
        /// The setting in force.
        setting: super::ClockSetting,
    },
    /// The room's media state changed (a switch, the playlist).
    Media {
        /// The state in force.
        state: super::MediaState,
        /// Who changed it (0: the room).
        by: MemberId,
    },
    /// A member of the sending node stalled (`reason`) or follows again
    /// (`None`); `holds`: its stall makes the room wait (the node whose wait
    /// paused the room waits for it too).
    Stall {
        /// Its id.
        id: MemberId,
        /// Why it does not follow the room (`None`: it follows).
        reason: Option<String>,
        /// Whether its stall holds the room's wait.
        holds: bool,
    },
    /// The reactions of the sending node's members in one of its windows:
    /// the receiving node counts them into its own next window.
    Reactions {
        /// `(emoji, count)`, at most `MAX_REACTION_KINDS`.
        counts: Vec<(String, u32)>,
    },
}

/// A member of the room on another node.
#[derive(Debug)]
pub(super) struct Remote {
    node: String,
    pub(super) role: Role,
    pub(super) claimed: bool,
    name: String,
    device: String,
    pub(super) user: String,
    /// Why it does not follow the room, and since when (this node's clock).
    stall: Option<(String, u64)>,
    /// Whether its stall holds the room's wait (a wait this node starts waits for it too).
    pub(super) holds: bool,
}

impl Room {
    /// Scale-out: from now on, members get ids from the block starting at
    /// `base` (unique across the nodes serving the room) and membership and
    /// control changes are queued for [`Room::take_shared`].
    pub fn enable_sharing(&mut self, base: MemberId) {
        self.id_base = Some(base);
        self.next_member = base;
    }

    pub(super) fn share(&mut self, ev: impl FnOnce() -> Shared) {
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
        Some(Shared::Joined {
            id,
            role: m.role,
            claimed: m.claimed,
            name: m.name.clone(),
            device: m.device_id.clone(),
            user: m.user.clone(),
            stall: m.shared_stall.0.clone(),
            holds: m.shared_stall.1,
        })
    }

    /// Every local member as the other nodes see it (to re-announce them),
    /// each followed by its stall if it has one.
    pub fn shared_members(&self) -> Vec<Shared> {
        let mut out = Vec::new();
        for (&id, m) in &self.members {
            out.extend(self.shared_member(id));
            if m.shared_stall.0.is_some() {
                out.push(Shared::Stall { id, reason: m.shared_stall.0.clone(), holds: m.shared_stall.1 });
            }
        }
        out
    }

    /// Another node's member `id` stalled for `reason` (`None`: follows
    /// again), holding the room's wait or not; false if it is not known here.
    pub(super) fn set_remote_stall(&mut self, now: u64, id: MemberId, reason: Option<String>, holds: bool) -> bool {
        let Some(r) = self.remote.get_mut(&id) else { return false };
        if r.stall.as_ref().map(|(x, _)| x) != reason.as_ref() {
            r.stall = reason.map(|x| (x, now));
        }
        r.holds = holds;
        true
    }

    /// The other nodes' members whose stalls hold the room's wait.
    pub(super) fn remote_holders(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.remote.iter().filter(|(_, r)| r.holds).map(|(&id, _)| id)
    }

    /// The other nodes' members that do not follow the room: (id, name, reason, since).
    pub(super) fn remote_stalls(&self) -> impl Iterator<Item = (MemberId, &str, &str, u64)> {
        self.remote
            .iter()
            .filter_map(|(&id, r)| r.stall.as_ref().map(|(why, since)| (id, r.name.as_str(), why.as_str(), *since)))
    }

    /// Applies a change shared by another node, `node`.
    pub fn apply_shared(&mut self, now: u64, node: &str, ev: Shared) {
        match ev {
            Shared::Joined { id, role, claimed, name, device, user, stall: stored, holds: stored_holds } => {
                if self.members.contains_key(&id) {
                    return;
                }
                let new = !self.remote.contains_key(&id);
                let (stall, holds) = self.remote.get_mut(&id).map_or((None, false), |r| (r.stall.take(), r.holds));
                let remote = Remote { node: node.to_owned(), role, claimed, name, device, user, stall, holds };
                if role == Role::Host {
                    self.remote_host(id, &remote);
                }
                if new && self.cfg.show_members {
                    let joined = MemberJoined { member_id: id, role, name: remote.name.clone() };
                    self.to(Audience::Presence, ServerMsg::MemberJoined(joined));
                }
                self.remote.insert(id, remote);
                if stored.is_some() {
                    self.remote_stall(now, id, stored, stored_holds);
                }
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
            Shared::Stall { id, reason, holds } => self.remote_stall(now, id, reason, holds),
            Shared::Clock { setting } => self.adopt_clock(now, setting),
            Shared::Reactions { counts } => self.remote_reactions(now, counts),
            Shared::Media { state, by } => self.apply_media(state, by),
            Shared::Policy { policy, by } => {
                if self.cfg.policy != policy {
                    self.cfg.policy = policy;
                    self.to(Audience::All, ServerMsg::PolicyChanged(PolicyChanged { policy, by }));
                }
            }
        }
    }

    /// A host joined on another node: hosts by the first-joiner fallback here
    /// step down for a host by credentials, and of two fallback hosts (or two
    /// hosts by credentials) at once on two nodes the smaller id keeps the
    /// role (every node decides the same way, so exactly one remains); a host
    /// by credentials that steps down co-hosts.
    fn remote_host(&mut self, id: MemberId, remote: &Remote) {
        let step_down: Vec<(MemberId, Role)> = self
            .members
            .iter()
            .filter(|&(&mine, m)| {
                m.role == Role::Host && (remote.claimed || !m.claimed) && (remote.claimed != m.claimed || id < mine)
            })
            .map(|(&mine, m)| (mine, if m.claimed { Role::CoHost } else { Role::Viewer }))
            .collect();
        for (mine, role) in step_down {
            self.set_local_role(mine, role);
        }
        if !self.members.values().any(|m| m.role == Role::Host) {
            self.host = Some(HostSlot { device_id: remote.device.clone(), left_at: None });
        }
    }

    fn remote_left(&mut self, now: u64, id: MemberId) {
        let Some(r) = self.remote.remove(&id) else { return };
        if self.wait.as_ref().is_some_and(|w| w.members.contains(&id)) {
            self.unblock(now, id);
        }
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
            let Shared::Joined { id, role, stall, holds, .. } = &ev else { continue };
            let Some(r) = self.remote.get(id) else {
                self.apply_shared(now, &node, ev);
                continue;
            };
            // Known already: the role and the stall may have changed (the
            // record is the member's node's latest word on both).
            let (id, role, stall, holds) = (*id, *role, stall.clone(), *holds);
            let stall_changed = r.stall.as_ref().map(|(why, _)| why) != stall.as_ref() || r.holds != holds;
            if r.role != role {
                self.apply_shared(now, &node, Shared::Role { id, role });
            }
            if stall_changed {
                self.remote_stall(now, id, stall, holds);
            }
        }
    }
}
