#![allow(unreachable_pub, missing_debug_implementations)]

//! Integration tests: a real server on 127.0.0.1:0, real clients.
//!
//! One test binary (matklad's "delete cargo integration tests"); one module per area.

mod accounts;
mod bounded;
mod cluster;
mod common;
mod config;
mod edge;
mod fuzz_corpus;
mod jwks;
mod kills;
mod live;
mod live_source;
mod ops;
mod pki;
mod public;
mod redis;
mod redis_cluster;
mod redis_tls;
mod restart;
mod ws;
mod wt;
