//! What plays next (SPEC §6.7): the room's current media item, its playlist
//! and auto-advance.
//!
//! A switch is one timeline change (paused at 0, at once) plus a
//! `MediaChanged` naming its epoch; a room that was playing then starts the
//! item by itself `media_start_us` later, scheduled like any play, so every
//! member starts it on the same frame. The state is shared with the other
//! nodes serving the room ([`Shared::Media`]) and stored by the authority
//! (the actor hands it over when [`Room::take_media_save`] says so).

use lockstep_protocol::limits::{MAX_FRAME, MAX_QUEUE};
use lockstep_protocol::{
    AckOutcome, ChangeReason, ClockKind, ControlPolicy, MediaChanged, MediaItem, MediaOp, QueueChanged, Role,
    ServerMsg, Timeline,
};
use serde::{Deserialize, Serialize};

use super::{Audience, CommandError, MemberId, Room, Shared};

/// A room's media: the item playing and the playlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    /// The item now.
    pub item: Option<MediaItem>,
    /// The playlist.
    pub items: Vec<MediaItem>,
    /// The index of `item` in the playlist, if it is in it.
    pub current: Option<u32>,
    /// Whether the room moves to the next item at the end of one.
    pub auto_advance: bool,
    /// The timeline epoch of the last switch.
    pub epoch: u32,
}

impl Default for MediaState {
    fn default() -> Self {
        MediaState { item: None, items: Vec::new(), current: None, auto_advance: true, epoch: 0 }
    }
}

impl MediaState {
    fn changed(&self, by: MemberId) -> MediaChanged {
        MediaChanged { item: self.item.clone(), index: self.current, epoch: self.epoch, by }
    }

    fn queue(&self, by: MemberId) -> QueueChanged {
        QueueChanged { items: self.items.clone(), current: self.current, auto_advance: self.auto_advance, by }
    }

    fn index_of(&self, media_id: &str) -> Option<usize> {
        self.items.iter().position(|i| i.media_id == media_id)
    }
}

/// The room's media and what it still has to do about it.
#[derive(Debug, Default)]
pub(super) struct Media {
    pub(super) state: MediaState,
    /// When the room starts the item it switched to, and who switched.
    start_at: Option<(u64, MemberId)>,
    /// The state changed since the authority last stored it.
    dirty: bool,
}

/// Whether a playlist's `QueueChanged` still fits a frame.
fn fits(items: &[MediaItem]) -> bool {
    let msg =
        ServerMsg::QueueChanged(QueueChanged { items: items.to_vec(), current: Some(0), auto_advance: true, by: 0 });
    lockstep_protocol::encode_server(&msg).len() <= MAX_FRAME - 64
}

impl Room {
    /// Member `by`'s media command (SPEC §6.7): answered with an `Ack` (to
    /// members that want them) or an `Error`.
    pub fn media_command(&mut self, now: u64, by: MemberId, request_id: u32, op: MediaOp) -> Result<(), CommandError> {
        self.advance(now);
        let result = self.media_op(now, by, op);
        match &result {
            Ok(()) => self.ack(by, request_id, AckOutcome::Applied, self.epoch, false),
            Err(e) => self.answer_error(by, request_id, e),
        }
        result
    }

