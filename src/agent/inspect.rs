//! Live inspection: `GET /plan` on the agent's health server returns what this Node holds and
//! programs, as JSON of the same shape as `ovs-egress render --json` (a `render::Rendered`),
//! and `ovs-egress inspect --agent URL` prints it in `render`'s text form, so a Node's actual
//! state can be compared with what `render` predicts for the same cluster.
//!
//! The handler only clones `Arc`s the agent loop and the datapath published and formats them:
//! it never waits on OVS or the API server. Before the first plan is applied it answers 503.
//! Differences from `render`: the flows use the Node's real Pod ofports and gateway MAC (the
//! `placeholders` field says so), and `allocations` shows each pool Egress's `spec.egressIP` as
//! the controller wrote it (the agent does not allocate; an allocation error shows as no IP).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::datapath::Programmed;
use ovs_egress_core::model::{Egress, Node};
use ovs_egress_core::pipeline::egress::EgressOptions;
use ovs_egress_core::plan::NodePlan;
use ovs_egress_core::render::datapath::{datapath_of, render_datapath};
use ovs_egress_core::render::{Allocation, Rendered};

/// What `placeholders` says when the flows are the ones the Node programmed.
pub const PROGRAMMED: &str = "Pod ofports and the gateway MAC are this Node's real ones (as \
     programmed for the applied plan). Pod networking flows are not shown.";

/// The plan the agent loop applied last, with the view it was computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedPlan {
    pub node: String,
    pub nodes: Vec<Node>,
    /// The alive Nodes (`None`: every Node is).
    pub alive: Option<BTreeSet<String>>,
    pub egresses: Vec<Egress>,
    pub plan: Arc<NodePlan>,
}

/// The `Rendered` of the applied plan: with the programmed flow inputs when the datapath
/// published them, else with `render`'s placeholders (status-only agents).
pub fn rendered(
    applied: &AppliedPlan,
    programmed: Option<&Programmed>,
    options: &EgressOptions,
) -> Rendered {
    let this = applied.nodes.iter().find(|n| n.name == applied.node);
    let down_nodes = match &applied.alive {
        Some(alive) => applied
            .nodes
            .iter()
            .filter(|n| !alive.contains(&n.name))
            .map(|n| n.name.clone())
            .collect(),
        None => Vec::new(),
    };
    let allocations: BTreeMap<String, Allocation> = applied
        .egresses
        .iter()
        .filter_map(|e| {
            let pool = e.external_ip_pool.clone().filter(|p| !p.is_empty())?;
            let ip = e
                .egress_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            Some((
                e.name.clone(),
                Allocation {
                    pool,
                    ip,
                    error: None,
                },
            ))
        })
        .collect();
    let datapath = match programmed {
        Some(p) => datapath_of(&applied.plan, &p.ctx, &p.snat, PROGRAMMED.to_string()),
        None => render_datapath(&applied.nodes, &applied.node, &applied.plan, options),
    };
    Rendered {
        node: applied.node.clone(),
        transport_ip: this.and_then(|n| n.transport_ip),
        pod_cidr: this.and_then(|n| n.pod_cidr),
        down_nodes,
        allocations,
        plan: (*applied.plan).clone(),
        datapath,
    }
}

/// The inputs of `/plan`.
#[derive(Clone)]
pub struct PlanState {
    pub applied: watch::Receiver<Option<Arc<AppliedPlan>>>,
    pub programmed: watch::Receiver<Option<Arc<Programmed>>>,
    pub options: EgressOptions,
}

/// `GET /plan`.
pub fn route(state: PlanState) -> Router {
    Router::new().route("/plan", get(plan)).with_state(state)
}

async fn plan(State(state): State<PlanState>) -> Response {
    let applied = state.applied.borrow().clone();
    let programmed = state.programmed.borrow().clone();
    let Some(applied) = applied else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no plan applied yet (caches syncing or the datapath not started)\n",
        )
            .into_response();
    };
    axum::Json(rendered(&applied, programmed.as_deref(), &state.options)).into_response()
}

/// `host:port` and path prefix of an `http://` URL (or of a bare `host:port`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    if url.starts_with("https://") {
        bail!("{url}: the agent's health port speaks plain HTTP; use http://");
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        bail!("{url}: no host:port");
    }
    Ok((authority, path.trim_end_matches('/')))
}

