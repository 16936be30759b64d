//! What a run records: per-delivery latencies (hdrhistogram, µs), per-change
//! fan-out completion, losses, late arrivals, viewer counts, and the sync
//! precision samples.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

const SHARDS: usize = 64;

/// Histograms of one shard (viewers are spread over shards to avoid contention).
#[derive(Debug)]
pub(crate) struct Hists {
    /// Host command → viewer receipt, user-space receive time.
    pub(crate) user: Histogram<u64>,
    /// Host command → viewer receipt, kernel receive time (WebSocket only).
    pub(crate) kernel: Histogram<u64>,
    /// Tick anchor (server time) → viewer receipt.
    pub(crate) tick: Histogram<u64>,
    /// Connect start → joined.
    pub(crate) join: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

impl Hists {
    pub(crate) fn new() -> Hists {
        Hists { user: hist(), kernel: hist(), tick: hist(), join: hist() }
    }
    pub(crate) fn add(&mut self, o: &Hists) {
        let _ = self.user.add(&o.user);
        let _ = self.kernel.add(&o.kernel);
        let _ = self.tick.add(&o.tick);
        let _ = self.join.add(&o.join);
    }
}

/// The shared record of a run.
#[derive(Debug)]
pub(crate) struct Rec {
    pub(crate) rooms: usize,
    pub(crate) kmax: usize,
    /// Changes `k0..k1` are measured.
    pub(crate) k0: u32,
    pub(crate) k1: u32,
    pub(crate) interval_ns: u64,
    /// Realtime ns at which host `room` wrote change `k` (`room * kmax + k`).
    pub(crate) send_ns: Vec<AtomicU64>,
    /// Largest user-space latency of change `room * kmax + k`, ns.
    pub(crate) last_user: Vec<AtomicU64>,
    /// Largest kernel latency of change `room * kmax + k`, ns.
    pub(crate) last_kernel: Vec<AtomicU64>,
    /// Deliveries of change `room * kmax + k`.
    pub(crate) got: Vec<AtomicU32>,
    shards: Vec<Mutex<Hists>>,
    pub(crate) delivered: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) dups: AtomicU64,
    /// Deliveries whose first copy was a datagram (WebTransport).
    pub(crate) first_by_datagram: AtomicU64,
    /// Nacks sent by viewers (WebTransport with changes once as datagrams).
    pub(crate) nacks: AtomicU64,
    /// QUIC counters of the WebTransport viewers' connections, summed when they stop:
    /// `[packets received (from the server), ACK frames sent, packets sent, ACK frames received]`.
    pub(crate) quic: [AtomicU64; 4],
    /// Messages of any kind received by viewers in the measured window.
    pub(crate) msgs_in_window: AtomicU64,
    pub(crate) measuring: std::sync::atomic::AtomicBool,
    /// Viewer count messages received (all viewers).
    pub(crate) count_msgs: AtomicU64,
    /// Most count messages one viewer received.
    pub(crate) count_msgs_max: AtomicU64,
    /// Viewers whose latest count is the expected one.
    pub(crate) count_right: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) closed: AtomicU64,
}

