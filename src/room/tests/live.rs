//! Live rooms (`live.rs`) with simulated time: the live point, `GoLive`,
//! clamps, `LiveState`, the auto latency, and a live room on two nodes.

use lockstep_protocol::limits::MAX_POSITION_MS;
use lockstep_protocol::{ClockKind, LiveReport, LiveState};

use crate::room::live::FIRST_DECISION_REPORTS;

use super::*;

/// A Unix-time server clock (µs), as the real one.
const TU: u64 = 1_795_500_000 * S;
const WEEK_MS: u64 = 7 * 86_400_000;

fn live_cfg(live_latency: LiveLatency) -> RoomConfig {
    RoomConfig { clock: ClockKind::Live, live_latency, ..RoomConfig::default() }
}

fn auto(min_ms: u32, max_ms: u32) -> RoomConfig {
    live_cfg(LiveLatency::Auto { min_ms, max_ms })
}

fn join_live(room: &mut Room, now: u64, device: &str) -> MemberId {
    let info = JoinInfo {
        device_id: device.into(),
        name: device.into(),
        wants_live: true,
        wants_acks: true,
        ..Default::default()
    };
    room.join(now, info)
}

fn live_states(out: &[Output]) -> Vec<(Audience, LiveState)> {
    out.iter()
        .filter_map(|o| match o.msg {
            ServerMsg::LiveState(s) => Some((o.to, s)),
            _ => None,
        })
        .collect()
}

/// The latency `t` shows at server time `at`: how far behind `at` its program time is.
fn behind_ms(room: &Room, t: &Timeline, at: u64) -> i64 {
    let origin = room.live_state().unwrap().origin_ms;
    (at / 1000) as i64 - (origin + t.position_us_at(at) / 1000) as i64
}

/// Each member reports a live edge `lag_ms(i)` behind `now`, then the room runs its timers.
fn report_all(room: &mut Room, now: u64, ids: &[MemberId], lag_ms: impl Fn(usize) -> u64) -> Vec<Output> {
    for (i, &id) in ids.iter().enumerate() {
        room.live_report(now, id, LiveReport { live_edge_ms: now / 1000 - lag_ms(i), buffer_ms: 4_000 });
    }
    tick(room, now);
    drain(room)
}

#[test]
fn a_live_room_starts_at_live_and_stays_there_for_an_hour() {
    let mut room = Room::new(live_cfg(LiveLatency::default()), TU);
    let t = room.timeline();
    assert!(!t.paused && t.rate_milli == 1000);
    let state = room.live_state().unwrap();
    let origin_ms = origin_for(TU);
    assert_eq!(
        state,
        LiveState { clock: ClockKind::Live, origin_ms, latency_ms: 3_000, auto_latency: false, at_live: true }
    );
    assert_eq!(origin_ms % WEEK_MS, 0, "a whole week");
    assert!(TU / 1000 - origin_ms >= WEEK_MS && TU / 1000 - origin_ms < 2 * WEEK_MS, "positions before creation fit");
    assert_eq!(behind_ms(&room, &t, TU), 3_000);

    let host = join_live(&mut room, TU, "host");
    let plain = join(&mut room, TU, "plain");
    let out = drain(&mut room);
    assert_eq!(live_states(&out), vec![(Audience::One(host), state)], "only to LIVE members, after Welcome");
    assert!(matches!(out[0].msg, ServerMsg::Welcome(_)) && matches!(out[1].msg, ServerMsg::LiveState(_)));
    assert!(room.is_recipient(Audience::Live, host) && !room.is_recipient(Audience::Live, plain));

    let out: Vec<Output> = run_until(&mut room, TU, TU + 3_600 * S).into_iter().map(|(_, o)| o).collect();
    assert!(changes(&out).is_empty(), "no change in an hour");
    assert!(live_states(&out).is_empty());
    let mut ticks = 0;
    for (now, o) in run_until(&mut room, TU + 3_600 * S, TU + 3_601 * S) {
        if let ServerMsg::Tick(tick) = o.msg {
            assert_eq!(behind_ms(&room, &tick.timeline(now), now), 3_000, "ticks show the live point");
            ticks += 1;
        }
    }
    assert!(ticks >= 3);
    let s = room.state(TU + 3_601 * S);
    assert_eq!(s.clock, ClockKind::Live);
    let live = s.live.unwrap();
    assert!(live.at_live && !live.auto_latency && live.latency_ms == 3_000 && live.origin_ms == origin_ms);
    assert_eq!(live.program_time_ms, (TU + 3_601 * S) / 1000 - 3_000);
}

