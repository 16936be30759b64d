//! The live scenario (issue 12): one live room (`--room-clock live`), every
//! viewer with a simulated live edge, sending `LiveReport`s and `Report`s once
//! a second; what the viewers would show at common instants, and what the
//! room's latency did.
//!
//! **Live edge.** Viewer `g` has a segment duration `seg` (1–2 s) and a fetch
//! delay `fetch` (0.3–3 s; a slow tail, 2 % at 6–10 s): the newest program
//! time it can play at server time `now` is `⌊(now − fetch) / seg⌋ · seg`
//! (the segment ending there was published at its end and reached the viewer
//! `fetch` later), so its need (`now − edge + 500 ms`, as the server computes
//! it) is a sawtooth between `fetch + 500` and `fetch + seg + 500`.
//!
//! **Samples.** At instants `S_j = start + j s` (server time) each viewer
//! evaluates the program time it would show: `origin + position` of the
//! timeline in effect (its own tracker: `Welcome`, `TimelineChanged` with
//! its effective time, ticks, as `client-js`'s `TimelineTracker`) at its own
//! estimate of the server time at `S_j` (`S_j − true offset + its offset`,
//! the per-connection clock sync of `protocol/SPEC.md` §7, as in `sync`). A
//! viewer takes the sample before it handles any input that arrived after
//! `S_j`, so its state is the one it had at `S_j`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use lockstep_protocol::{ChangeReason, LiveState, Tick, Timeline, TimelineChanged};
use serde::Serialize;

/// Margin the server adds to a viewer's distance from its edge (`room/live.rs`).
pub(crate) const LIVE_MARGIN_MS: u64 = 500;
/// The server's window for a viewer's need (`room/live.rs`).
const NEED_WINDOW_US: u64 = 15_000_000;

/// What the live scenario simulates.
#[derive(Debug, Clone)]
pub(crate) struct LiveOpts {
    /// Server latency settings to run: `auto` or a number of ms, each a variant.
    pub(crate) latencies: Vec<String>,
    pub(crate) fetch_ms: (u32, u32),
    /// Fraction of viewers in the slow tail, and their fetch delays.
    pub(crate) tail: f64,
    pub(crate) tail_ms: (u32, u32),
    pub(crate) segment_ms: (u32, u32),
    /// Whether a viewer whose edge is behind the room's program time reports `buffering`.
    pub(crate) stalls: bool,
    pub(crate) seed: u64,
}

impl Default for LiveOpts {
    fn default() -> Self {
        LiveOpts {
            latencies: vec!["auto".into()],
            fetch_ms: (300, 3_000),
            tail: 0.02,
            tail_ms: (6_000, 10_000),
            segment_ms: (1_000, 2_000),
            stalls: true,
            seed: 12,
        }
    }
}

/// `"A-B"` or `"A"` (ms).
pub(crate) fn parse_range(s: &str) -> anyhow::Result<(u32, u32)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u32, u32) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a <= b, "{s:?}: the range is reversed");
    Ok((a, b))
}

/// `"FRACTION:A-B"`, e.g. `0.02:6000-10000`.
pub(crate) fn parse_tail(s: &str) -> anyhow::Result<(f64, (u32, u32))> {
    let (f, r) = s.split_once(':').ok_or_else(|| anyhow::anyhow!("--live-tail FRACTION:MIN-MAX, not {s:?}"))?;
    let f: f64 = f.parse()?;
    anyhow::ensure!((0.0..=1.0).contains(&f), "--live-tail: the fraction is in 0..=1");
    Ok((f, parse_range(r)?))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) for viewer `g`, draw `k`.
fn unit(seed: u64, g: usize, k: u64) -> f64 {
    (splitmix(splitmix(seed ^ (g as u64)) ^ k) >> 11) as f64 / (1u64 << 53) as f64
}

fn pick(u: f64, (a, b): (u32, u32)) -> u32 {
    a + ((b - a) as f64 * u).round() as u32
}

/// One viewer's simulated network and playlist.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Params {
    pub(crate) fetch_ms: u32,
    pub(crate) seg_ms: u32,
    pub(crate) tail: bool,
    /// When in each second (µs) the viewer reports.
    pub(crate) phase_us: u64,
}

impl Params {
    pub(crate) fn new(o: &LiveOpts, g: usize) -> Params {
        let tail = unit(o.seed, g, 0) < o.tail;
        let fetch_ms = pick(unit(o.seed, g, 1), if tail { o.tail_ms } else { o.fetch_ms });
        let seg_ms = pick(unit(o.seed, g, 2), o.segment_ms).max(1);
        // Golden-ratio phases spread the reports evenly over each second.
        let phase_us = ((g as f64 * 0.618_033_988_75).fract() * 1e6) as u64;
        Params { fetch_ms, seg_ms, tail, phase_us }
    }

    /// The newest program time (Unix ms) this viewer can play at server time `now_ms`.
    pub(crate) fn edge_ms(&self, now_ms: u64) -> u64 {
        let seg = u64::from(self.seg_ms);
        now_ms.saturating_sub(u64::from(self.fetch_ms)) / seg * seg
    }

    /// The top of this viewer's need sawtooth (what it needs never to stall).
    pub(crate) fn need_peak_ms(&self) -> u64 {
        u64::from(self.fetch_ms) + u64::from(self.seg_ms) + LIVE_MARGIN_MS
    }
}

fn epoch_cmp(a: u32, b: u32) -> std::cmp::Ordering {
    (a.wrapping_sub(b) as i32).cmp(&0)
}

