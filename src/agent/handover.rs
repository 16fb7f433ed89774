//! The graceful hand-over of a stopping agent (SIGTERM: a DaemonSet rolling update, a Node
//! being drained). The agent has left the membership (its goodbye takes it out of every other
//! agent's placement at once); it keeps its egress IPs, SNAT rules and flows until the next
//! holder of each IP has announced it, which the agent sees as that Egress's status, written by
//! the next holder after its apply (SNAT, flows, address, gratuitous ARP / unsolicited NA),
//! naming the next holder with `IPAssigned=True`, or until the hand-over timeout; then it
//! applies the plan without its IPs and exits. So the IP is on both Nodes for at most one
//! announcement and a status round trip, never on none.
//!
//! The same make-before-break applies to every other move nobody's failure caused (a pool's
//! nodeSelector or a Node's labels changing, capacity, the drain annotation): while this Node is
//! alive for itself, a pool IP its last plan held that placement now gives to another alive
//! Node is [`keep`]: still held here (`plan::compute_keeping`) until that Node's status
//! announces it, or `egress.handOverTimeout` after the move began ([`Keeping`]). A Node that is
//! fenced (not alive for itself: cut off, no key) keeps nothing.
//!
//! Pure: what is still to hand over, from what this Node holds, the plan it computes, the alive
//! Nodes and the statuses the API holds. It never decides who takes an IP (placement does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
    next: &ovs_egress_core::plan::NodePlan,
    api: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
) -> Vec<Pending> {
    held.iter()
        .filter_map(|(egress, (ip, _))| {
            let planned = next.statuses.get(egress)?;
            let to = planned.egress_node.as_str();
            if to.is_empty() || to == node || planned.egress_ip != *ip {
                return None;
            }
            (!announced(api, egress, to, ip)).then(|| Pending {
                egress: egress.clone(),
                ip: ip.clone(),
                to: to.to_string(),
            })
        })
        .collect()
}

/// Whether the API's status of `egress` names `to` as holding `ip` with `IPAssigned=True`.
fn announced(
    api: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
    egress: &str,
    to: &str,
    ip: &str,
) -> bool {
    api.get(egress).is_some_and(|s| {
        s.egress_node.as_deref() == Some(to)
            && s.egress_ip.as_deref() == Some(ip)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "IPAssigned" && c.status == "True")
    })
}

/// The IPs this Node keeps while they move away, and since when.
#[derive(Clone, Debug)]
pub struct Keeping {
    /// An IP kept this long is let go.
    pub timeout: Duration,
    since: BTreeMap<IpAddr, Instant>,
}

impl Keeping {
    pub fn new(timeout: Duration) -> Keeping {
        Keeping {
            timeout,
            since: BTreeMap::new(),
        }
    }

    /// The IPs of [`moving`] kept for less than the timeout (the clock starts at their first
    /// call here and stops once they are no longer moving).
    pub fn keep(
        &mut self,
        node: &str,
        held: &BTreeSet<IpAddr>,
        next: &ovs_egress_core::plan::NodePlan,
        alive: &BTreeSet<String>,
        api: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
        now: Instant,
    ) -> BTreeSet<IpAddr> {
        let moving = moving(node, held, next, alive, api);
        self.since.retain(|ip, _| moving.contains(ip));
        moving
            .into_iter()
            .filter(|ip| now < *self.since.entry(*ip).or_insert(now) + self.timeout)
            .collect()
    }
}

/// The pool IPs to keep holding while their next holders take them (before the timeout of
/// [`Keeping`]): of `held` (the last plan's `hold_ips`), those `next` (this Node's plan now) no
/// longer holds and gives to a Node of `alive` (not this one) whose status in `api` does not
/// announce it yet; none when `node` is not in `alive` (fenced).
pub fn moving(
    node: &str,
    held: &BTreeSet<IpAddr>,
    next: &ovs_egress_core::plan::NodePlan,
    alive: &BTreeSet<String>,
    api: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
) -> BTreeSet<IpAddr> {
    let mut moving = BTreeSet::new();
    if alive.contains(node) {
        for ip in held.difference(&next.hold_ips) {
            let text = ip.to_string();
            let waiting = next.statuses.iter().any(|(egress, s)| {
                let to = s.egress_node.as_str();
                s.egress_ip == text
                    && !to.is_empty()
                    && to != node
                    && alive.contains(to)
                    && !announced(api, egress, to, &text)
            });
            if waiting {
                moving.insert(*ip);
            }
        }
    }
    moving
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_core::plan::{Condition, EgressStatus, NodePlan};

    fn api(node: &str, ip: &str, assigned: &str) -> ovs_egress_core::api::EgressStatus {
        ovs_egress_core::api::EgressStatus {
            egress_node: Some(node.into()),
            egress_ip: Some(ip.into()),
            conditions: vec![ovs_egress_core::api::EgressCondition {
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

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_moving_ip_is_kept_until_the_next_holder_announces_it_or_the_timeout_and_never_when_fenced()
    {
        let (ip1, ip2, ip3): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let held = BTreeSet::from([ip1, ip2, ip3]);
        let next = NodePlan {
            hold_ips: BTreeSet::from([ip3]),
            statuses: BTreeMap::from([
                ("web".into(), planned("b", "10.0.0.1")),
                // Its Egress now has no holder: nothing to wait for.
                ("db".into(), planned("", "10.0.0.2")),
                ("stays".into(), planned("a", "10.0.0.3")),
            ]),
            ..NodePlan::default()
        };
        let alive = set(&["a", "b"]);
        let timeout = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut keeping = Keeping::new(timeout);
        let mut statuses = BTreeMap::new();
        let mut kept = |alive: &BTreeSet<String>, api: &BTreeMap<_, _>, at: Instant| {
            keeping.keep("a", &held, &next, alive, api, at)
        };
        assert_eq!(kept(&alive, &statuses, t0), BTreeSet::from([ip1]));
        assert_eq!(
            kept(&alive, &statuses, t0 + Duration::from_secs(1)),
            BTreeSet::from([ip1])
        );
        assert!(
            kept(&alive, &statuses, t0 + timeout).is_empty(),
            "timed out"
        );
        // Fenced (not alive for itself), or the next holder not alive: nothing is kept.
        assert!(kept(&set(&["b"]), &statuses, t0).is_empty());
        assert!(kept(&set(&["a"]), &statuses, t0).is_empty());
        // Announced by the next holder: let go.
        assert_eq!(kept(&alive, &statuses, t0), BTreeSet::from([ip1]));
        statuses.insert("web".to_string(), api("b", "10.0.0.1", "True"));
        assert!(kept(&alive, &statuses, t0).is_empty());
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
