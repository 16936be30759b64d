//! Lockstep: an authoritative watch-together playback sync server.
//!
//! # Layout
//! - [`room`]: the sans-IO room core (timeline, roles, buffering, counts).
//! - [`hub`]: room actors that drive the core with the real clock and fan out.
//! - [`outbox`]: per-connection outbound queues (bounded, latest-wins ticks).
//! - [`session`]: one session path for every transport (hello, limits, errors).
//! - [`ws`], [`json`]: the WebSocket transport and its legacy JSON dialect.
//! - [`wt`], [`cert`]: the WebTransport transport (QUIC datagrams and one stream) and its
//!   certificate: generated and rotated, or loaded and reloaded.
//! - [`auth`]: access tokens (JWT, ring-backed). [`store`]: durable state (SQLite).
//! - [`accounts`], [`api`], [`limits`]: sessions, devices, invitations; the REST API; per-IP limits.
//! - [`cluster`]: scale-out through Redis (timeline authority, fan-out, counts).
//! - [`http`], [`server`], [`config`], [`metrics`], [`clock`]: the runtime around them.
//! - [`web`]: the demo watch page, its video and the browser client, embedded.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod cert;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod http;
pub mod hub;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod room;
pub mod server;
pub mod session;
pub mod store;
pub mod web;
pub mod ws;
pub mod wt;
