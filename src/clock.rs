//! The server clock: one monotonic microsecond clock for timelines and clock
//! sync.
//!
//! It starts at the Unix time of process start and then advances with
//! [`std::time::Instant`], so it never jumps, and nodes whose system clocks are
//! NTP-synced agree on it to within their sync error.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds of server time.
pub type Micros = u64;

/// A cheap, copyable handle to the server clock.
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    start: Instant,
    base_us: Micros,
}

impl ServerClock {
    /// A clock anchored at the current system time.
    pub fn new() -> Self {
        let base_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        ServerClock { start: Instant::now(), base_us }
    }

    /// Server time now.
    pub fn now_us(&self) -> Micros {
        self.base_us + self.start.elapsed().as_micros() as u64
    }

    /// The [`Instant`] at which the clock reads `t` (now, if `t` is past).
    pub fn instant_at(&self, t: Micros) -> Instant {
        self.start + Duration::from_micros(t.saturating_sub(self.base_us))
    }
}

impl Default for ServerClock {
    fn default() -> Self {
        Self::new()
    }
}
