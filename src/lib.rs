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
//! - `util`, [`clock`], `metrics`, `limits`: small leaves used from anywhere.
//!
//! Modules are private; what tests, benchmarks and the binary use is public.

mod accounts;
pub mod auth;
pub mod cert;
pub mod clock;
pub mod cluster;
pub mod config;
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

/// Internals the micro-benchmarks (`benches/micro.rs`) measure; not an API.
#[doc(hidden)]
pub mod bench {
    pub use crate::session::outbox::{Frame, FrameKind, Outbox};
    pub use crate::transport::json::encode as encode_json;
}
