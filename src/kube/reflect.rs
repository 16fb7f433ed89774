//! Reflectors kept as untyped objects (`DynamicObject`), so one object that does not
//! deserialize into its typed struct is skipped at use (see `controller::typed_objects`)
//! instead of breaking the whole watch. Every watch event wakes the process's loop through a
//! `Notify`; watch errors are logged and retried with kube-rs's default back-off, never fatal.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
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