#[test]
fn pause_then_go_live_lands_everyone_on_the_live_point_at_the_lead() {
    let mut room = Room::new(live_cfg(LiveLatency::default()), TU);
    let host = join_live(&mut room, TU, "host");
    join_live(&mut room, TU, "viewer");
    drain(&mut room);

    let t1 = TU + 10 * S + 123;
    cmd(&mut room, t1, host, Action::Pause { position_ms: None }).unwrap();
    let out = drain(&mut room);
    let ls = live_states(&out);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].0, Audience::Live);
    assert!(!ls[0].1.at_live && ls[0].1.latency_ms == 3_000);
    let tc = out.iter().position(|o| matches!(o.msg, ServerMsg::TimelineChanged(_))).unwrap();
    let lsi = out.iter().position(|o| matches!(o.msg, ServerMsg::LiveState(_))).unwrap();
    assert!(tc < lsi, "LiveState follows the change that caused it");

    let t2 = t1 + 60 * S;
    run_until(&mut room, t1, t2);
    cmd(&mut room, t2, host, Action::GoLive).unwrap();
    let out = drain(&mut room);
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    let (c, lead) = (&c[0], room.lead_us());
    assert_eq!(c.reason, ChangeReason::Play);
    assert!(c.effective_at_us >= t2 + lead && c.effective_at_us < t2 + lead + MS, "scheduled with the lead");
    assert_eq!(c.timeline.position_us_at(c.effective_at_us) % 1000, 0, "on a frame boundary in ms");
    assert_eq!(behind_ms(&room, &c.timeline, c.effective_at_us), 3_000, "lands on the live point");
    assert!(!c.timeline.paused && c.timeline.rate_milli == 1000);
    assert!(live_states(&out).last().unwrap().1.at_live);
    assert!(out.iter().any(|o| matches!(o.msg, ServerMsg::Ack(a) if a.outcome == AckOutcome::Applied)));

    // Again: already (going) live.
    cmd(&mut room, t2 + MS, host, Action::GoLive).unwrap();
    let out = drain(&mut room);
    assert!(changes(&out).is_empty() && live_states(&out).is_empty());
    assert!(out.iter().any(|o| matches!(o.msg, ServerMsg::Ack(a) if a.outcome == AckOutcome::Unchanged)));
    run_until(&mut room, t2 + MS, t2 + S);
    assert_eq!(behind_ms(&room, &room.timeline(), t2 + S), 3_000);
}

#[test]
fn seeks_and_plays_past_live_clamp_to_the_live_point_and_leave_it() {
    let mut room = Room::new(auto(1_000, 60_000), TU);
    let host = join_live(&mut room, TU, "host");
    drain(&mut room);
    let t1 = TU + 5 * S;
    cmd(&mut room, t1, host, Action::Seek { position_ms: MAX_POSITION_MS }).unwrap();
    let out = drain(&mut room);
    let c = &changes(&out)[0];
    assert_eq!(c.timeline.position_ms, t1 / 1000 - origin_for(TU) - 3_000, "clamped to the live point");
    assert!(!live_states(&out)[0].1.at_live, "a seek leaves the live point");
    assert!(!room.live_state().unwrap().at_live);

    // Pause, then play 2 s later: 2 s behind, a latency the auto policy
    // allows, on whole ms: still not at live (only GoLive puts it there).
    cmd(&mut room, t1 + S, host, Action::Pause { position_ms: None }).unwrap();
    run_until(&mut room, t1 + S, t1 + 3 * S);
    cmd(&mut room, t1 + 3 * S, host, Action::Play { position_ms: None }).unwrap();
    let out = drain(&mut room);
    let c = &changes(&out)[0];
    assert_eq!(c.timeline.anchor_us % 1000, 1, "moved off the live point by 1 µs");
    assert!(!room.live_state().unwrap().at_live);
    // A play from a position beyond live clamps too.
    let t2 = t1 + 4 * S;
    cmd(&mut room, t2, host, Action::Play { position_ms: Some(MAX_POSITION_MS) }).unwrap();
    let c = &changes(&drain(&mut room))[0];
    assert_eq!(c.timeline.position_ms, c.effective_at_us / 1000 - origin_for(TU) - 3_000, "clamped at its lead");
    assert!(!room.live_state().unwrap().at_live);
}

