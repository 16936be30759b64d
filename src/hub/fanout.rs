//! A room's fan-out: every output of one flush to its recipients' links, one
//! call per link (gathered), and for large rooms split across cores.
//!
//! Sharding: once a room has [`SHARD_MIN`] members it is sharded for the
//! rest of its life. A member's link then belongs to shard `id % K` (K: the
//! machine's cores, at most 16). Shard 0 is written by the room's actor
//! itself; shards 1.. by the fan-out threads (one per shard, shared by all
//! rooms), each owning its slice of the room's links. Joins and leaves reach
//! a shard's thread in the same queue as the flushes, in order, so a link
//! gets every message of the flushes after its join, in order, and none
//! after its leave, and no snapshot of the room is ever copied.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use super::link::{Link, Outgoing};
use crate::room::MemberId;

/// Members from which a room's fan-out is split across cores.
pub(super) const SHARD_MIN: usize = 256;

/// Who gets an output.
#[derive(Debug)]
pub(super) enum Recipients {
    All,
    One(MemberId),
    Only(HashSet<MemberId>),
}

impl Recipients {
    fn has(&self, id: MemberId) -> bool {
        match self {
            Recipients::All => true,
            Recipients::One(one) => *one == id,
            Recipients::Only(set) => set.contains(&id),
        }
    }
}

/// The outputs of one flush, in order.
pub(super) type Plan = Vec<(Arc<Outgoing>, Recipients)>;

type Links = HashMap<MemberId, Arc<dyn Link>>;

/// A membership change for a shard: a join (`Some`) or a leave (`None`).
type Change = (MemberId, Option<Arc<dyn Link>>);

/// One room's work for one shard's thread: membership changes first, then
/// the flush (if any).
struct Job {
    /// The room's links in this shard; only this shard's thread locks it.
    links: Arc<Mutex<Links>>,
    changes: Vec<Change>,
    plan: Option<Arc<Plan>>,
}

impl Job {
    fn run(self) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for (id, link) in self.changes {
            match link {
                Some(link) => links.insert(id, link),
                None => links.remove(&id),
            };
        }
        if let Some(plan) = &self.plan {
            deliver(links.iter().map(|(id, l)| (*id, l)), plan);
        }
    }
}

/// The fan-out threads: `senders[i]` feeds shard `i + 1`.
struct Pool {
    senders: Vec<mpsc::Sender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let k = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        let senders = (1..k)
            .filter_map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("lockstep-fanout-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job.run();
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .collect();
        Pool { senders }
    })
}

/// Delivers `plan` to `links`: per link, the outputs meant for it, in one
/// call; counts messages per type.
fn deliver<'a>(links: impl Iterator<Item = (MemberId, &'a Arc<dyn Link>)>, plan: &[(Arc<Outgoing>, Recipients)]) {
    let mut delivered = vec![0u64; plan.len()];
    let (mut slow, mut stale) = (0u64, 0u64);
    let mut mine: Vec<&Arc<Outgoing>> = Vec::with_capacity(plan.len());
    for (id, link) in links {
        mine.clear();
        for (i, (out, to)) in plan.iter().enumerate() {
            if to.has(id) {
                mine.push(out);
                delivered[i] += 1;
            }
        }
        match mine[..] {
            [] => {}
            [one] if one.is_tick() => stale += u64::from(link.tick(one)),
            [one] => slow += u64::from(!link.send(one)),
            _ => slow += u64::from(!link.deliver(&mine)),
        }
    }
    for ((out, _), n) in plan.iter().zip(&delivered) {
        if *n > 0 {
            metrics::counter!("lockstep_messages_out_total", "type" => out.msg.name()).increment(*n);
        }
    }
    for _ in 0..stale {
        crate::metrics::drop("stale_tick");
    }
    for _ in 0..slow {
        crate::metrics::error(lockstep_protocol::ErrorCode::SlowConsumer);
    }
}

/// A sharded room's other shards (1..K): each one's links (owned by its
/// thread) and the membership changes not yet handed over.
struct Shards {
    parts: Vec<(Arc<Mutex<Links>>, Vec<Change>)>,
}

/// A room's links and how its flushes reach them (see the module docs).
#[derive(Default)]
pub(super) struct Fanout {
    links: Links,
    shards: Option<Shards>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("links", &self.links.len())
            .field("sharded", &self.shards.is_some())
            .finish_non_exhaustive()
    }
}