    fn media_op(&mut self, now: u64, by: MemberId, op: MediaOp) -> Result<(), CommandError> {
        let role = self.role(by).ok_or(CommandError::NotMember)?;
        if self.cfg.policy == ControlPolicy::HostOnly && role == Role::Viewer {
            return Err(CommandError::Forbidden);
        }
        if self.cfg.clock == ClockKind::Live && matches!(op, MediaOp::Set { .. } | MediaOp::Next | MediaOp::Previous) {
            return Err(CommandError::InvalidArgument("a live room plays its stream: switch it to media time first"));
        }
        let item_ok = |item: &MediaItem| item.problem().map_or(Ok(()), |p| Err(CommandError::InvalidArgument(p)));
        let s = &self.media.state;
        match op {
            MediaOp::Set { item } => {
                item_ok(&item)?;
                let index = match s.index_of(&item.media_id) {
                    Some(i) => {
                        self.media.state.items[i] = item.clone();
                        Some(i)
                    }
                    None => {
                        let at = s.current.map_or(s.items.len(), |c| c as usize + 1);
                        let mut items = s.items.clone();
                        items.insert(at, item.clone());
                        (items.len() <= MAX_QUEUE && fits(&items)).then(|| {
                            self.media.state.items = items;
                            at
                        })
                    }
                };
                self.switch(now, by, item, index);
                self.queue_changed(by);
            }
            MediaOp::Add { item } => {
                item_ok(&item)?;
                if s.index_of(&item.media_id).is_some() {
                    return Err(CommandError::InvalidArgument("the item is in the playlist already"));
                }
                let mut items = s.items.clone();
                items.push(item);
                if items.len() > MAX_QUEUE || !fits(&items) {
                    return Err(CommandError::InvalidArgument("the playlist is full"));
                }
                self.media.state.items = items;
                self.queue_changed(by);
            }
            MediaOp::Remove { media_id } => {
                let i = s.index_of(&media_id).ok_or(CommandError::InvalidArgument("no such item in the playlist"))?;
                if s.current == Some(i as u32) {
                    return Err(CommandError::InvalidArgument("the item playing cannot be removed; switch first"));
                }
                let st = &mut self.media.state;
                st.items.remove(i);
                st.current = st.current.map(|c| if c as usize > i { c - 1 } else { c });
                self.queue_changed(by);
            }
            MediaOp::Move { media_id, index } => {
                let i = s.index_of(&media_id).ok_or(CommandError::InvalidArgument("no such item in the playlist"))?;
                let st = &mut self.media.state;
                let playing = st.current.map(|c| st.items[c as usize].media_id.clone());
                let item = st.items.remove(i);
                let to = (index as usize).min(st.items.len());
                st.items.insert(to, item);
                st.current = playing.and_then(|id| st.index_of(&id)).map(|c| c as u32);
                self.queue_changed(by);
            }
            MediaOp::Next | MediaOp::Previous => {
                let next = matches!(op, MediaOp::Next);
                let to = match (s.current, next) {
                    (None, true) if !s.items.is_empty() => 0,
                    (Some(c), true) if (c as usize) + 1 < s.items.len() => c as usize + 1,
                    (Some(c), false) if c > 0 => c as usize - 1,
                    (_, true) => return Err(CommandError::InvalidArgument("no next item in the playlist")),
                    (_, false) => return Err(CommandError::InvalidArgument("no previous item in the playlist")),
                };
                let item = s.items[to].clone();
                self.switch(now, by, item, Some(to));
                self.queue_changed(by);
            }
            MediaOp::AutoAdvance { on } => {
                self.media.state.auto_advance = on;
                self.queue_changed(by);
            }
        }
        Ok(())
    }

    /// Switches to `item` (at `index` of the playlist): paused at 0 at once;
    /// a playing room starts it `media_start_us` later.
    fn switch(&mut self, now: u64, by: MemberId, item: MediaItem, index: Option<usize>) {
        let intended = self.intended();
        let was_playing = !intended.paused;
        let t = Timeline { position_ms: 0, anchor_us: now, paused: true, ..intended };
        self.issue(now, t, now, by, ChangeReason::Pause, None);
        self.wait = None;
        let st = &mut self.media.state;
        st.item = Some(item);
        st.current = index.map(|i| i as u32);
        st.epoch = self.epoch;
        self.media.start_at = was_playing.then_some((now + self.cfg.media_start_us, by));
        let changed = st.changed(by);
        self.to(Audience::Media, ServerMsg::MediaChanged(changed));
    }

    fn queue_changed(&mut self, by: MemberId) {
        let q = self.media.state.queue(by);
        self.to(Audience::Media, ServerMsg::QueueChanged(q));
        self.media.dirty = true;
        let state = self.media.state.clone();
        self.share(|| Shared::Media { state, by });
    }