impl Rec {
    pub(crate) fn new(rooms: usize, k0: u32, k1: u32, interval_ns: u64) -> Rec {
        let kmax = k1 as usize + 1;
        let z64 = |n| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Rec {
            rooms,
            kmax,
            k0,
            k1,
            interval_ns,
            send_ns: z64(rooms * kmax),
            last_user: z64(rooms * kmax),
            last_kernel: z64(rooms * kmax),
            got: (0..rooms * kmax).map(|_| AtomicU32::new(0)).collect(),
            shards: (0..SHARDS).map(|_| Mutex::new(Hists::new())).collect(),
            delivered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            first_by_datagram: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            quic: Default::default(),
            msgs_in_window: AtomicU64::new(0),
            measuring: std::sync::atomic::AtomicBool::new(false),
            count_msgs: AtomicU64::new(0),
            count_msgs_max: AtomicU64::new(0),
            count_right: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    pub(crate) fn shard(&self, g: usize) -> std::sync::MutexGuard<'_, Hists> {
        self.shards[g % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A viewer received change `k` of `room` first (duplicates filtered by the viewer).
    pub(crate) fn delivery(&self, g: usize, room: usize, k: u32, user_ns: u64, kernel_ns: Option<u64>, dgram: bool) {
        if k < self.k0 || k >= self.k1 || room >= self.rooms {
            return;
        }
        let i = room * self.kmax + k as usize;
        let sent = self.send_ns[i].load(Relaxed);
        if sent == 0 {
            return;
        }
        let lu = user_ns.saturating_sub(sent);
        let lk = kernel_ns.map(|t| t.saturating_sub(sent));
        {
            let mut h = self.shard(g);
            let _ = h.user.record((lu / 1000).max(1));
            if let Some(lk) = lk {
                let _ = h.kernel.record((lk / 1000).max(1));
            }
        }
        self.last_user[i].fetch_max(lu, Relaxed);
        if let Some(lk) = lk {
            self.last_kernel[i].fetch_max(lk, Relaxed);
        }
        self.got[i].fetch_add(1, Relaxed);
        self.delivered.fetch_add(1, Relaxed);
        if dgram {
            self.first_by_datagram.fetch_add(1, Relaxed);
        }
        if lu > self.interval_ns {
            self.late.fetch_add(1, Relaxed);
        }
    }

    /// All shards merged.
    pub(crate) fn merged(&self) -> Hists {
        let mut all = Hists::new();
        for s in &self.shards {
            all.add(&s.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }

    /// Per measured change: the time until its last viewer had it (µs), user and kernel.
    pub(crate) fn completion(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut u, mut k) = (hist(), hist());
        for room in 0..self.rooms {
            for kk in self.k0..self.k1 {
                let i = room * self.kmax + kk as usize;
                if self.got[i].load(Relaxed) == 0 {
                    continue;
                }
                let _ = u.record((self.last_user[i].load(Relaxed) / 1000).max(1));
                let lk = self.last_kernel[i].load(Relaxed);
                if lk > 0 {
                    let _ = k.record((lk / 1000).max(1));
                }
            }
        }
        (u, k)
    }

    /// Changes the hosts sent in the measured window.
    pub(crate) fn sent_measured(&self) -> u64 {
        let mut n = 0;
        for room in 0..self.rooms {
            for kk in self.k0..self.k1 {
                if self.send_ns[room * self.kmax + kk as usize].load(Relaxed) != 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Sync-precision samples: per change (epoch index) and viewer, the realtime
/// (ns) at which the viewer's clock estimate says the change takes effect,
/// and when its own timer actually fired.
#[derive(Debug)]
pub(crate) struct Precision {
    pub(crate) viewers: usize,
    pub(crate) changes: usize,
    pub(crate) scheduled: Vec<AtomicU64>,
    pub(crate) fired: Vec<AtomicU64>,
    /// Server time (µs) at which change `c` takes effect.
    pub(crate) effective_us: Vec<AtomicU64>,
    /// Changes that arrived after their effective time (by the viewer's estimate).
    pub(crate) late: AtomicU64,
    /// Pings sent / pongs received.
    pub(crate) pings: AtomicU64,
    pub(crate) pongs: AtomicU64,
}

impl Precision {
    pub(crate) fn new(viewers: usize, changes: usize) -> Precision {
        let z = |n| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Precision {
            viewers,
            changes,
            scheduled: z(viewers * changes),
            fired: z(viewers * changes),
            effective_us: z(changes),
            late: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
        }
    }
}

/// NTP-style clock-offset estimation as `protocol/SPEC.md` §7 describes:
/// the samples of the last 30 s, at most 16, and the offset of the one with
/// the smallest round trip. Times in µs; the client clock is CLOCK_REALTIME.
#[derive(Debug, Default)]
pub(crate) struct ClockEst {
    samples: std::collections::VecDeque<(u64, i64, i64)>, // (t3, rtt, offset)
    coarse: Option<i64>,
}

impl ClockEst {
    pub(crate) fn coarse(&mut self, server_time_us: u64, t_recv_us: u64) {
        self.coarse = Some(server_time_us as i64 - t_recv_us as i64);
    }

    pub(crate) fn pong(&mut self, t0: u64, t1: u64, t2: u64, t3: u64) {
        let rtt = (t3 as i64 - t0 as i64) - (t2 as i64 - t1 as i64);
        let offset = ((t1 as i64 - t0 as i64) + (t2 as i64 - t3 as i64)) / 2;
        self.samples.push_back((t3, rtt, offset));
        while self.samples.len() > 16 || self.samples.front().is_some_and(|s| t3.saturating_sub(s.0) > 30_000_000) {
            self.samples.pop_front();
        }
    }

    /// server_time ≈ client_time + offset.
    pub(crate) fn offset(&self) -> Option<i64> {
        self.samples.iter().min_by_key(|s| s.1).map(|s| s.2).or(self.coarse)
    }
}

/// `q`-quantile of a histogram in ms.
pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}
