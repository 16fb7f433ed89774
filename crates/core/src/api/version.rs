//! One definition of the `Egress` and `ExternalIPPool` types for every served version. The
//! versions share all fields (one stored object serves them all without conversion) and differ
//! only in the `EgressIP` printer column and the spec-level rule, which the macro takes as
//! arguments.

/// Defines `EgressSpec`/`Egress` and `ExternalIPPoolSpec`/`ExternalIPPool` for one API version,
/// with their conversions into the model types.
macro_rules! crd_version {
    (
        version: $version:tt,
        egress_ip_column: ($egress_ip_path:tt, $egress_ip_description:tt),
        spec_rule: ($spec_rule_key:tt = $spec_rule:tt) $(,)?
    ) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        use $crate::api::{
            AppliedTo, Bandwidth, EgressStatus, ExternalIPPoolStatus, IpRange, LabelSelector,
            created_seconds, non_empty,
        };
        use $crate::model;

        /// The Pods an Egress applies to and where their egress IP comes from: a static egressIP, an
        /// externalIPPool to allocate it from, or both for an IP of the pool held by one of its Nodes.
        #[derive(
            CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
        )]
        #[kube(
            group = "crd.antrea.io",
            version = $version,
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
                json_path = $egress_ip_path,
                description = $egress_ip_description
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
        #[schemars(extend($spec_rule_key = $spec_rule))]
        pub struct EgressSpec {
            pub applied_to: AppliedTo,
            #[serde(default, rename = "egressIP", skip_serializing_if = "Option::is_none")]
            #[schemars(extend("oneOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
            pub egress_ip: Option<String>,
            /// Not supported yet: rejected by validation.
            #[serde(default, rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
            #[schemars(schema_with = "crate::api::egress_ips_schema")]
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
            version = $version,
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
            #[schemars(length(max = crate::ipam::MAX_IP_RANGES))]
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
                    failure_policy: model::FailurePolicy::from_annotation(
                        egress
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(model::FAILURE_POLICY_ANNOTATION))
                            .map(String::as_str),
                    ),
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
    };
}

pub(crate) use crd_version;
