//! A room's fan-out: every output of one flush to its recipients' links, one
//! call per link (gathered), and for large rooms split across cores.
//!
//! Sharding: a member's link belongs to shard `id % K` (K: the machine's
//! cores). Shard 0 is written by the room's actor itself; shards 1.. by the
//! fan-out threads (one per shard, shared by all rooms), each in the order
//! the actor handed the work over, so every link sees its messages in order.
//! A room uses the threads while it has at least [`SHARD_MIN`] members, and
//! for as long as any of its jobs is still running (so nothing delivered
//! inline overtakes a job in flight). A job holds a snapshot of its shard's
//! links: a member who leaves mid-fan-out may still get that flush's
//! messages (its link refuses them once closed), never a later one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use super::link::{Link, Outgoing};
use crate::room::MemberId;

/// Members from which a room's fan-out is split across cores.
pub(super) const SHARD_MIN: usize = 1024;

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

type Slice = Arc<[(MemberId, Arc<dyn Link>)]>;

struct Job {
    links: Slice,
    plan: Arc<Plan>,
    outstanding: Arc<AtomicUsize>,
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
                            deliver(job.links.iter().map(|(id, l)| (*id, l)), &job.plan);
                            job.outstanding.fetch_sub(1, Ordering::Release);
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .collect();
        Pool { senders }
    })
}

/// What one delivery pass did.
#[derive(Debug, Default)]
struct Stats {
    slow: u64,
    stale: u64,
}

/// Delivers `plan` to `links`: per link, the outputs meant for it, in one
/// call; counts messages per type.
fn deliver<'a>(links: impl Iterator<Item = (MemberId, &'a Arc<dyn Link>)>, plan: &[(Arc<Outgoing>, Recipients)]) {
    let mut delivered = vec![0u64; plan.len()];
    let mut stats = Stats::default();
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
            [one] if one.is_tick() => stats.stale += u64::from(link.tick(one)),
            [one] => stats.slow += u64::from(!link.send(one)),
            _ => stats.slow += u64::from(!link.deliver(&mine)),
        }
    }
    for ((out, _), n) in plan.iter().zip(&delivered) {
        if *n > 0 {
            metrics::counter!("lockstep_messages_out_total", "type" => out.msg.name()).increment(*n);
        }
    }
    for _ in 0..stats.stale {
        crate::metrics::drop("stale_tick");
    }
    for _ in 0..stats.slow {
        crate::metrics::error(lockstep_protocol::ErrorCode::SlowConsumer);
    }
}

/// A room's links and how its flushes reach them (see the module docs).
#[derive(Default)]
pub(super) struct Fanout {
    links: HashMap<MemberId, Arc<dyn Link>>,
    /// Per shard, the links as the last sharded flush saw them.
    slices: Vec<Slice>,
    dirty: bool,
    outstanding: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("links", &self.links.len()).finish_non_exhaustive()
    }
}

impl Fanout {
    pub(super) fn insert(&mut self, id: MemberId, link: Arc<dyn Link>) {
        self.links.insert(id, link);
        self.dirty = true;
    }

    pub(super) fn remove(&mut self, id: MemberId) {
        if self.links.remove(&id).is_some() {
            self.dirty = true;
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
        let shards = pool().senders.len() + 1;
        let pooled = shards > 1 && (self.links.len() >= shard_min || self.outstanding.load(Ordering::Acquire) > 0);
        if !pooled {
            if plan.iter().all(|(_, to)| matches!(to, Recipients::One(_))) {
                // Private answers: look the recipients up, never scan the room.
                for entry in &plan {
                    if let (_, Recipients::One(id)) = entry
                        && let Some(link) = self.links.get(id)
                    {
                        deliver(std::iter::once((*id, link)), std::slice::from_ref(entry));
                    }
                }
            } else {
                deliver(self.links.iter().map(|(id, l)| (*id, l)), &plan);
            }
            return;
        }
        if self.dirty || self.slices.len() != shards {
            let mut parts: Vec<Vec<(MemberId, Arc<dyn Link>)>> = vec![Vec::new(); shards];
            for (&id, link) in &self.links {
                parts[id as usize % shards].push((id, link.clone()));
            }
            self.slices = parts.into_iter().map(Slice::from).collect();
            self.dirty = false;
        }
        let plan = Arc::new(plan);
        let senders = &pool().senders;
        for (i, slice) in self.slices.iter().enumerate().skip(1) {
            if !plan.iter().any(|(_, to)| match to {
                Recipients::One(id) => *id as usize % shards == i,
                _ => true,
            }) {
                continue;
            }
            let job = Job { links: slice.clone(), plan: plan.clone(), outstanding: self.outstanding.clone() };
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::SendError(job)) = senders[i - 1].send(job) {
                // The thread is gone (it never panics by design): deliver here.
                deliver(job.links.iter().map(|(id, l)| (*id, l)), &job.plan);
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
            }
        }
        deliver(self.slices[0].iter().map(|(id, l)| (*id, l)), &plan);
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

    /// Waits until the room's jobs have run (the threads count them down).
    fn settle(f: &Fanout) {
        while f.outstanding.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
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
    fn a_member_leaving_mid_fan_out_gets_nothing_later_and_no_one_else_misses_anything() {
        let (mut f, recs) = room(100);
        f.flush_with(vec![(count(1), Recipients::All)], 0);
        // Leaves while that job may still be running.
        f.remove(3);
        f.remove(4);
        f.flush_with(vec![(count(2), Recipients::All)], 0);
        settle(&f);
        for (id, r) in recs.iter().enumerate() {
            let got = r.got.lock().unwrap().clone();
            if id == 3 || id == 4 {
                assert!(got == vec![1] || got.is_empty(), "member {id} got {got:?}");
            } else {
                assert_eq!(got, vec![1, 2], "member {id}");
            }
        }
    }

    #[test]
    fn small_rooms_stay_on_the_actor_and_private_answers_never_scan() {
        let (mut f, recs) = room(10);
        let me = std::thread::current().id();
        f.flush(vec![(count(1), Recipients::All), (count(2), Recipients::One(3))]);
        f.flush(vec![(count(3), Recipients::One(4))]);
        assert_eq!(f.outstanding.load(Ordering::Acquire), 0, "no job for a small room");
        assert_eq!(*recs[3].got.lock().unwrap(), vec![1, 2]);
        assert_eq!(*recs[4].got.lock().unwrap(), vec![1, 3]);
        assert!(recs.iter().all(|r| r.threads.lock().unwrap().iter().all(|t| *t == me)));
    }
}
