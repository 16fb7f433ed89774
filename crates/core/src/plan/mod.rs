//! ClusterView → NodePlan: everything one Node must program and report. Pure, deterministic,
//! independent of input order; it must never do I/O or depend on the order of `ClusterView`'s
//! vectors.
//!
//! Decisions made here:
//! - a local Pod's effective Egress is the oldest matching one (creationTimestamp, then name),
//!   whether or not that Egress has a usable IP yet; the other matching Egresses are its losers;
//! - an Egress's IP is local when placement puts it on this Node (pool Egress) or when this Node
//!   has it configured (static Egress); every local IP gets a mark and a SNAT rule, whether the
//!   Pods using it are local or tunnelled to us;
//! - an Egress without a usable IP gives its Pods no egress treatment (default masquerade) and
//!   says why in `IPAssigned`; with the failure policy `drop` their external traffic is dropped
//!   instead, and `IPAssigned` says that too.

pub mod marks;
pub mod membership;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterView, Egress, FailurePolicy};
use crate::placement;
use membership::NamespaceLabels;
pub use status::{Condition, ConditionStatus, EgressStatus, Reason};

/// What one Node must program and report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub node: String,
    /// Local Pods selected by at least one Egress, keyed `namespace/name`.
    pub pods: BTreeMap<String, PodBinding>,
    /// Every egress IP a local Pod uses, and whether this Node holds it.
    pub egress_ips: BTreeMap<IpAddr, IpLocality>,
    /// One SNAT rule per egress IP held by this Node (also for IPs only Pods on other Nodes
    /// use), ordered by mark.
    pub snat_rules: Vec<SnatRule>,
    /// Pool egress IPs placement puts on this Node: the Node must configure them.
    pub hold_ips: BTreeSet<IpAddr>,
    /// The status of every Egress as this Node sees it, by Egress name.
    pub statuses: BTreeMap<String, EgressStatus>,
}

/// The Egress of one local Pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodBinding {
    /// The Pod's IPs (`status.podIPs`).
    pub ips: Vec<IpAddr>,
    /// The effective Egress.
    pub egress: String,
    /// The IP its traffic leaves with; `None` when the effective Egress has no usable IP (the
    /// Pod keeps the Node's default masquerade).
    pub egress_ip: Option<IpAddr>,
    /// Other Egresses selecting the Pod that lost the tie-break, oldest first.
    pub losers: Vec<String>,
    /// No egress IP and the Egress's failure policy is `drop`: the Pod's external traffic is
    /// dropped rather than leave with the Node's IP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_external: bool,
}

/// Whether an egress IP is held here (SNAT with `mark`) or elsewhere (tunnel to the IP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "where", rename_all = "lowercase")]
pub enum IpLocality {
    Local {
        mark: u8,
    },
    /// Held by another Node: `holder` names it for pool IPs; a static IP configured elsewhere
    /// has no known holder.
    Remote {
        #[serde(skip_serializing_if = "Option::is_none")]
        holder: Option<String>,
    },
}

/// `-m mark --mark <mark>/0xff -j SNAT --to-source <ip>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatRule {
    pub ip: IpAddr,
    pub mark: u8,
}

impl NodePlan {
    /// The mark of a local egress IP.
    pub fn mark_of(&self, ip: IpAddr) -> Option<u8> {
        self.snat_rules.iter().find(|r| r.ip == ip).map(|r| r.mark)
    }
}

/// What `IPAssigned` adds when an Egress with the failure policy `drop` has no usable IP.
pub const DROPPING: &str = "external traffic of its Pods is dropped (failure policy drop)";

/// Where an Egress's IP is, from this Node's point of view.
enum Resolution {
    /// Held by this Node.
    Local(IpAddr),
    /// Held by another Node: named for pool IPs, unknown for static IPs configured elsewhere.
    Remote(IpAddr, Option<String>),
    /// No usable IP, and why (the `IPAssigned` error).
    Unusable(String),
}

/// Compute the plan of `node`. `previous` is the last plan of the same Node: IPs that stay local
/// keep their marks.
pub fn compute(view: &ClusterView, node: &str, previous: Option<&NodePlan>) -> NodePlan {
    compute_keeping(view, node, previous, &BTreeSet::new())
}