/// Status code and body of an HTTP/1.0 response.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, &[u8])> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the agent's answer")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {:?}", head.lines().next()))?;
    Ok((status, &raw[end + 4..]))
}

/// `GET <url>/plan` from an agent. A one-request HTTP/1.0 client over a std socket on purpose:
/// the only dependency capable of it (kube's hyper stack) is far heavier than these lines.
pub fn fetch(url: &str, timeout: Duration) -> anyhow::Result<Rendered> {
    let (authority, prefix) = split_url(url)?;
    let address = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {prefix}/plan HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {url}/plan"))?;
    let (status, body) = parse_response(&raw)?;
    if status != 200 {
        bail!(
            "{url}/plan answered {status}: {}",
            String::from_utf8_lossy(body).trim()
        );
    }
    serde_json::from_slice(body).with_context(|| format!("{url}/plan: not a rendered plan"))
}

/// Command line of `ovs-egress inspect`.
#[derive(Clone, Debug, clap::Args)]
pub struct InspectArgs {
    /// The agent's health and metrics address, e.g. `http://127.0.0.1:10350`.
    #[arg(long)]
    pub agent: String,
    /// Print the JSON as the agent sent it (the shape of `render --json`).
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the agent.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// The `inspect` subcommand.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .context("--timeout must be a positive number of seconds")?;
    let rendered = fetch(&args.agent, timeout)?;
    let output = if args.json {
        serde_json::to_string_pretty(&rendered)? + "\n"
    } else {
        ovs_egress_core::render::text::to_text(&rendered)
    };
    match std::io::stdout().lock().write_all(output.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_scheme_and_path_prefix_are_understood() {
        assert_eq!(
            split_url("http://127.0.0.1:10350").unwrap(),
            ("127.0.0.1:10350", "")
        );
        assert_eq!(
            split_url("10.0.0.1:10350/").unwrap(),
            ("10.0.0.1:10350", "")
        );
        assert_eq!(
            split_url("http://proxy:80/node-4/").unwrap(),
            ("proxy:80", "/node-4")
        );
        assert!(split_url("https://x:1").is_err());
        assert!(split_url("http:///plan").is_err());
    }

    #[test]
    fn the_status_and_body_of_an_answer_are_split_at_the_blank_line() {
        let raw = b"HTTP/1.0 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nno\n";
        assert_eq!(parse_response(raw).unwrap(), (503, &b"no\n"[..]));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
    }

    #[test]
    fn the_applied_plan_renders_like_render_with_down_nodes_and_spec_allocations() {
        let node = |name: &str, ip: &str, cidr: &str| Node {
            name: name.into(),
            transport_ip: Some(ip.parse().unwrap()),
            pod_cidr: Some(cidr.parse().unwrap()),
            ..Node::default()
        };
        let egress: Egress = (&serde_json::from_value::<ovs_egress_core::api::v1beta1::Egress>(
            serde_json::json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "web"},
                "spec": {"appliedTo": {}, "externalIPPool": "pool", "egressIP": "10.10.0.50"}}),
        )
        .unwrap())
            .into();
        let applied = AppliedPlan {
            node: "a".into(),
            nodes: vec![
                node("a", "10.10.0.1", "10.244.1.0/24"),
                node("b", "10.10.0.2", "10.244.2.0/24"),
            ],
            alive: Some(BTreeSet::from(["a".to_string()])),
            egresses: vec![egress],
            plan: Arc::new(NodePlan {
                node: "a".into(),
                ..NodePlan::default()
            }),
        };
        let out = rendered(&applied, None, &EgressOptions::default());
        assert_eq!(out.node, "a");
        assert_eq!(out.transport_ip, Some("10.10.0.1".parse().unwrap()));
        assert_eq!(out.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(out.down_nodes, ["b"]);
        assert_eq!(
            out.allocations["web"],
            Allocation {
                pool: "pool".into(),
                ip: Some("10.10.0.50".parse().unwrap()),
                error: None
            }
        );
        // The JSON reads back (what `inspect` does) and prints as render's text.
        let json = serde_json::to_string(&out).unwrap();
        let back: Rendered = serde_json::from_str(&json).unwrap();
        assert_eq!(back, out);
        assert!(
            ovs_egress_core::render::text::to_text(&back)
                .starts_with("Node a  transport IP 10.10.0.1")
        );
    }
}