impl Fanout {
    pub(super) fn insert(&mut self, id: MemberId, link: Arc<dyn Link>) {
        self.note(id, Some(link.clone()));
        self.links.insert(id, link);
    }

    pub(super) fn remove(&mut self, id: MemberId) {
        if self.links.remove(&id).is_some() {
            self.note(id, None);
        }
    }

    fn note(&mut self, id: MemberId, change: Option<Arc<dyn Link>>) {
        if let Some(shards) = &mut self.shards {
            let k = shards.parts.len() + 1;
            let shard = id as usize % k;
            if shard > 0 {
                shards.parts[shard - 1].1.push((id, change));
            }
        }
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.links.keys().copied()
    }

    /// Hands the flush's outputs to their recipients.
    pub(super) fn flush(&mut self, plan: Plan) {
        self.flush_with(plan, SHARD_MIN);
    }

    fn flush_with(&mut self, plan: Plan, shard_min: usize) {
        let senders = &pool().senders;
        if self.shards.is_none() && !senders.is_empty() && self.links.len() >= shard_min {
            self.shard(senders.len() + 1);
        }
        // Shards 1.. get their jobs; shard 0 (every member when the room is
        // not sharded) is delivered here.
        let plan = Arc::new(plan);
        let k = match &mut self.shards {
            None => 1,
            Some(shards) => {
                let k = shards.parts.len() + 1;
                for (i, (links, changes)) in shards.parts.iter_mut().enumerate() {
                    let shard = i + 1;
                    let wanted =
                        plan.iter().any(|(_, to)| !matches!(to, Recipients::One(id) if *id as usize % k != shard));
                    if !wanted && changes.is_empty() {
                        continue;
                    }
                    let job = Job {
                        links: links.clone(),
                        changes: std::mem::take(changes),
                        plan: wanted.then(|| plan.clone()),
                    };
                    if let Err(mpsc::SendError(job)) = senders[i].send(job) {
                        // The thread is gone (it never panics by design): deliver here.
                        job.run();
                    }
                }
                k
            }
        };
        let mine = |id: MemberId| (id as usize).is_multiple_of(k);
        if plan.iter().all(|(_, to)| matches!(to, Recipients::One(_))) {
            // Private answers: look the recipients up, never scan the room.
            self.answer(&plan, mine);
        } else {
            deliver(self.links.iter().filter(|(id, _)| mine(**id)).map(|(id, l)| (*id, l)), &plan);
        }
    }

    /// Delivers private answers by looking their recipients up (never
    /// scanning the room), to those `mine` accepts.
    fn answer(&self, plan: &[(Arc<Outgoing>, Recipients)], mine: impl Fn(MemberId) -> bool) {
        for entry in plan {
            if let (_, Recipients::One(id)) = entry
                && mine(*id)
                && let Some(link) = self.links.get(id)
            {
                deliver(std::iter::once((*id, link)), std::slice::from_ref(entry));
            }
        }
    }

