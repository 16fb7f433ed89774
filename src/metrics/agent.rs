//! The agent's families. Counters and histograms are bumped where things happen (the agent
//! loop, the OpenFlow programmer, the iptables applier, the runtime's port acknowledgements);
//! what follows from the applied plan (egress IPs held, SNAT rules, selected Pods per Egress,
//! Pods matched by several Egresses) is derived at scrape time by the pure functions below from
//! the last [`PlanSnapshot`] the agent loop handed over, so applying a plan costs one `Arc` swap.
//!
//! The membership's families (other Nodes by state, datagrams dropped by reason) are read at
//! scrape time from the membership's last published state (a `watch` the agent hands over with
//! [`AgentMetrics::set_membership`]); the failover duration is observed by the agent loop when it
//! takes an IP over from a Node that is gone. The `fenced` reason of the assignment counters is
//! exported (at 0) but not told apart yet. SNAT connections per egress IP (conntrack) and drift
//! repairs by kind are other issues' families.
//! Nothing here may do I/O or hold a lock while anything else than memory is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::membership::MemberCounts;
use crate::membership::seal::DropCounts;
use ovs_egress_core::plan::{ConditionStatus, EgressStatus, NodePlan};

/// Why this Node took or gave up an egress IP: `failover` (taken from a Node that is gone),
/// `drain` (handed over by an agent stopping, or moved off a drained Node), `deleted` (its
/// Egress is gone), `placement` (everything else); `fenced` is not told apart yet.
pub const REASONS: [&str; 5] = ["placement", "failover", "drain", "fenced", "deleted"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The agent's process-wide families.
#[derive(Debug)]
pub struct AgentMetrics {
    pub assignments: Family<ReasonLabels, Counter>,
    pub releases: Family<ReasonLabels, Counter>,
    /// Input change seen → plan applied (flows, rules and addresses), seconds.
    pub realization: Histogram,
    /// The last realization latency, seconds.
    pub last_realization: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub bundle_duration: Histogram,
    pub bundle_flows: Histogram,
    pub iptables_apply: Histogram,
    /// Pod ports acknowledged to the CNI plugin (their flows, Egress included, are in).
    pub port_acks: Counter,
    /// An IP taken over from a Node that is gone: membership change seen → IP applied and
    /// announced here, seconds.
    pub failover: Histogram,
    /// An IP taken over from a Node that is gone: last datagram heard from that Node → IP
    /// applied and announced here, seconds.
    pub failover_since_contact: Histogram,
    /// The membership's published state (members by state, drops), when it runs.
    membership: Mutex<Option<tokio::sync::watch::Receiver<crate::membership::State>>>,
    /// Flows the programmer owns, by table name (replaced after every successful sync).
    flows: Mutex<Arc<BTreeMap<String, u64>>>,
    /// The last applied plan, for the derived families.
    snapshot: Mutex<Option<Arc<PlanSnapshot>>>,
}

static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| {
    let assignments = Family::<ReasonLabels, Counter>::default();
    let releases = Family::<ReasonLabels, Counter>::default();
    for reason in REASONS {
        // Every reason is exported from the start, so rates work from the first scrape.
        let _ = assignments.get_or_create(&ReasonLabels { reason });
        let _ = releases.get_or_create(&ReasonLabels { reason });
    }
    AgentMetrics {
        assignments,
        releases,
        realization: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        last_realization: Gauge::default(),
        bundle_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        bundle_flows: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
        iptables_apply: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        port_acks: Counter::default(),
        failover: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
        failover_since_contact: Histogram::new(exponential_buckets(0.05, 2.0, 11)),
        membership: Mutex::new(None),
        flows: Mutex::new(Arc::new(BTreeMap::new())),
        snapshot: Mutex::new(None),
    }
});

/// The agent's families (one set per process).
pub fn metrics() -> &'static AgentMetrics {
    &METRICS
}