/// A timeline and since when it holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    t: Timeline,
    eff: u64,
    /// Learned from a tick (its change was missed or late).
    from_tick: bool,
}

/// The timeline a viewer follows: `client-js`'s `TimelineTracker`.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    cur: Option<Held>,
    pending: Option<Held>,
    last_tick_anchor: Option<u64>,
}

/// What a tick did to a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickEffect {
    /// Nothing new (the same timeline re-anchored).
    Same,
    /// A newer epoch whose change had arrived (pending) and was now due.
    Promoted,
    /// A newer epoch the viewer had no change for.
    Revealed,
    Stale,
}

impl Tracker {
    pub(crate) fn reset(&mut self, t: Timeline, server_time_us: u64) {
        *self = Tracker { cur: Some(Held { t, eff: server_time_us, from_tick: false }), ..Tracker::default() };
    }

    fn known(&self, epoch: u32) -> bool {
        self.cur.is_some_and(|h| h.t.epoch == epoch) || self.pending.is_some_and(|h| h.t.epoch == epoch)
    }

    /// A `TimelineChanged`; whether it was new.
    pub(crate) fn on_changed(&mut self, c: &TimelineChanged, est_now: u64) -> bool {
        let epoch = c.timeline.epoch;
        if self.known(epoch) {
            return false;
        }
        let newest = match (self.cur, self.pending) {
            (Some(c), Some(p)) if epoch_cmp(p.t.epoch, c.t.epoch).is_gt() => Some(p.t.epoch),
            (Some(c), _) => Some(c.t.epoch),
            _ => None,
        };
        if newest.is_some_and(|n| epoch_cmp(epoch, n).is_lt()) {
            return false;
        }
        let h = Held { t: c.timeline, eff: c.effective_at_us, from_tick: false };
        if self.cur.is_none() || c.effective_at_us <= est_now {
            self.cur = Some(h);
            self.pending = None;
            self.last_tick_anchor = None;
        } else {
            self.pending = Some(h);
        }
        true
    }

    pub(crate) fn on_tick(&mut self, tick: &Tick, est_now: u64) -> TickEffect {
        let t = tick.timeline(est_now);
        let Some(cur) = self.cur else {
            self.cur = Some(Held { t, eff: t.anchor_us, from_tick: true });
            self.last_tick_anchor = Some(t.anchor_us);
            return TickEffect::Revealed;
        };
        match epoch_cmp(tick.epoch, cur.t.epoch) {
            std::cmp::Ordering::Less => TickEffect::Stale,
            std::cmp::Ordering::Equal => {
                if self.last_tick_anchor.is_some_and(|a| t.anchor_us < a) {
                    return TickEffect::Stale;
                }
                self.last_tick_anchor = Some(t.anchor_us);
                TickEffect::Same
            }
            std::cmp::Ordering::Greater => {
                let p = self.pending;
                let from_pending = p.is_some_and(|p| p.t.epoch == tick.epoch);
                self.cur = Some(match p {
                    Some(p) if from_pending => p,
                    _ => Held { t, eff: t.anchor_us, from_tick: true },
                });
                if p.is_some_and(|p| epoch_cmp(p.t.epoch, tick.epoch).is_le()) {
                    self.pending = None;
                }
                self.last_tick_anchor = Some(t.anchor_us);
                if from_pending { TickEffect::Promoted } else { TickEffect::Revealed }
            }
        }
    }

    /// The timeline in effect at the server time `est` (a due pending change
    /// counts), without changing anything.
    fn at(&self, est: u64) -> Option<Held> {
        match self.pending {
            Some(p) if p.eff <= est => Some(p),
            _ => self.cur,
        }
    }

    /// Position (µs) at `est`, the epoch, and whether the timeline came from a tick.
    pub(crate) fn position_us_at(&self, est: u64) -> Option<(u64, u32, bool)> {
        self.at(est).map(|h| (h.t.position_us_at(est), h.t.epoch, h.from_tick))
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.cur.map_or(0, |h| h.t.epoch)
    }
}

/// Flags of a sample.
pub(crate) const F_FROM_TICK: u8 = 1;
pub(crate) const F_AT_LIVE: u8 = 2;

/// Everything the viewers of a live run record (shared).
#[derive(Debug)]
pub(crate) struct LiveRec {
    pub(crate) viewers: usize,
    pub(crate) params: Vec<Params>,
    pub(crate) stalls: bool,
    /// The server clock minus CLOCK_REALTIME (µs), measured directly.
    pub(crate) ref_offset_us: i64,
    /// Server time (µs) of sample 0 and of the first report; 0 until the start.
    pub(crate) t0_server_us: AtomicU64,
    pub(crate) samples: usize,
    /// Program time (Unix µs) viewer `g` would show at sample `j` (`j * viewers + g`); 0: none.
    pub(crate) pt: Vec<AtomicU64>,
    pub(crate) flags: Vec<AtomicU8>,
    /// Each viewer's need as the server computes it from the reports it was sent (ms; 0: none).
    pub(crate) need_now: Vec<AtomicU64>,
    /// The `k`-th `LiveState` of the room as first received (realtime ns, state).
    pub(crate) states: Mutex<Vec<(u64, LiveState)>>,
    /// Timeline changes by epoch, as the viewers received them.
    pub(crate) changes: Mutex<Vec<Got>>,
    /// The timeline of the first `Welcome` (effective before any change).
    pub(crate) welcome: Mutex<Option<Timeline>>,
    /// Per viewer: its last `LiveState`, packed (see [`pack`]); 0: none.
    pub(crate) last_state: Vec<AtomicU64>,
    pub(crate) state_msgs: AtomicU64,
    pub(crate) state_msgs_max: AtomicU64,
    /// Viewers whose first message after `Welcome` was a `LiveState`.
    pub(crate) state_first: AtomicU64,
    pub(crate) ticks: AtomicU64,
    pub(crate) ticks_revealed: AtomicU64,
    pub(crate) ticks_promoted: AtomicU64,
    /// (viewer, change) pairs that arrived after their effective time by the viewer's estimate.
    pub(crate) changes_late: AtomicU64,
    pub(crate) changes_got: AtomicU64,
    pub(crate) reports: AtomicU64,
    pub(crate) buffering_reports: AtomicU64,
    /// Realtime ns of the first live report sent.
    pub(crate) first_report_ns: AtomicU64,
    /// Per second from the first report: the harness's view of the needs and the server's state.
    pub(crate) series: Mutex<Vec<SeriesPoint>>,
}

