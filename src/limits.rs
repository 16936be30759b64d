//! Per-IP rate limits (governor): REST requests, and connection attempts on
//! both realtime transports. Refusals are 429 with `Retry-After` (REST and
//! WebSocket upgrades) or a refused WebTransport session request. Per-message
//! limits of an open connection live in `session.rs`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::edge::ClientAddr;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct IpLimits {
    rest: DefaultKeyedRateLimiter<IpAddr>,
    connect: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    let per_sec = NonZeroU32::new(per_sec.max(1)).expect("nonzero");
    Quota::per_second(per_sec).allow_burst(NonZeroU32::new(burst.max(1)).expect("nonzero"))
}

/// The clock of every rate limiter, made once: `DefaultClock::default()`
/// (quanta) probes the CPU with `cpuid` each time, which a virtual machine
/// traps, and a limiter per connection made one per handshake. Clones share
/// the calibration.
pub(crate) fn clock() -> DefaultClock {
    static CLOCK: std::sync::OnceLock<DefaultClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default).clone()
}

fn check(l: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Result<(), Duration> {
    l.check_key(&ip).map_err(|not_until| not_until.wait_time_from(l.clock().now()))
}

impl IpLimits {
    /// Limits of `rest_per_sec` (burst `rest_burst`) requests and
    /// `connect_per_sec` (burst `connect_burst`) connection attempts per IP.
    pub(crate) fn new(rest_per_sec: u32, rest_burst: u32, connect_per_sec: u32, connect_burst: u32) -> Self {
        IpLimits {
            rest: RateLimiter::dashmap_with_clock(quota(rest_per_sec, rest_burst), clock()),
            connect: RateLimiter::dashmap_with_clock(quota(connect_per_sec, connect_burst), clock()),
        }
    }

    /// Admits one REST request from `ip`, or says when to retry.
    pub(crate) fn check_rest(&self, ip: IpAddr) -> Result<(), Duration> {
        check(&self.rest, ip)
    }

    /// Admits one connection attempt from `ip`, or says when to retry.
    pub(crate) fn check_connect(&self, ip: IpAddr) -> Result<(), Duration> {
        check(&self.connect, ip)
    }

    /// Forgets idle addresses every `every`, forever (keeps memory bounded).
    pub(crate) async fn run_cleanup(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // What the last minute left (before forgetting the idle ones).
            metrics::gauge!("lockstep_ip_limiter_entries").set((self.rest.len() + self.connect.len()) as f64);
            self.rest.retain_recent();
            self.connect.retain_recent();
            self.rest.shrink_to_fit();
            self.connect.shrink_to_fit();
        }
    }
}

/// A 429 answer with `Retry-After` (whole seconds, at least 1).
pub(crate) fn too_many(retry: Duration) -> Response {
    let mut r = crate::util::api_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry later");
    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    crate::metrics::drop("rate_limited_ip");
    r
}

/// Middleware for REST routes: limits per client address (behind trusted
/// proxies, the address they forward).
pub(crate) async fn rest_limit(
    State(limits): State<Arc<IpLimits>>,
    ClientAddr(client): ClientAddr,
    req: Request,
    next: Next,
) -> Response {
    match limits.check_rest(client.ip()) {
        Ok(()) => next.run(req).await,
        Err(retry) => too_many(retry),
    }
}
