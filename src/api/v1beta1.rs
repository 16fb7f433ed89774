//! `crd.antrea.io/v1beta1`: the current Antrea version, served beside the v1alpha2 storage
//! version. Same fields as v1alpha2 (one stored object serves both without conversion); the
//! `EgressIP` printer column shows `.status.egressIP` and the spec must use either the singular
//! (`egressIP`/`externalIPPool`) or the plural (`egressIPs`/`externalIPPools`) fields.

// Several `printcolumn(type_ = ..)` in one `#[kube]` look like duplicated attributes to clippy,
// which reports them on the derived items, out of reach of an item-level allow.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    AppliedTo, Bandwidth, EgressStatus, ExternalIPPoolStatus, IpRange, LabelSelector,
    created_seconds, non_empty,
};
use crate::model;

/// The Pods an Egress applies to and where their egress IP comes from: a static egressIP, an
/// externalIPPool to allocate it from, or both for an IP of the pool held by one of its Nodes.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "crd.antrea.io",
    version = "v1beta1",
    kind = "Egress",
    plural = "egresses",
    singular = "egress",
    shortname = "eg",
    status = "EgressStatus",
    derive = "PartialEq",
    doc = "Egress defines which egress (SNAT) IP the traffic from the selected Pods to the external network should use.",
    printcolumn(
        name = "EgressIP",
        type_ = "string",
        json_path = ".status.egressIP",
        description = "The effective SNAT IP address for the selected workloads."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.egressNode",
        description = "The Owner Node of egress IP"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"anyOf": [{"required": ["egressIP"]}, {"required": ["externalIPPool"]}]},
    {"anyOf": [{"required": ["egressIPs"]}, {"required": ["externalIPPools"]}]}
]))]
pub struct EgressSpec {
    pub applied_to: AppliedTo,
    #[serde(default, rename = "egressIP", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("oneOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
    pub egress_ip: Option<String>,
    /// Not supported yet: rejected by validation.
    #[serde(default, rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::egress_ips_schema")]
    pub egress_ips: Vec<String>,
    #[serde(
        default,
        rename = "externalIPPool",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ip_pool: Option<String>,
    /// Not supported yet: rejected by validation.
    #[serde(
        default,
        rename = "externalIPPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub external_ip_pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

/// The IP ranges egress IPs are allocated from, and the Nodes that may hold them (an empty
/// nodeSelector selects every Node).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "crd.antrea.io",
    version = "v1beta1",
    kind = "ExternalIPPool",
    plural = "externalippools",
    singular = "externalippool",
    shortname = "eip",
    status = "ExternalIPPoolStatus",
    derive = "PartialEq",
    doc = "ExternalIPPool defines one or multiple IP sets that can be used in the external network.",
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.usage.total",
        description = "The number of total IPs"
    ),
    printcolumn(
        name = "Used",
        type_ = "integer",
        json_path = ".status.usage.used",
        description = "The number of allocated IPs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalIPPoolSpec {
    #[serde(rename = "ipRanges")]
    pub ip_ranges: Vec<IpRange>,
    pub node_selector: LabelSelector,
}

impl From<&Egress> for model::Egress {
    fn from(egress: &Egress) -> Self {
        Self {
            name: egress.metadata.name.clone().unwrap_or_default(),
            created: created_seconds(&egress.metadata),
            applied_to: egress.spec.applied_to.clone(),
            egress_ip: non_empty(&egress.spec.egress_ip),
            external_ip_pool: non_empty(&egress.spec.external_ip_pool),
        }
    }
}

impl From<&ExternalIPPool> for model::ExternalIpPool {
    fn from(pool: &ExternalIPPool) -> Self {
        Self {
            name: pool.metadata.name.clone().unwrap_or_default(),
            created: created_seconds(&pool.metadata),
            ip_ranges: pool.spec.ip_ranges.clone(),
            node_selector: pool.spec.node_selector.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_converts_and_keeps_status_fields() {
        let egress: Egress = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: web\n\
             \x20 creationTimestamp: \"1970-01-01T00:01:40Z\"\nspec:\n  appliedTo: {}\n\
             \x20 externalIPPool: pool-a\n  bandwidth: {rate: 100M, burst: 200M}\n\
             status:\n  egressIP: 10.0.0.1\n  conditions:\n  - {type: IPAllocated, status: \"True\", reason: Allocated}\n",
        )
        .unwrap();
        let model = model::Egress::from(&egress);
        assert_eq!((model.name.as_str(), model.created), ("web", 100));
        assert_eq!(model.egress_ip, None);
        assert_eq!(model.external_ip_pool.as_deref(), Some("pool-a"));
        let status = egress.status.unwrap();
        assert_eq!(status.egress_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(status.conditions[0].reason.as_deref(), Some("Allocated"));
    }

    #[test]
    fn pool_converts() {
        let pool: ExternalIPPool = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {name: p}\n\
             spec:\n  ipRanges: [{cidr: 2021:1::aaa0/124}]\n  nodeSelector: {matchLabels: {a: b}}\n\
             status: {usage: {total: 15, used: 1}}\n",
        )
        .unwrap();
        let model = model::ExternalIpPool::from(&pool);
        assert_eq!((model.name.as_str(), model.created), ("p", 0));
        assert_eq!(model.node_selector.match_labels["a"], "b");
        assert_eq!(pool.status.unwrap().usage.unwrap().total, 15);
    }
}
