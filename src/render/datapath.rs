//! What a rendered plan becomes on the Node: its Egress flows (`ovs-ofctl` syntax with table
//! names) and its iptables rules (`iptables-restore` syntax), built by the same functions the
//! agent programs with (`pipeline::egress`, `host::iptables`). Offline there is no switch, so
//! the values only a running Node knows are deterministic placeholders, listed in
//! [`PLACEHOLDERS`] and printed with the output. Pure; it never touches the machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::datapath_egress::snat_entries;
use crate::host::iptables::{Cidr, MarkCarrier, SnatConfig, render_restore_text};
use crate::model::ClusterView;
use crate::pipeline::egress::{EgressContext, Ipv6Bypass, egress_flows};
use crate::pipeline::{IpCidr, Ipv4Cidr, Mac, Style, render_sorted};
use crate::plan::NodePlan;

/// The first placeholder ofport: local Pods with an Egress get 100, 101, … in name order.
pub const FIRST_POD_OFPORT: u32 = 100;
/// The placeholder gateway MAC.
pub const GATEWAY_MAC: Mac = Mac([0x0a, 0x00, 0x00, 0x00, 0x00, 0x01]);
/// The gateway interface the SNAT rules exclude.
pub const GATEWAY: &str = "antrea-gw0";
/// What the printed flows show instead of values only the running Node knows.
pub const PLACEHOLDERS: &str = "Pod ofports are placeholders (100, 101, ... in Pod name order) \
     and the gateway MAC is 0a:00:00:00:00:01; the agent uses the real ones. Pod networking \
     flows are not shown.";

/// Datapath settings of `ovs-egress render` (the agent's configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathOptions {
    /// `system` (kernel: `pkt_mark`) or `netdev` (userspace: mark in the source MAC).
    pub carrier: MarkCarrier,
    /// Either family; each bypasses Egress in its own family's flows.
    pub service_cidrs: Vec<IpCidr>,
    pub except_cidrs: Vec<IpCidr>,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions {
            carrier: MarkCarrier::PktMark,
            // Kubernetes' default Service CIDR.
            service_cidrs: Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12)
                .map(IpCidr::V4)
                .into_iter()
                .collect(),
            except_cidrs: Vec::new(),
        }
    }
}

/// The Node's Egress flows and SNAT rules as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenderedDatapath {
    /// One flow per line, as `ovs-ofctl --names dump-flows` lays them out (round 1).
    pub flows: Vec<String>,
    /// `iptables-restore --noflush` input (and `ip6tables-restore` for IPv6), or the error.
    pub iptables: String,
    /// What the flows could not express (local egress IPs without a mark).
    pub unprogrammed: Vec<String>,
    pub placeholders: &'static str,
}

fn ipv4(ip: Option<IpAddr>) -> Option<Ipv4Addr> {
    match ip {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}

fn ipv4_only(cidrs: &[IpCidr]) -> Vec<Ipv4Cidr> {
    cidrs.iter().filter_map(|c| c.v4()).collect()
}

/// The flows and rules of `plan` on `node` of `view`.
pub fn render_datapath(
    view: &ClusterView,
    node: &str,
    plan: &NodePlan,
    options: &DatapathOptions,
) -> RenderedDatapath {
    let this = view.nodes.iter().find(|n| n.name == node);
    let pod_ofports: BTreeMap<String, u32> =
        plan.pods.keys().cloned().zip(FIRST_POD_OFPORT..).collect();
    let pod_cidrs: Vec<Ipv4Cidr> = view
        .nodes
        .iter()
        .filter_map(|n| n.pod_cidr.as_deref()?.parse().ok())
        .collect();
    let ctx = EgressContext {
        pod_ofports,
        gateway_mac: GATEWAY_MAC,
        local_transport_ip: ipv4(this.and_then(|n| n.transport_ip))
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        remote_transport_ips: view
            .nodes
            .iter()
            .filter(|n| n.name != node)
            .filter_map(|n| ipv4(n.transport_ip))
            .collect(),
        pod_cidrs,
        service_cidrs: ipv4_only(&options.service_cidrs),
        except_cidrs: ipv4_only(&options.except_cidrs),
        ipv6: Ipv6Bypass::from_cluster(
            &view.nodes,
            options.service_cidrs.iter().copied(),
            options.except_cidrs.iter().copied(),
        ),
        carrier: options.carrier,
    };
    let flows = egress_flows(plan, &ctx);
    let config = SnatConfig {
        gateway: GATEWAY.to_string(),
        random_fully: false,
        carrier: options.carrier,
        pod_cidrs: this
            .and_then(|n| n.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Cidr>().ok())
            .into_iter()
            .collect(),
    };
    let iptables = render_restore_text(&snat_entries(plan), &config)
        .unwrap_or_else(|e| format!("# cannot render the SNAT rules: {e}\n"));
    RenderedDatapath {
        flows: render_sorted(&flows.flows, 1, Style::Names)
            .lines()
            .map(str::to_string)
            .collect(),
        iptables,
        unprogrammed: flows.unprogrammed.iter().map(ToString::to_string).collect(),
        placeholders: PLACEHOLDERS,
    }
}
