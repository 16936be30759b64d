//! What a live run measured (`live.rs` records it): the program-time spread
//! at the sampling instants, the latency's moves against the needs, delivery;
//! and the tables `lockstep-load --scenario live` prints.

use std::sync::atomic::Ordering::Relaxed;

use lockstep_protocol::{ChangeReason, Timeline, TimelineChanged};
use serde::Serialize;

use crate::live::{F_FROM_TICK, LiveRec, Params, SeriesPoint, epoch_cmp, p95, pack};

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
    need_p95_reported_ms, need_p95_server_ms, need_max_server_ms, need_p95_peak_ms, need_p95_peak_main_ms, need_max_peak_ms, need_median_peak_ms,
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
    let peak = |p: &Params| p.need_peak_ms(rec.margin_ms);
    let mut peaks: Vec<u64> = rec.params.iter().map(peak).collect();
    let mut main: Vec<u64> = rec.params.iter().filter(|p| !p.tail).map(peak).collect();
    peaks.sort_unstable();
    main.sort_unstable();
    r.need_p95_peak_ms = p95(&peaks);
    r.need_p95_peak_main_ms = p95(&main);
    r.need_max_peak_ms = peaks.last().map_or(f64::NAN, |&x| x as f64);
    r.need_median_peak_ms = peaks.get((peaks.len().max(1) - 1) / 2).map_or(f64::NAN, |&x| x as f64);
    let last_server = series.iter().rev().find(|p| p.server_ignored_reports.is_finite());
    r.server_ignored_reports = last_server.map_or(f64::NAN, |p| p.server_ignored_reports);
    r.server_mailbox_reports = last_server.map_or(f64::NAN, |p| p.server_mailbox_reports);
    r.need_p95_server_ms = last_server.map_or(f64::NAN, |p| p.server_need_p95_ms);
    r.need_max_server_ms = last_server.map_or(f64::NAN, |p| p.server_need_max_ms);
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
        "\nLatency (s after the first LiveReport; first receipt of the LiveState by any viewer). Needs (ms, end of run): p95 of what the viewers reported by the server's rule, as the harness computes it / as the server's GET …/state shows it (and its max); p95 of the sawtooth peaks (fetch + segment + margin), all / without the slow tail; median and max peak.\n"
    );
    println!(
        "| target | initial → final ms | first move s | last move s | moves (in window) | at-live flips | waits | at live at end | need p95 harness / server (max) | p95 peaks all / main | median / max peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {} → {} | {} | {} | {} ({}) | {} | {} | {} | {} / {} ({}) | {} / {} | {} / {} |",
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
            f(r.need_p95_server_ms, 0),
            f(r.need_max_server_ms, 0),
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
                    "{:+.0} s: need p95 {} (main {}; server's {}), server {} ms{}{}",
                    p.t_s,
                    f(p.need_p95_ms, 0),
                    f(p.need_p95_main_ms, 0),
                    f(p.server_need_p95_ms, 0),
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
