//! The rhythm of a level-triggered reconcile loop, shared by the agent and the controller: a
//! pass runs after a burst of watch events (coalesced for [`DEBOUNCE`]), after another wake-up
//! the caller names (the Node's IPs changed, leadership changed), or when its timer fires:
//! [`RETRY`] after a pass that left something undone, [`RESYNC`] otherwise, so nothing a lost
//! write or a missed event left behind survives for long. It decides nothing and never
//! touches the API; the caller's pass does.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Quiet time after a change before a pass, to coalesce bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// The next pass after one that left something undone (a failed write or apply).
pub const RETRY: Duration = Duration::from_secs(1);
/// The next pass even without changes.
pub const RESYNC: Duration = Duration::from_secs(60);

/// When the next pass runs.
pub struct Passes {
    changed: Arc<Notify>,
    wait: Duration,
    woken: Instant,
}

impl Passes {
    /// Passes woken by `changed` (the reflectors' notification); the first runs at once.
    pub fn new(changed: Arc<Notify>) -> Passes {
        Passes {
            changed,
            wait: Duration::ZERO,
            woken: Instant::now(),
        }
    }

    /// Waits for the next pass: a change, `other`, or the timer, then the debounce. Returns
    /// `other`'s output when it was what woke the loop.
    pub async fn next<T>(&mut self, other: impl Future<Output = T>) -> Option<T> {
        let woken = tokio::select! {
            () = self.changed.notified() => None,
            result = other => Some(result),
            () = tokio::time::sleep(self.wait) => None,
        };
        self.woken = Instant::now();
        tokio::time::sleep(DEBOUNCE).await;
        woken
    }

    /// When the current pass was woken (before the debounce): when its input change was seen.
    pub fn woken_at(&self) -> Instant {
        self.woken
    }

    /// The pass is over: the next one in [`RESYNC`] when it `completed`, else in [`RETRY`].
    pub fn done(&mut self, completed: bool) {
        self.wait = if completed { RESYNC } else { RETRY };
    }
}