#[test]
fn a_room_catching_up_faster_than_1x_returns_to_live_when_it_gets_there() {
    let mut room = Room::new(live_cfg(LiveLatency::default()), TU);
    let host = join_live(&mut room, TU, "host");
    cmd(&mut room, TU, host, Action::Pause { position_ms: None }).unwrap();
    run_until(&mut room, TU, TU + 10 * S);
    cmd(&mut room, TU + 10 * S, host, Action::Play { position_ms: None }).unwrap();
    run_until(&mut room, TU + 10 * S, TU + 11 * S);
    let t0 = TU + 11 * S;
    let behind = behind_ms(&room, &room.timeline(), t0);
    assert!((12_900..=13_100).contains(&behind), "{behind}");
    cmd(&mut room, t0, host, Action::SetRate { rate_milli: 2_000 }).unwrap();
    drain(&mut room);
    // 2× gains a second a second: at live again about (behind − 3 s) later.
    let out = run_until(&mut room, t0, t0 + 20 * S);
    let back: Vec<&TimelineChanged> = out
        .iter()
        .filter_map(|(_, o)| match &o.msg {
            ServerMsg::TimelineChanged(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
    let c = back[0];
    assert_eq!((c.by, c.reason, c.timeline.rate_milli), (0, ChangeReason::Play, 1000));
    let expected = t0 + (behind as u64 - 3_000) * MS;
    assert!(c.effective_at_us.abs_diff(expected) <= 2 * MS, "{} vs {expected}", c.effective_at_us);
    assert_eq!(behind_ms(&room, &c.timeline, c.effective_at_us), 3_000);
    assert!(room.live_state().unwrap().at_live);
    let states: Vec<bool> = out
        .iter()
        .filter_map(|(_, o)| match o.msg {
            ServerMsg::LiveState(s) => Some(s.at_live),
            _ => None,
        })
        .collect();
    assert_eq!(states, vec![true]);

    // A faster rate at live goes back to live at once.
    let t1 = t0 + 21 * S;
    cmd(&mut room, t1, host, Action::SetRate { rate_milli: 1_500 }).unwrap();
    let out = run_until(&mut room, t1, t1 + S);
    assert!(room.live_state().unwrap().at_live && room.timeline().rate_milli == 1000, "{out:?}");
}

#[test]
fn a_buffering_wait_works_in_a_live_room_and_go_live_ends_it() {
    let mut room = Room::new(auto(1_000, 60_000), TU);
    let h = join_live(&mut room, TU, "h");
    let v = join_live(&mut room, TU, "v");
    rep(&mut room, TU + 500 * MS, v, report(false));
    drain(&mut room);
    let now = TU + S;
    rep(&mut room, now, v, report(true));
    let out = drain(&mut room);
    assert_eq!(changes(&out)[0].reason, ChangeReason::BufferingWait);
    assert!(!live_states(&out)[0].1.at_live, "the wait leaves the live point");
    // Recovery resumes from where the room waited: behind live, a latency
    // the auto policy allows, yet not "at live" (only GoLive is).
    rep(&mut room, now + 2 * S, v, report(false));
    let c = &changes(&drain(&mut room))[0];
    assert_eq!(c.reason, ChangeReason::Resume);
    assert!(!room.live_state().unwrap().at_live);
    tick(&mut room, now + 3 * S);
    assert!(!room.state(now + 3 * S).buffering_wait);
    // A second wait, ended by the host's GoLive.
    rep(&mut room, now + 40 * S, v, report(true));
    assert!(room.state(now + 40 * S).buffering_wait);
    cmd(&mut room, now + 41 * S, h, Action::GoLive).unwrap();
    assert!(!room.state(now + 41 * S).buffering_wait && room.live_state().unwrap().at_live);
}

#[test]
fn media_rooms_refuse_go_live_and_ignore_live_reports() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let host = join_live(&mut room, T0, "host");
    let out = drain(&mut room);
    assert!(live_states(&out).is_empty(), "no LiveState in a media room");
    assert_eq!(cmd(&mut room, T0, host, Action::GoLive), Err(CommandError::InvalidArgument("not a live room")));
    let out = drain(&mut room);
    assert!(matches!(&out[..], [Output { msg: ServerMsg::Error(e), .. }] if e.code == 4009 && e.request_id == 7));
    room.live_report(T0, host, LiveReport { live_edge_ms: T0 / 1000, buffer_ms: 0 });
    tick(&mut room, T0 + 10 * S);
    let out = drain(&mut room);
    assert!(changes(&out).is_empty() && live_states(&out).is_empty());
    assert_eq!(room.ignored_live_reports(), 0);
    let s = room.state(T0);
    assert!(s.clock == ClockKind::Media && s.live.is_none());
}

#[test]
fn absurd_live_reports_are_ignored_and_counted() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let a = join_live(&mut room, TU, "a");
    drain(&mut room);
    let now_ms = TU / 1000;
    for edge in [now_ms + 10_000, now_ms - 2 * 3_600_000, 0, u64::MAX] {
        room.live_report(TU, a, LiveReport { live_edge_ms: edge, buffer_ms: 0 });
    }
    assert_eq!(room.ignored_live_reports(), 4);
    room.live_report(TU, a, LiveReport { live_edge_ms: now_ms + 1_000, buffer_ms: 0 });
    assert_eq!(room.ignored_live_reports(), 4, "a little in the future is tolerated");
    tick(&mut room, TU + 6 * S);
    assert_eq!(room.live_state().unwrap().latency_ms, 1_000, "need 500 ms, clamped to the minimum");
    assert_eq!(room.state(TU + 6 * S).live.unwrap().ignored_reports, 4);
}

#[test]
fn auto_latency_is_the_p95_of_the_needs_clamped_and_moves_everyone_at_the_lead() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let ids: Vec<MemberId> = (0..20).map(|i| join_live(&mut room, TU, &format!("m{i}"))).collect();
    drain(&mut room);
    // Needs 1,750 ..= 3,650 ms (lag + 750): the p95 is 3,550.
    for k in 1..FIRST_DECISION_REPORTS {
        let out = report_all(&mut room, TU + u64::from(k) * S, &ids, |i| 1_000 + 100 * i as u64);
        assert!(changes(&out).is_empty(), "{k} reports per member: not yet");
    }
    let t = TU + u64::from(FIRST_DECISION_REPORTS) * S;
    let out = report_all(&mut room, t, &ids, |i| 1_000 + 100 * i as u64);
    let c = changes(&out);
    assert_eq!(c.len(), 1, "decided once every member reported {FIRST_DECISION_REPORTS} times");
    assert!(c[0].effective_at_us >= t + room.lead_us(), "everyone moves together, at the lead");
    assert_eq!(behind_ms(&room, &c[0].timeline, c[0].effective_at_us), 3_550);
    let ls = live_states(&out);
    assert_eq!(ls.len(), 1);
    assert!(ls[0].1.at_live && ls[0].1.auto_latency && ls[0].1.latency_ms == 3_550);

    // Every member far behind: clamped to the maximum.
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let ids: Vec<MemberId> = (0..3).map(|i| join_live(&mut room, TU, &format!("m{i}"))).collect();
    for k in 1..=u64::from(FIRST_DECISION_REPORTS) {
        report_all(&mut room, TU + k * S, &ids, |_| 30_000);
    }
    assert_eq!(room.live_state().unwrap().latency_ms, 10_000);

    // One slow viewer among 40 does not drag the room.
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let ids: Vec<MemberId> = (0..40).map(|i| join_live(&mut room, TU, &format!("m{i}"))).collect();
    let slow = |i: usize| if i == 7 { 9_000 } else { 1_200 };
    for k in 1..=u64::from(FIRST_DECISION_REPORTS) {
        report_all(&mut room, TU + k * S, &ids, slow);
    }
    assert_eq!(room.live_state().unwrap().latency_ms, 1_950);
}

