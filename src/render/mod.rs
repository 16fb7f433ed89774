//! `ovs-egress render`: what one Node would program and report for a cluster given as YAML,
//! offline. It does what the controller would do first (allocate pool IPs), decides liveness from
//! annotations, then runs the pure `plan::compute`. Printing lives in [`text`] and serde (JSON);
//! nothing here touches the network or the machine.

pub mod datapath;
pub mod parse;
pub mod text;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::ipam;
use crate::model::{ClusterView, Node};
use crate::pipeline::IpCidr;
use crate::pipeline::egress::{EgressOptions, MarkCarrier};
use crate::plan::{self, NodePlan};
pub use datapath::RenderedDatapath;
pub use parse::{ParseError, Parsed, parse_cluster};

/// Node annotation: `"true"` marks the Node as down (not alive) for a what-if render.
pub const DOWN_ANNOTATION: &str = "ovs-egress.io/down";
/// Node annotation: extra IPs configured on the Node (comma-separated), besides its InternalIP;
/// static Egress IPs listed here are local to it.
pub const LOCAL_IPS_ANNOTATION: &str = "ovs-egress.io/local-ips";

/// Command line of `ovs-egress render`.
#[derive(Clone, Debug, clap::Args)]
pub struct RenderArgs {
    /// The Node whose plan to print.
    #[arg(long, required_unless_present = "list_nodes")]
    pub node: Option<String>,
    /// The cluster: multi-document YAML (or JSON) with Node, Namespace, Pod, Egress and
    /// ExternalIPPool objects.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the Node names of the file, one per line, and nothing else.
    #[arg(long, conflicts_with_all = ["node", "json"])]
    pub list_nodes: bool,
    /// The OVS datapath type: `system` carries the SNAT mark as pkt_mark, `netdev` (userspace)
    /// in the source MAC towards the gateway.
    #[arg(long, value_enum, default_value = "system")]
    pub datapath_type: DatapathTypeArg,
    /// The Service CIDR(s), IPv4 or IPv6, which bypass Egress (repeatable).
    #[arg(long = "service-cidr", default_value = "10.96.0.0/12")]
    pub service_cidrs: Vec<IpCidr>,
    /// `egress.exceptCIDRs` (IPv4 or IPv6): destinations that bypass Egress (repeatable).
    #[arg(long = "except-cidr")]
    pub except_cidrs: Vec<IpCidr>,
    /// Render even when objects break the webhook's rules (a cluster would have refused them):
    /// print the problems as warnings and render what the controller and agents would do if
    /// such objects were stored (e.g. with the webhook bypassed).
    #[arg(long)]
    pub allow_invalid: bool,
}

/// `--datapath-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathTypeArg {
    System,
    Netdev,
}

impl RenderArgs {
    fn datapath_options(&self) -> EgressOptions {
        EgressOptions {
            carrier: match self.datapath_type {
                DatapathTypeArg::System => MarkCarrier::PktMark,
                DatapathTypeArg::Netdev => MarkCarrier::SourceMac,
            },
            service_cidrs: self.service_cidrs.clone(),
            except_cidrs: self.except_cidrs.clone(),
        }
    }
}

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
    pub pod_cidr: Option<String>,
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

/// The `render` subcommand: read the file, print warnings to stderr and the result to stdout.
pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    let path = args.file.display();
    let text = read_capped(&args.file).with_context(|| format!("reading {path}"))?;
    let parsed = parse_cluster(&text).with_context(|| format!("parsing {path}"))?;
    for warning in &parsed.warnings {
        eprintln!("warning: {path}: {warning}");
    }
    let invalid = validate::admission_errors(&parsed);
    let level = if args.allow_invalid {
        "warning"
    } else {
        "error"
    };
    for error in &invalid {
        eprintln!("{level}: {path}: {error}");
    }
    if !invalid.is_empty() && !args.allow_invalid {
        anyhow::bail!(
            "{path}: {} problem(s) the validating webhook would refuse; fix them, or pass \
             --allow-invalid to render what the cluster would do with such objects stored",
            invalid.len()
        );
    }
    let output = if args.list_nodes {
        node_names(&parsed.view)
            .into_iter()
            .map(|name| name + "\n")
            .collect()
    } else {
        let node = args
            .node
            .as_deref()
            .context("--node is required unless --list-nodes is given")?;
        let rendered = render_with(parsed.view, node, &args.datapath_options())
            .with_context(|| format!("rendering {path}"))?;
        if args.json {
            serde_json::to_string_pretty(&rendered)? + "\n"
        } else {
            text::to_text(&rendered)
        }
    };
    match std::io::stdout().lock().write_all(output.as_bytes()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The file's text, refusing files larger than [`validate::MAX_INPUT_BYTES`] before parsing.
fn read_capped(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = validate::MAX_INPUT_BYTES;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        anyhow::bail!(
            "the input is larger than {} MiB, the most render reads",
            limit >> 20
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
