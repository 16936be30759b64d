//! The transports: WebSocket ([`ws`], with the legacy JSON dialect of
//! [`json`]) and WebTransport ([`wt`]). Each admits a connection (per-IP
//! limit, connection cap, path and token checks), turns it into a stream of
//! [`crate::session::Inbound`] items and a [`crate::session::Transport`] for
//! the one outbound writer, and hands both to [`crate::session::run`].
//! Nothing about rooms, roles, auth or errors is written here.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::limits::IpLimits;

pub(crate) mod json;
pub(crate) mod ws;
pub(crate) mod wt;

/// What a transport needs to admit and serve connections. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// Handed to every session.
    pub(crate) session: crate::session::Context,
    /// Per-IP connection attempts.
    pub(crate) ip_limits: Arc<IpLimits>,
    /// Caps concurrent connections (one permit per connection).
    pub(crate) conn_limit: Arc<Semaphore>,
    /// Which browser origins may open a WebSocket (`--cors-origins`).
    pub(crate) origins: Arc<crate::edge::CorsOrigins>,
}