/// A timeline change and its delivery.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) change: TimelineChanged,
    /// First and last receipt by a viewer (realtime ns).
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) viewers: u64,
    /// Viewers it reached after its effective time (by their estimates).
    pub(crate) late: u64,
}

/// A `LiveState` in one u64: latency, at live, auto.
pub(crate) fn pack(s: &LiveState) -> u64 {
    (u64::from(s.latency_ms) << 3) | (u64::from(s.at_live) << 2) | (u64::from(s.auto_latency) << 1) | 1
}

impl LiveRec {
    pub(crate) fn new(o: &LiveOpts, viewers: usize, samples: usize, ref_offset_us: i64) -> LiveRec {
        let z = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        LiveRec {
            viewers,
            params: (0..viewers).map(|g| Params::new(o, g)).collect(),
            stalls: o.stalls,
            ref_offset_us,
            t0_server_us: AtomicU64::new(0),
            samples,
            pt: z(samples * viewers),
            flags: (0..samples * viewers).map(|_| AtomicU8::new(0)).collect(),
            need_now: z(viewers),
            states: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            welcome: Mutex::new(None),
            last_state: z(viewers),
            state_msgs: AtomicU64::new(0),
            state_msgs_max: AtomicU64::new(0),
            state_first: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            ticks_revealed: AtomicU64::new(0),
            ticks_promoted: AtomicU64::new(0),
            changes_late: AtomicU64::new(0),
            changes_got: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            buffering_reports: AtomicU64::new(0),
            first_report_ns: AtomicU64::new(u64::MAX),
            series: Mutex::new(Vec::new()),
        }
    }

    /// Server time now (µs), from CLOCK_REALTIME and the measured offset.
    pub(crate) fn server_now_us(&self) -> u64 {
        (crate::wsclient::realtime_ns() / 1000).saturating_add_signed(self.ref_offset_us)
    }

    /// The p95 and max of the viewers' current needs (ms), over all of them and over the main group.
    pub(crate) fn needs_now(&self) -> (f64, f64, f64, usize) {
        let (mut all, mut main) = (Vec::with_capacity(self.viewers), Vec::with_capacity(self.viewers));
        for (g, n) in self.need_now.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                all.push(n);
                if !self.params[g].tail {
                    main.push(n);
                }
            }
        }
        all.sort_unstable();
        main.sort_unstable();
        (p95(&all), p95(&main), all.last().map_or(f64::NAN, |&x| x as f64), all.len())
    }
}

/// The server's p95 rule: the `⌈0.95 n⌉`-th smallest.
fn p95(sorted: &[u64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * 95).div_ceil(100).max(1) - 1] as f64
}

/// One second of a run: the needs as the harness sent them, and the server's `…/state`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct SeriesPoint {
    /// Seconds since the first report.
    pub(crate) t_s: f64,
    pub(crate) need_p95_ms: f64,
    pub(crate) need_p95_main_ms: f64,
    pub(crate) need_max_ms: f64,
    pub(crate) reporting: usize,
    /// From `GET …/state` (polled every 5 s; NaN between).
    pub(crate) server_latency_ms: f64,
    pub(crate) server_at_live: f64,
    pub(crate) server_ignored_reports: f64,
    pub(crate) server_mailbox_reports: f64,
    pub(crate) server_waiting: f64,
}

/// A viewer's live part.
#[derive(Debug)]
pub(crate) struct Viewer {
    pub(crate) g: usize,
    pub(crate) tracker: Tracker,
    origin_ms: Option<u64>,
    at_live: bool,
    states: u64,
    msgs_since_welcome: u64,
    next_j: usize,
    /// (server time µs, need ms) of the reports of the last 15 s.
    needs: VecDeque<(u64, u64)>,
}

impl Viewer {
    pub(crate) fn new(g: usize) -> Viewer {
        Viewer {
            g,
            tracker: Tracker::default(),
            origin_ms: None,
            at_live: false,
            states: 0,
            msgs_since_welcome: 0,
            next_j: 0,
            needs: VecDeque::new(),
        }
    }