#[test]
fn auto_latency_settles_within_5_s_of_the_first_report() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let a = join_live(&mut room, TU, "a");
    let b = join_live(&mut room, TU, "b");
    join_live(&mut room, TU, "c"); // never reports: not counted
    drain(&mut room);
    // `b` reports once only: the first decision waits for 5 s.
    room.live_report(TU, b, LiveReport { live_edge_ms: TU / 1000 - 1_500, buffer_ms: 0 });
    for k in 0..5 {
        report_all(&mut room, TU + k * S, &[a], |_| 1_500);
        assert_eq!(room.live_state().unwrap().latency_ms, 3_000);
    }
    report_all(&mut room, TU + 5 * S, &[a], |_| 1_500);
    assert_eq!(room.live_state().unwrap().latency_ms, 2_250);
}

#[test]
fn auto_latency_has_hysteresis_moves_at_most_every_30_s_and_rises_at_once_when_too_low() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let ids: Vec<MemberId> = (0..10).map(|i| join_live(&mut room, TU, &format!("m{i}"))).collect();
    drain(&mut room);
    let mut moves = Vec::new();
    let lags = |k: u64| -> u64 {
        match k {
            0..=59 => 1_500 + (k % 2) * 200, // wobbles 200 ms: needs 2,250 / 2,450
            60..=69 => 3_000,                // most members cannot hold it: at once
            _ => 1_000,                      // can go lower: after 30 s
        }
    };
    for k in 1..=150 {
        let now = TU + k * S;
        let lag = lags(k);
        let out = report_all(&mut room, now, &ids, |_| lag);
        if let Some((_, s)) = live_states(&out).last() {
            moves.push((k, s.latency_ms));
        }
    }
    // First decision after 4 reports: the window holds 2,250 and 2,450 →
    // 2,450. Then nothing until the rise at 60 s (to 3,750, at once), then
    // the drop (needs 1,750 once the 15 s window forgot 3,750, at 85 s; the
    // 30 s rule holds it until 90 s).
    assert_eq!(moves, vec![(4, 2_450), (60, 3_750), (90, 1_750)]);
}

