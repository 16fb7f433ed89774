//! Reflectors kept as untyped objects (`DynamicObject`), so one object that does not
//! deserialize into its typed struct is skipped at use (see `typed_objects`)
//! instead of breaking the whole watch. Every watch event wakes the process's loop through a
//! `Notify`; watch errors are logged and retried, never fatal.
//!
//! The retry back-off is short on purpose: after an API outage a reflector watches again
//! within about a second of the server's return, where kube-rs's default (0.8 s doubling to a
//! 30 s cap) left agents up to 30 s behind. The wait starts at [`RETRY_MIN`], doubles up to the
//! configured cap, and each wait gets a random jitter of up to itself, so agents that lost the
//! server together do not come back in lock step. With a cap `c`, one reflector makes at most
//! `1/c` attempts per second during an outage; a fleet of `n` agents with `w` watches each
//! therefore at most `n·w/c` (5,000 agents × 5 watches at the default 0.5 s: 50,000 refused
//! connections per second while the server is down, each a TCP reset, and its `n·w` watches
//! resumed within `2c` = 1 s of its return). Large clusters raise the cap
//! (`--api-retry-max-delay-ms`): 10 s gives 2,500 attempts per second and a return within 20 s.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// The first wait before a failed watch is tried again.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// The default cap of that wait in milliseconds (before jitter, which at most doubles it).
pub const DEFAULT_RETRY_MAX_MS: u64 = 500;

/// The reflectors of one process: one client, one wake-up, one retry policy.
#[derive(Clone)]
pub struct Reflectors {
    pub client: kube::Client,
    /// Notified on every watch event of every reflector.
    pub changed: Arc<Notify>,
    /// The cap of the retry wait (see the module's documentation).
    pub retry_max: Duration,
}

impl Reflectors {
    /// Start a reflector over `K` (all namespaces) filtered by `config`; its store, fed by a
    /// task that notifies `changed` on every event.
    pub fn spawn<K>(&self, config: watcher::Config) -> Store<DynamicObject>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let resource = ApiResource::erase::<K>(&());
        let kind = resource.kind.clone();
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource);
        let reader = writer.as_reader();
        let watch = watcher::watcher(api, config).backoff(retry_backoff(self.retry_max));
        let stream = reflector::reflector(writer, watch);
        let changed = self.changed.clone();
        tokio::spawn(watch_events(stream, kind, changed));
        reader
    }
}

/// The retry waits of a reflector: [`RETRY_MIN`] doubling up to `max`, each plus a random
/// jitter of up to itself; reset by the watch's next success.
pub fn retry_backoff(max: Duration) -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(max.max(RETRY_MIN))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Drives a reflector's stream: every event wakes the loop, every error is logged.
async fn watch_events<S>(stream: S, kind: String, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(error) => tracing::warn!(kind, %error, "watch error (retrying with backoff)"),
        }
    }
}

/// The objects of a reflector store that deserialize as `K`; the others are logged by name and
/// skipped.
pub fn typed_objects<K: DeserializeOwned>(objects: &[Arc<DynamicObject>], kind: &str) -> Vec<K> {
    objects
        .iter()
        .filter_map(|object| typed_object(object, kind))
        .collect()
}

/// `object` as a `K`; `None`, logged with its name, when it does not deserialize.
pub fn typed_object<K: DeserializeOwned>(object: &DynamicObject, kind: &str) -> Option<K> {
    let parsed = serde_json::to_value(object).and_then(serde_json::from_value);
    parsed
        .map_err(|error| {
            let name = object.metadata.name.as_deref().unwrap_or("");
            tracing::warn!(kind, name, %error, "skipping malformed object");
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_start_short_stay_under_twice_the_cap_and_are_jittered() {
        let max = Duration::from_millis(DEFAULT_RETRY_MAX_MS);
        let waits: Vec<Duration> = retry_backoff(max).take(50).collect();
        assert_eq!(waits.len(), 50, "the back-off never gives up");
        assert!(
            waits[0] >= RETRY_MIN && waits[0] < 2 * RETRY_MIN,
            "{waits:?}"
        );
        assert!(waits.iter().all(|w| *w < 2 * max), "{waits:?}");
        assert!(waits[10..].iter().all(|w| *w >= max), "{waits:?}");
        let distinct: std::collections::BTreeSet<_> = waits[10..].iter().collect();
        assert!(distinct.len() > 10, "capped waits are jittered: {waits:?}");
    }

    #[test]
    fn a_cap_below_the_first_wait_is_raised_to_it() {
        let waits: Vec<Duration> = retry_backoff(Duration::ZERO).take(5).collect();
        assert!(
            waits.iter().all(|w| *w >= RETRY_MIN && *w < 2 * RETRY_MIN),
            "{waits:?}"
        );
    }
}