    pub(crate) fn on_welcome(&mut self, rec: &LiveRec, w: &lockstep_protocol::Welcome) {
        self.tracker.reset(w.timeline, w.server_time_us);
        self.msgs_since_welcome = 0;
        let mut first = rec.welcome.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(w.timeline);
        }
    }

    /// Any message after `Welcome` (to check that `LiveState` comes first).
    pub(crate) fn on_msg(&mut self) {
        self.msgs_since_welcome += 1;
    }

    pub(crate) fn on_state(&mut self, rec: &LiveRec, s: &LiveState, recv_ns: u64) {
        if self.states == 0 && self.msgs_since_welcome == 1 {
            rec.state_first.fetch_add(1, Relaxed);
        }
        let k = self.states as usize;
        self.states += 1;
        self.origin_ms = Some(s.origin_ms);
        self.at_live = s.at_live;
        rec.state_msgs.fetch_add(1, Relaxed);
        rec.state_msgs_max.fetch_max(self.states, Relaxed);
        rec.last_state[self.g].store(pack(s), Relaxed);
        let mut v = rec.states.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() == k {
            v.push((recv_ns, *s));
        }
    }

    pub(crate) fn on_changed(&mut self, rec: &LiveRec, c: &TimelineChanged, est_now: Option<u64>, recv_ns: u64) {
        let Some(est) = est_now else { return };
        if !self.tracker.on_changed(c, est) {
            return;
        }
        rec.changes_got.fetch_add(1, Relaxed);
        if c.effective_at_us <= est {
            rec.changes_late.fetch_add(1, Relaxed);
        }
        let late = u64::from(c.effective_at_us <= est);
        let mut v = rec.changes.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter_mut().find(|x| x.change.timeline.epoch == c.timeline.epoch) {
            Some(x) => {
                x.viewers += 1;
                x.late += late;
                x.first_ns = x.first_ns.min(recv_ns);
                x.last_ns = x.last_ns.max(recv_ns);
            }
            None => v.push(Got { change: c.clone(), first_ns: recv_ns, last_ns: recv_ns, viewers: 1, late }),
        }
    }

    pub(crate) fn on_tick(&mut self, rec: &LiveRec, t: &Tick, est_now: Option<u64>) {
        let Some(est) = est_now else { return };
        rec.ticks.fetch_add(1, Relaxed);
        match self.tracker.on_tick(t, est) {
            TickEffect::Revealed => {
                rec.ticks_revealed.fetch_add(1, Relaxed);
            }
            TickEffect::Promoted => {
                rec.ticks_promoted.fetch_add(1, Relaxed);
            }
            TickEffect::Same | TickEffect::Stale => {}
        }
    }

    /// Takes the samples whose instants have passed, with the state held now
    /// (call before handling new input). `offset`: the viewer's clock estimate.
    pub(crate) fn sample(&mut self, rec: &LiveRec, offset: Option<i64>) {
        let t0 = rec.t0_server_us.load(Relaxed);
        if t0 == 0 || self.next_j >= rec.samples {
            return;
        }
        let now = rec.server_now_us();
        while self.next_j < rec.samples {
            let s = t0 + self.next_j as u64 * 1_000_000;
            if s > now {
                break;
            }
            let i = self.next_j * rec.viewers + self.g;
            self.next_j += 1;
            let (Some(off), Some(origin)) = (offset, self.origin_ms) else { continue };
            // The viewer's clock reads S − true offset; it adds its own estimate.
            let est = (s as i64 - rec.ref_offset_us + off).max(0) as u64;
            let Some((pos, _, from_tick)) = self.tracker.position_us_at(est) else { continue };
            rec.pt[i].store(origin * 1000 + pos, Relaxed);
            let f = if from_tick { F_FROM_TICK } else { 0 } | if self.at_live { F_AT_LIVE } else { 0 };
            rec.flags[i].store(f, Relaxed);
        }
    }

    /// The viewer's `LiveReport` and `Report` now (`est_now`: its estimate of the server time).
    pub(crate) fn reports(
        &mut self,
        rec: &LiveRec,
        est_now: Option<u64>,
    ) -> (lockstep_protocol::LiveReport, lockstep_protocol::Report) {
        let p = rec.params[self.g];
        let now = rec.server_now_us();
        let edge = p.edge_ms(now / 1000);
        let need = (now / 1000).saturating_sub(edge) + LIVE_MARGIN_MS;
        self.needs.push_back((now, need));
        while self.needs.front().is_some_and(|&(at, _)| at + NEED_WINDOW_US < now) {
            self.needs.pop_front();
        }
        rec.need_now[self.g].store(self.needs.iter().map(|n| n.1).max().unwrap_or(need), Relaxed);
        rec.first_report_ns.fetch_min(crate::wsclient::realtime_ns(), Relaxed);
        rec.reports.fetch_add(1, Relaxed);
        // Where the room is for this viewer (µs from the origin), and whether it has the frames.
        let pos = est_now.and_then(|e| self.tracker.position_us_at(e)).map(|x| x.0);
        let origin = self.origin_ms.unwrap_or(0);
        let edge_pos_us = edge.saturating_sub(origin) * 1000;
        let behind = pos.is_some_and(|p| edge_pos_us < p);
        let buffering = rec.stalls && behind;
        if buffering {
            rec.buffering_reports.fetch_add(1, Relaxed);
        }
        let buffer_ms = pos.map_or(0, |p| edge_pos_us.saturating_sub(p) / 1000).min(u64::from(u32::MAX)) as u32;
        let live = lockstep_protocol::LiveReport { live_edge_ms: edge, buffer_ms };
        let report = lockstep_protocol::Report {
            epoch: self.tracker.epoch(),
            // A stalled viewer shows its newest frame at best.
            position_us: pos.map_or(0, |p| if behind { edge_pos_us } else { p }),
            rate_milli: 1000,
            buffering,
        };
        (live, report)
    }
}

