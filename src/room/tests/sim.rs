//! A sans-IO simulation of several nodes serving one room, in the style of
//! quinn-proto's `Pair`: N nodes each run a [`Room`] for their own members;
//! a simulated authority holds one compare-and-set record; commit requests,
//! replies, publications (to every node, the sender included) and shared
//! membership events are each delivered after a seeded random latency (so
//! replies and publications reorder freely); simulated clients follow the
//! timeline as real ones do. Time is simulated: [`Sim::step`] runs the next
//! event or timer, [`Sim::drive`] runs to quiescence. Invariants are checked
//! on every delivery and after quiescence ([`Sim::check_settled`]).

use std::collections::BTreeMap;

use lockstep_protocol::{Ack, Action, ChangeReason, ErrorMsg, Report, Role, ServerMsg, Timeline, TimelineChanged};

use super::super::authority::newer;
use super::super::*;

pub(super) const MS: u64 = 1_000;
pub(super) const S: u64 = 1_000_000;
pub(super) const T0: u64 = 1_000 * S;

/// splitmix64: deterministic, no dependency.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Debug)]
enum Ev {
    /// A request arrives at the authority.
    Commit {
        node: usize,
        req: CommitRequest,
    },
    Reply {
        node: usize,
        result: CommitResult,
    },
    Publish {
        node: usize,
        change: TimelineChanged,
    },
    Shared {
        from: usize,
        to: usize,
        events: Vec<Shared>,
    },
    Deliver {
        client: usize,
        msg: ServerMsg,
    },
    Command {
        client: usize,
        request_id: u32,
        action: Action,
    },
    NodeGone {
        to: usize,
        gone: usize,
    },
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) room: Room,
    pub(super) alive: bool,
}

/// A client following the timeline as a real one does (SPEC §4.5, §6.2).
#[derive(Debug)]
pub(super) struct Client {
    pub(super) node: usize,
    pub(super) id: MemberId,
    latency: u64,
    pub(super) present: bool,
    current: Option<Timeline>,
    pending: Vec<TimelineChanged>,
    /// The newest epoch it holds.
    held: Option<u32>,
    /// Every epoch it adopted, in order.
    pub(super) epochs: Vec<u32>,
    pub(super) acks: Vec<Ack>,
    pub(super) errors: Vec<ErrorMsg>,
    /// Request ids it sent.
    pub(super) sent: Vec<u32>,
    /// The last `LiveState` it got.
    pub(super) live: Option<lockstep_protocol::LiveState>,
}

/// The position a client that holds `current` and the changes `pending`
/// shows at server time `t` (due changes take effect, by epoch), as a real
/// client follows the timeline.
pub(super) fn position_at(current: &mut Option<Timeline>, pending: &mut Vec<TimelineChanged>, t: u64) -> u64 {
    pending.sort_by_key(|c| c.timeline.epoch);
    while let Some(c) = pending.first() {
        if c.effective_at_us > t {
            break;
        }
        *current = Some(c.timeline);
        pending.remove(0);
    }
    current.expect("welcomed").position_us_at(t)
}

impl Client {
    /// The position it shows at server time `t`.
    pub(super) fn position_at(&mut self, t: u64) -> u64 {
        position_at(&mut self.current, &mut self.pending, t)
    }

    /// The timeline it will show once everything it holds took effect.
    pub(super) fn intended(&self) -> Option<Timeline> {
        self.pending.iter().max_by_key(|c| c.timeline.epoch).map(|c| c.timeline).or(self.current)
    }
}

#[derive(Debug)]
pub(super) struct Sim {
    pub(super) now: u64,
    pub(super) rng: Rng,
    events: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    pub(super) nodes: Vec<Node>,
    pub(super) clients: Vec<Client>,
    /// The authority's record, and every change it committed by epoch.
    pub(super) record: TimelineChanged,
    pub(super) history: BTreeMap<u32, TimelineChanged>,
    /// Latency ranges: authority requests, replies and publications; shared
    /// membership events; clients.
    pub(super) authority_lat: (u64, u64),
    pub(super) shared_lat: (u64, u64),
    pub(super) client_lat: (u64, u64),
    /// How long until the others notice a node is gone.
    pub(super) gone_after: u64,
    /// Shared events keep their order per pair of nodes (one pub/sub channel).
    shared_fifo: BTreeMap<(usize, usize), u64>,
    /// Requests the authority fails (as if unreachable) before serving again.
    pub(super) fail_next: u32,
    next_request: u32,
}