impl AgentMetrics {
    /// Count an assignment (`assigned`) or a release for `reason`.
    pub fn count_change(&self, assigned: bool, reason: &'static str) {
        let family = if assigned {
            &self.assignments
        } else {
            &self.releases
        };
        family.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One realization took `seconds`.
    pub fn observe_realization(&self, seconds: f64) {
        self.realization.observe(seconds);
        self.last_realization.set(seconds);
    }

    /// An IP taken over from a Node that is gone was announced `seconds` after the change was
    /// seen.
    pub fn observe_failover(&self, seconds: f64) {
        self.failover.observe(seconds);
    }

    /// An IP taken over from a Node that is gone was announced `seconds` after that Node was
    /// last heard from.
    pub fn observe_failover_since_contact(&self, seconds: f64) {
        self.failover_since_contact.observe(seconds);
    }

    /// The membership whose state the scrape reads.
    pub fn set_membership(&self, state: tokio::sync::watch::Receiver<crate::membership::State>) {
        *lock(&self.membership) = Some(state);
    }

    /// (members by state, drops) of the membership, zeros when none runs.
    fn membership_counts(&self) -> (MemberCounts, DropCounts) {
        lock(&self.membership)
            .as_ref()
            .map(|state| {
                let state = state.borrow();
                (state.members, state.drops)
            })
            .unwrap_or_default()
    }

    /// The flows the programmer now owns, by table name.
    pub fn set_flows(&self, per_table: BTreeMap<String, u64>) {
        *lock(&self.flows) = Arc::new(per_table);
    }

    /// The plan now applied (with the statuses the datapath realized).
    pub fn set_snapshot(&self, snapshot: Arc<PlanSnapshot>) {
        *lock(&self.snapshot) = Some(snapshot);
    }

    fn snapshot(&self) -> Option<Arc<PlanSnapshot>> {
        lock(&self.snapshot).clone()
    }
}

/// A poisoned lock only means a panic elsewhere while swapping an `Arc`: the value is whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the derived families are computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanSnapshot {
    pub node: String,
    pub plan: Arc<NodePlan>,
    /// The statuses the datapath realized for `plan`.
    pub statuses: BTreeMap<String, EgressStatus>,
    /// Egress name → its `spec.externalIPPool` (absent for static Egresses).
    pub pools: BTreeMap<String, String>,
}

/// The reason label of an assignment (`assigned`) or release: an IP taken over from a Node the
/// membership declared gone is `failover`; a release of an Egress that no longer exists is
/// `deleted`; a move off a Node that is stopping (it said goodbye) or drained (annotation) is
/// `drain`; everything else is `placement`.
pub fn change_reason(
    assigned: bool,
    egress_exists: bool,
    taken_over: bool,
    drained: bool,
) -> &'static str {
    if assigned && taken_over {
        "failover"
    } else if !assigned && !egress_exists {
        "deleted"
    } else if drained {
        "drain"
    } else {
        "placement"
    }
}

/// One egress IP this Node holds: the Egresses using it (comma-separated, by name) and their
/// pool (empty for a static IP).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct HeldIp {
    pub ip: String,
    pub egress: String,
    pub pool: String,
}

/// The egress IPs `node` holds according to the realized `statuses`: `egressNode` is this Node
/// and `IPAssigned=True`. One entry per IP, so summing over Nodes counts each holder once.
pub fn held_ips(
    node: &str,
    statuses: &BTreeMap<String, EgressStatus>,
    pools: &BTreeMap<String, String>,
) -> Vec<HeldIp> {
    let mut by_ip: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, status) in statuses {
        let assigned = status
            .ip_assigned
            .as_ref()
            .is_some_and(|c| c.status == ConditionStatus::True);
        if assigned && status.egress_node == node && !status.egress_ip.is_empty() {
            by_ip.entry(&status.egress_ip).or_default().push(name);
        }
    }
    by_ip
        .into_iter()
        .map(|(ip, names)| {
            let pools: BTreeSet<&str> = names
                .iter()
                .filter_map(|n| pools.get(*n).map(String::as_str))
                .collect();
            HeldIp {
                ip: ip.to_string(),
                egress: names.join(","),
                pool: pools.into_iter().collect::<Vec<_>>().join(","),
            }
        })
        .collect()
}

