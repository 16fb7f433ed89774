//! Which Node holds each pool egress IP: rendezvous (highest-random-weight) hashing of
//! (IP, Node name) with a stable hash, over alive Nodes matching the pool's nodeSelector, with a
//! per-Node capacity. Every agent computes the same answer from the same inputs. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::ClusterView;

/// Node annotation that overrides `maxEgressIPsPerNode` for one Node.
pub const MAX_EGRESS_IPS_ANNOTATION: &str = "node.antrea.io/max-egress-ips";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no Node available")]
    NoNodeAvailable,
    #[error("ExternalIPPool {0} does not exist")]
    PoolNotFound(String),
    #[error("IP {0} is not valid")]
    InvalidIp(String),
}

/// Where each schedulable Egress (one with both `egressIP` and `externalIPPool`) is held,
/// keyed by Egress name. Egresses are placed in creationTimestamp-then-name order; an IP that
/// does not fit on its best Node goes to the next-ranked one.
pub fn place(view: &ClusterView) -> BTreeMap<String, Result<(IpAddr, String), PlacementError>> {
    let _ = view;
    todo!("placement::place")
}

/// Nodes ordered by rendezvous weight for `key` (best first), ties broken by name.
pub fn rank<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let _ = (key, nodes);
    todo!("placement::rank")
}
