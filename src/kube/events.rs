//! Events (events.k8s.io/v1) telling when this Node starts or stops holding an Egress's IP:
//! `IPAssigned` "Assigned Egress <n> with IP <ip> on Node <node>" and `IPUnassigned`
//! "Unassigned Egress <n> with IP <ip> from Node <node>", action `NodeAssignment`, regarding the
//! Egress. Publishing goes through kube-rs's `Recorder`; a failed event is logged, never fatal.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::GROUP;
use crate::plan::NodePlan;

/// `reportingController` of the agent's events.
pub const REPORTING_CONTROLLER: &str = "ovs-egress-agent";

/// Egress name → (IP, uid) for the Egresses whose IP this Node holds according to `plan`.
pub fn held(
    plan: &NodePlan,
    uids: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, Option<String>)> {
    plan.statuses
        .iter()
        .filter(|(_, s)| s.writer && s.egress_node == plan.node && !s.egress_ip.is_empty())
        .map(|(name, s)| (name.clone(), (s.egress_ip.clone(), uids.get(name).cloned())))
        .collect()
}

/// One event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub egress: String,
    pub uid: Option<String>,
    pub ip: String,
    pub assigned: bool,
}

/// What changed between two `held` maps: unassignments first, then assignments.
pub fn changes(
    before: &BTreeMap<String, (String, Option<String>)>,
    after: &BTreeMap<String, (String, Option<String>)>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, (ip, uid)) in before {
        if after.get(name).map(|(i, _)| i) != Some(ip) {
            out.push(Change {
                egress: name.clone(),
                uid: uid.clone(),
                ip: ip.clone(),
                assigned: false,
            });
        }
    }
    for (name, (ip, uid)) in after {
        if before.get(name).map(|(i, _)| i) != Some(ip) {
            out.push(Change {
                egress: name.clone(),
                uid: uid.clone(),
                ip: ip.clone(),
                assigned: true,
            });
        }
    }
    out
}

/// Publishes the agent's events as `ovs-egress-agent`, instance = the Node name.
pub struct Events {
    recorder: Recorder,
    node: String,
}

impl Events {
    pub fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_string(),
            instance: Some(node.to_string()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            node: node.to_string(),
        }
    }

    /// Publish one event; failures are logged.
    pub async fn publish(&self, change: &Change) {
        let (reason, note) = if change.assigned {
            (
                "IPAssigned",
                format!(
                    "Assigned Egress {} with IP {} on Node {}",
                    change.egress, change.ip, self.node
                ),
            )
        } else {
            (
                "IPUnassigned",
                format!(
                    "Unassigned Egress {} with IP {} from Node {}",
                    change.egress, change.ip, self.node
                ),
            )
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: "NodeAssignment".to_string(),
            secondary: None,
        };
        let regarding = ObjectReference {
            api_version: Some(format!("{GROUP}/v1beta1")),
            kind: Some("Egress".to_string()),
            name: Some(change.egress.clone()),
            uid: change.uid.clone(),
            ..Default::default()
        };
        if let Err(error) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(egress = %change.egress, reason, %error, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, (String, Option<String>)> {
        entries
            .iter()
            .map(|(n, ip)| (n.to_string(), (ip.to_string(), None)))
            .collect()
    }

    #[test]
    fn new_moved_and_dropped_ips_give_events() {
        let before = map(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
        let after = map(&[("a", "10.0.0.1"), ("b", "10.0.0.9"), ("d", "10.0.0.4")]);
        let got: Vec<(String, String, bool)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.egress, c.ip, c.assigned))
            .collect();
        let want = [
            ("b", "10.0.0.2", false),
            ("c", "10.0.0.3", false),
            ("b", "10.0.0.9", true),
            ("d", "10.0.0.4", true),
        ];
        let want: Vec<(String, String, bool)> = want
            .iter()
            .map(|(n, ip, a)| (n.to_string(), ip.to_string(), *a))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn no_change_no_event() {
        let same = map(&[("a", "10.0.0.1")]);
        assert!(changes(&same, &same).is_empty());
    }
}