macro_rules! live_res {
    ($($(#[$doc:meta])* $f:ident),* $(,)?) => {
        /// What a live run measured (all numbers, so runs have medians field by field).
        #[derive(Debug, Clone, Default, Serialize)]
        pub(crate) struct LiveRes { $($(#[$doc])* pub(crate) $f: f64,)* }
        impl LiveRes {
            pub(crate) fn median(rs: &[&LiveRes]) -> LiveRes {
                LiveRes { $($f: crate::median(rs.iter().map(|r| r.$f).collect()),)* }
            }
        }
    };
}

live_res! {
    viewers,
    tail_viewers,
    /// Samples in the measured window, and viewer samples taken in it.
    samples,
    viewer_samples,
    /// |program time − the median of the viewers at that instant|, ms.
    dev_p50, dev_p95, dev_p99, dev_max,
    /// max − min over the viewers at one instant, ms: median and largest over the instants.
    range_p50, range_max,
    /// |program time − the room's true program time at that instant|, ms.
    skew_p50, skew_p95, skew_max,
    /// Server time − the room's program time at the instants (the latency in force), ms: median.
    lag_ms,
    /// The same with each viewer's frames: min(program time, its edge); and stalled viewers.
    shown_dev_p95, shown_dev_max, shown_range_p50, shown_range_max,
    stalled_pct, stalled_main_pct, stalled_tail_pct,
    /// Latency: the first and the last `LiveState`'s, moves, and when.
    latency_initial_ms, latency_final_ms,
    first_move_s, last_move_s, moves, moves_in_window, at_live_flips,
    buffering_waits, at_live_end,
    /// Needs: p95 of what the harness reported (end of run), of the sawtooth peaks, without the tail, max.
    need_p95_reported_ms, need_p95_peak_ms, need_p95_peak_main_ms, need_max_peak_ms, need_median_peak_ms,
    /// Delivery.
    got_live_state, live_state_first, state_msgs_mean, state_msgs_max, final_state_ok,
    changes, changes_late, ticks_per_viewer_s, ticks_revealed, ticks_promoted, from_tick_max,
    reports_per_s, buffering_reports_pct,
    server_ignored_reports, server_mailbox_reports,
}

/// The room's timeline in effect at server time `s`, from its changes.
fn true_timeline(welcome: Timeline, changes: &[TimelineChanged], s: u64) -> Timeline {
    let mut t = welcome;
    for c in changes {
        if c.effective_at_us <= s && epoch_cmp(c.timeline.epoch, t.epoch).is_gt() {
            t = c.timeline;
        }
    }
    t
}

fn q(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// A latency or at-live change as the viewers saw it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Move {
    /// Seconds after the first report (first receipt by any viewer).
    pub(crate) t_s: f64,
    pub(crate) latency_ms: u32,
    pub(crate) at_live: bool,
}

/// A timeline change: seconds after the first report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChangeRow {
    pub(crate) reason: String,
    pub(crate) effective_s: f64,
    pub(crate) first_s: f64,
    pub(crate) last_s: f64,
    pub(crate) viewers: u64,
    pub(crate) late: u64,
}

/// The per-run details printed and written besides [`LiveRes`].
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct LiveRun {
    pub(crate) moves: Vec<Move>,
    pub(crate) changes: Vec<ChangeRow>,
    pub(crate) series: Vec<SeriesPoint>,
}

/// Analysis of one run: samples `j0..j1` are the measured window.
pub(crate) fn analyze(rec: &LiveRec, j0: usize, j1: usize) -> (LiveRes, LiveRun) {
    let n = rec.viewers;
    let mut r = LiveRes { viewers: n as f64, ..LiveRes::default() };
    r.tail_viewers = rec.params.iter().filter(|p| p.tail).count() as f64;
    let t0 = rec.t0_server_us.load(Relaxed);
    let welcome = rec.welcome.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(Timeline {
        epoch: 0,
        position_ms: 0,
        anchor_us: 0,
        rate_milli: 1000,
        paused: false,
    });
    let mut changes = rec.changes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    changes.sort_by_key(|x| x.change.effective_at_us);
    let cs: Vec<TimelineChanged> = changes.iter().map(|x| x.change.clone()).collect();
    let states = rec.states.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let origin = states.first().map_or(0, |s| s.1.origin_ms);
    let first_ns = rec.first_report_ns.load(Relaxed);
    let rel = |ns: u64| (ns as f64 - first_ns as f64) / 1e9;

    let (mut devs, mut skews, mut lags) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ranges, mut shown_devs, mut shown_ranges) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stalled, mut stalled_main, mut stalled_tail, mut cnt_main, mut cnt_tail) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut from_tick_max = 0u64;
    let mut pts: Vec<u64> = Vec::with_capacity(n);
    let mut shown: Vec<u64> = Vec::with_capacity(n);
    for j in j0..j1.min(rec.samples) {
        let s = t0 + j as u64 * 1_000_000;
        let truth = origin * 1000 + true_timeline(welcome, &cs, s).position_us_at(s);
        lags.push(s.saturating_sub(truth));
        pts.clear();
        shown.clear();
        let mut from_tick = 0;
        for g in 0..n {
            let pt = rec.pt[j * n + g].load(Relaxed);
            if pt == 0 {
                continue;
            }
            pts.push(pt);
            if rec.flags[j * n + g].load(Relaxed) & F_FROM_TICK != 0 {
                from_tick += 1;
            }
            skews.push(pt.abs_diff(truth));
            let p = rec.params[g];
            let edge_us = p.edge_ms(s / 1000) * 1000;
            let behind = edge_us < pt;
            stalled += u64::from(behind);
            if p.tail {
                cnt_tail += 1;
                stalled_tail += u64::from(behind);
            } else {
                cnt_main += 1;
                stalled_main += u64::from(behind);
            }
            shown.push(pt.min(edge_us));
        }
        from_tick_max = from_tick_max.max(from_tick);
        r.samples += 1.0;
        for (v, d, rg) in [(&mut pts, &mut devs, &mut ranges), (&mut shown, &mut shown_devs, &mut shown_ranges)] {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let med = v[(v.len() - 1) / 2];
            d.extend(v.iter().map(|x| x.abs_diff(med)));
            rg.push(v[v.len() - 1] - v[0]);
        }
    }
    r.viewer_samples = skews.len() as f64;
    for v in [&mut devs, &mut skews, &mut lags, &mut ranges, &mut shown_devs, &mut shown_ranges] {
        v.sort_unstable();
    }
    (r.dev_p50, r.dev_p95, r.dev_p99, r.dev_max) = (q(&devs, 0.5), q(&devs, 0.95), q(&devs, 0.99), q(&devs, 1.0));
    (r.range_p50, r.range_max) = (q(&ranges, 0.5), q(&ranges, 1.0));
    (r.skew_p50, r.skew_p95, r.skew_max) = (q(&skews, 0.5), q(&skews, 0.95), q(&skews, 1.0));
    r.lag_ms = q(&lags, 0.5);
    (r.shown_dev_p95, r.shown_dev_max) = (q(&shown_devs, 0.95), q(&shown_devs, 1.0));
    (r.shown_range_p50, r.shown_range_max) = (q(&shown_ranges, 0.5), q(&shown_ranges, 1.0));
    let pct = |a: u64, b: u64| if b == 0 { f64::NAN } else { 100.0 * a as f64 / b as f64 };
    r.stalled_pct = pct(stalled, cnt_main + cnt_tail);
    r.stalled_main_pct = pct(stalled_main, cnt_main);
    r.stalled_tail_pct = pct(stalled_tail, cnt_tail);
    r.from_tick_max = from_tick_max as f64;

    // The latency and the live point, from the LiveStates as first received.
    let mut run = LiveRun::default();
    let window = (t0 + j0 as u64 * 1_000_000, t0 + j1 as u64 * 1_000_000);
    let in_window = |ns: u64| {
        let s = (ns / 1000).saturating_add_signed(rec.ref_offset_us);
        s >= window.0 && s < window.1
    };
    if let Some((_, s0)) = states.first() {
        r.latency_initial_ms = f64::from(s0.latency_ms);
        let mut prev = *s0;
        for &(ns, s) in &states[1..] {
            run.moves.push(Move { t_s: rel(ns), latency_ms: s.latency_ms, at_live: s.at_live });
            if s.latency_ms != prev.latency_ms {
                r.moves += 1.0;
                if r.moves == 1.0 {
                    r.first_move_s = rel(ns);
                }
                r.last_move_s = rel(ns);
                if in_window(ns) {
                    r.moves_in_window += 1.0;
                }
            }
            if s.at_live != prev.at_live {
                r.at_live_flips += 1.0;
            }
            prev = s;
        }
        if r.moves == 0.0 {
            (r.first_move_s, r.last_move_s) = (f64::NAN, f64::NAN);
        }
        r.latency_final_ms = f64::from(prev.latency_ms);
        r.at_live_end = f64::from(u8::from(prev.at_live));
        let want = pack(&prev);
        r.final_state_ok = rec.last_state.iter().filter(|s| s.load(Relaxed) == want).count() as f64;
    }
    for x in &changes {
        let c = &x.change;
        let eff = (c.effective_at_us as i64 - rec.ref_offset_us) as f64 * 1000.0;
        run.changes.push(ChangeRow {
            reason: format!("{:?}", c.reason),
            effective_s: (eff - first_ns as f64) / 1e9,
            first_s: rel(x.first_ns),
            last_s: rel(x.last_ns),
            viewers: x.viewers,
            late: x.late,
        });
        if c.reason == ChangeReason::BufferingWait {
            r.buffering_waits += 1.0;
        }
    }
    r.changes = changes.len() as f64;

    // Needs.
    let series = rec.series.lock().unwrap_or_else(|e| e.into_inner()).clone();
    r.need_p95_reported_ms = series.iter().rev().map(|p| p.need_p95_ms).find(|x| x.is_finite()).unwrap_or(f64::NAN);
    let mut peaks: Vec<u64> = rec.params.iter().map(Params::need_peak_ms).collect();
    let mut main: Vec<u64> = rec.params.iter().filter(|p| !p.tail).map(Params::need_peak_ms).collect();
    peaks.sort_unstable();
    main.sort_unstable();
    r.need_p95_peak_ms = p95(&peaks);
    r.need_p95_peak_main_ms = p95(&main);
    r.need_max_peak_ms = peaks.last().map_or(f64::NAN, |&x| x as f64);
    r.need_median_peak_ms = peaks.get((peaks.len().max(1) - 1) / 2).map_or(f64::NAN, |&x| x as f64);
    let last_server = series.iter().rev().find(|p| p.server_ignored_reports.is_finite());
    r.server_ignored_reports = last_server.map_or(f64::NAN, |p| p.server_ignored_reports);
    r.server_mailbox_reports = last_server.map_or(f64::NAN, |p| p.server_mailbox_reports);
    run.series = series;

    // Delivery.
    r.got_live_state = rec.last_state.iter().filter(|s| s.load(Relaxed) != 0).count() as f64;
    r.live_state_first = rec.state_first.load(Relaxed) as f64;
    r.state_msgs_mean = rec.state_msgs.load(Relaxed) as f64 / n.max(1) as f64;
    r.state_msgs_max = rec.state_msgs_max.load(Relaxed) as f64;
    r.changes_late = rec.changes_late.load(Relaxed) as f64;
    r.ticks_revealed = rec.ticks_revealed.load(Relaxed) as f64;
    r.ticks_promoted = rec.ticks_promoted.load(Relaxed) as f64;
    let run_s = (rec.server_now_us().saturating_sub(t0)) as f64 / 1e6;
    r.ticks_per_viewer_s = rec.ticks.load(Relaxed) as f64 / n.max(1) as f64 / run_s.max(1e-3);
    r.reports_per_s = rec.reports.load(Relaxed) as f64 / run_s.max(1e-3);
    r.buffering_reports_pct = pct(rec.buffering_reports.load(Relaxed), rec.reports.load(Relaxed));
    (r, run)
}

fn f(x: f64, d: usize) -> String {
    crate::f(x, d)
}

/// The live scenario's tables.
pub(crate) fn print(rows: &[(&str, &LiveRes)], runs: &[(&str, &LiveRun)]) {
    println!(
        "Program time at common instants (each viewer's timeline at its own clock estimate; ms). dev = |viewer − median of the viewers|; range = max − min at one instant (median / worst instant); skew = |viewer − the room's true program time|; lag = server time − program time (the latency in force).\n"
    );
    println!(
        "| target | viewers (tail) | samples | dev p50 / p95 / p99 / max | range p50 / max | skew p50 / p95 / max | lag | with edges: dev p95 / max, range p50 / max | stalled % all / main / tail |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {} ({}) | {} × {} | {} / {} / {} / {} | {} / {} | {} / {} / {} | {} | {} / {}, {} / {} | {} / {} / {} |",
            r.viewers,
            r.tail_viewers,
            r.samples,
            f(r.viewer_samples / r.samples.max(1.0), 0),
            f(r.dev_p50, 3),
            f(r.dev_p95, 3),
            f(r.dev_p99, 3),
            f(r.dev_max, 3),
            f(r.range_p50, 3),
            f(r.range_max, 3),
            f(r.skew_p50, 3),
            f(r.skew_p95, 3),
            f(r.skew_max, 3),
            f(r.lag_ms, 0),
            f(r.shown_dev_p95, 0),
            f(r.shown_dev_max, 0),
            f(r.shown_range_p50, 0),
            f(r.shown_range_max, 0),
            f(r.stalled_pct, 2),
            f(r.stalled_main_pct, 2),
            f(r.stalled_tail_pct, 1),
        );
    }
    println!(
        "\nLatency (s after the first LiveReport; first receipt of the LiveState by any viewer). Needs (ms): p95 of what the viewers reported (the server's rule, end of run); p95 of the sawtooth peaks (fetch + segment + 500), all / without the slow tail; max peak.\n"
    );
    println!(
        "| target | initial → final ms | first move s | last move s | moves (in window) | at-live flips | waits | at live at end | need p95 reported | p95 peaks all / main | median / max peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {} → {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} / {} | {} / {} |",
            f(r.latency_initial_ms, 0),
            f(r.latency_final_ms, 0),
            f(r.first_move_s, 2),
            f(r.last_move_s, 2),
            f(r.moves, 0),
            f(r.moves_in_window, 0),
            f(r.at_live_flips, 0),
            f(r.buffering_waits, 0),
            if r.at_live_end >= 0.5 { "yes" } else { "no" },
            f(r.need_p95_reported_ms, 0),
            f(r.need_p95_peak_ms, 0),
            f(r.need_p95_peak_main_ms, 0),
            f(r.need_median_peak_ms, 0),
            f(r.need_max_peak_ms, 0),
        );
    }
    println!(
        "\nDelivery: viewers with a LiveState (first after Welcome), whose last LiveState is the room's last; LiveStates per viewer (mean / max); changes (viewer × change arrivals after the effective time); ticks per viewer per s, ticks that revealed an epoch whose change the viewer never got, most viewers on a tick-learned timeline at one instant; reports.\n"
    );
    println!(
        "| target | got LiveState (first) | last = room's | LiveStates mean / max | changes (late) | ticks / viewer / s | revealed | from tick (max) | reports / s | buffering % | ignored (server) | mailbox reports peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {} ({}) | {} | {} / {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
            r.got_live_state,
            r.live_state_first,
            r.final_state_ok,
            f(r.state_msgs_mean, 2),
            r.state_msgs_max,
            r.changes,
            r.changes_late,
            f(r.ticks_per_viewer_s, 2),
            r.ticks_revealed,
            r.from_tick_max,
            f(r.reports_per_s, 0),
            f(r.buffering_reports_pct, 2),
            f(r.server_ignored_reports, 0),
            f(r.server_mailbox_reports, 0),
        );
    }
    for (name, run) in runs {
        let moves: Vec<String> = run
            .moves
            .iter()
            .map(|m| format!("{:+.2} s {} ms{}", m.t_s, m.latency_ms, if m.at_live { "" } else { " (not at live)" }))
            .collect();
        let changes: Vec<String> = run
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} effective {:+.3} s, received {:+.3} to {:+.3} s by {} viewers ({} after its effective time)",
                    c.reason, c.effective_s, c.first_s, c.last_s, c.viewers, c.late
                )
            })
            .collect();
        println!(
            "\n{name}: LiveStates after the first: {}; timeline changes: {}",
            if moves.is_empty() { "none".into() } else { moves.join(", ") },
            if changes.is_empty() { "none".into() } else { changes.join(", ") }
        );
        let pts: Vec<String> = run
            .series
            .iter()
            .filter(|p| p.server_latency_ms.is_finite())
            .map(|p| {
                format!(
                    "{:+.0} s: need p95 {} (main {}), server {} ms{}{}",
                    p.t_s,
                    f(p.need_p95_ms, 0),
                    f(p.need_p95_main_ms, 0),
                    f(p.server_latency_ms, 0),
                    if p.server_at_live >= 0.5 { " at live" } else { " not at live" },
                    if p.server_waiting >= 0.5 { ", waiting" } else { "" }
                )
            })
            .collect();
        if !pts.is_empty() {
            println!("  every 5 s: {}", pts.join("; "));
        }
    }
}

