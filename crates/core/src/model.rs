//! Plain data the pure core decides on: one snapshot of the cluster as seen by one process.
//! The Kubernetes adapters and the offline renderer both fill these structs; nothing here does
//! I/O or knows about API versions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::api::{AppliedTo, IpRange, LabelSelector};

/// Labels or annotations of an object.
pub type Labels = BTreeMap<String, String>;

/// Seconds since the Unix epoch; Kubernetes `creationTimestamp` has second resolution.
/// Objects without a timestamp (offline YAML) sort as 0, then by name.
pub type Timestamp = i64;

/// An `Egress`, version-independent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    pub name: String,
    pub created: Timestamp,
    pub applied_to: AppliedTo,
    /// `spec.egressIP` as written (may be empty or invalid; the core reports that in status).
    pub egress_ip: Option<String>,
    /// `spec.externalIPPool`.
    pub external_ip_pool: Option<String>,
    /// From the annotation [`FAILURE_POLICY_ANNOTATION`].
    pub failure_policy: FailurePolicy,
}

/// The annotation that sets an Egress's [`FailurePolicy`] (the CRD itself stays Antrea's).
pub const FAILURE_POLICY_ANNOTATION: &str = "egress.ovs-egress.io/failure-policy";

/// What the external traffic of an Egress's Pods does while its IP has no holder (not allocated
/// yet, no eligible Node, every eligible Node down, no SNAT mark left).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Leave with the Node's own IP (the default masquerade), as Antrea does.
    #[default]
    NodeIp,
    /// Dropped until the IP is held again: never leaves with another source.
    Drop,
}

impl FailurePolicy {
    /// The policy an annotation value asks for: none (or `node-ip`) is the default, `drop` is
    /// [`FailurePolicy::Drop`]. Any other value also drops: whoever set the annotation did not
    /// want the default, so the unknown value fails closed (the webhook refuses such values).
    pub fn from_annotation(value: Option<&str>) -> Self {
        match value {
            None | Some("node-ip") => FailurePolicy::NodeIp,
            Some(_) => FailurePolicy::Drop,
        }
    }

    /// Whether `value` is one of the annotation's values.
    pub fn is_valid_annotation(value: &str) -> bool {
        matches!(value, "node-ip" | "drop")
    }
}

#[cfg(test)]
mod tests {
    use super::FailurePolicy;

    #[test]
    fn failure_policy_defaults_to_the_node_ip_and_fails_closed_on_unknown_values() {
        assert_eq!(FailurePolicy::from_annotation(None), FailurePolicy::NodeIp);
        assert_eq!(
            FailurePolicy::from_annotation(Some("node-ip")),
            FailurePolicy::NodeIp
        );
        assert_eq!(
            FailurePolicy::from_annotation(Some("drop")),
            FailurePolicy::Drop
        );
        assert_eq!(
            FailurePolicy::from_annotation(Some("Drop ")),
            FailurePolicy::Drop
        );
        assert!(!FailurePolicy::is_valid_annotation("Drop "));
    }
}

/// An `ExternalIPPool`, version-independent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIpPool {
    pub name: String,
    pub created: Timestamp,
    pub ip_ranges: Vec<IpRange>,
    pub node_selector: LabelSelector,
}

/// A Kubernetes Node as far as egress cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub annotations: Labels,
    /// The IP other Nodes tunnel to (InternalIP).
    pub transport_ip: Option<IpAddr>,
    /// `spec.podCIDR`, e.g. `10.244.1.0/24` (absent when the Node has none or one no Node can
    /// have: see `ovs_egress_inputs::parse_pod_cidr`).
    pub pod_cidr: Option<IpNetwork>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName`; `None` while not scheduled.
    pub node_name: Option<String>,
    pub ips: Vec<IpAddr>,
    pub phase: PodPhase,
    pub host_network: bool,
}

/// Knobs that change decisions and must be equal on every agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// `egress.maxEgressIPsPerNode` (1..=255); a Node annotation
    /// `node.antrea.io/max-egress-ips` overrides it per Node.
    pub max_egress_ips_per_node: u32,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            max_egress_ips_per_node: 255,
        }
    }
}

/// Everything `plan::compute` looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub egresses: Vec<Egress>,
    pub pools: Vec<ExternalIpPool>,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    /// IPs configured on this Node's interfaces (static egress IP ownership), `kube-ipvs0` excluded.
    pub local_ips: BTreeSet<IpAddr>,
    /// Nodes considered alive; `None` means every Node is alive.
    pub alive: Option<BTreeSet<String>>,
    pub config: PlanConfig,
}
