//! Reflectors kept as untyped objects (`DynamicObject`), so one object that does not
//! deserialize into its typed struct is skipped at use (see `typed_objects`)
//! instead of breaking the whole watch. Every watch event wakes the process's loop through a
//! `Notify`; watch errors are logged and retried with kube-rs's default back-off, never fatal.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Start a reflector over `K` (all namespaces) filtered by `config`; its store, fed by a task
/// that notifies `changed` on every event.
pub fn spawn<K>(
    client: kube::Client,
    config: watcher::Config,
    changed: Arc<Notify>,
) -> Store<DynamicObject>
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let kind = resource.kind.clone();
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let writer = reflector::store::Writer::new(resource);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(kind, %error, "watch error (retrying with backoff)"),
            }
        }
    });
    reader
}

/// The objects of a reflector store that deserialize as `K`; the others are logged by name and
/// skipped.
pub fn typed_objects<K: DeserializeOwned>(objects: &[Arc<DynamicObject>], kind: &str) -> Vec<K> {
    objects
        .iter()
        .filter_map(|object| {
            let parsed = serde_json::to_value(object.as_ref()).and_then(serde_json::from_value);
            parsed
                .map_err(|error| {
                    let name = object.metadata.name.as_deref().unwrap_or("");
                    tracing::warn!(kind, name, %error, "skipping malformed object");
                })
                .ok()
        })
        .collect()
}
