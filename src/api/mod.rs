//! The `crd.antrea.io` API: `Egress` and `ExternalIPPool` in v1alpha2 (storage) and v1beta1
//! (served), label selectors, and the validation rules the webhook enforces.

pub mod selector;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// One entry of `ExternalIPPool.spec.ipRanges`: either `cidr`, or `start` and `end` (inclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}
