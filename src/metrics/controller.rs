//! The controller's families: pool usage (derived at scrape time from the last allocation, by
//! [`pool_usage`]), allocations and allocation errors by reason, webhook requests by kind and
//! result with their latency, leadership, reconcile duration and errors. Updated where they
//! happen; nothing here does I/O or holds a lock beyond swapping an `Arc`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use ovs_egress_core::ipam::{AllocationError, Allocations};

/// The allocation error reasons, as labelled.
pub const ERROR_REASONS: [&str; 6] = [
    "pool_not_found",
    "invalid_ip",
    "out_of_pool",
    "conflict",
    "exhausted",
    "pool_refused",
];

/// The label of an allocation error.
pub fn error_reason(error: &AllocationError) -> &'static str {
    match error {
        AllocationError::PoolNotFound(_) => "pool_not_found",
        AllocationError::InvalidIp { .. } => "invalid_ip",
        AllocationError::OutOfPool { .. } => "out_of_pool",
        AllocationError::Conflict { .. } => "conflict",
        AllocationError::Exhausted { .. } => "exhausted",
        AllocationError::PoolRefused { .. } => "pool_refused",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `kind`: `Egress` or `ExternalIPPool`; `result`: `allowed`, `denied` or `invalid` (the
/// review could not be read).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// The controller's process-wide families.
#[derive(Debug)]
pub struct ControllerMetrics {
    /// `spec.egressIP` written with a newly allocated IP.
    pub allocations: Counter,
    /// `IPAllocated=False` written, by reason.
    pub allocation_errors: Family<ReasonLabels, Counter>,
    pub webhook_requests: Family<WebhookLabels, Counter>,
    pub webhook_latency: Family<KindLabels, Histogram>,
    pub leader: Gauge,
    pub reconcile_duration: Histogram,
    /// Writes of a reconcile pass that failed (retried).
    pub reconcile_errors: Counter,
    usage: Mutex<Arc<BTreeMap<String, PoolUsage>>>,
}

static METRICS: LazyLock<ControllerMetrics> = LazyLock::new(|| {
    let allocation_errors = Family::<ReasonLabels, Counter>::default();
    for reason in ERROR_REASONS {
        let _ = allocation_errors.get_or_create(&ReasonLabels { reason });
    }
    ControllerMetrics {
        allocations: Counter::default(),
        allocation_errors,
        webhook_requests: Family::default(),
        webhook_latency: Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 14))
        }),
        leader: Gauge::default(),
        reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        reconcile_errors: Counter::default(),
        usage: Mutex::new(Arc::new(BTreeMap::new())),
    }
});

/// The controller's families (one set per process).
pub fn metrics() -> &'static ControllerMetrics {
    &METRICS
}

/// A poisoned lock only means a panic elsewhere while swapping an `Arc`: the value is whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// IPs of one pool: `status.usage` as the allocator computed it.
pub type PoolUsage = ovs_egress_core::ipam::Usage;

/// Usage of every pool according to the allocator's answer (what `status.usage` is set to).
pub fn pool_usage(allocations: &Allocations) -> BTreeMap<String, PoolUsage> {
    allocations.usage.clone()
}

impl ControllerMetrics {
    /// The pools' usage after the allocator's latest answer.
    pub fn set_usage(&self, usage: BTreeMap<String, PoolUsage>) {
        *lock(&self.usage) = Arc::new(usage);
    }

    /// One admission review of `kind` answered with `result` after `seconds`.
    pub fn observe_review(&self, kind: &'static str, result: &'static str, seconds: f64) {
        self.webhook_requests
            .get_or_create(&WebhookLabels { kind, result })
            .inc();
        self.webhook_latency
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }
}

