//! Issue 16's soak (`--scenario soak`, or `--sample-s` on any latency run):
//! the server's memory, descriptors, threads and the gauges of its maps keyed
//! by users, devices, rooms and addresses, sampled through the run and once
//! more after every client left, with growth per hour.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use lockstep_protocol::{ClientMsg, Hello, PROTOCOL_VERSION, encode_client};
use tokio::sync::watch;

use crate::wsclient::Ws;

/// The gauges of `/metrics` a sample keeps (summed over their labels).
const GAUGES: &[&str] = &[
    "lockstep_connections",
    "lockstep_rooms",
    "lockstep_sessions_live",
    "lockstep_session_index",
    "lockstep_registry_devices",
    "lockstep_registry_connections",
    "lockstep_ip_limiter_entries",
];

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    pub(crate) rss_mib: f64,
    pub(crate) fds: u64,
    pub(crate) threads: u64,
    pub(crate) gauges: BTreeMap<String, f64>,
    /// Keys in Redis (scale-out runs).
    pub(crate) redis_keys: Option<u64>,
}

/// One sample of the server `pid` (its HTTP port `http`; Redis at `redis`).
pub(crate) async fn sample(t_s: f64, pid: u32, http: SocketAddr, redis: Option<SocketAddr>) -> Sample {
    let mut s = Sample {
        t_s,
        rss_mib: crate::target::status_kib(pid, "VmRSS") as f64 / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0),
        threads: crate::target::status_kib(pid, "Threads"),
        ..Sample::default()
    };
    if let Ok((200, body)) = crate::attack::http(http, "GET", "/metrics", "127.0.0.1", "", "").await {
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let name = name.split('{').next().unwrap_or(name);
            if GAUGES.contains(&name)
                && let Ok(v) = value.parse::<f64>()
            {
                *s.gauges.entry(name.to_owned()).or_default() += v;
            }
        }
    }
    if let Some(r) = redis {
        s.redis_keys = redis_dbsize(r).await;
    }
    s
}

async fn redis_dbsize(addr: SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.ok()?;
    c.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").await.ok()?;
    let mut line = String::new();
    tokio::io::BufReader::new(c).read_line(&mut line).await.ok()?;
    line.trim().strip_prefix(':')?.parse().ok()
}

/// A room with one member opens every `every` and ends (its member leaves after 2 s).
pub(crate) async fn short_rooms(http: SocketAddr, tag: String, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let event = format!("{tag}-short-{n}");
        tokio::spawn(async move {
            let Ok(mut ws) = Ws::connect(http, &format!("/api/live-stream/{event}"), Some("lockstep.v1")).await else {
                return;
            };
            let hello = ClientMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                event_id: event.clone(),
                device_id: format!("short-{n}"),
                token: None,
                caps: 0,
            });
            if ws.send_binary(&encode_client(&hello)).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = ws.send(8, &1000u16.to_be_bytes()).await;
            }
        });
    }
}

/// Least-squares slope of `f` over the samples from `from_s` on, per hour.
pub(crate) fn per_hour(samples: &[Sample], from_s: f64, f: impl Fn(&Sample) -> f64) -> f64 {
    let pts: Vec<(f64, f64)> = samples.iter().filter(|s| s.t_s >= from_s).map(|s| (s.t_s, f(s))).collect();
    if pts.len() < 3 {
        return f64::NAN;
    }
    let n = pts.len() as f64;
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { f64::NAN } else { sxy / sxx * 3600.0 }
}

pub(crate) fn print(target: &str, samples: &[Sample], after: Option<&Sample>, reconnects: u64) {
    let g = |s: &Sample, k: &str| s.gauges.get(k).copied().map_or("–".into(), |v| format!("{v:.0}"));
    println!("\nSoak, {target}: {reconnects} reconnections by churn\n");
    println!(
        "| t (s) | RSS MiB | fds | threads | connections | rooms | sessions | session index | registry devices | registry connections | IP limiter entries | Redis keys |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in samples.iter().chain(after) {
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if after.is_some_and(|a| std::ptr::eq(a, s)) {
                format!("after ({:.0})", s.t_s)
            } else {
                format!("{:.0}", s.t_s)
            },
            s.rss_mib,
            s.fds,
            s.threads,
            g(s, "lockstep_connections"),
            g(s, "lockstep_rooms"),
            g(s, "lockstep_sessions_live"),
            g(s, "lockstep_session_index"),
            g(s, "lockstep_registry_devices"),
            g(s, "lockstep_registry_connections"),
            g(s, "lockstep_ip_limiter_entries"),
            s.redis_keys.map_or("–".into(), |k| k.to_string()),
        );
    }
    // The first two minutes fill caches and pools: growth is measured after them.
    let from = samples.first().map_or(0.0, |s| s.t_s) + 120.0;
    let f = |x: f64| if x.is_finite() { format!("{x:+.1}") } else { "–".into() };
    println!(
        "\ngrowth per hour (least squares from t = {from:.0} s): RSS {} MiB, fds {}, threads {}, registry connections {}, rooms {}{}",
        f(per_hour(samples, from, |s| s.rss_mib)),
        f(per_hour(samples, from, |s| s.fds as f64)),
        f(per_hour(samples, from, |s| s.threads as f64)),
        f(per_hour(samples, from, |s| s.gauges.get("lockstep_registry_connections").copied().unwrap_or(0.0))),
        f(per_hour(samples, from, |s| s.gauges.get("lockstep_rooms").copied().unwrap_or(0.0))),
        if samples.iter().any(|s| s.redis_keys.is_some()) {
            format!(", Redis keys {}", f(per_hour(samples, from, |s| s.redis_keys.unwrap_or(0) as f64)))
        } else {
            String::new()
        }
    );
}

/// One line of a sample: RSS, descriptors and the maps' gauges.
pub(crate) fn brief(s: &Sample) -> String {
    let g: Vec<String> =
        s.gauges.iter().map(|(k, v)| format!("{} {v:.0}", k.trim_start_matches("lockstep_"))).collect();
    format!("RSS {:.1} MiB, {} fds, {} threads, {}", s.rss_mib, s.fds, s.threads, g.join(", "))
}

/// What `--check` requires of the sample taken after every client left.
pub(crate) fn leftovers(after: &Sample) -> Vec<String> {
    ["lockstep_connections", "lockstep_registry_devices", "lockstep_registry_connections", "lockstep_rooms"]
        .iter()
        .filter_map(|k| {
            let v = after.gauges.get(*k).copied().unwrap_or(f64::NAN);
            (v != 0.0).then(|| format!("{k} = {v} after every client left"))
        })
        .collect()
}
