//! Connection tracking for the connection cap and graceful shutdown.
//!
//! Every proxied connection holds a [`ConnGuard`] (a semaphore permit) for its whole
//! life. The cap is the number of permits. On SIGTERM the drain is signaled: listeners
//! stop accepting, readiness turns false, and shutdown waits until every guard is
//! dropped or the grace period ends (then the remaining connections are closed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Shared drain handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct Drain {
    token: CancellationToken,
    permits: Arc<Semaphore>,
    max: usize,
}

/// Held by a live connection.
#[derive(Debug)]
pub struct ConnGuard(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drain {
    /// A drain allowing `max` concurrent connections.
    pub fn new(max: usize) -> Self {
        Self {
            token: CancellationToken::new(),
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Resolves once shutdown has started.
    pub async fn signaled(&self) {
        self.token.cancelled().await
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Another connection cap under the same shutdown signal (e.g. one per direction,
    /// so inbound connections cannot starve the workload's outbound ones).
    pub fn sibling(&self, max: usize) -> Self {
        Self {
            token: self.token.clone(),
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Registers a new connection, or `None` when the cap is reached.
    pub fn try_track(&self) -> Option<ConnGuard> {
        self.permits.clone().try_acquire_owned().ok().map(ConnGuard)
    }

    /// Live connections.
    pub fn active(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The connection cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Starts shutdown.
    pub fn start(&self) {
        self.token.cancel();
    }

    /// Waits until no connection is live, or `grace` passes. Returns whether all ended.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cap_and_drain() {
        let d = Drain::new(2);
        let a = d.try_track().unwrap();
        let _b = d.try_track().unwrap();
        assert!(d.try_track().is_none(), "cap of 2");
        assert_eq!(d.active(), 2);
        d.start();
        assert!(d.is_draining());
        assert!(!d.wait_idle(Duration::from_secs(1)).await, "still busy");
        drop(a);
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(10)).await });
        drop(_b);
        assert!(waiter.await.unwrap());
    }
}