#[test]
fn a_latency_move_while_paused_changes_only_the_live_state_and_go_live_uses_it() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let host = join_live(&mut room, TU, "host");
    cmd(&mut room, TU, host, Action::Pause { position_ms: None }).unwrap();
    run_until(&mut room, TU, TU + S);
    drain(&mut room);
    for k in 1..u64::from(FIRST_DECISION_REPORTS) {
        report_all(&mut room, TU + k * S, &[host], |_| 5_000);
    }
    let out = report_all(&mut room, TU + u64::from(FIRST_DECISION_REPORTS) * S, &[host], |_| 5_000);
    assert!(changes(&out).is_empty(), "paused: no new timeline");
    let ls = live_states(&out);
    assert!(ls.len() == 1 && ls[0].1.latency_ms == 5_750 && !ls[0].1.at_live);
    cmd(&mut room, TU + 5 * S, host, Action::GoLive).unwrap();
    let c = &changes(&drain(&mut room))[0];
    assert_eq!(behind_ms(&room, &c.timeline, c.effective_at_us), 5_750);
    assert!(room.live_state().unwrap().at_live);
}

#[test]
fn go_live_racing_a_pause_across_two_nodes_ends_on_one_timeline() {
    for seed in 0..30 {
        let cfg = RoomConfig { policy: ControlPolicy::Everyone, ..live_cfg(LiveLatency::Fixed { latency_ms: 2_000 }) };
        let mut sim = sim::Sim::new(2, cfg, seed);
        let a = sim.join(0, "a", true);
        let b = sim.join(1, "b", false);
        sim.drive();
        sim.command(b, Action::Pause { position_ms: None });
        sim.drive();
        sim.run_for(3 * S);
        // Race: a GoLive on node 0 and a pause on node 1.
        sim.command(a, Action::GoLive);
        sim.command(b, Action::Pause { position_ms: None });
        sim.drive();
        sim.check_settled();
        let states: Vec<Option<LiveState>> = sim.nodes.iter().map(|n| n.room.live_state()).collect();
        assert_eq!(states[0], states[1], "seed {seed}: both nodes agree on the live state");
        let state = states[0].unwrap();
        assert_eq!(state.at_live, !sim.record.timeline.paused, "seed {seed}");
        for c in &sim.clients {
            assert_eq!(c.live, Some(state), "seed {seed}: every client was told");
        }
    }
}

