//! Which Node holds each pool egress IP: rendezvous (highest-random-weight) hashing of
//! (IP, Node name) with a stable hash, over alive Nodes matching the pool's nodeSelector and not
//! drained (annotation [`DRAIN_ANNOTATION`] `"true"`), with a per-Node capacity. Every agent computes the same answer from the same inputs, so the hash and
//! its byte encoding must never change between versions. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64;

use crate::ipam::non_empty;
use crate::model::{ClusterView, Egress, Node};

/// Node annotation that overrides `maxEgressIPsPerNode` for one Node.
pub const MAX_EGRESS_IPS_ANNOTATION: &str = "node.antrea.io/max-egress-ips";

/// Node annotation that, set to `"true"`, moves every egress IP away from the Node (as for a
/// Node that is gone). `kubectl cordon` alone does not: it is about Pods, not egress IPs.
pub const DRAIN_ANNOTATION: &str = "ovs-egress.io/drain";

/// Whether `node` is drained of egress IPs (its [`DRAIN_ANNOTATION`] is exactly `"true"`).
pub fn drained(node: &Node) -> bool {
    node.annotations
        .get(DRAIN_ANNOTATION)
        .is_some_and(|value| value == "true")
}

/// A Node never holds more egress IPs than there are SNAT marks (1..=255).
pub const MAX_EGRESS_IPS_PER_NODE: u32 = 255;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no Node available")]
    NoNodeAvailable,
    #[error("ExternalIPPool {0} does not exist")]
    PoolNotFound(String),
    #[error("IP {0} is not valid")]
    InvalidIp(String),
}

/// The hashing key of an IP: its octets (4 for IPv4, 16 for IPv6).
pub fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Nodes ordered by rendezvous weight for `key` (best first), ties broken by name.
pub fn rank<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let key = xxh3_64(key);
    let mut weighted: Vec<(u64, &str)> = nodes
        .into_iter()
        .map(|name| (weight(key, xxh3_64(name.as_bytes())), name))
        .collect();
    weighted.sort_by(|(wa, na), (wb, nb)| wb.cmp(wa).then(na.cmp(nb)));
    weighted.into_iter().map(|(_, name)| name).collect()
}

