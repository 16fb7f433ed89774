//! Events (events.k8s.io/v1) telling when this Node starts or stops holding an Egress's IP:
//! `IPAssigned` "Assigned Egress <n> with IP <ip> on Node <node>" and `IPUnassigned`
//! "Unassigned Egress <n> with IP <ip> from Node <node>", action `NodeAssignment`, regarding the
//! Egress. Publishing goes through kube-rs's `Recorder`; a failed event is logged, never fatal.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use ovs_egress_core::api::GROUP;
use ovs_egress_core::plan::{ConditionStatus, EgressStatus};

/// `reportingController` of the agent's events.
pub const REPORTING_CONTROLLER: &str = "ovs-egress-agent";

/// Egress name → (IP, uid) for the Egresses whose IP `node` holds according to `statuses` (it
/// writes them, names itself as egressNode, and reports `IPAssigned=True`).
pub fn held(
    node: &str,
    statuses: &BTreeMap<String, EgressStatus>,
    uids: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, Option<String>)> {
    statuses
        .iter()
        .filter(|(_, s)| s.writer && s.egress_node == node && !s.egress_ip.is_empty())
        .filter(|(_, s)| {
            s.ip_assigned
                .as_ref()
                .is_some_and(|c| c.status == ConditionStatus::True)
        })
        .map(|(name, s)| (name.clone(), (s.egress_ip.clone(), uids.get(name).cloned())))
        .collect()
}

/// [`held`] as the API's statuses tell it: the Egresses whose status names `node` with an IP
/// and `IPAssigned=True`. A restarted agent starts from this, so it announces only what changed
/// while it was away, never an assignment it (or its predecessor) already announced.
pub fn held_in_api(
    node: &str,
    statuses: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
    uids: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, Option<String>)> {
    statuses
        .iter()
        .filter(|(_, s)| s.egress_node.as_deref() == Some(node))
        .filter(|(_, s)| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "IPAssigned" && c.status == "True")
        })
        .filter_map(|(name, s)| {
            let ip = s.egress_ip.clone().filter(|ip| !ip.is_empty())?;
            Some((name.clone(), (ip, uids.get(name).cloned())))
        })
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

/// The Egresses this Node has just taken (`changes` with `assigned`) from another Node that can
/// no longer say so itself (not in `alive`): Egress name → that Node, from the statuses the API
/// held before. The new holder writes their `IPUnassigned` for them.
pub fn taken_over(
    node: &str,
    changes: &[Change],
    api: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
    alive: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, String> {
    changes
        .iter()
        .filter(|c| c.assigned)
        .filter_map(|c| {
            let before = api.get(&c.egress)?;
            let old = before.egress_node.as_deref()?;
            let held = before
                .conditions
                .iter()
                .any(|k| k.type_ == "IPAssigned" && k.status == "True");
            let same_ip = before.egress_ip.as_deref() == Some(c.ip.as_str());
            (old != node && held && same_ip && !alive.contains(old))
                .then(|| (c.egress.clone(), old.to_string()))
        })
        .collect()
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

    /// Publish one event about this Node; failures are logged.
    pub async fn publish(&self, change: &Change) {
        self.publish_for(change, &self.node).await;
    }

    /// Publish one event about Node `node` (this one, or an old holder that cannot); failures
    /// are logged.
    pub async fn publish_for(&self, change: &Change, node: &str) {
        let (reason, note) = if change.assigned {
            (
                "IPAssigned",
                format!(
                    "Assigned Egress {} with IP {} on Node {}",
                    change.egress, change.ip, node
                ),
            )
        } else {
            (
                "IPUnassigned",
                format!(
                    "Unassigned Egress {} with IP {} from Node {}",
                    change.egress, change.ip, node
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
    use ovs_egress_core::plan;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, (String, Option<String>)> {
        entries
            .iter()
            .map(|(n, ip)| (n.to_string(), (ip.to_string(), None)))
            .collect()
    }

    #[test]
    fn the_new_holder_unassigns_only_for_an_old_holder_that_is_gone() {
        let api_status = |node: &str| ovs_egress_core::api::EgressStatus {
            egress_node: Some(node.to_string()),
            egress_ip: Some("10.0.0.1".to_string()),
            conditions: vec![ovs_egress_core::api::EgressCondition {
                type_: "IPAssigned".into(),
                status: "True".into(),
                last_transition_time: None,
                reason: None,
                message: None,
            }],
        };
        let api = BTreeMap::from([
            ("gone".to_string(), api_status("dead")),
            ("moved".to_string(), api_status("living")),
            ("mine".to_string(), api_status("me")),
        ]);
        let change = |egress: &str| Change {
            egress: egress.into(),
            uid: None,
            ip: "10.0.0.1".into(),
            assigned: true,
        };
        let changes = [change("gone"), change("moved"), change("mine")];
        let alive = ["me", "living"].map(String::from).into();
        let taken = taken_over("me", &changes, &api, &alive);
        assert_eq!(taken, BTreeMap::from([("gone".into(), "dead".into())]));
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
    fn only_ips_this_node_writes_and_has_assigned_count_as_held() {
        let status = |node: &str, writer: bool, condition: plan::Condition| EgressStatus {
            egress_node: node.to_string(),
            egress_ip: "10.0.0.1".to_string(),
            ip_assigned: Some(condition),
            writer,
        };
        let statuses: BTreeMap<String, EgressStatus> = [
            ("mine", status("n1", true, plan::Condition::assigned())),
            ("other", status("n2", false, plan::Condition::assigned())),
            (
                "failed",
                status("n1", true, plan::Condition::assignment_error("no device")),
            ),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let uids = [("mine".to_string(), "u1".to_string())].into();
        let held = held("n1", &statuses, &uids);
        assert_eq!(
            held,
            [(
                "mine".to_string(),
                ("10.0.0.1".to_string(), Some("u1".to_string()))
            )]
            .into()
        );
    }

    #[test]
    fn ips_the_api_shows_this_node_holding_count_as_held_at_start() {
        let status = |node: &str, ip: &str, assigned: &str| ovs_egress_core::api::EgressStatus {
            egress_node: Some(node.to_string()),
            egress_ip: Some(ip.to_string()),
            conditions: vec![ovs_egress_core::api::EgressCondition {
                type_: "IPAssigned".to_string(),
                status: assigned.to_string(),
                last_transition_time: None,
                reason: None,
                message: None,
            }],
        };
        let statuses = [
            ("mine", status("n1", "10.0.0.1", "True")),
            ("other", status("n2", "10.0.0.2", "True")),
            ("failed", status("n1", "10.0.0.3", "False")),
            ("no-ip", status("n1", "", "True")),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let uids = [("mine".to_string(), "u1".to_string())].into();
        let held = held_in_api("n1", &statuses, &uids);
        let want = [(
            "mine".to_string(),
            ("10.0.0.1".to_string(), Some("u1".to_string())),
        )];
        assert_eq!(held, want.into());
        // The first plan of a restarted agent that still holds the IP changes nothing.
        assert!(changes(&held, &map(&[("mine", "10.0.0.1")])).is_empty());
    }

    #[test]
    fn no_change_no_event() {
        let same = map(&[("a", "10.0.0.1")]);
        assert!(changes(&same, &same).is_empty());
    }
}
