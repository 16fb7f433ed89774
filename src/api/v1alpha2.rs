//! `crd.antrea.io/v1alpha2`: the version of the user guide and the storage version. Its fields
//! are those of v1beta1 (one stored object serves both versions without conversion); only the
//! `EgressIP` printer column (`.spec.egressIP`) and the spec-level rule differ.

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
    version = "v1alpha2",
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
        json_path = ".spec.egressIP",
        description = "Specifies the SNAT IP address for the selected workloads."
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
#[schemars(extend("anyOf" = [{"required": ["egressIP"]}, {"required": ["externalIPPool"]}]))]
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
    version = "v1alpha2",
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
    fn user_guide_egress_converts_with_empty_strings_as_unset_and_missing_timestamp_as_zero() {
        let egress: Egress = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: Egress\nmetadata:\n  name: egress-prod-web\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        role: web\n\
             \x20 egressIP: 10.10.0.8\n  externalIPPool: \"\"\nstatus:\n  egressNode: node01\n",
        )
        .unwrap();
        let model = model::Egress::from(&egress);
        assert_eq!(model.name, "egress-prod-web");
        assert_eq!(model.created, 0);
        assert_eq!(model.egress_ip.as_deref(), Some("10.10.0.8"));
        assert_eq!(model.external_ip_pool, None);
        let selector = model.applied_to.pod_selector.unwrap();
        assert_eq!(selector.match_labels["role"], "web");
    }

    #[test]
    fn user_guide_pool_converts_with_creation_timestamp_in_unix_seconds() {
        let pool: ExternalIPPool = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: ExternalIPPool\nmetadata:\n  name: prod\n\
             \x20 creationTimestamp: \"2021-05-01T10:00:00Z\"\nspec:\n  ipRanges:\n\
             \x20 - start: 10.10.0.2\n    end: 10.10.0.10\n  - cidr: 10.10.1.0/28\n  nodeSelector: {}\n",
        )
        .unwrap();
        let model = model::ExternalIpPool::from(&pool);
        assert_eq!(
            (model.name.as_str(), model.created),
            ("prod", 1_619_863_200)
        );
        assert_eq!(model.ip_ranges.len(), 2);
        assert_eq!(model.ip_ranges[1].cidr.as_deref(), Some("10.10.1.0/28"));
        assert!(model.node_selector.is_empty());
    }
}
