//! The graceful hand-over of a stopping agent (SIGTERM: a DaemonSet rolling update, a Node
//! being drained). The agent has left the membership (its goodbye takes it out of every other
//! agent's placement at once); it keeps its egress IPs, SNAT rules and flows until the next
//! holder of each IP has announced it, which the agent sees as that Egress's status, written by
//! the next holder after its apply (SNAT, flows, address, gratuitous ARP / unsolicited NA),
//! naming the next holder with `IPAssigned=True`, or until the hand-over timeout; then it
//! applies the plan without its IPs and exits. So the IP is on both Nodes for at most one
//! announcement and a status round trip, never on none.
//!
//! Pure: what is still to hand over, from what this Node holds, the plan it computes without
//! itself, and the statuses the API holds. It never decides who takes an IP (placement does).

use std::collections::BTreeMap;

/// One egress IP this Node still holds that another Node is to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub egress: String,
    pub ip: String,
    /// The Node placement gives it to once this one is gone.
    pub to: String,
}

/// What is still to hand over: of `held` (Egress name → (IP, uid), as `events::held` gives),
/// those that `next` (this Node's plan without itself) gives to another Node whose status in
/// `api` does not yet name that Node with the same IP and `IPAssigned=True`. An IP that nobody
/// else can take, or whose Egress is gone or changed its IP, has nobody to wait for.
pub fn pending(
    node: &str,
    held: &BTreeMap<String, (String, Option<String>)>,
    next: &crate::plan::NodePlan,
    api: &BTreeMap<String, crate::api::EgressStatus>,
) -> Vec<Pending> {
    held.iter()
        .filter_map(|(egress, (ip, _))| {
            let planned = next.statuses.get(egress)?;
            let to = planned.egress_node.as_str();
            if to.is_empty() || to == node || planned.egress_ip != *ip {
                return None;
            }
            let announced = api.get(egress).is_some_and(|s| {
                s.egress_node.as_deref() == Some(to)
                    && s.egress_ip.as_deref() == Some(ip.as_str())
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "IPAssigned" && c.status == "True")
            });
            (!announced).then(|| Pending {
                egress: egress.clone(),
                ip: ip.clone(),
                to: to.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Condition, EgressStatus, NodePlan};

    fn api(node: &str, ip: &str, assigned: &str) -> crate::api::EgressStatus {
        crate::api::EgressStatus {
            egress_node: Some(node.into()),
            egress_ip: Some(ip.into()),
            conditions: vec![crate::api::EgressCondition {
                type_: "IPAssigned".into(),
                status: assigned.into(),
                last_transition_time: None,
                reason: None,
                message: None,
            }],
        }
    }

    fn planned(node: &str, ip: &str) -> EgressStatus {
        EgressStatus {
            egress_node: node.into(),
            egress_ip: ip.into(),
            ip_assigned: Some(Condition::assigned()),
            writer: false,
        }
    }

    #[test]
    fn an_ip_is_handed_over_once_the_next_holder_reports_it_assigned() {
        let held: BTreeMap<String, (String, Option<String>)> = [
            ("web", "10.0.0.1"),
            ("db", "10.0.0.2"),
            ("lonely", "10.0.0.3"),
            ("gone", "10.0.0.4"),
            ("renumbered", "10.0.0.5"),
        ]
        .iter()
        .map(|(e, ip)| (e.to_string(), (ip.to_string(), None)))
        .collect();
        let next = NodePlan {
            statuses: BTreeMap::from([
                ("web".into(), planned("b", "10.0.0.1")),
                ("db".into(), planned("c", "10.0.0.2")),
                // Nobody else matches the pool: nothing to wait for.
                ("lonely".into(), planned("", "10.0.0.3")),
                ("renumbered".into(), planned("b", "10.0.0.9")),
            ]),
            ..NodePlan::default()
        };
        let mut statuses = BTreeMap::from([
            ("web".into(), api("a", "10.0.0.1", "True")),
            ("db".into(), api("c", "10.0.0.2", "False")),
        ]);
        let waiting = |s: &BTreeMap<_, _>| -> Vec<(String, String)> {
            pending("a", &held, &next, s)
                .into_iter()
                .map(|p| (p.egress, p.to))
                .collect()
        };
        assert_eq!(
            waiting(&statuses),
            [("db".into(), "c".into()), ("web".into(), "b".into())]
        );
        statuses.insert("web".into(), api("b", "10.0.0.1", "True"));
        assert_eq!(waiting(&statuses), [("db".into(), "c".into())]);
        statuses.insert("db".into(), api("c", "10.0.0.2", "True"));
        assert!(waiting(&statuses).is_empty());
    }
}