/// [`compute`], but this Node still holds the pool IPs of `keep` that placement gives to another
/// Node (make before break: the agent keeps an IP it is giving up until the next holder has
/// announced it). A kept IP keeps its mark, SNAT rule and address, and this Node's Pods using it
/// leave through it here; its Egresses' statuses name the next holder, which writes them.
pub fn compute_keeping(
    view: &ClusterView,
    node: &str,
    previous: Option<&NodePlan>,
    keep: &BTreeSet<IpAddr>,
) -> NodePlan {
    let mut egresses: Vec<&Egress> = view.egresses.iter().collect();
    egresses.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let resolutions: Vec<Resolution> = resolve(view, node, &egresses);

    let kept: Vec<IpAddr> = resolutions
        .iter()
        .filter_map(|r| match r {
            Resolution::Remote(ip, Some(_)) if keep.contains(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    let local_ips: Vec<IpAddr> = resolutions
        .iter()
        .filter_map(|r| match r {
            Resolution::Local(ip) => Some(*ip),
            _ => None,
        })
        .chain(kept.iter().copied())
        .collect();
    let previous_marks: BTreeMap<IpAddr, u8> = previous
        .map(|p| p.snat_rules.iter().map(|r| (r.ip, r.mark)).collect())
        .unwrap_or_default();
    let marks = marks::assign(&local_ips, &previous_marks);

    let mut plan = NodePlan {
        node: node.to_string(),
        snat_rules: marks_to_rules(&marks),
        ..NodePlan::default()
    };
    let writers = Writers::new(view);
    for (egress, resolution) in egresses.iter().zip(&resolutions) {
        if let Resolution::Local(ip) = resolution
            && egress
                .external_ip_pool
                .as_deref()
                .is_some_and(|p| !p.is_empty())
        {
            plan.hold_ips.insert(*ip);
        }
        let status = egress_status(egress, resolution, node, &marks, &writers);
        plan.statuses.insert(egress.name.clone(), status);
    }
    plan.hold_ips
        .extend(kept.into_iter().filter(|ip| marks.contains_key(ip)));
    bind_local_pods(view, node, &egresses, &resolutions, &marks, &mut plan);
    plan
}

/// Resolve every Egress (in `egresses` order) to where its IP is.
fn resolve(view: &ClusterView, node: &str, egresses: &[&Egress]) -> Vec<Resolution> {
    let has_pool = |e: &Egress| e.external_ip_pool.as_deref().is_some_and(|p| !p.is_empty());
    let has_ip = |e: &Egress| e.egress_ip.as_deref().is_some_and(|ip| !ip.is_empty());
    // Placement looks at the whole cluster; skip it when no Egress needs it.
    let placements = if egresses.iter().any(|e| has_pool(e) && has_ip(e)) {
        placement::place(view)
    } else {
        BTreeMap::new()
    };
    egresses
        .iter()
        .map(|egress| {
            let ip_text = egress.egress_ip.as_deref().filter(|ip| !ip.is_empty());
            let pool = egress.external_ip_pool.as_deref().filter(|p| !p.is_empty());
            let Some(ip_text) = ip_text else {
                return Resolution::Unusable(match pool {
                    Some(pool) => {
                        format!("EgressIP is not allocated yet from ExternalIPPool {pool}")
                    }
                    None => "neither spec.egressIP nor spec.externalIPPool is set".to_string(),
                });
            };
            let Ok(ip) = ip_text.parse::<IpAddr>() else {
                return Resolution::Unusable(format!(
                    "spec.egressIP {ip_text:?} is not a valid IP address"
                ));
            };
            if pool.is_none() {
                return if view.local_ips.contains(&ip) {
                    Resolution::Local(ip)
                } else {
                    Resolution::Remote(ip, None)
                };
            }
            match placements.get(&egress.name) {
                Some(Ok((ip, holder))) if holder == node => Resolution::Local(*ip),
                Some(Ok((ip, holder))) => Resolution::Remote(*ip, Some(holder.clone())),
                Some(Err(error)) => Resolution::Unusable(error.to_string()),
                None => Resolution::Unusable("EgressIP is not placed on a Node yet".to_string()),
            }
        })
        .collect()
}

fn marks_to_rules(marks: &BTreeMap<IpAddr, u8>) -> Vec<SnatRule> {
    let mut rules: Vec<SnatRule> = marks
        .iter()
        .map(|(ip, mark)| SnatRule {
            ip: *ip,
            mark: *mark,
        })
        .collect();
    rules.sort_by_key(|r| r.mark);
    rules
}

/// The status `egress` should show, seen from `node`.
fn egress_status(
    egress: &Egress,
    resolution: &Resolution,
    node: &str,
    marks: &BTreeMap<IpAddr, u8>,
    writers: &Writers<'_>,
) -> EgressStatus {
    match resolution {
        Resolution::Local(ip) => EgressStatus {
            egress_node: node.to_string(),
            egress_ip: ip.to_string(),
            ip_assigned: Some(if marks.contains_key(ip) {
                Condition::assigned()
            } else {
                let error = format!(
                    "no SNAT mark available on Node {node}: all {} marks are in use",
                    marks::MAX_MARK
                );
                Condition::assignment_error(&match egress.failure_policy {
                    FailurePolicy::NodeIp => error,
                    FailurePolicy::Drop => format!("{error}; {DROPPING}"),
                })
            }),
            writer: true,
        },
        Resolution::Remote(ip, Some(holder)) => EgressStatus {
            egress_node: holder.clone(),
            egress_ip: ip.to_string(),
            ip_assigned: Some(Condition::assigned()),
            writer: false,
        },
        Resolution::Remote(ip, None) => EgressStatus {
            egress_node: String::new(),
            egress_ip: ip.to_string(),
            ip_assigned: None,
            writer: false,
        },
        Resolution::Unusable(error) => EgressStatus {
            egress_node: String::new(),
            egress_ip: String::new(),
            ip_assigned: Some(Condition::assignment_error(&match egress.failure_policy {
                FailurePolicy::NodeIp => error.clone(),
                FailurePolicy::Drop => format!("{error}; {DROPPING}"),
            })),
            writer: writers.first(&egress.name) == Some(node),
        },
    }
}

/// Picks the one Node that writes the status of an Egress holding no IP.
struct Writers<'a> {
    alive: Vec<&'a str>,
}

impl<'a> Writers<'a> {
    fn new(view: &'a ClusterView) -> Self {
        let alive = view
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| view.alive.as_ref().is_none_or(|a| a.contains(*n)))
            .collect();
        Self { alive }
    }

    fn first(&self, egress: &str) -> Option<&'a str> {
        placement::rank(egress.as_bytes(), self.alive.iter().copied())
            .first()
            .copied()
    }
}