/// The `state` label values of the members gauge with their counts.
pub fn member_states(counts: &MemberCounts) -> [(&'static str, u64); 4] {
    [
        ("alive", counts.alive),
        ("suspect", counts.suspect),
        ("down", counts.down),
        ("left", counts.left),
    ]
}

/// The `reason` label values of the dropped-datagrams counter with their counts.
pub fn drop_reasons(drops: &DropCounts) -> [(&'static str, u64); 6] {
    [
        ("malformed", drops.malformed),
        ("unauthenticated", drops.unauthenticated),
        ("replayed", drops.replayed),
        ("stale", drops.stale),
        ("undecodable", drops.undecodable),
        ("spoofed", drops.spoofed),
    ]
}

/// Local Pods per effective Egress (Pods whose Egress has no usable IP included).
pub fn selected_pods(plan: &NodePlan) -> BTreeMap<&str, u64> {
    let mut out: BTreeMap<&str, u64> = BTreeMap::new();
    for binding in plan.pods.values() {
        *out.entry(binding.egress.as_str()).or_default() += 1;
    }
    out
}

/// Local Pods selected by more than one Egress (the oldest wins; the others lost).
pub fn pods_with_several_egresses(plan: &NodePlan) -> u64 {
    plan.pods.values().filter(|b| !b.losers.is_empty()).count() as u64
}

/// Flow counts by table name from the tables of the flows owned.
pub fn flows_per_table(tables: impl IntoIterator<Item = u8>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for table in tables {
        let name = ovs_egress_core::pipeline::table::Table::ALL
            .iter()
            .find(|t| t.number() == table)
            .map_or_else(|| table.to_string(), |t| t.name().to_string());
        *out.entry(name).or_default() += 1;
    }
    out
}

/// The agent's registry: build and process families, and every agent family.
pub fn registry() -> Registry {
    let m = metrics();
    let mut registry = super::base_registry();
    registry.register(
        "agent_ip_assignments",
        "Egress IPs this Node started to hold, by reason.",
        m.assignments.clone(),
    );
    registry.register(
        "agent_ip_releases",
        "Egress IPs this Node stopped holding, by reason.",
        m.releases.clone(),
    );
    registry.register_with_unit(
        "agent_realization_latency",
        "From an input change seen by the agent to its plan applied (flows, SNAT rules, addresses).",
        Unit::Seconds,
        m.realization.clone(),
    );
    registry.register_with_unit(
        "agent_last_realization_latency",
        "The latest realization latency (see ovs_egress_agent_realization_latency_seconds).",
        Unit::Seconds,
        m.last_realization.clone(),
    );
    registry.register_with_unit(
        "agent_openflow_bundle_duration",
        "Time to send one OpenFlow bundle (ovs-ofctl --bundle) and have it committed.",
        Unit::Seconds,
        m.bundle_duration.clone(),
    );
    registry.register(
        "agent_openflow_bundle_flows",
        "Flow additions, changes and deletions per OpenFlow bundle.",
        m.bundle_flows.clone(),
    );
    registry.register_with_unit(
        "agent_iptables_apply_duration",
        "Time to bring the SNAT chains in line (iptables-restore per changed table).",
        Unit::Seconds,
        m.iptables_apply.clone(),
    );
    registry.register(
        "agent_cni_port_acks",
        "Pod ports acknowledged to the CNI plugin once their flows (Egress included) were in.",
        m.port_acks.clone(),
    );
    registry.register_with_unit(
        "agent_failover_duration",
        "From the membership change that made this Node take an egress IP from a Node that is \
         gone (seen by the agent) to the IP applied and announced here.",
        Unit::Seconds,
        m.failover.clone(),
    );
    registry.register_with_unit(
        "agent_failover_since_last_contact",
        "From the last membership datagram heard from a Node that is gone to an egress IP it \
         held applied and announced here (detection, lease bound and apply: the outage a \
         failover costs at most).",
        Unit::Seconds,
        m.failover_since_contact.clone(),
    );
    registry.register_collector(Box::new(Derived));
    registry
}

/// The families computed at scrape time.
#[derive(Debug)]
struct Derived;

impl Collector for Derived {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = metrics();
        let flows = lock(&m.flows).clone();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "agent_openflow_flows",
            "Flows installed by the agent on its bridge, by table.",
            None,
            gauge.metric_type(),
        )?;
        for (table, count) in flows.iter() {
            let labels = [("table", table.as_str())];
            ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let snapshot = m.snapshot();
        let empty = PlanSnapshot::default();
        let snapshot = snapshot.as_deref().unwrap_or(&empty);
        let plan = &snapshot.plan;

        let mut family = encoder.encode_descriptor(
            "agent_egress_ip_held",
            "1 for each egress IP this Node holds (SNAT rule, flows and address applied), \
             with the Egresses using it and their pool.",
            None,
            gauge.metric_type(),
        )?;
        for held in held_ips(&snapshot.node, &snapshot.statuses, &snapshot.pools) {
            ConstGauge::new(1i64).encode(family.encode_family(&held)?)?;
        }
        let rules = ConstGauge::new(plan.snat_rules.len() as i64);
        let metric = encoder.encode_descriptor(
            "agent_snat_rules",
            "SNAT rules (one per egress IP local to this Node) in the applied plan.",
            None,
            rules.metric_type(),
        )?;
        rules.encode(metric)?;
        let mut family = encoder.encode_descriptor(
            "agent_selected_pods",
            "Local Pods whose effective Egress is the labelled one.",
            None,
            gauge.metric_type(),
        )?;
        for (egress, count) in selected_pods(plan) {
            let labels = [("egress", egress)];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        let several = ConstGauge::new(pods_with_several_egresses(plan));
        let metric = encoder.encode_descriptor(
            "agent_pods_with_several_egresses",
            "Local Pods selected by more than one Egress (the oldest Egress wins).",
            None,
            several.metric_type(),
        )?;
        several.encode(metric)?;

        let (members, drops) = m.membership_counts();
        let mut family = encoder.encode_descriptor(
            "agent_membership_members",
            "The other Nodes as this agent's membership sees them, by state: alive, suspect (a \
             probe failed; still alive), down (declared down, or not heard from since the agent \
             started), left (said goodbye when its agent stopped).",
            None,
            gauge.metric_type(),
        )?;
        for (state, count) in member_states(&members) {
            let labels = [("state", state)];
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "agent_membership_datagrams_dropped",
            "Membership datagrams dropped unread, by reason: malformed, unauthenticated (forged, \
             tampered or another key), replayed, stale (clock), undecodable, spoofed (not from \
             the claimed Node's InternalIP).",
            None,
            counter.metric_type(),
        )?;
        for (reason, count) in drop_reasons(&drops) {
            let labels = [("reason", reason)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_core::plan::{Condition, PodBinding, SnatRule};

    fn status(node: &str, ip: &str, condition: Option<Condition>) -> EgressStatus {
        EgressStatus {
            egress_node: node.into(),
            egress_ip: ip.into(),
            ip_assigned: condition,
            writer: true,
        }
    }

    #[test]
    fn held_ips_are_the_realized_local_ones_once_per_ip_with_their_egresses_and_pool() {
        let statuses = BTreeMap::from([
            (
                "web".into(),
                status("a", "10.0.0.1", Some(Condition::assigned())),
            ),
            (
                "web-2".into(),
                status("a", "10.0.0.1", Some(Condition::assigned())),
            ),
            (
                "db".into(),
                status("a", "10.0.0.2", Some(Condition::assigned())),
            ),
            (
                "remote".into(),
                status("b", "10.0.0.3", Some(Condition::assigned())),
            ),
            (
                "failed".into(),
                status(
                    "a",
                    "10.0.0.4",
                    Some(Condition::assignment_error("no mark")),
                ),
            ),
            ("none".into(), status("", "", None)),
        ]);
        let pools = BTreeMap::from([("web".into(), "pool-a".into())]);
        let held = held_ips("a", &statuses, &pools);
        assert_eq!(
            held,
            [
                HeldIp {
                    ip: "10.0.0.1".into(),
                    egress: "web,web-2".into(),
                    pool: "pool-a".into()
                },
                HeldIp {
                    ip: "10.0.0.2".into(),
                    egress: "db".into(),
                    pool: String::new()
                },
            ]
        );
    }

    fn binding(egress: &str, losers: &[&str]) -> PodBinding {
        PodBinding {
            ips: vec![],
            egress: egress.into(),
            egress_ip: None,
            losers: losers.iter().map(|l| l.to_string()).collect(),
            drop_external: false,
        }
    }

    #[test]
    fn pods_are_counted_per_effective_egress_and_those_with_losers_separately() {
        let plan = NodePlan {
            pods: BTreeMap::from([
                ("prod/web-0".into(), binding("web", &[])),
                ("prod/web-1".into(), binding("web", &["all"])),
                ("prod/db-0".into(), binding("db", &["all", "other"])),
            ]),
            snat_rules: vec![SnatRule {
                ip: "10.0.0.1".parse().unwrap(),
                mark: 1,
            }],
            ..NodePlan::default()
        };
        assert_eq!(
            selected_pods(&plan),
            BTreeMap::from([("db", 1), ("web", 2)])
        );
        assert_eq!(pods_with_several_egresses(&plan), 2);
    }

    #[test]
    fn reasons_are_failover_then_deleted_then_drain_then_placement() {
        assert_eq!(change_reason(false, false, false, false), "deleted");
        assert_eq!(change_reason(false, false, false, true), "deleted");
        assert_eq!(change_reason(false, true, false, false), "placement");
        assert_eq!(change_reason(true, true, false, false), "placement");
        assert_eq!(change_reason(true, true, true, false), "failover");
        assert_eq!(change_reason(true, true, true, true), "failover");
        assert_eq!(change_reason(true, true, false, true), "drain");
        assert_eq!(change_reason(false, true, false, true), "drain");
        for assigned in [false, true] {
            for exists in [false, true] {
                for taken in [false, true] {
                    for drained in [false, true] {
                        let reason = change_reason(assigned, exists, taken, drained);
                        assert!(REASONS.contains(&reason), "{reason}");
                    }
                }
            }
        }
    }

    #[test]
    fn membership_families_name_every_state_and_reason_with_its_count() {
        let members = MemberCounts {
            alive: 3,
            suspect: 1,
            down: 2,
            left: 4,
        };
        assert_eq!(
            member_states(&members),
            [("alive", 3), ("suspect", 1), ("down", 2), ("left", 4)]
        );
        let drops = DropCounts {
            malformed: 1,
            unauthenticated: 2,
            replayed: 3,
            stale: 4,
            undecodable: 5,
            spoofed: 6,
        };
        let reasons = drop_reasons(&drops);
        assert_eq!(reasons.iter().map(|(_, n)| n).sum::<u64>(), drops.total());
        assert_eq!(reasons[1], ("unauthenticated", 2));
        assert_eq!(reasons[5], ("spoofed", 6));
    }

    #[test]
    fn flows_are_counted_by_table_name_and_unknown_tables_by_number() {
        use ovs_egress_core::pipeline::table::Table;
        let tables = [
            Table::EgressMark.number(),
            Table::EgressMark.number(),
            Table::Output.number(),
            250,
        ];
        assert_eq!(
            flows_per_table(tables),
            BTreeMap::from([
                ("250".to_string(), 1),
                ("EgressMark".to_string(), 2),
                ("Output".to_string(), 1)
            ])
        );
    }
}
