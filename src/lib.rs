//! Lockstep: an authoritative watch-together playback sync server.
//!
//! # Layout
//! - [`room`]: the sans-IO room core (timeline, roles, buffering, counts).

pub mod room;
