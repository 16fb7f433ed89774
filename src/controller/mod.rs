//! `ovs-egress controller`: watches Egresses and ExternalIPPools, lets `ipam::allocate_all`
//! decide every allocation for the whole set at once (existing `spec.egressIP` values restored
//! oldest-first before anything new is handed out, so a restart never reshuffles IPs), and
//! writes the difference back: `spec.egressIP`, the `IPAllocated` condition, pool
//! `status.usage`. Only the Lease holder writes; every replica serves the webhook and probes.
//!
//! This module must never make a decision of its own: what to write comes from
//! `writes::compute`, which only diffs the allocator's answer against what the API shows.

pub mod webhook;
pub mod writes;

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

use crate::config::{ControllerArgs, ControllerConfig};
use ovs_egress_core::api::{EgressStatus, v1beta1};
use ovs_egress_core::{ipam, model};
use ovs_egress_kube::passes::Passes;
use ovs_egress_kube::reflect::{self, typed_objects};
use ovs_egress_kube::{health, lease, status};
use writes::Write;

/// Why a write did not happen.
enum ApplyError {
    /// The object changed after the decision was made (optimistic concurrency): decide again.
    Stale,
    Failed(anyhow::Error),
}
use ApplyError::{Failed, Stale};

impl From<anyhow::Error> for ApplyError {
    fn from(error: anyhow::Error) -> Self {
        Failed(error)
    }
}

/// Run the controller with its command-line flags until the process is killed.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => ControllerConfig::load(path)?,
        None => ControllerConfig::default(),
    };
    let metrics = crate::metrics::route(Arc::new(crate::metrics::controller::registry()));
    if !config.feature_gates.egress {
        return health::serve_disabled(args.health_listen, "controller", metrics).await;
    }
    let (ready_tx, ready_rx) = watch::channel(false);
    let health = tokio::spawn(health::serve(args.health_listen, ready_rx, metrics));
    let client = ovs_egress_kube::client(args.kubeconfig.as_deref(), args.in_cluster).await?;

    let changed = Arc::new(Notify::new());
    let reflectors = reflect::Reflectors {
        client: client.clone(),
        changed: changed.clone(),
        retry_max: args.api_retry.max_delay(),
    };
    let egresses = reflectors.spawn::<v1beta1::Egress>(watcher::Config::default());
    let pools = reflectors.spawn::<v1beta1::ExternalIPPool>(watcher::Config::default());

    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        let tls = webhook::tls_config(cert, key)?;
        let pools = pools.clone();
        let addr = args.webhook_listen;
        tokio::spawn(async move {
            if let Err(error) = webhook::serve(addr, tls, pools).await {
                tracing::error!(%error, "validating webhook stopped");
            }
        });
    } else {
        tracing::info!("no --tls-cert-file/--tls-key-file: the validating webhook is not served");
    }

    let (leading_tx, leading) = watch::channel(false);
    let lease_config = lease::LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: args
            .identity
            .clone()
            .unwrap_or_else(lease::default_identity),
        duration: Duration::try_from_secs_f64(args.lease_duration_seconds)
            .context("--lease-duration-seconds must be a positive number")?,
        renew: Duration::try_from_secs_f64(args.lease_renew_seconds)
            .context("--lease-renew-seconds must be a positive number")?,
    };
    tracing::info!(identity = %lease_config.identity, "competing for the leader Lease");
    tokio::spawn(lease::run(client.clone(), lease_config.clone(), leading_tx));

    egresses.wait_until_ready().await.context("Egress cache")?;
    pools
        .wait_until_ready()
        .await
        .context("ExternalIPPool cache")?;
    ready_tx.send_replace(true);
    tracing::info!("caches synced");

    let reconciler = Reconciler {
        egresses: Api::all(client.clone()),
        pools: Api::all(client.clone()),
    };
    tokio::select! {
        result = health => result.context("health server task")?
            .with_context(|| format!("serving health on {}", args.health_listen)),
        () = control_loop(&reconciler, &egresses, &pools, Passes::new(changed), leading) => Ok(()),
        result = shutdown_signal() => {
            result.context("waiting for SIGTERM/SIGINT")?;
            tracing::info!("shutting down");
            lease::release(client, &lease_config).await.with_context(|| {
                format!("releasing Lease {}/{}", lease_config.namespace, lease_config.name)
            })
        }
    }
}

/// Counts a write that succeeded: a newly allocated IP, or an `IPAllocated=False` by reason.
fn count_write(write: &Write, allocations: &ipam::Allocations) {
    let metrics = crate::metrics::controller::metrics();
    match write {
        Write::EgressIp { ip: Some(_), .. } => {
            metrics.allocations.inc();
        }
        Write::Allocated {
            egress,
            condition: Some(condition),
        } if condition.status == "False" => {
            if let Some(Err(error)) = allocations.by_egress.get(egress) {
                let reason = crate::metrics::controller::error_reason(error);
                metrics
                    .allocation_errors
                    .get_or_create(&crate::metrics::controller::ReasonLabels { reason })
                    .inc();
            }
        }
        _ => {}
    }
}

/// Resolves on SIGTERM (the kubelet stopping the Pod) or SIGINT.
async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        result = tokio::signal::ctrl_c() => result,
    }
}

