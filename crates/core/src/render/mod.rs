//! `ovs-egress render`: what one Node would program and report for a cluster given as YAML,
//! offline. It does what the controller would do first (allocate pool IPs), decides liveness from
//! annotations, then runs the pure `plan::compute`. Printing lives in [`text`] and serde (JSON);
//! nothing here touches the network or the machine.

pub mod datapath;
pub mod parse;
pub mod text;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ipam;
use crate::model::{ClusterView, Node};
use crate::pipeline::IpNetwork;
use crate::pipeline::egress::EgressOptions;
use crate::plan::{self, NodePlan};
pub use datapath::RenderedDatapath;
pub use parse::{ParseError, Parsed, parse_cluster};

/// Node annotation: `"true"` marks the Node as down (not alive) for a what-if render.
pub const DOWN_ANNOTATION: &str = "ovs-egress.io/down";
/// Node annotation: extra IPs configured on the Node (comma-separated), besides its InternalIP;
/// static Egress IPs listed here are local to it.
pub const LOCAL_IPS_ANNOTATION: &str = "ovs-egress.io/local-ips";

/// Why a parsed cluster cannot be rendered for a Node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Node {node} is not in the cluster file (Nodes: {known})")]
    NodeNotFound { node: String, known: String },
    #[error("Node {node}: annotation {LOCAL_IPS_ANNOTATION}: {text:?} is not an IP address")]
    InvalidLocalIp { node: String, text: String },
}

/// The controller's allocation for one Egress naming a pool (its `IPAllocated` condition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub pool: String,
    pub ip: Option<IpAddr>,
    /// `Cannot allocate EgressIP from ExternalIPPool: …` when it failed.
    pub error: Option<String>,
}

/// Everything `render` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub node: String,
    pub transport_ip: Option<IpAddr>,
    pub pod_cidr: Option<IpNetwork>,
    /// Nodes considered down (annotation `ovs-egress.io/down: "true"`).
    pub down_nodes: Vec<String>,
    /// By Egress name, for Egresses naming a pool.
    pub allocations: BTreeMap<String, Allocation>,
    pub plan: NodePlan,
    /// The Egress flows and SNAT rules the plan becomes.
    pub datapath: RenderedDatapath,
}

/// [`render_with`] the default datapath options (kernel datapath, Service CIDR 10.96.0.0/12).
pub fn render(view: ClusterView, node: &str) -> Result<Rendered, RenderError> {
    render_with(view, node, &EgressOptions::default())
}

/// Allocate, decide liveness and local IPs, compute the plan of `node` and what it becomes on
/// the Node's datapath.
pub fn render_with(
    mut view: ClusterView,
    node: &str,
    options: &EgressOptions,
) -> Result<Rendered, RenderError> {
    let this = view
        .nodes
        .iter()
        .find(|n| n.name == node)
        .cloned()
        .ok_or_else(|| RenderError::NodeNotFound {
            node: node.to_string(),
            known: node_names(&view).join(", "),
        })?;
    let allocations = allocate(&mut view);
    let down_nodes: Vec<String> = view
        .nodes
        .iter()
        .filter(|n| n.annotations.get(DOWN_ANNOTATION).map(String::as_str) == Some("true"))
        .map(|n| n.name.clone())
        .collect();
    view.alive = Some(
        view.nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !down_nodes.contains(n))
            .collect(),
    );
    view.local_ips = local_ips(&this)?;
    let plan = plan::compute(&view, node, None);
    let datapath = datapath::render_datapath(&view.nodes, node, &plan, options);
    Ok(Rendered {
        node: node.to_string(),
        transport_ip: this.transport_ip,
        pod_cidr: this.pod_cidr,
        down_nodes,
        allocations,
        plan,
        datapath,
    })
}

/// Node names of the cluster, sorted.
pub fn node_names(view: &ClusterView) -> Vec<String> {
    let mut names: Vec<String> = view.nodes.iter().map(|n| n.name.clone()).collect();
    names.sort();
    names
}

/// Run the controller's allocation and write the new IPs into the Egresses without one.
fn allocate(view: &mut ClusterView) -> BTreeMap<String, Allocation> {
    let allocations = ipam::allocate_all(&view.pools, &view.egresses);
    for egress in &mut view.egresses {
        if egress.egress_ip.as_deref().is_none_or(str::is_empty)
            && let Some(Ok(ip)) = allocations.by_egress.get(&egress.name)
        {
            egress.egress_ip = Some(ip.to_string());
        }
    }
    view.egresses
        .iter()
        .filter_map(|egress| {
            let pool = egress.external_ip_pool.clone()?;
            let result = allocations.by_egress.get(&egress.name)?;
            Some((
                egress.name.clone(),
                Allocation {
                    pool,
                    ip: result.as_ref().ok().copied(),
                    error: result
                        .as_ref()
                        .err()
                        .map(|e| format!("Cannot allocate EgressIP from ExternalIPPool: {e}")),
                },
            ))
        })
        .collect()
}

/// The IPs configured on `node`: its transport IP and those of its local-IPs annotation.
fn local_ips(node: &Node) -> Result<BTreeSet<IpAddr>, RenderError> {
    let mut ips: BTreeSet<IpAddr> = node.transport_ip.into_iter().collect();
    let listed = node
        .annotations
        .get(LOCAL_IPS_ANNOTATION)
        .map(String::as_str);
    for text in listed.unwrap_or("").split(',').map(str::trim) {
        if text.is_empty() {
            continue;
        }
        let ip = text.parse().map_err(|_| RenderError::InvalidLocalIp {
            node: node.name.clone(),
            text: text.to_string(),
        })?;
        ips.insert(ip);
    }
    Ok(ips)
}

#[cfg(test)]
mod tests;