    /// A timeline command by a member cancels the start of a switched-to item.
    pub(super) fn media_command_taken(&mut self) {
        self.media.start_at = None;
    }

    /// When the room next has something to do about its media.
    pub(super) fn media_due(&self) -> Option<u64> {
        let start = self.media.start_at.map(|(at, _)| at);
        let end = self.media_end_at();
        match (start, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the current item ends, if the room should then advance.
    fn media_end_at(&self) -> Option<u64> {
        let st = &self.media.state;
        let duration = st.item.as_ref()?.duration_ms?;
        let c = st.current? as usize;
        if !st.auto_advance || c + 1 >= st.items.len() || self.pending.is_some() || self.media.start_at.is_some() {
            return None;
        }
        let t = self.current;
        if t.paused || t.rate_milli == 0 || !self.media_leader() {
            return None;
        }
        let left_ms = duration.saturating_sub(t.position_ms);
        Some(t.anchor_us + left_ms * 1_000_000 / u64::from(t.rate_milli))
    }

    /// Scale-out: one node advances a room, the one with the member of the
    /// smallest id (every node knows every member, so they agree).
    fn media_leader(&self) -> bool {
        match (self.members.keys().next(), self.remote.keys().next()) {
            (Some(mine), Some(theirs)) => mine < theirs,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    #[cfg(test)]
    pub(super) fn media_leader_for_test(&self) -> bool {
        self.media_leader()
    }

    /// Starts a switched-to item, or advances at the end of one, when due.
    pub(super) fn media_timeout(&mut self, now: u64) {
        if let Some((at, by)) = self.media.start_at
            && now >= at
        {
            self.media.start_at = None;
            let intended = self.intended();
            if intended.paused {
                let lead_at = (now + self.lead_us()).max(intended.anchor_us);
                let (position_ms, at) = intended.whole_ms_point(lead_at);
                let t = Timeline { position_ms, anchor_us: at, paused: false, ..intended };
                let by = if self.members.contains_key(&by) || self.remote.contains_key(&by) { by } else { 0 };
                self.issue(now, t, at, by, ChangeReason::Play, None);
            }
        }
        if self.media_end_at().is_some_and(|end| now >= end) {
            let st = &self.media.state;
            let next = st.current.map_or(0, |c| c as usize + 1);
            let item = st.items[next].clone();
            self.switch(now, 0, item, Some(next));
            self.queue_changed(0);
        }
    }

    /// A joining member's media state, after its `Welcome`.
    pub(super) fn media_welcome(&mut self, id: MemberId) {
        let st = &self.media.state;
        let (queue, changed) = (st.queue(0), st.changed(0));
        if !st.items.is_empty() {
            self.to(Audience::One(id), ServerMsg::QueueChanged(queue));
        }
        if self.media.state.item.is_some() {
            self.to(Audience::One(id), ServerMsg::MediaChanged(changed));
        }
    }

    /// Scale-out: another node's media state.
    pub(super) fn apply_media(&mut self, state: MediaState, by: MemberId) {
        let was = std::mem::replace(&mut self.media.state, state);
        let st = &self.media.state;
        let switched = was.item != st.item || was.epoch != st.epoch;
        let listed = was.items != st.items || was.current != st.current || was.auto_advance != st.auto_advance;
        let (changed, queue) = (st.changed(by), st.queue(by));
        if switched {
            self.to(Audience::Media, ServerMsg::MediaChanged(changed));
        }
        if listed {
            self.to(Audience::Media, ServerMsg::QueueChanged(queue));
        }
        // Another node switched: it starts the item.
        if was.epoch != self.media.state.epoch {
            self.media.start_at = None;
        }
    }

    /// The media state as the authority holds it (when the room starts).
    pub fn load_media(&mut self, state: MediaState) {
        self.media.state = state;
    }

    /// The room's media state.
    pub fn media_state(&self) -> &MediaState {
        &self.media.state
    }

    /// The media state to store, if it changed since the last call.
    pub fn take_media_save(&mut self) -> Option<MediaState> {
        std::mem::take(&mut self.media.dirty).then(|| self.media.state.clone())
    }
}
