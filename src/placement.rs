//! Which Node holds each pool egress IP: rendezvous (highest-random-weight) hashing of
//! (IP, Node name) with a stable hash, over alive Nodes matching the pool's nodeSelector, with a
//! per-Node capacity. Every agent computes the same answer from the same inputs, so the hash and
//! its byte encoding must never change between versions. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64;

use crate::ipam::non_empty;
use crate::model::{ClusterView, Egress, Node};

/// Node annotation that overrides `maxEgressIPsPerNode` for one Node.
pub const MAX_EGRESS_IPS_ANNOTATION: &str = "node.antrea.io/max-egress-ips";

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

    // Indexes of each pool's candidate Nodes, computed on first use.
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
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

/// The highest-weight member with room left: the first Node of `rank` that fits.
fn best_with_room(nodes: &[Candidate], members: &[usize], key_hash: u64) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for &index in members.iter().filter(|&&i| nodes[i].free > 0) {
        let w = weight(key_hash, nodes[index].hash);
        if best.is_none_or(|(top, _)| w > top) {
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
}