/// The rendezvous weight of a Node (hash of its UTF-8 name) for a key (hash of its bytes):
/// the SplitMix64 finalizer of their XOR, a bijection, so distinct Node hashes never tie.
fn weight(key_hash: u64, node_hash: u64) -> u64 {
    let mut x = key_hash ^ node_hash;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How many egress IPs `node` may hold: the annotation when it is an integer (clamped to
/// 0..=255), else the configured default (at most 255).
pub fn node_capacity(node: &Node, default: u32) -> u32 {
    node.annotations
        .get(MAX_EGRESS_IPS_ANNOTATION)
        .and_then(|value| value.parse::<i64>().ok())
        .map_or(default.min(MAX_EGRESS_IPS_PER_NODE), |value| {
            // Clamped into 0..=255, so the cast is lossless.
            value.clamp(0, i64::from(MAX_EGRESS_IPS_PER_NODE)) as u32
        })
}

/// One Node during a placement run.
struct Candidate<'a> {
    node: &'a Node,
    hash: u64,
    free: u32,
}

/// Where each schedulable Egress (one with both `egressIP` and `externalIPPool`) is held,
/// keyed by Egress name. Egresses are placed in creationTimestamp-then-name order; an IP that
/// does not fit on its best Node goes to the next-ranked one. An IP is held by one Node: later
/// Egresses sharing it get the oldest one's result and do not count again.
pub fn place(view: &ClusterView) -> BTreeMap<String, Result<(IpAddr, String), PlacementError>> {
    let pools: BTreeMap<&str, _> = view.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut nodes: Vec<Candidate> = view
        .nodes
        .iter()
        .filter(|node| {
            view.alive
                .as_ref()
                .is_none_or(|alive| alive.contains(&node.name))
                && !drained(node)
        })
        .map(|node| Candidate {
            node,
            hash: xxh3_64(node.name.as_bytes()),
            free: node_capacity(node, view.config.max_egress_ips_per_node),
        })
        .collect();
    // Sorted by name, so that a strict "greater weight" scan keeps the smaller name on a tie.
    nodes.sort_by(|a, b| a.node.name.cmp(&b.node.name));
    nodes.dedup_by(|a, b| a.node.name == b.node.name);

    let mut egresses: Vec<(&Egress, &str, &str)> = view
        .egresses
        .iter()
        .filter_map(|e| Some((e, non_empty(&e.egress_ip)?, non_empty(&e.external_ip_pool)?)))
        .collect();
    egresses.sort_by(|(a, ..), (b, ..)| (a.created, &a.name).cmp(&(b.created, &b.name)));

    // (hash, index) of each pool's candidate Nodes, computed on first use.
    let mut members: HashMap<&str, Vec<(u64, usize)>> = HashMap::new();
    // The Node (index) holding each IP, decided by the oldest Egress using it.
    let mut held: HashMap<IpAddr, Result<usize, PlacementError>> = HashMap::new();
    let mut placed = BTreeMap::new();
    for (egress, text, pool_name) in egresses {
        let Ok(ip) = text.parse::<IpAddr>() else {
            placed.insert(
                egress.name.clone(),
                Err(PlacementError::InvalidIp(text.into())),
            );
            continue;
        };
        let Some(pool) = pools.get(pool_name) else {
            let missing = PlacementError::PoolNotFound(pool_name.into());
            placed.insert(egress.name.clone(), Err(missing));
            continue;
        };
        let holder = held.entry(ip).or_insert_with(|| {
            let members = members.entry(pool_name).or_insert_with(|| {
                (0..nodes.len())
                    .filter(|&i| pool.node_selector.matches(&nodes[i].node.labels))
                    .map(|i| (nodes[i].hash, i))
                    .collect()
            });
            let best = best_with_room(&nodes, members, xxh3_64(&ip_key(ip)))
                .ok_or(PlacementError::NoNodeAvailable)?;
            nodes[best].free -= 1;
            Ok(best)
        });
        let result = holder
            .clone()
            .map(|index| (ip, nodes[index].node.name.clone()));
        placed.insert(egress.name.clone(), result);
    }
    placed
}

/// The highest-weight member with room left: the first Node of `rank` that fits. Only a
/// member that beats the best so far has its room checked, which keeps the scan over the
/// contiguous (hash, index) pairs.
fn best_with_room(nodes: &[Candidate], members: &[(u64, usize)], key_hash: u64) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for &(hash, index) in members {
        let w = weight(key_hash, hash);
        if best.is_none_or(|(top, _)| w > top) && nodes[index].free > 0 {
            best = Some((w, index));
        }
    }
    best.map(|(_, index)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppliedTo, LabelSelector};
    use crate::model::{ExternalIpPool, PlanConfig};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    fn with_max(name: &str, max: &str) -> Node {
        let mut node = node(name);
        node.annotations
            .insert(MAX_EGRESS_IPS_ANNOTATION.into(), max.into());
        node
    }

    fn egress(name: &str, created: i64, ip: &str, pool: &str) -> Egress {
        Egress {
            name: name.into(),
            created,
            applied_to: AppliedTo::default(),
            egress_ip: Some(ip.into()),
            external_ip_pool: Some(pool.into()),
            failure_policy: Default::default(),
        }
    }

    fn pool(name: &str) -> ExternalIpPool {
        ExternalIpPool {
            name: name.into(),
            created: 0,
            ip_ranges: Vec::new(),
            node_selector: LabelSelector::default(),
        }
    }

    fn view(nodes: Vec<Node>, egresses: Vec<Egress>, max: u32) -> ClusterView {
        ClusterView {
            egresses,
            pools: vec![pool("p")],
            nodes,
            config: PlanConfig {
                max_egress_ips_per_node: max,
            },
            ..ClusterView::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Node of each placed Egress.
    fn holders(view: &ClusterView) -> BTreeMap<String, Option<String>> {
        place(view)
            .into_iter()
            .map(|(name, result)| (name, result.ok().map(|(_, node)| node)))
            .collect()
    }

    const GOLDEN_RANK: [&str; 5] = ["node-3", "node-1", "node-4", "node-2", "node-0"];

    fn top(address: &str, nodes: &[&'static str]) -> &'static str {
        rank(&ip_key(ip(address)), nodes.iter().copied())[0]
    }

    #[test]
    fn uncapped_ips_go_to_their_top_ranked_node() {
        let names = ["node1", "node2", "node3"];
        let ips = ["1.1.1.1", "1.1.1.11", "1.1.1.21"];
        let egresses = (0..3)
            .map(|i| egress(&format!("e{i}"), i, ips[i as usize], "p"))
            .collect();
        let placed = place(&view(names.iter().map(|n| node(n)).collect(), egresses, 3));
        for (i, address) in ips.iter().enumerate() {
            let expected = (ip(address), top(address, &names).to_string());
            assert_eq!(placed[&format!("e{i}")], Ok(expected));
        }
    }

    #[test]
    fn per_node_max_zero_excludes_a_node() {
        let nodes = vec![
            with_max("node1", "0"),
            with_max("node2", "2"),
            with_max("node3", "0"),
        ];
        let egresses = vec![
            egress("a", 1, "1.1.1.1", "p"),
            egress("b", 2, "1.1.1.11", "p"),
            egress("c", 3, "1.1.1.21", "p"),
        ];
        let placed = place(&view(nodes, egresses, 3));
        assert_eq!(placed["a"], Ok((ip("1.1.1.1"), "node2".into())));
        assert_eq!(placed["b"], Ok((ip("1.1.1.11"), "node2".into())));
        assert_eq!(placed["c"], Err(PlacementError::NoNodeAvailable));
    }

    #[test]
    fn overflow_goes_to_the_next_ranked_node() {
        let names = ["node1", "node2", "node3"];
        let first = "1.1.1.1";
        // The first later IP whose best Node is the same as the first IP's.
        let second = (2..=255)
            .map(|host| format!("1.1.1.{host}"))
            .find(|address| top(address, &names) == top(first, &names))
            .unwrap();
        let egresses = vec![egress("b", 2, &second, "p"), egress("a", 1, first, "p")];
        let placed = place(&view(names.iter().map(|n| node(n)).collect(), egresses, 1));
        let next = rank(&ip_key(ip(&second)), names)[1];
        assert_eq!(placed["a"], Ok((ip(first), top(first, &names).into())));
        assert_eq!(placed["b"], Ok((ip(&second), next.into())));
    }

    #[test]
    fn capacity_one_spreads_three_ips_over_three_nodes() {
        let names = ["node1", "node2", "node3"];
        let egresses = vec![
            egress("a", 1, "1.1.1.1", "p"),
            egress("b", 2, "1.1.1.11", "p"),
            egress("c", 3, "1.1.1.21", "p"),
        ];
        let held = holders(&view(names.iter().map(|n| node(n)).collect(), egresses, 1));
        let used: BTreeSet<_> = held.values().flatten().collect();
        assert_eq!(used.len(), 3, "{held:?}");
    }

    #[test]
    fn oldest_egresses_keep_the_last_slots() {
        let egresses = vec![
            egress("c", 3, "1.1.1.21", "p"),
            egress("b", 2, "1.1.1.11", "p"),
            egress("a", 1, "1.1.1.1", "p"),
        ];
        let held = holders(&view(vec![node("node1"), node("node3")], egresses, 1));
        assert!(held["a"].is_some() && held["b"].is_some() && held["a"] != held["b"]);
        assert_eq!(held["c"], None);
    }

    #[test]
    fn node_capacity_reads_the_annotation_and_clamps_to_255() {
        assert_eq!(node_capacity(&with_max("n", "7"), 255), 7);
        assert_eq!(node_capacity(&with_max("n", "0"), 255), 0);
        assert_eq!(node_capacity(&with_max("n", "-3"), 255), 0);
        assert_eq!(node_capacity(&with_max("n", "1000"), 1), 255);
        assert_eq!(node_capacity(&node("n"), 1000), 255);
        assert_eq!(node_capacity(&node("n"), 4), 4);
        for invalid in ["", "x", "1.5", " 2", "99999999999999999999"] {
            assert_eq!(node_capacity(&with_max("n", invalid), 4), 4, "{invalid:?}");
        }
    }

    #[test]
    fn no_node_holds_more_than_255_ips() {
        let egresses = (0..300)
            .map(|i| {
                egress(
                    &format!("e{i:03}"),
                    i,
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    "p",
                )
            })
            .collect();
        let held = holders(&view(vec![with_max("only", "1000")], egresses, 1000));
        assert_eq!(held.values().flatten().count(), 255);
        assert!(held["e254"].is_some() && held["e255"].is_none());
    }

    #[test]
    fn egresses_sharing_an_ip_count_once_and_share_its_node() {
        let egresses = vec![
            egress("a", 1, "2001:db8::1", "p"),
            egress("b", 2, "2001:db8:0::1", "p"),
            egress("c", 3, "2001:db8::2", "p"),
        ];
        let placed = place(&view(
            vec![with_max("n1", "1"), with_max("n2", "0")],
            egresses,
            9,
        ));
        assert_eq!(placed["a"], Ok((ip("2001:db8::1"), "n1".into())));
        assert_eq!(placed["b"], placed["a"]);
        assert_eq!(placed["c"], Err(PlacementError::NoNodeAvailable));
    }

    #[test]
    fn only_alive_nodes_matching_the_pool_selector_are_candidates() {
        let labelled = |name: &str| {
            let mut node = node(name);
            node.labels.insert("egress".into(), "yes".into());
            node
        };
        let mut view = view(
            vec![
                labelled("match-alive"),
                labelled("match-dead"),
                node("other"),
            ],
            (0..20)
                .map(|i| egress(&format!("e{i}"), i, &format!("10.0.0.{i}"), "p"))
                .collect(),
            255,
        );
        view.pools[0]
            .node_selector
            .match_labels
            .insert("egress".into(), "yes".into());
        view.alive = Some(["match-alive", "other"].map(String::from).into());
        let held = holders(&view);
        assert!(
            held.values().all(|n| n.as_deref() == Some("match-alive")),
            "{held:?}"
        );
        view.alive = Some(["other"].map(String::from).into());
        assert!(holders(&view).values().all(Option::is_none));
    }

    #[test]
    fn a_drained_node_holds_no_ip_and_its_ips_go_to_their_next_ranked_node() {
        let names = ["n1", "n2", "n3"];
        let egresses: Vec<Egress> = (0..30)
            .map(|i| egress(&format!("e{i}"), i, &format!("10.0.0.{i}"), "p"))
            .collect();
        let mut nodes: Vec<Node> = names.iter().map(|n| node(n)).collect();
        let before = holders(&view(nodes.clone(), egresses.clone(), 255));
        assert!(before.values().any(|n| n.as_deref() == Some("n1")));
        nodes[0]
            .annotations
            .insert(DRAIN_ANNOTATION.into(), "true".into());
        let after = holders(&view(nodes.clone(), egresses.clone(), 255));
        for (egress, holder) in &after {
            let ip: IpAddr = egresses
                .iter()
                .find(|e| e.name == *egress)
                .and_then(|e| e.egress_ip.as_deref())
                .unwrap()
                .parse()
                .unwrap();
            let ranked = rank(&ip_key(ip), names);
            let expected = ranked.into_iter().find(|n| *n != "n1");
            assert_eq!(holder.as_deref(), expected, "{egress}");
            if before[egress].as_deref() != Some("n1") {
                assert_eq!(holder, &before[egress], "{egress} moved needlessly");
            }
        }
        // Only "true" drains; anything else (or removing it) gives the IPs back.
        for value in ["false", "True", "", "yes"] {
            nodes[0]
                .annotations
                .insert(DRAIN_ANNOTATION.into(), value.into());
            assert_eq!(holders(&view(nodes.clone(), egresses.clone(), 255)), before);
        }
        // Every Node drained: no Node available.
        for node in &mut nodes {
            node.annotations
                .insert(DRAIN_ANNOTATION.into(), "true".into());
        }
        assert!(
            holders(&view(nodes, egresses, 255))
                .values()
                .all(Option::is_none)
        );
    }

    #[test]
    fn unschedulable_egresses_are_left_out_and_bad_ones_are_named() {
        let mut static_egress = egress("static", 1, "10.0.0.1", "");
        static_egress.external_ip_pool = None;
        let egresses = vec![
            static_egress,
            egress("empty-pool", 1, "10.0.0.1", ""),
            egress("no-ip-yet", 1, "", "p"),
            egress("bad-ip", 1, "10.0.0", "p"),
            egress("gone", 1, "10.0.0.2", "missing"),
        ];
        let placed = place(&view(vec![node("n")], egresses, 255));
        assert_eq!(placed.keys().collect::<Vec<_>>(), ["bad-ip", "gone"]);
        assert_eq!(
            placed["bad-ip"],
            Err(PlacementError::InvalidIp("10.0.0".into()))
        );
        assert_eq!(
            placed["gone"],
            Err(PlacementError::PoolNotFound("missing".into()))
        );
        assert_eq!(
            placed["gone"].clone().unwrap_err().to_string(),
            "ExternalIPPool missing does not exist"
        );
    }

    #[test]
    fn rank_is_a_permutation_independent_of_input_order() {
        let names = ["a", "b", "c", "d", "e", "f"];
        let key = ip_key(ip("192.0.2.7"));
        let ranked = rank(&key, names);
        let mut reversed = names;
        reversed.reverse();
        assert_eq!(rank(&key, reversed), ranked);
        let mut sorted = ranked.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }

    /// Agents of different versions must agree: this pins the hash, the byte encoding (IP
    /// octets, UTF-8 Node name) and the mixer. Change it only with a migration plan.
    #[test]
    fn rank_is_stable_across_versions() {
        let nodes: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
        let ranked = rank(&ip_key(ip("1.1.1.1")), nodes.iter().map(String::as_str));
        assert_eq!(ranked, GOLDEN_RANK);
    }

    /// Share of the busiest and idlest Node (relative to the mean) when `count` consecutive IPs
    /// from 10.0.0.1 are ranked over `nodes` Nodes without capacity limits.
    fn spread(count: u32, nodes: usize) -> (f64, f64) {
        let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
        let mut load = vec![0usize; nodes];
        for i in 0..count {
            let address = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0001 + i));
            let best = rank(&ip_key(address), names.iter().map(String::as_str))[0];
            load[names.iter().position(|n| n == best).unwrap()] += 1;
        }
        let mean = f64::from(count) / nodes as f64;
        let max = load.iter().max().copied().unwrap_or_default();
        let min = load.iter().min().copied().unwrap_or_default();
        (max as f64 / mean, min as f64 / mean)
    }

    /// Uniformity of the hash: with 50,000 IPs per-Node shares have a standard deviation of
    /// about 1.3 %, so a busiest or idlest Node beyond 4 % means a biased hash or encoding.
    #[test]
    fn ips_spread_evenly_over_nodes() {
        let (max, min) = spread(50_000, 10);
        assert!(
            max <= 1.04 && min >= 0.96,
            "max/mean {max:.3}, min/mean {min:.3}"
        );
    }

    /// 1,000 IPs over 10 Nodes: each Node's count is binomial(1000, 0.1) (σ ≈ 9.5), so for any
    /// unbiased stateless hash max/mean is about 1.15 in the median and above 1.25 for only a
    /// few percent of IP sets. 10.0.0.1..=10.0.3.232 measures 1.17; see benches/alloc.rs.
    #[test]
    fn thousand_ips_over_ten_nodes_stay_within_25_percent_of_the_mean() {
        let (max, _) = spread(1000, 10);
        assert!(max <= 1.25, "max/mean {max:.3}");
    }

    /// A generated cluster: Nodes `n<i>` (some labelled `zone=a`, some with a max annotation),
    /// pools `all` (every Node) and `zone-a`, Egresses sharing IPs of 10.0.0.0/26.
    fn generated_view(
        nodes: &[(bool, Option<u8>)],
        egresses: &[(i64, u8, bool)],
        default_max: u32,
    ) -> ClusterView {
        let nodes = nodes
            .iter()
            .enumerate()
            .map(|(i, (zone_a, max))| {
                let mut node = match max {
                    Some(max) => with_max(&format!("n{i}"), &max.to_string()),
                    None => node(&format!("n{i}")),
                };
                if *zone_a {
                    node.labels.insert("zone".into(), "a".into());
                }
                node
            })
            .collect();
        let egresses = egresses
            .iter()
            .enumerate()
            .map(|(i, (created, host, zoned))| {
                let pool = if *zoned { "zone-a" } else { "all" };
                egress(&format!("e{i}"), *created, &format!("10.0.0.{host}"), pool)
            })
            .collect();
        let mut zone_a = pool("zone-a");
        zone_a
            .node_selector
            .match_labels
            .insert("zone".into(), "a".into());
        let mut view = view(nodes, egresses, default_max);
        view.pools = vec![pool("all"), zone_a];
        view
    }

    fn node_specs(max: Option<u8>) -> impl Strategy<Value = Vec<(bool, Option<u8>)>> {
        let max = match max {
            Some(limit) => prop::option::of(0..=limit).boxed(),
            None => Just(None).boxed(),
        };
        prop::collection::vec((any::<bool>(), max), 1..12)
    }

    fn egress_specs() -> impl Strategy<Value = Vec<(i64, u8, bool)>> {
        prop::collection::vec((0i64..4, 0u8..64, any::<bool>()), 0..60)
    }

    proptest! {
        #[test]
        fn placement_is_independent_of_input_order(
            (view, nodes, egresses) in (node_specs(Some(4)), egress_specs(), 0u32..6)
                .prop_map(|(nodes, egresses, max)| generated_view(&nodes, &egresses, max))
                .prop_flat_map(|view| {
                    let nodes = Just(view.nodes.clone()).prop_shuffle();
                    let egresses = Just(view.egresses.clone()).prop_shuffle();
                    (Just(view), nodes, egresses)
                }),
        ) {
            let mut shuffled = view.clone();
            shuffled.nodes = nodes;
            shuffled.egresses = egresses;
            shuffled.pools.reverse();
            prop_assert_eq!(place(&shuffled), place(&view));
        }

        #[test]
        fn removing_a_node_moves_only_its_ips(
            (nodes, egresses) in (node_specs(None), egress_specs()),
            victim in any::<prop::sample::Index>(),
            mark_dead in any::<bool>(),
        ) {
            let view = generated_view(&nodes, &egresses, 255);
            let victim = view.nodes[victim.index(view.nodes.len())].name.clone();
            let mut without = view.clone();
            if mark_dead {
                let alive = view.nodes.iter().map(|n| n.name.clone()).filter(|n| *n != victim);
                without.alive = Some(alive.collect());
            } else {
                without.nodes.retain(|n| n.name != victim);
            }
            let (before, after) = (holders(&view), holders(&without));
            for (egress, node) in &before {
                if node.as_deref() == Some(victim.as_str()) {
                    prop_assert_ne!(after[egress].as_deref(), Some(victim.as_str()));
                } else {
                    prop_assert_eq!(&after[egress], node, "{} moved", egress);
                }
            }
        }
    }
}
