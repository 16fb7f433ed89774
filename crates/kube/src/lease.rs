//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several controller
//! replicas exactly one reconciles. The holder renews the Lease every `renew`; another replica
//! takes it over once it has seen the same record unchanged for `duration` (measured on its own
//! clock, as client-go does, so clock skew between machines does not matter). Every write is
//! guarded by the Lease's resourceVersion: of two replicas racing, one gets a conflict.
//!
//! It must never report leadership it cannot prove: a leader that fails to renew for
//! `duration` steps down before anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Which Lease to hold, as whom, and how long.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// `<hostname>-<pid>`: unique among replicas on one machine and across machines.
pub fn default_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host}-{}", std::process::id())
}

/// What the elector last saw of the Lease, and when (on the local clock).
struct Observed {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    since: Instant,
}

/// Holds or competes for the Lease forever; `leading` says whether this replica may reconcile.
pub async fn run(client: kube::Client, config: LeaseConfig, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut observed: Option<Observed> = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &config, &mut observed).await {
            Ok(true) => last_renewed = Some(Instant::now()),
            Ok(false) => last_renewed = None,
            Err(error) => tracing::warn!(
                lease = %format!("{}/{}", config.namespace, config.name),
                %error,
                "leader election: cannot read or write the Lease"
            ),
        }
        // Step down a renew period before others may take over, so two never overlap.
        let is_leader = last_renewed.is_some_and(|t| t.elapsed() + config.renew < config.duration);
        leading.send_if_modified(|current| {
            if *current == is_leader {
                return false;
            }
            tracing::info!(identity = %config.identity, leader = is_leader, "leadership changed");
            *current = is_leader;
            true
        });
        tokio::time::sleep(config.renew).await;
    }
}

/// One round: create the Lease, renew it, or take it over when it expired. `Ok(true)` when this
/// replica holds the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec(config, now, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.clone().filter(|h| !h.is_empty());
    let renew_time = current.renew_time.as_ref().map(|t| t.0);
    let changed = observed
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew_time != renew_time);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew_time,
            since: Instant::now(),
        });
    }
    let mine = holder.as_deref() == Some(config.identity.as_str());
    let duration = current
        .lease_duration_seconds
        .map_or(config.duration, |s| Duration::from_secs(s.max(0) as u64));
    let expired = holder.is_none()
        || observed
            .as_ref()
            .is_some_and(|o| o.since.elapsed() > duration);
    if !mine && !expired {
        return Ok(false);
    }
    let (acquired, transitions) = if mine {
        let acquired = current.acquire_time.as_ref().map_or(now, |t| t.0);
        (acquired, current.lease_transitions.unwrap_or(0))
    } else {
        tracing::info!(identity = %config.identity, previous = ?holder, "taking over the expired Lease");
        (now, current.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(spec(config, acquired, now, transitions));
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Give the Lease up if this replica holds it (on shutdown), so another replica takes over at
/// once instead of waiting for it to expire.
pub async fn release(client: kube::Client, config: &LeaseConfig) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    api.replace(&config.name, &PostParams::default(), &lease)
        .await?;
    tracing::info!(identity = %config.identity, "released the leader Lease");
    Ok(())
}

fn spec(config: &LeaseConfig, acquired: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}
