//! Lockstep: an authoritative watch-together playback sync server.
//!
//! # Layout
//! Layers, each importing only the ones below it (ARCHITECTURE.md has the map):
//! - `lockstep_protocol` (its own crate): messages, codec, spec.
//! - `room`: the sans-IO room core (timeline, members and roles, buffering,
//!   counts, the change budget, the commit protocol with an authority).
//! - `store`, `auth`, `accounts`, `authority`, `cluster`: durable state,
//!   tokens, sessions/devices/invitations, the timeline authority (local or
//!   Redis) and scale-out, each behind a small interface.
//! - `hub`: room actors that drive the core with the real clock and fan out.
//! - `session`: one session path for every transport (hello, limits,
//!   errors) and the one outbound writer.
//! - `transport`: WebSocket (and its legacy JSON dialect) and WebTransport.
//! - `http`: REST routes, the demo page; [`server`] and [`config`] on top.
//! - `util`, [`clock`], `metrics`, `limits`, `edge`: small leaves used from
//!   anywhere (`edge`: client addresses behind proxies, PROXY protocol, CORS origins).
//!
//! Modules are private; what tests, benchmarks and the binary use is public.

mod accounts;
pub mod auth;
mod authority;
pub mod cert;
pub mod clock;
pub mod cluster;
pub mod config;
mod edge;
mod http;
mod hub;
mod limits;
mod metrics;
pub mod room;
pub mod server;
mod session;
mod store;
mod transport;
mod util;

/// Entry points of the fuzz targets (`tests/fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;

/// Internals the micro-benchmarks (`benches/micro.rs`) measure; not an API.
#[doc(hidden)]
pub mod bench {
    use lockstep_protocol::ServerMsg;

    use crate::hub::{Link, Outgoing};
    use crate::session::Outbox;

    /// What the hub does for one change to `n` viewers before any I/O, and
    /// what their writers then take out.
    #[derive(Debug)]
    pub struct Fanout {
        outboxes: Vec<Outbox>,
    }

    impl Fanout {
        /// `n` binary-protocol outboxes.
        pub fn new(n: usize) -> Self {
            Fanout { outboxes: (0..n).map(|_| Outbox::new(256)).collect() }
        }

        /// One shared message each for `change` and `tick`, queued to every
        /// viewer; the change encoded once.
        pub fn deliver(&self, change: &ServerMsg, tick: &ServerMsg) {
            let (change, tick) = (Outgoing::new(change.clone()), Outgoing::new(tick.clone()));
            change.binary();
            tick.binary();
            for o in &self.outboxes {
                Link::send(o, &change);
                Link::tick(o, &tick);
            }
        }

        /// What every writer takes out; the number of messages.
        pub fn take(&self) -> usize {
            use futures_util::FutureExt;
            self.outboxes.iter().filter_map(|o| o.next_batch().now_or_never()).map(|b| b.len()).sum()
        }
    }

    /// The legacy JSON encoding of `msg` for room `event_id`.
    pub fn encode_json(event_id: &str, msg: &ServerMsg) -> Option<String> {
        crate::transport::json::encode(event_id, msg, None)
    }
}

/// The layering of `src/` (ARCHITECTURE.md): a module may name (`crate::x`)
/// only modules of a lower layer, so no import circle can form.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// Each top-level module and its layer; lower layers never name higher ones.
    const LAYERS: &[(&str, u32)] = &[
        ("util", 0),
        ("clock", 0),
        ("metrics", 0),
        ("edge", 0),
        ("limits", 1),
        ("room", 1),
        ("store", 2),
        ("auth", 2),
        ("cert", 2),
        ("accounts", 3),
        ("authority", 3),
        ("cluster", 4),
        ("hub", 5),
        ("session", 6),
        ("transport", 7),
        ("http", 8),
        ("config", 8),
        ("server", 9),
        ("fuzzing", 10),
    ];

    fn layer(module: &str) -> u32 {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l).unwrap_or_else(|| panic!("{module} has no layer"))
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn modules_only_name_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut upward = Vec::new();
        for path in all {
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
            if first == "lib" || first == "main" {
                continue;
            }
            let from = layer(&first);
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for part in code.split("crate::").skip(1) {
                    let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name == first || name.is_empty() {
                        continue;
                    }
                    if layer(&name) >= from {
                        upward.push(format!("{}:{}: {first} names {name}", rel.display(), n + 1));
                    }
                }
            }
        }
        assert!(upward.is_empty(), "imports that do not point down:\n{}", upward.join("\n"));
    }
}