/// Bind every eligible local Pod to its effective Egress.
fn bind_local_pods(
    view: &ClusterView,
    node: &str,
    egresses: &[&Egress],
    resolutions: &[Resolution],
    marks: &BTreeMap<IpAddr, u8>,
    plan: &mut NodePlan,
) {
    let mut namespaces = NamespaceLabels::new(&view.namespaces);
    let local_pods = view
        .pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(node) && membership::is_candidate(p));
    for pod in local_pods {
        let namespace_labels = namespaces.get(&pod.namespace);
        let mut matching = egresses
            .iter()
            .zip(resolutions)
            .filter(|(e, _)| membership::selects(&e.applied_to, &pod.labels, namespace_labels));
        let Some((egress, resolution)) = matching.next() else {
            continue;
        };
        let losers = matching.map(|(e, _)| e.name.clone()).collect();
        // An IP held here is local for every Egress using it (two Egresses may share an IP).
        let egress_ip = match resolution {
            Resolution::Local(ip) | Resolution::Remote(ip, _) => match marks.get(ip) {
                Some(mark) => {
                    plan.egress_ips
                        .insert(*ip, IpLocality::Local { mark: *mark });
                    Some(*ip)
                }
                None if matches!(resolution, Resolution::Local(_)) => None,
                None => {
                    let holder = match resolution {
                        Resolution::Remote(_, holder) => holder.clone(),
                        _ => None,
                    };
                    let known = plan.egress_ips.get(ip).cloned();
                    // Two Egresses may share the IP: keep a holder one of them knows.
                    if !matches!(known, Some(IpLocality::Remote { holder: Some(_) })) {
                        plan.egress_ips.insert(*ip, IpLocality::Remote { holder });
                    }
                    Some(*ip)
                }
            },
            Resolution::Unusable(_) => None,
        };
        plan.pods.insert(
            format!("{}/{}", pod.namespace, pod.name),
            PodBinding {
                ips: pod.ips.clone(),
                egress: egress.name.clone(),
                egress_ip,
                losers,
                drop_external: egress_ip.is_none() && egress.failure_policy == FailurePolicy::Drop,
            },
        );
    }
}

#[cfg(test)]
mod tests;