impl Sim {
    pub(super) fn new(nodes: usize, cfg: RoomConfig, seed: u64) -> Self {
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| {
                let mut room = Room::new(cfg.clone(), T0);
                room.enable_sharing((i as u32 + 1) * ID_BLOCK);
                Node { name: format!("n{i}"), room, alive: true }
            })
            .collect();
        // The record the rooms start on (paused at 0, or a live room's live point).
        let timeline = nodes[0].room.timeline();
        let record = TimelineChanged { timeline, effective_at_us: T0, by: 0, reason: ChangeReason::Seek };
        Sim {
            now: T0,
            rng: Rng(seed),
            events: BTreeMap::new(),
            seq: 0,
            nodes,
            clients: Vec::new(),
            history: BTreeMap::from([(0, record.clone())]),
            record,
            authority_lat: (MS, 15 * MS),
            shared_lat: (MS, 10 * MS),
            client_lat: (5 * MS, 40 * MS),
            gone_after: 3 * S,
            fail_next: 0,
            shared_fifo: BTreeMap::new(),
            next_request: 0,
        }
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((self.now + delay, self.seq), ev);
    }

    fn lat(&mut self, (lo, hi): (u64, u64)) -> u64 {
        self.rng.range(lo, hi)
    }

    /// A client joins on `node`; returns its index.
    pub(super) fn join(&mut self, node: usize, device: &str, host_claim: bool) -> usize {
        let info = JoinInfo {
            device_id: device.into(),
            name: device.into(),
            wants_presence: true,
            host_claim,
            wants_acks: true,
            wants_live: true,
            wants_reactions: true,
            wants_chat: true,
            wants_media: true,
            user: format!("user-{device}"),
            datagrams: false,
        };
        let id = self.nodes[node].room.join(self.now, info);
        let latency = self.lat(self.client_lat);
        self.clients.push(Client {
            node,
            id,
            latency,
            present: true,
            current: None,
            pending: Vec::new(),
            held: None,
            epochs: Vec::new(),
            acks: Vec::new(),
            errors: Vec::new(),
            sent: Vec::new(),
            live: None,
        });
        self.pump(node);
        self.clients.len() - 1
    }

    /// A client sends a command (it arrives after its latency); returns the request id.
    pub(super) fn command(&mut self, client: usize, action: Action) -> u32 {
        self.next_request += 1;
        let request_id = self.next_request;
        self.clients[client].sent.push(request_id);
        let latency = self.clients[client].latency;
        self.at(latency, Ev::Command { client, request_id, action });
        request_id
    }

    pub(super) fn report(&mut self, client: usize, buffering: bool) {
        let (node, id) = (self.clients[client].node, self.clients[client].id);
        let r = Report { epoch: 0, position_us: 0, rate_milli: 1000, buffering };
        self.nodes[node].room.report(self.now, id, r);
        self.pump(node);
    }

    pub(super) fn leave(&mut self, client: usize) {
        let (node, id) = (self.clients[client].node, self.clients[client].id);
        self.clients[client].present = false;
        self.nodes[node].room.leave(self.now, id);
        self.pump(node);
    }

    /// A node that starts serving the room now, loading it as a node does
    /// (`hub::actor`): from the record, with the members the live nodes
    /// stored (their records, stalls included). Returns its index.
    pub(super) fn add_node(&mut self, cfg: RoomConfig) -> usize {
        let i = self.nodes.len();
        let mut room = Room::from_record(cfg, self.now, &self.record);
        room.enable_sharing((i as u32 + 1) * ID_BLOCK);
        let stored: Vec<(String, Shared)> = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(|n| n.room.shared_members().into_iter().map(|m| (n.name.clone(), m)))
            .filter(|(_, m)| matches!(m, Shared::Joined { .. }))
            .collect();
        room.set_remote_members(self.now, stored);
        self.nodes.push(Node { name: format!("n{i}"), room, alive: true });
        i
    }

    /// Node `node` goes away with its clients; the others notice later.
    pub(super) fn kill(&mut self, node: usize) {
        self.nodes[node].alive = false;
        for c in self.clients.iter_mut().filter(|c| c.node == node) {
            c.present = false;
        }
        for to in 0..self.nodes.len() {
            if to != node {
                let after = self.gone_after;
                self.at(after, Ev::NodeGone { to, gone: node });
            }
        }
    }

    /// Hands what node `node` queued to the authority, its clients and the other nodes.
    fn pump(&mut self, node: usize) {
        if !self.nodes[node].alive {
            return;
        }
        if let Some(req) = self.nodes[node].room.poll_commit() {
            let d = self.lat(self.authority_lat);
            self.at(d, Ev::Commit { node, req });
        }
        while let Some(o) = self.nodes[node].room.poll_output() {
            let to: Vec<(usize, u64)> = (0..self.clients.len())
                .filter(|&i| {
                    let c = &self.clients[i];
                    c.node == node && c.present && self.nodes[node].room.is_recipient(o.to, c.id)
                })
                .map(|i| (i, self.clients[i].latency))
                .collect();
            for (client, latency) in to {
                self.at(latency, Ev::Deliver { client, msg: o.msg.clone() });
            }
        }
        let events = self.nodes[node].room.take_shared();
        if !events.is_empty() {
            for to in (0..self.nodes.len()).filter(|&n| n != node) {
                let at = self.now + self.lat(self.shared_lat);
                let at = at.max(self.shared_fifo.get(&(node, to)).copied().unwrap_or(0));
                self.shared_fifo.insert((node, to), at);
                self.at(at - self.now, Ev::Shared { from: node, to, events: events.clone() });
            }
        }
    }

    /// Runs the next event or node timer; `false` if there is none before `until`.
    pub(super) fn step_until(&mut self, until: u64) -> bool {
        let next_ev = self.events.keys().next().map(|k| k.0);
        let next_timer = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].alive)
            .map(|n| (self.nodes[n].room.poll_timeout(), n))
            .min();
        let timer_first = match (next_ev, next_timer) {
            (Some(e), Some((t, _))) => t < e,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if timer_first {
            let (t, n) = next_timer.expect("a timer");
            if t > until {
                return false;
            }
            self.now = self.now.max(t);
            self.nodes[n].room.handle_timeout(self.now);
            self.pump(n);
            return true;
        }
        let Some((&key, _)) = self.events.iter().next() else { return false };
        if key.0 > until {
            return false;
        }
        let ev = self.events.remove(&key).expect("present");
        self.now = self.now.max(key.0);
        self.handle(ev);
        true
    }

    pub(super) fn step(&mut self) -> bool {
        self.step_until(u64::MAX)
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Commit { node, req } => {
                let result = if self.fail_next > 0 {
                    self.fail_next -= 1;
                    CommitResult::Failed
                } else if req.expected == self.record.timeline.epoch {
                    self.record = req.change.clone();
                    self.history.insert(req.change.timeline.epoch, req.change.clone());
                    for to in 0..self.nodes.len() {
                        let d = self.lat(self.authority_lat);
                        self.at(d, Ev::Publish { node: to, change: req.change.clone() });
                    }
                    CommitResult::Committed
                } else {
                    CommitResult::Conflict(self.record.clone())
                };
                let d = self.lat(self.authority_lat);
                self.at(d, Ev::Reply { node, result });
            }
            Ev::Reply { node, result } if self.nodes[node].alive => {
                self.nodes[node].room.on_commit(now, result);
                self.pump(node);
            }
            Ev::Publish { node, change } if self.nodes[node].alive => {
                self.nodes[node].room.apply_external(now, change);
                self.pump(node);
            }
            Ev::Shared { from, to, events } if self.nodes[to].alive && self.nodes[from].alive => {
                let name = self.nodes[from].name.clone();
                for ev in events {
                    self.nodes[to].room.apply_shared(now, &name, ev);
                }
                self.pump(to);
            }
            Ev::NodeGone { to, gone } if self.nodes[to].alive => {
                let name = self.nodes[gone].name.clone();
                self.nodes[to].room.node_gone(now, &name);
                self.pump(to);
            }
            Ev::Command { client, request_id, action } if self.clients[client].present => {
                let (node, id) = (self.clients[client].node, self.clients[client].id);
                let _ = self.nodes[node].room.command(now, id, request_id, action);
                self.pump(node);
            }
            Ev::Deliver { client, msg } => self.deliver(client, msg),
            _ => {}
        }
    }

    /// A client receives a message, checking what it may receive.
    fn deliver(&mut self, client: usize, msg: ServerMsg) {
        let history = &self.history;
        let c = &mut self.clients[client];
        if !c.present {
            return;
        }
        match msg {
            ServerMsg::Welcome(w) => {
                assert!(history.contains_key(&w.timeline.epoch), "welcomed on an uncommitted epoch: {w:?}");
                c.current = Some(w.timeline);
                c.pending.clear();
                c.held = Some(w.timeline.epoch);
                c.epochs.push(w.timeline.epoch);
            }
            ServerMsg::TimelineChanged(tc) => {
                let Some(held) = c.held else { return };
                let e = tc.timeline.epoch;
                let auth = history.get(&e).unwrap_or_else(|| panic!("client got uncommitted epoch {e}: {tc:?}"));
                assert_eq!(
                    (auth.timeline, auth.effective_at_us, auth.by, auth.reason),
                    (tc.timeline, tc.effective_at_us, tc.by, tc.reason),
                    "not the record (who made it and why included)"
                );
                assert!(newer(e, held), "client {client}: epoch {e} after {held}");
                c.held = Some(e);
                c.epochs.push(e);
                c.pending.push(tc);
            }
            ServerMsg::Tick(t) => {
                if let Some(held) = c.held {
                    assert!(history.contains_key(&t.epoch), "tick of an uncommitted epoch {}", t.epoch);
                    assert!(!newer(t.epoch, held), "tick epoch {} beyond the held {held}", t.epoch);
                }
            }
            ServerMsg::Ack(a) => c.acks.push(a),
            ServerMsg::Error(e) => c.errors.push(e),
            ServerMsg::LiveState(s) => c.live = Some(s),
            _ => {}
        }
    }

    /// Runs everything up to `now + d`.
    pub(super) fn run_for(&mut self, d: u64) {
        let until = self.now + d;
        while self.step_until(until) {}
        self.now = until;
    }

    /// Runs until nothing is in flight, held or uncommitted anywhere, then
    /// until every scheduled change took effect and reached every client.
    pub(super) fn drive(&mut self) {
        let deadline = self.now + 120 * S;
        loop {
            let busy = !self.events.is_empty()
                || self.nodes.iter().any(|n| n.alive && (!n.room.is_committed() || n.room.held_commands() > 0));
            if !busy {
                break;
            }
            assert!(self.now < deadline, "no quiescence");
            self.step();
        }
        let settle = self.record.effective_at_us.saturating_sub(self.now) + 500 * MS;
        self.run_for(settle);
        while !self.events.is_empty() {
            self.step();
        }
    }

    /// Checks the settled state: every node on the authority's record, every
    /// client at the same position, at most one host, counts right, every
    /// request answered exactly once.
    pub(super) fn check_settled(&mut self) {
        let now = self.now;
        let record = self.record.clone();
        let alive: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.nodes[n].alive).collect();
        let present = self.clients.iter().filter(|c| c.present).count() as u32;
        let mut members = None;
        for &n in &alive {
            let others: u32 = alive.iter().filter(|&&o| o != n).map(|&o| self.nodes[o].room.local_viewers()).sum();
            let room = &mut self.nodes[n].room;
            room.set_remote_viewers(now, others);
            assert_eq!((room.epoch(), room.confirmed_epoch()), (record.timeline.epoch, record.timeline.epoch));
            assert_eq!(room.timeline(), record.timeline, "node {n} on the record");
            assert_eq!(room.viewers(), present, "node {n} counts");
            let s = room.state(now);
            let m = (s.members.host.clone(), s.members.co_host.clone(), s.members.viewer.clone());
            assert_eq!(s.members.host.len() + s.members.co_host.len() + s.members.viewer.len(), present as usize);
            assert!(s.members.host.len() <= 1, "one host at most: {:?}", s.members.host);
            assert!(members.get_or_insert(m.clone()) == &m, "every node sees the same members");
        }
        let hosts = self.clients.iter().filter(|c| c.present && self.nodes[c.node].room.role(c.id) == Some(Role::Host));
        assert!(hosts.count() <= 1);
        let expected = record.timeline.position_us_at(now);
        for (i, c) in self.clients.iter_mut().enumerate().filter(|(_, c)| c.present) {
            assert_eq!(c.intended(), Some(record.timeline), "client {i} on the record");
            assert_eq!(c.position_at(now), expected, "client {i} position");
            for rid in &c.sent {
                let n = c.acks.iter().filter(|a| a.request_id == *rid).count()
                    + c.errors.iter().filter(|e| e.request_id == *rid).count();
                assert_eq!(n, 1, "client {i}: request {rid} answered {n} times");
            }
        }
    }

    pub(super) fn role(&self, client: usize) -> Option<Role> {
        let c = &self.clients[client];
        self.nodes[c.node].room.role(c.id)
    }

    pub(super) fn errors_with(&self, message: &str) -> usize {
        self.clients.iter().flat_map(|c| &c.errors).filter(|e| e.message == message).count()
    }
}
