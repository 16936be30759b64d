//! Chat (SPEC §6.6): messages in the room's order, the room's latest ones
//! replayed to joiners, limits per member and per room, and moderation
//! (delete a message, mute a member's user) by the host and co-hosts.
//!
//! Every chat operation the room accepts goes out through
//! [`Room::poll_chat`] to the authority, which stores it (and, scaled out,
//! gives a message its id and publishes the operation to every node, this
//! one included); the room applies what comes back with
//! [`Room::apply_chat`], so every node delivers a room's messages in the
//! same order. One node numbers messages itself, from the last id stored.

use std::collections::{HashSet, VecDeque};

use lockstep_protocol::{ChatDeleted, ChatMessage, ChatMuted, ErrorCode, Role, ServerMsg};
use serde::{Deserialize, Serialize};

use super::reactions::Allowance;
use super::{Audience, CommandError, MemberId, Room};

/// A member's sustained chat messages per second.
const CHAT_PER_SEC: u64 = 1;
/// A member's burst of chat messages.
const CHAT_BURST: u64 = 5;

/// A chat message as the room and its store keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRecord {
    /// Its id in the room. Scaled out, until the shared state gives it one:
    /// the lowest it may get (the room's next).
    pub id: u64,
    /// When the room took it, Unix ms.
    pub at_ms: u64,
    /// The sender's member id.
    pub member_id: MemberId,
    /// The sender's user (token subject): what a mute applies to. Never sent
    /// to clients.
    pub user: String,
    /// The sender's display name.
    pub name: String,
    /// The sender's role then.
    pub role: Role,
    /// The text.
    pub text: String,
    /// The sender's request id (its copy of the message answers it).
    #[serde(default)]
    pub request_id: u32,
}

impl ChatRecord {
    /// The message clients get.
    pub fn message(&self, history: bool) -> ChatMessage {
        ChatMessage {
            id: self.id,
            at_ms: self.at_ms,
            member_id: self.member_id,
            name: self.name.clone(),
            role: self.role,
            text: self.text.clone(),
            request_id: if history { 0 } else { self.request_id },
            history,
        }
    }
}

/// A chat operation the room accepted, for the authority to store (and,
/// scaled out, to order and publish) and for the rooms to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ChatOp {
    /// A new message.
    Post(ChatRecord),
    /// A message deleted.
    #[serde(rename_all = "camelCase")]
    Delete {
        /// The message.
        id: u64,
        /// Who deleted it.
        by: MemberId,
    },
    /// A user muted or unmuted.
    #[serde(rename_all = "camelCase")]
    Mute {
        /// The user (token subject).
        user: String,
        /// Muted or not.
        muted: bool,
        /// Who decided it.
        by: MemberId,
    },
}

/// What a room loads of its chat from the authority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatLoad {
    /// The latest messages, oldest first.
    pub history: Vec<ChatRecord>,
    /// The highest id ever given (deleted messages included).
    pub last_id: u64,
    /// Muted users.
    pub muted: Vec<String>,
}

/// The room's chat.
#[derive(Debug, Default)]
pub(super) struct Chat {
    history: VecDeque<ChatRecord>,
    last_id: u64,
    muted: HashSet<String>,
    /// Accepted, for [`Room::poll_chat`].
    ops: VecDeque<ChatOp>,
    /// The room's allowance (`--chat-room-rate`).
    room: Allowance,
}

impl Room {
    /// Member `id`'s chat message `text` with `request_id`: accepted (it goes
    /// out through [`Room::poll_chat`]) or refused with an `Error` to the
    /// member (the code is returned).
    pub fn chat(&mut self, now: u64, id: MemberId, request_id: u32, text: String) -> Result<(), ErrorCode> {
        let refuse = |room: &mut Room, code: ErrorCode, why: &str| {
            room.refuse(id, request_id, code, why);
            Err(code)
        };
        let room_rate = u64::from(self.cfg.chat_room_per_sec);
        let Some(m) = self.members.get_mut(&id) else { return Err(ErrorCode::NotJoined) };
        if room_rate == 0 {
            return refuse(self, ErrorCode::Forbidden, "chat is off in this room");
        }
        if text.len() > self.cfg.chat_max_bytes as usize || !lockstep_protocol::valid_chat_text(&text) {
            let why = format!(
                "a chat message is 1-{} bytes of text (not only white space; no control character but line feed, \
                 no bidirectional override)",
                self.cfg.chat_max_bytes
            );
            return refuse(self, ErrorCode::InvalidArgument, &why);
        }
        if self.chat.muted.contains(&m.user) {
            return refuse(self, ErrorCode::Forbidden, "you are muted in this room's chat");
        }
        if !m.chat.take(now, CHAT_PER_SEC, CHAT_BURST) {
            return refuse(self, ErrorCode::RateLimited, "chat: at most 1 message a second (bursts of 5)");
        }
        let mut record = ChatRecord {
            id: 0,
            at_ms: now / 1000,
            member_id: id,
            user: m.user.clone(),
            name: m.name.clone(),
            role: m.role,
            text,
            request_id,
        };
        if !self.chat.room.take(now, room_rate, 2 * room_rate) {
            return refuse(self, ErrorCode::RateLimited, "the room's chat is busy; try again in a moment");
        }
        if self.id_base.is_none() {
            // One node: the room numbers its messages.
            self.chat.last_id += 1;
            record.id = self.chat.last_id;
        } else {
            // Scaled out, the shared state numbers them, never below the
            // room's next (a Redis that lost its counter does not give an id
            // again).
            record.id = self.chat.last_id + 1;
        }
        self.chat.ops.push_back(ChatOp::Post(record));
        Ok(())
    }