fn set_clock(room: &mut Room, now: u64, clock: ClockKind, latency: Option<LiveLatency>) -> Option<ClockSetting> {
    let s = room.set_clock(now, ClockRequest { clock, latency, dvr_window_ms: None });
    commit(room, now);
    s
}

#[test]
fn a_media_room_switched_to_live_goes_to_the_live_point_and_back_to_media_pauses_at_zero() {
    let mut room = Room::new(RoomConfig::default(), TU);
    let host = join_live(&mut room, TU, "host");
    let plain = join(&mut room, TU, "plain");
    cmd(&mut room, TU, host, Action::Seek { position_ms: 90_000 }).unwrap();
    drain(&mut room);

    let now = TU + S;
    let s = set_clock(&mut room, now, ClockKind::Live, Some(LiveLatency::Fixed { latency_ms: 4_000 })).unwrap();
    assert_eq!((s.clock, s.origin_ms), (ClockKind::Live, origin_for(now)));
    assert!(room.is_live());
    let out = drain(&mut room);
    let c = changes(&out);
    assert_eq!(c.len(), 1, "one change: to the live point");
    assert_eq!((c[0].by, c[0].reason), (0, ChangeReason::Play));
    assert_eq!(c[0].effective_at_us, now + room.lead_us(), "scheduled with the lead, like GoLive");
    assert_eq!(behind_ms(&room, &c[0].timeline, c[0].effective_at_us + 10 * S), 4_000);
    let states = live_states(&out);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].0, Audience::Live);
    assert!(states[0].1.at_live && states[0].1.latency_ms == 4_000 && states[0].1.clock == ClockKind::Live);
    assert!(!room.is_recipient(Audience::Live, plain), "plain clients never hear LiveState");

    // The same request again changes nothing.
    assert_eq!(set_clock(&mut room, now + S, ClockKind::Live, None), None);
    assert!(changes(&drain(&mut room)).is_empty());

    // Back to media: paused at 0 at once, and live members are told.
    let later = now + 5 * S;
    set_clock(&mut room, later, ClockKind::Media, None).unwrap();
    let out = drain(&mut room);
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    let t = c[0].timeline;
    assert!(t.paused && t.position_ms == 0 && c[0].effective_at_us == later);
    assert_eq!(
        live_states(&out),
        vec![(
            Audience::Live,
            LiveState { clock: ClockKind::Media, origin_ms: 0, latency_ms: 0, auto_latency: false, at_live: false }
        )]
    );
    assert!(!room.is_live() && room.live_state().is_none());
    assert!(cmd(&mut room, later, host, Action::GoLive).is_err(), "GoLive refused in a media room again");
}

#[test]
fn a_new_latency_at_live_moves_the_room_and_off_live_only_changes_the_next_go_live() {
    let mut room = Room::new(live_cfg(LiveLatency::Fixed { latency_ms: 3_000 }), TU);
    let host = join_live(&mut room, TU, "host");
    drain(&mut room);
    let origin = room.live_state().unwrap().origin_ms;

    set_clock(&mut room, TU + S, ClockKind::Live, Some(LiveLatency::Fixed { latency_ms: 6_000 })).unwrap();
    let out = drain(&mut room);
    let c = changes(&out);
    assert_eq!(c.len(), 1, "at live: moved to the new latency");
    assert_eq!(behind_ms(&room, &c[0].timeline, c[0].effective_at_us), 6_000);
    assert_eq!(room.live_state().unwrap().origin_ms, origin, "the origin stays");

    // Rewound (off live): a new policy changes no timeline, only the state.
    let now = TU + 10 * S;
    tick(&mut room, now);
    let back = room.timeline().position_us_at(now) / 1000 - 30_000;
    cmd(&mut room, now, host, Action::Seek { position_ms: back }).unwrap();
    drain(&mut room);
    set_clock(&mut room, now + S, ClockKind::Live, Some(LiveLatency::Auto { min_ms: 2_000, max_ms: 8_000 })).unwrap();
    let out = drain(&mut room);
    assert!(changes(&out).is_empty(), "off live: the timeline stays");
    let st = room.live_state().unwrap();
    assert!(st.auto_latency && !st.at_live && st.latency_ms == 6_000, "{st:?}");
    // GoLive then uses the latency kept within the new bounds.
    cmd(&mut room, now + 2 * S, host, Action::GoLive).unwrap();
    let c = changes(&drain(&mut room));
    assert_eq!(behind_ms(&room, &c[0].timeline, c[0].effective_at_us), 6_000);
}

