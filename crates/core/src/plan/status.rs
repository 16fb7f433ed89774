//! The Egress status one Node would report (`egressNode`, `egressIP`, the `IPAssigned`
//! condition) and whether that Node is the one that writes it. Reasons and messages are Antrea's
//! (`pkg/apis/crd/v1beta1` of Antrea) so `kubectl get egress -o yaml` reads the same. Pure data; never talks to the API.

use serde::{Deserialize, Serialize};

/// `IPAssigned` message on success, as Antrea writes it.
pub const ASSIGNED_MESSAGE: &str = "EgressIP is successfully assigned to EgressNode";
/// Prefix of every `IPAssigned=False` message, as Antrea writes it.
pub const ASSIGNMENT_ERROR_PREFIX: &str = "Failed to assign the IP to EgressNode: ";

/// `status` of an Egress as this Node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressStatus {
    /// `status.egressNode`: the Node holding the IP, empty when none (or unknown here).
    pub egress_node: String,
    /// `status.egressIP`: the effective IP, empty when the Egress has none.
    pub egress_ip: String,
    /// `IPAssigned`; `None` for a static Egress whose IP is configured on another Node (this
    /// Node cannot tell which).
    pub ip_assigned: Option<Condition>,
    /// Whether this Node writes the status: the Node holding the IP does; for an Egress holding
    /// no IP exactly one Node, the first of `placement::rank(name, alive Nodes)`, does.
    pub writer: bool,
}

/// One status condition (type `IPAssigned`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
}

/// The reasons of `IPAssigned`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    Assigned,
    AssignmentError,
}

impl Condition {
    /// `IPAssigned=True`, reason `Assigned`.
    pub fn assigned() -> Self {
        Self {
            status: ConditionStatus::True,
            reason: Reason::Assigned,
            message: ASSIGNED_MESSAGE.to_string(),
        }
    }

    /// `IPAssigned=False`, reason `AssignmentError`, Antrea's message prefix before `error`.
    pub fn assignment_error(error: &str) -> Self {
        Self {
            status: ConditionStatus::False,
            reason: Reason::AssignmentError,
            message: format!("{ASSIGNMENT_ERROR_PREFIX}{error}"),
        }
    }
}