async fn control_loop(
    reconciler: &Reconciler,
    egresses: &Store<DynamicObject>,
    pools: &Store<DynamicObject>,
    mut passes: Passes,
    mut leading: watch::Receiver<bool>,
) {
    loop {
        if let Some(Err(_)) = passes.next(leading.changed()).await {
            return;
        }
        let metrics = crate::metrics::controller::metrics();
        let leader = *leading.borrow_and_update();
        metrics.leader.set(i64::from(leader));
        if !leader {
            passes.done(true);
            continue;
        }
        let started = std::time::Instant::now();
        let egresses = typed_objects::<v1beta1::Egress>(&egresses.state(), "Egress");
        let pools = typed_objects::<v1beta1::ExternalIPPool>(&pools.state(), "ExternalIPPool");
        let failures = reconciler.reconcile(&egresses, &pools).await;
        metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.reconcile_errors.inc_by(failures as u64);
        passes.done(failures == 0);
    }
}

struct Reconciler {
    egresses: Api<v1beta1::Egress>,
    pools: Api<v1beta1::ExternalIPPool>,
}

impl Reconciler {
    /// Decide with the allocator, write the difference; returns how many writes failed.
    async fn reconcile(
        &self,
        egresses: &[v1beta1::Egress],
        pools: &[v1beta1::ExternalIPPool],
    ) -> usize {
        let model_egresses: Vec<model::Egress> = egresses.iter().map(Into::into).collect();
        let model_pools: Vec<model::ExternalIpPool> = pools.iter().map(Into::into).collect();
        let allocations = ipam::allocate_all(&model_pools, &model_egresses);
        let metrics = crate::metrics::controller::metrics();
        metrics.set_usage(crate::metrics::controller::pool_usage(&allocations));
        let mut failures = 0;
        for write in writes::compute(egresses, pools, &allocations) {
            match self.apply(&write).await {
                Ok(()) => count_write(&write, &allocations),
                Err(Stale) => {
                    tracing::debug!(?write, "object changed since the decision; deciding again");
                    failures += 1;
                }
                Err(Failed(error)) => {
                    let error = format!("{error:#}");
                    tracing::warn!(?write, error, "write failed, will retry");
                    failures += 1;
                }
            }
        }
        failures
    }

    async fn apply(&self, write: &Write) -> Result<(), ApplyError> {
        let params = PatchParams::default();
        match write {
            Write::EgressIp {
                egress,
                ip,
                resource_version,
            } => {
                tracing::info!(egress, ip = ?ip, "patching spec.egressIP");
                let patch = json!({
                    "metadata": {"resourceVersion": resource_version},
                    "spec": {"egressIP": ip.map(|ip| ip.to_string())},
                });
                match self
                    .egresses
                    .patch(egress, &params, &Patch::Merge(patch))
                    .await
                {
                    Err(kube::Error::Api(status)) if status.code == 409 => return Err(Stale),
                    result => {
                        result.with_context(|| {
                            format!("Egress {egress}: merge-patching spec.egressIP")
                        })?;
                    }
                }
            }
            Write::Allocated { egress, condition } => {
                self.set_condition(egress, condition.as_ref())
                    .await
                    .with_context(|| format!("Egress {egress}: updating status.conditions"))?;
            }
            Write::Usage { pool, usage } => {
                tracing::info!(
                    pool,
                    total = usage.total,
                    used = usage.used,
                    "updating usage"
                );
                let patch = json!({"status": {"usage": usage}});
                self.pools
                    .patch_status(pool, &params, &Patch::Merge(patch))
                    .await
                    .with_context(|| format!("ExternalIPPool {pool}: patching status.usage"))?;
            }
            Write::PoolAllocatable {
                pool,
                current,
                condition,
            } => {
                tracing::info!(pool, ?condition, "updating the Allocatable condition");
                let conditions = writes::with_condition_of(
                    writes::ALLOCATABLE,
                    current,
                    condition.as_ref(),
                    Time(Timestamp::now()),
                );
                let patch = json!({"status": {"conditions": conditions}});
                self.pools
                    .patch_status(pool, &params, &Patch::Merge(patch))
                    .await
                    .with_context(|| {
                        format!("ExternalIPPool {pool}: patching status.conditions")
                    })?;
            }
        }
        Ok(())
    }

    /// Replace only the IPAllocated condition, on the freshest object, retrying on conflict.
    async fn set_condition(
        &self,
        name: &str,
        wanted: Option<&writes::Condition>,
    ) -> Result<(), kube::Error> {
        let wrote = status::update_status(&self.egresses, name, |current| {
            let updated =
                writes::with_condition(&current.conditions, wanted, Time(Timestamp::now()));
            let before: Vec<_> = current.conditions.iter().map(strip_time).collect();
            (updated.iter().map(strip_time).collect::<Vec<_>>() != before).then(|| EgressStatus {
                conditions: updated,
                ..current.clone()
            })
        })
        .await?;
        if wrote {
            tracing::info!(egress = name, condition = ?wanted, "IPAllocated updated");
        }
        Ok(())
    }
}

fn strip_time(
    condition: &ovs_egress_core::api::EgressCondition,
) -> ovs_egress_core::api::EgressCondition {
    ovs_egress_core::api::EgressCondition {
        last_transition_time: None,
        ..condition.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_objects_are_skipped_and_the_others_kept() {
        let object = |value: serde_json::Value| Arc::new(serde_json::from_value(value).unwrap());
        let objects: Vec<Arc<DynamicObject>> = vec![
            object(
                json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "good"}, "spec": {"appliedTo": {}, "externalIPPool": "p"}}),
            ),
            object(
                json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "bad"}, "spec": {"appliedTo": "everything"}}),
            ),
        ];
        let egresses = typed_objects::<v1beta1::Egress>(&objects, "Egress");
        let names: Vec<_> = egresses
            .iter()
            .map(|e| e.metadata.name.as_deref())
            .collect();
        assert_eq!(names, [Some("good")]);
    }
}