#[test]
fn another_nodes_clock_setting_is_adopted_without_a_change_of_its_own() {
    let mut a = Room::new(RoomConfig::default(), TU);
    let mut b = Room::new(RoomConfig::default(), TU);
    a.enable_sharing(ID_BLOCK);
    b.enable_sharing(2 * ID_BLOCK);
    let viewer = join_live(&mut b, TU, "v");
    drain(&mut b);
    b.take_shared();
    let s = set_clock(&mut a, TU + S, ClockKind::Live, Some(LiveLatency::Fixed { latency_ms: 5_000 })).unwrap();
    let shared = a.take_shared();
    assert_eq!(shared, vec![Shared::Clock { setting: s }]);
    for ev in shared {
        b.apply_shared(TU + S, "a", ev);
    }
    assert_eq!(b.clock_setting(), s);
    let out = drain(&mut b);
    assert!(changes(&out).is_empty(), "the timeline comes from the authority");
    let states = live_states(&out);
    assert_eq!(states.len(), 1);
    assert!(states[0].1.clock == ClockKind::Live && states[0].1.origin_ms == s.origin_ms);
    assert!(b.is_recipient(Audience::Live, viewer));
    // With a's committed change, b is at live too.
    let change = changes(&drain(&mut a)).pop().unwrap();
    b.apply_external(TU + S, change);
    let states = live_states(&drain(&mut b));
    assert!(states.last().unwrap().1.at_live);
    assert!(b.take_shared().is_empty(), "adopting shares nothing back");
}

#[test]
fn seeks_before_the_dvr_window_clamp_to_its_start() {
    let cfg = RoomConfig { live_dvr_window_ms: 60_000, ..live_cfg(LiveLatency::Fixed { latency_ms: 3_000 }) };
    let mut room = Room::new(cfg, TU);
    let host = join_live(&mut room, TU, "host");
    drain(&mut room);
    let now = TU + S;
    cmd(&mut room, now, host, Action::Seek { position_ms: 0 }).unwrap();
    let c = changes(&drain(&mut room));
    assert_eq!(behind_ms(&room, &c[0].timeline, now), 63_000, "the window's start: live point − 60 s");
    // A stored setting (another origin, a restart) is read back exactly.
    let s = room.clock_setting();
    assert_eq!(s.dvr_window_ms, 60_000);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<ClockSetting>(&json).unwrap(), s);
    let mut cfg = RoomConfig::default();
    s.apply_to(&mut cfg);
    let resumed = Room::with_timeline(cfg, TU + 8 * 86_400 * S, room.timeline());
    assert_eq!(resumed.live_state().unwrap().origin_ms, s.origin_ms, "a week later, the same origin");
}

#[test]
fn a_room_playing_ahead_of_a_risen_live_point_moves_back_with_it() {
    let mut room = Room::new(auto(1_000, 10_000), TU);
    let ids: Vec<MemberId> = (0..3).map(|i| join_live(&mut room, TU, &format!("m{i}"))).collect();
    // Settled at 1,750 ms.
    for k in 1..=u64::from(FIRST_DECISION_REPORTS) {
        report_all(&mut room, TU + k * S, &ids, |_| 1_000);
    }
    assert_eq!(room.live_state().unwrap().latency_ms, 1_750);
    // A pause of 0.2 s and a play: the room plays off live, 1.95 s behind now.
    let now = TU + 5 * S;
    cmd(&mut room, now, ids[0], Action::Pause { position_ms: None }).unwrap();
    tick(&mut room, now + 300 * MS);
    cmd(&mut room, now + 500 * MS, ids[0], Action::Play { position_ms: None }).unwrap();
    tick(&mut room, now + 700 * MS);
    drain(&mut room);
    assert!(!room.live_state().unwrap().at_live);
    // Every viewer now needs 3.25 s (too low for most: moves at once). The
    // room, 1.95 s behind now, would play ahead of the new live point: it
    // moves to it.
    let t = now + S;
    let out = report_all(&mut room, t, &ids, |_| 2_500);
    let c = changes(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(behind_ms(&room, &c[0].timeline, c[0].effective_at_us), 3_250);
    assert!(room.live_state().unwrap().at_live);
}