/// The controller's registry: build and process families, and every controller family.
pub fn registry() -> Registry {
    let m = metrics();
    let mut registry = super::base_registry();
    registry.register(
        "controller_allocations",
        "Egress IPs allocated from a pool and written to spec.egressIP.",
        m.allocations.clone(),
    );
    registry.register(
        "controller_allocation_errors",
        "IPAllocated=False conditions written, by reason.",
        m.allocation_errors.clone(),
    );
    registry.register(
        "controller_webhook_requests",
        "Admission reviews answered by the validating webhook, by kind and result.",
        m.webhook_requests.clone(),
    );
    registry.register_with_unit(
        "controller_webhook_latency",
        "Time to answer one admission review, by kind.",
        Unit::Seconds,
        m.webhook_latency.clone(),
    );
    registry.register(
        "controller_leader",
        "1 while this replica holds the leader Lease (and writes), else 0.",
        m.leader.clone(),
    );
    registry.register_with_unit(
        "controller_reconcile_duration",
        "Time of one reconcile pass of the leader (allocate, then write the difference).",
        Unit::Seconds,
        m.reconcile_duration.clone(),
    );
    registry.register(
        "controller_reconcile_errors",
        "Writes of reconcile passes that failed and are retried.",
        m.reconcile_errors.clone(),
    );
    registry.register_collector(Box::new(Usage));
    registry
}

#[derive(Debug)]
struct Usage;

impl Collector for Usage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let usage = lock(&metrics().usage).clone();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "controller_pool_capacity_ips",
            "Allocatable IPs of each ExternalIPPool (status.usage.total).",
            None,
            gauge.metric_type(),
        )?;
        for (pool, u) in usage.iter() {
            let labels = [("pool", pool.as_str())];
            ConstGauge::new(u.total).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "controller_pool_used_ips",
            "Allocated IPs of each ExternalIPPool (status.usage.used).",
            None,
            gauge.metric_type(),
        )?;
        for (pool, u) in usage.iter() {
            let labels = [("pool", pool.as_str())];
            ConstGauge::new(u.used).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allocation_error_has_one_of_the_exported_reasons() {
        let ip = "10.0.0.1".parse().unwrap();
        let (egress, pool) = (String::from("e"), String::from("p"));
        let errors = [
            AllocationError::PoolNotFound(pool.clone()),
            AllocationError::InvalidIp {
                ip: "x".into(),
                egress: egress.clone(),
                pool: pool.clone(),
            },
            AllocationError::OutOfPool {
                ip,
                egress: egress.clone(),
                pool: pool.clone(),
            },
            AllocationError::Conflict {
                ip,
                egress: egress.clone(),
                pool: pool.clone(),
                holder: "h".into(),
            },
            AllocationError::Exhausted {
                egress: egress.clone(),
                pool: pool.clone(),
            },
            AllocationError::PoolRefused {
                egress,
                pool,
                reason: "it overlaps an older pool".into(),
            },
        ];
        let reasons: Vec<_> = errors.iter().map(error_reason).collect();
        assert_eq!(reasons, ERROR_REASONS);
    }

    #[test]
    fn pool_usage_is_what_the_allocator_reports_for_each_pool() {
        use ovs_egress_core::model::{Egress, ExternalIpPool};
        let pool: ExternalIpPool = serde_json::from_value::<ovs_egress_core::api::v1beta1::ExternalIPPool>(
            serde_json::json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "ExternalIPPool",
                "metadata": {"name": "p"},
                "spec": {"ipRanges": [{"start": "10.0.0.1", "end": "10.0.0.4"}], "nodeSelector": {}}}),
        )
        .map(|p| (&p).into())
        .unwrap();
        let egress: Egress = serde_json::from_value::<ovs_egress_core::api::v1beta1::Egress>(
            serde_json::json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "e"}, "spec": {"appliedTo": {}, "externalIPPool": "p"}}),
        )
        .map(|e| (&e).into())
        .unwrap();
        let usage = pool_usage(&ovs_egress_core::ipam::allocate_all(&[pool], &[egress]));
        assert_eq!(usage["p"], PoolUsage { total: 4, used: 1 });
    }
}