    /// `DeleteChat`: the host or a co-host deletes message `id`.
    pub(super) fn delete_chat(&mut self, by: MemberId, id: u64) -> Result<(), CommandError> {
        self.moderator(by)?;
        if id == 0 || self.id_base.is_none() && id > self.chat.last_id {
            return Err(CommandError::InvalidArgument("no such chat message"));
        }
        self.chat.ops.push_back(ChatOp::Delete { id, by });
        Ok(())
    }

    /// `MuteChat`: the host or a co-host mutes (or unmutes) a member's user.
    pub(super) fn mute_chat(&mut self, by: MemberId, target: MemberId, muted: bool) -> Result<(), CommandError> {
        let mine = self.moderator(by)?;
        let (role, user) = match (self.members.get(&target), self.remote.get(&target)) {
            (Some(m), _) => (m.role, m.user.clone()),
            (None, Some(r)) => (r.role, r.user.clone()),
            (None, None) => return Err(CommandError::InvalidArgument("no such member")),
        };
        if role == Role::Host {
            return Err(CommandError::Denied("nobody mutes a host"));
        }
        if mine == Role::CoHost && role != Role::Viewer {
            return Err(CommandError::Denied("a co-host mutes viewers only"));
        }
        if user.is_empty() {
            return Err(CommandError::InvalidArgument("the member's node does not share its user; try again later"));
        }
        self.chat.ops.push_back(ChatOp::Mute { user, muted, by });
        Ok(())
    }

    fn moderator(&self, by: MemberId) -> Result<Role, CommandError> {
        match self.role(by) {
            Some(r @ (Role::Host | Role::CoHost)) => Ok(r),
            _ => Err(CommandError::Denied("only the host and co-hosts moderate the chat")),
        }
    }

    /// The next chat operation for the authority.
    pub fn poll_chat(&mut self) -> Option<ChatOp> {
        self.chat.ops.pop_front()
    }

    /// Applies a chat operation the authority stored (and ordered): tells
    /// the members.
    pub fn apply_chat(&mut self, op: ChatOp) {
        match op {
            ChatOp::Post(record) => {
                self.chat.last_id = self.chat.last_id.max(record.id);
                self.to(Audience::Chat, ServerMsg::ChatMessage(record.message(false)));
                self.chat.history.push_back(record);
                while self.chat.history.len() > self.cfg.chat_history as usize {
                    self.chat.history.pop_front();
                }
            }
            ChatOp::Delete { id, by } => {
                self.chat.history.retain(|r| r.id != id);
                self.to(Audience::Chat, ServerMsg::ChatDeleted(ChatDeleted { id, by }));
            }
            ChatOp::Mute { user, muted, by } => {
                let changed = if muted { self.chat.muted.insert(user.clone()) } else { self.chat.muted.remove(&user) };
                if !changed {
                    return;
                }
                let theirs: Vec<MemberId> =
                    self.members.iter().filter(|(_, m)| m.user == user).map(|(&id, _)| id).collect();
                for id in theirs {
                    self.to(Audience::One(id), ServerMsg::ChatMuted(ChatMuted { muted, by }));
                }
            }
        }
    }

    /// The authority could not take `op`: its sender is told (a message is
    /// lost to it only, and it knows).
    pub fn chat_failed(&mut self, op: ChatOp) {
        if let ChatOp::Post(r) = op
            && self.members.contains_key(&r.member_id)
        {
            self.refuse(
                r.member_id,
                r.request_id,
                ErrorCode::Internal,
                "the shared state (Redis) is unreachable; message not sent",
            );
        }
    }

    /// The chat as the authority holds it (when the room starts, and again
    /// after the authority was unreachable).
    pub fn load_chat(&mut self, load: ChatLoad) {
        self.chat.last_id = self.chat.last_id.max(load.last_id);
        self.chat.muted = load.muted.into_iter().collect();
        let keep = load.history.len().saturating_sub(self.cfg.chat_history as usize);
        self.chat.history = load.history.into_iter().skip(keep).collect();
    }

    /// The chat as this room holds it (offered to the authority when it
    /// reloads, to be written back where the authority lost it).
    pub fn chat_state(&self) -> ChatLoad {
        let mut muted: Vec<String> = self.chat.muted.iter().cloned().collect();
        muted.sort_unstable();
        ChatLoad { history: self.chat.history.iter().cloned().collect(), last_id: self.chat.last_id, muted }
    }

    /// Up to `limit` of the room's latest messages before `before` (all if
    /// `None`), oldest first: what it holds in memory (the newest
    /// `--chat-history`), which the store may not have yet.
    pub fn chat_page(&self, before: Option<u64>, limit: usize) -> Vec<ChatRecord> {
        let older = |r: &&ChatRecord| before.is_none_or(|b| r.id < b);
        let mut page: Vec<ChatRecord> = self.chat.history.iter().rev().filter(older).take(limit).cloned().collect();
        page.reverse();
        page
    }

    /// A joining member's history (and its mute), after its `Welcome`.
    pub(super) fn chat_welcome(&mut self, id: MemberId) {
        let Some(m) = self.members.get(&id) else { return };
        let muted = self.chat.muted.contains(&m.user);
        let history: Vec<ServerMsg> =
            self.chat.history.iter().map(|r| ServerMsg::ChatMessage(r.message(true))).collect();
        for msg in history {
            self.to(Audience::One(id), msg);
        }
        if muted {
            self.to(Audience::One(id), ServerMsg::ChatMuted(ChatMuted { muted: true, by: 0 }));
        }
    }
}
