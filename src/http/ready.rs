//! Readiness: whether this node should be given viewers (`GET /api/ready`,
//! the `lockstep_ready` gauge). Liveness is `GET /api/health`, which answers
//! 200 as long as the process serves HTTP.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cluster::Cluster;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    restored: AtomicBool,
    draining: AtomicBool,
    cluster: Option<Cluster>,
}

/// Why a node is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// State is not restored yet.
    Starting,
    /// Shutting down: load balancers should send viewers elsewhere.
    Draining,
    /// Redis (scale-out) does not answer.
    RedisUnreachable,
}

impl NotReady {
    /// Its name in `/api/ready` and `/api/health`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotReady::Starting => "starting",
            NotReady::Draining => "draining",
            NotReady::RedisUnreachable => "redis_unreachable",
        }
    }
}

impl Readiness {
    /// A node that is starting; scale-out state comes from `cluster`.
    pub(crate) fn new(cluster: Option<Cluster>) -> Self {
        Readiness { cluster, ..Readiness::default() }
    }

    /// State is restored.
    pub(crate) fn restored(&self) {
        self.restored.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Shutdown began.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Ready, or why not.
    pub(crate) fn check(&self) -> Result<(), NotReady> {
        let result = if self.draining.load(Ordering::Relaxed) {
            Err(NotReady::Draining)
        } else if !self.restored.load(Ordering::Relaxed) {
            Err(NotReady::Starting)
        } else if self.cluster.as_ref().is_some_and(|c| !c.is_up()) {
            Err(NotReady::RedisUnreachable)
        } else {
            Ok(())
        };
        metrics::gauge!("lockstep_ready").set(if result.is_ok() { 1.0 } else { 0.0 });
        result
    }

    fn publish(&self) {
        let _ = self.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_then_ready_then_draining() {
        let r = Readiness::new(None);
        assert_eq!(r.check(), Err(NotReady::Starting));
        r.restored();
        assert_eq!(r.check(), Ok(()));
        r.drain();
        assert_eq!(r.check(), Err(NotReady::Draining));
    }
}
