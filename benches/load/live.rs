//! The live scenario (issue 12): one live room (`--room-clock live`), every
//! viewer with a simulated live edge, sending `LiveReport`s and `Report`s once
//! a second; what the viewers would show at common instants, and what the
//! room's latency did.
//!
//! **Live edge.** Viewer `g` has a segment duration `seg` (1–2 s) and a fetch
//! delay `fetch` (0.3–3 s; a slow tail, 2 % at 6–10 s): the newest program
//! time it can play at server time `now` is `⌊(now − fetch) / seg⌋ · seg`
//! (the segment ending there was published at its end and reached the viewer
//! `fetch` later), so its need (`now − edge + margin`, as the server computes
//! it, margin 750 ms) is a sawtooth between `fetch + margin` and
//! `fetch + seg + margin`. As `client-js` does, a viewer reports the edge as old as it was
//! at its oldest at any 250 ms control step since its last report
//! (`--live-edge-report oldest`), so a report right after a reload does not
//! understate its need.
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

use lockstep_protocol::{LiveState, Tick, Timeline, TimelineChanged};
use serde::Serialize;

/// client-js's drift-control period: how often it samples its live edge.
const CONTROL_STEP_MS: u64 = 250;
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
    /// Margin the server adds to a viewer's distance from its edge (`room/live.rs`).
    pub(crate) margin_ms: u64,
    /// Report the oldest edge since the last report (client-js), or the edge now.
    pub(crate) edge_oldest: bool,
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
            margin_ms: 750,
            edge_oldest: true,
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

    /// The top of this viewer's need sawtooth (what it needs never to stall), with the server's margin.
    pub(crate) fn need_peak_ms(&self, margin_ms: u64) -> u64 {
        u64::from(self.fetch_ms) + u64::from(self.seg_ms) + margin_ms
    }

    /// The edge this viewer reports at `now_ms`: the edge now, or as old as
    /// it was at its oldest at the control steps of the last second.
    pub(crate) fn reported_edge_ms(&self, now_ms: u64, oldest: bool) -> u64 {
        let steps = if oldest { 1_000 / CONTROL_STEP_MS } else { 1 };
        let age = (0..steps)
            .map(|k| now_ms.saturating_sub(k * CONTROL_STEP_MS))
            .map(|t| t - self.edge_ms(t))
            .max()
            .unwrap_or(0);
        now_ms.saturating_sub(age)
    }
}

pub(crate) fn epoch_cmp(a: u32, b: u32) -> std::cmp::Ordering {
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
    pub(crate) margin_ms: u64,
    pub(crate) edge_oldest: bool,
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
            margin_ms: o.margin_ms,
            edge_oldest: o.edge_oldest,
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
pub(crate) fn p95(sorted: &[u64]) -> f64 {
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
    /// The server's own view of the needs (`live.needs`), ms.
    pub(crate) server_need_p95_ms: f64,
    pub(crate) server_need_median_ms: f64,
    pub(crate) server_need_max_ms: f64,
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
        let reported = p.reported_edge_ms(now / 1000, rec.edge_oldest);
        let need = (now / 1000).saturating_sub(reported) + rec.margin_ms;
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
        let live = lockstep_protocol::LiveReport { live_edge_ms: reported, buffer_ms };
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
        server_need_p95_ms: num(live.map(|l| &l["needs"]["p95"])),
        server_need_median_ms: num(live.map(|l| &l["needs"]["median"])),
        server_need_max_ms: num(live.map(|l| &l["needs"]["max"])),
    }
}

#[cfg(test)]
mod tests {
    use lockstep_protocol::ChangeReason;

    use super::*;

    #[test]
    fn the_edge_is_a_sawtooth_on_the_segment_grid() {
        let p = Params { fetch_ms: 500, seg_ms: 2_000, tail: false, phase_us: 0 };
        assert_eq!(p.edge_ms(10_499), 8_000);
        assert_eq!(p.edge_ms(10_500), 10_000);
        assert_eq!(p.edge_ms(12_499), 10_000);
        assert_eq!(p.need_peak_ms(500), 3_000);
        // Just after the reload at 10,500: the edge was 2,350 ms old at the step at 10,350.
        assert_eq!(p.reported_edge_ms(10_600, true), 8_250);
        assert_eq!(p.reported_edge_ms(10_600, false), 10_000);
        assert_eq!(p.reported_edge_ms(11_600, true), 10_000);
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