    /// Splits the room into `k` shards (for the rest of its life).
    fn shard(&mut self, k: usize) {
        let mut parts: Vec<(Arc<Mutex<Links>>, Vec<Change>)> =
            (1..k).map(|_| (Arc::new(Mutex::new(Links::new())), Vec::new())).collect();
        for (&id, link) in &self.links {
            let shard = id as usize % k;
            if shard > 0 {
                parts[shard - 1].1.push((id, Some(link.clone())));
            }
        }
        self.shards = Some(Shards { parts });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use lockstep_protocol::{ServerMsg, ViewerCount};

    use super::*;

    /// A link that records the counts it was sent, and which thread sent them.
    #[derive(Debug, Default)]
    struct Rec {
        got: Mutex<Vec<u32>>,
        threads: Mutex<HashSet<std::thread::ThreadId>>,
    }

    impl Link for Rec {
        fn send(&self, out: &Arc<Outgoing>) -> bool {
            if let ServerMsg::ViewerCount(c) = out.msg {
                self.got.lock().unwrap().push(c.count);
            }
            self.threads.lock().unwrap().insert(std::thread::current().id());
            true
        }
        fn tick(&self, out: &Arc<Outgoing>) -> bool {
            self.send(out);
            false
        }
    }

    fn count(n: u32) -> Arc<Outgoing> {
        Outgoing::new(ServerMsg::ViewerCount(ViewerCount { count: n }))
    }

    fn room(n: u32) -> (Fanout, Vec<Arc<Rec>>) {
        let mut f = Fanout::default();
        let recs: Vec<_> = (0..n).map(|_| Arc::new(Rec::default())).collect();
        for (id, r) in recs.iter().enumerate() {
            f.insert(id as MemberId, r.clone());
        }
        (f, recs)
    }

    /// Waits until every job handed to the fan-out threads so far has run:
    /// a marker job queued behind them on every thread reports back.
    fn settle(_: &Fanout) {
        let (tx, rx) = mpsc::channel();
        for sender in &pool().senders {
            let tx = tx.clone();
            let marker = Arc::new(Mutex::new(Links::new()));
            let link: Arc<dyn Link> = Arc::new(Marker(Mutex::new(Some(tx))));
            let plan = Arc::new(vec![(count(0), Recipients::All)]);
            sender.send(Job { links: marker, changes: vec![(0, Some(link))], plan: Some(plan) }).unwrap();
        }
        drop(tx);
        for _ in &pool().senders {
            rx.recv().unwrap();
        }
    }

    /// A link that reports when a message reaches it.
    #[derive(Debug)]
    struct Marker(Mutex<Option<mpsc::Sender<()>>>);

    impl Link for Marker {
        fn send(&self, _: &Arc<Outgoing>) -> bool {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(());
            }
            true
        }
        fn tick(&self, out: &Arc<Outgoing>) -> bool {
            self.send(out)
        }
    }

    #[test]
    fn sharded_every_link_gets_every_message_in_order() {
        let (mut f, recs) = room(200);
        let me = std::thread::current().id();
        for n in 0..50u32 {
            let plan: Plan = if n % 5 == 4 {
                // A private answer in between: it must not overtake the broadcasts.
                vec![(count(n), Recipients::One(n % 200))]
            } else {
                vec![(count(n), Recipients::All), (count(1000 + n), Recipients::Only((0..10).collect()))]
            };
            f.flush_with(plan, 0);
        }
        settle(&f);
        for (id, r) in recs.iter().enumerate() {
            let got = r.got.lock().unwrap().clone();
            let mut want = Vec::new();
            for n in 0..50u32 {
                if n % 5 == 4 {
                    if n % 200 == id as u32 {
                        want.push(n);
                    }
                } else {
                    want.push(n);
                    if id < 10 {
                        want.push(1000 + n);
                    }
                }
            }
            assert_eq!(got, want, "member {id}");
        }
        if !pool().senders.is_empty() {
            let off_thread = recs.iter().filter(|r| !r.threads.lock().unwrap().contains(&me)).count();
            assert!(off_thread > 0, "some shards were written by the fan-out threads");
        }
    }

    #[test]
    fn members_joining_and_leaving_a_sharded_room_get_exactly_the_flushes_between() {
        let (mut f, recs) = room(100);
        f.flush_with(vec![(count(1), Recipients::All)], 0);
        // Leaves while that flush may still be on its way.
        f.remove(3);
        f.remove(4);
        let late: Vec<_> = (0..4).map(|_| Arc::new(Rec::default())).collect();
        for (i, r) in late.iter().enumerate() {
            f.insert(500 + i as MemberId, r.clone());
        }
        f.flush_with(vec![(count(2), Recipients::All)], 0);
        settle(&f);
        for (id, r) in recs.iter().enumerate() {
            let want = if id == 3 || id == 4 { vec![1] } else { vec![1, 2] };
            assert_eq!(*r.got.lock().unwrap(), want, "member {id}");
        }
        for r in &late {
            assert_eq!(*r.got.lock().unwrap(), vec![2], "a late joiner in every shard");
        }
    }

    #[test]
    fn small_rooms_stay_on_the_actor_and_private_answers_never_scan() {
        let (mut f, recs) = room(10);
        let me = std::thread::current().id();
        f.flush(vec![(count(1), Recipients::All), (count(2), Recipients::One(3))]);
        f.flush(vec![(count(3), Recipients::One(4))]);
        assert!(f.shards.is_none(), "a small room is not sharded");
        assert_eq!(*recs[3].got.lock().unwrap(), vec![1, 2]);
        assert_eq!(*recs[4].got.lock().unwrap(), vec![1, 3]);
        assert!(recs.iter().all(|r| r.threads.lock().unwrap().iter().all(|t| *t == me)));
    }
}