/// `GET /api/live-stream/{event}/state` (the server's own view: latency, at live,
/// ignored reports, the mailbox's peaks, a buffering wait).
pub(crate) async fn server_state(http: std::net::SocketAddr, event: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
    let req = format!("GET /api/live-stream/{event}/state HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let (mut out, mut rest) = (String::new(), body);
        while let Some((size, r)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 || r.len() < n {
                break;
            }
            out.push_str(&r[..n]);
            rest = r[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).ok()
}

/// One second of the sampler: the needs now, and (when given) the server's state.
pub(crate) fn series_point(rec: &LiveRec, state: Option<&serde_json::Value>) -> SeriesPoint {
    let (p95_all, p95_main, max, reporting) = rec.needs_now();
    let first = rec.first_report_ns.load(Relaxed);
    let t_s = if first == u64::MAX { f64::NAN } else { (crate::wsclient::realtime_ns() as f64 - first as f64) / 1e9 };
    let num =
        |v: Option<&serde_json::Value>| v.and_then(|v| v.as_f64().or(v.as_bool().map(f64::from))).unwrap_or(f64::NAN);
    let live = state.map(|s| &s["live"]);
    SeriesPoint {
        t_s,
        need_p95_ms: p95_all,
        need_p95_main_ms: p95_main,
        need_max_ms: max,
        reporting,
        server_latency_ms: num(live.map(|l| &l["latencyMs"])),
        server_at_live: num(live.map(|l| &l["atLive"])),
        server_ignored_reports: num(live.map(|l| &l["ignoredReports"])),
        server_mailbox_reports: num(state.map(|s| &s["mailbox"]["reports"])),
        server_waiting: num(state.map(|s| &s["bufferingWait"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_is_a_sawtooth_on_the_segment_grid() {
        let p = Params { fetch_ms: 500, seg_ms: 2_000, tail: false, phase_us: 0 };
        assert_eq!(p.edge_ms(10_499), 8_000);
        assert_eq!(p.edge_ms(10_500), 10_000);
        assert_eq!(p.edge_ms(12_499), 10_000);
        assert_eq!(p.need_peak_ms(), 3_000);
    }

    #[test]
    fn a_pending_change_holds_from_its_effective_time() {
        let t0 = Timeline { epoch: 3, position_ms: 1_000, anchor_us: 10_000_000, rate_milli: 1000, paused: false };
        let mut tr = Tracker::default();
        tr.reset(t0, 10_000_000);
        let t1 = Timeline { epoch: 4, position_ms: 500, anchor_us: 12_000_000, ..t0 };
        let c = TimelineChanged { timeline: t1, effective_at_us: 12_000_000, by: 0, reason: ChangeReason::Seek };
        assert!(tr.on_changed(&c, 11_800_000));
        assert!(!tr.on_changed(&c, 11_800_000), "a copy is not news");
        assert_eq!(tr.position_us_at(11_999_000), Some((2_999_000, 3, false)));
        assert_eq!(tr.position_us_at(12_001_000), Some((501_000, 4, false)));
        // A tick of the new epoch promotes the pending change, not the tick's rounding.
        let tick = Tick::new(&t1, 12_000_400, 10);
        assert_eq!(tr.on_tick(&tick, 12_000_500), TickEffect::Promoted);
        assert_eq!(tr.position_us_at(12_001_000), Some((501_000, 4, false)));
        // A tick of an epoch never seen reveals it.
        let t2 = Timeline { epoch: 6, ..t1 };
        assert_eq!(tr.on_tick(&Tick::new(&t2, 13_000_000, 10), 13_000_000), TickEffect::Revealed);
        assert_eq!(tr.position_us_at(13_000_000).map(|p| (p.1, p.2)), Some((6, true)));
    }

    #[test]
    fn the_tail_is_about_its_fraction() {
        let o = LiveOpts::default();
        let tail = (0..10_000).filter(|&g| Params::new(&o, g).tail).count();
        assert!((150..250).contains(&tail), "{tail}");
        assert!((0..10_000).map(|g| Params::new(&o, g)).all(|p| (300..=10_000).contains(&p.fetch_ms)));
    }
}
