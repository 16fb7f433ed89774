//! The `crd.antrea.io` API: `Egress` and `ExternalIPPool` in v1alpha2 (storage) and v1beta1
//! (served), label selectors, and the validation rules the webhook enforces.
//!
//! Both versions are served from one stored object without a conversion webhook, so they carry
//! the same fields: the types below are shared and only the CRD-level attributes (version,
//! printer columns, spec-level rules) differ per version. Nothing here does I/O.

mod crd;
pub mod selector;
pub mod v1alpha2;
pub mod v1beta1;
pub mod validation;
mod version;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crd::{CRD_STORAGE_VERSION, GROUP, crd_yaml, egress_crd, external_ip_pool_crd};
pub use selector::{LabelSelector, LabelSelectorRequirement, Operator};

/// Which Pods an Egress applies to. Empty selects nothing; `podSelector` alone selects across
/// all Namespaces; `namespaceSelector` alone selects every Pod of the matching Namespaces; both
/// together is an AND.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A range of IPs: either a cidr, or a start and an end address (inclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["cidr"]}, {"required": ["start", "end"]}]))]
pub struct IpRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "cidr"))]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("oneOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("oneOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
    pub end: Option<String>,
}

/// Rate limit of the selected Pods' egress traffic, as Kubernetes quantities (e.g. 100M).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Bandwidth {
    pub rate: String,
    pub burst: String,
}

/// Where the egress IP is: written by the controller (condition IPAllocated) and by the agent
/// holding the IP (egressNode, egressIP, condition IPAssigned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressStatus {
    /// The Node holding the egress IP; empty when no Node does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_node: Option<String>,
    /// The effective egress IP; empty when it is not assigned.
    #[serde(default, rename = "egressIP", skip_serializing_if = "Option::is_none")]
    pub egress_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<EgressCondition>,
}

/// One condition of an Egress (IPAllocated or IPAssigned) or of an ExternalIPPool
/// (Allocatable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressCondition {
    /// IPAllocated or Allocatable (written by the controller), IPAssigned (by the agent).
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How many IPs of the pool exist and are allocated, and whether the controller allocates from
/// it at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalIPPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<IpPoolUsage>,
    /// `Allocatable=False` (reason `OverlapsPool`) while the controller refuses the pool
    /// because its ranges overlap an older pool; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<EgressCondition>,
}

/// The IP usage of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpPoolUsage {
    /// The number of allocatable IPs in the pool.
    pub total: i64,
    /// The number of allocated IPs.
    pub used: i64,
}

/// `metadata.creationTimestamp` as Unix seconds; 0 when absent (offline YAML).
fn created_seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// An optional spec string as the core sees it: an empty string means unset, as in Antrea
/// (v1alpha2 clients write `externalIPPool: ""`).
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// Schema of `spec.egressIPs`: each item empty (an unassigned slot), IPv4 or IPv6.
fn egress_ips_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "oneOf": [{"maxLength": 0}, {"format": "ipv4"}, {"format": "ipv6"}]
        }
    })
}
