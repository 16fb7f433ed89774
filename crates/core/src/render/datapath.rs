//! What a rendered plan becomes on the Node: its Egress flows (`ovs-ofctl` syntax with table
//! names) and its iptables rules (`iptables-restore` syntax), built by the same functions the
//! agent programs with (`pipeline::egress`, `host::iptables`). Offline there is no switch, so
//! the values only a running Node knows are deterministic placeholders, listed in
//! [`PLACEHOLDERS`] and printed with the output. Pure; it never touches the machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Node;
use crate::pipeline::egress::{EgressContext, EgressOptions, egress_context, egress_flows};
use crate::pipeline::{Mac, Style, render_sorted};
use crate::plan::NodePlan;
use crate::snat::{SnatConfig, render_restore_text, snat_entries};

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

/// The Node's Egress flows and SNAT rules as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedDatapath {
    /// One flow per line, as `ovs-ofctl --names dump-flows` lays them out (round 1).
    pub flows: Vec<String>,
    /// `iptables-restore --noflush` input (and `ip6tables-restore` for IPv6), or the error.
    pub iptables: String,
    /// What the flows could not express (local egress IPs without a mark).
    pub unprogrammed: Vec<String>,
    /// Which values are placeholders (the agent's `/plan` says which are real instead).
    pub placeholders: String,
}

/// The flows and rules of `plan` on `node`, given the cluster's `nodes`, with placeholders for
/// Pod ofports and the gateway MAC.
pub fn render_datapath(
    nodes: &[Node],
    node: &str,
    plan: &NodePlan,
    options: &EgressOptions,
) -> RenderedDatapath {
    let this = nodes.iter().find(|n| n.name == node);
    let pod_ofports: BTreeMap<String, u32> =
        plan.pods.keys().cloned().zip(FIRST_POD_OFPORT..).collect();
    let ctx = egress_context(nodes, node, pod_ofports, GATEWAY_MAC, options);
    let config = SnatConfig {
        gateway: GATEWAY.to_string(),
        random_fully: false,
        carrier: options.carrier,
        pod_cidrs: this.and_then(|n| n.pod_cidr).into_iter().collect(),
    };
    datapath_of(plan, &ctx, &config, PLACEHOLDERS.to_string())
}

/// The flows of `plan` with the flow inputs `ctx` and its SNAT rules under `config`, as text;
/// `placeholders` says which values are not the Node's real ones. The agent's `/plan` calls it
/// with what it programmed.
pub fn datapath_of(
    plan: &NodePlan,
    ctx: &EgressContext,
    config: &SnatConfig,
    placeholders: String,
) -> RenderedDatapath {
    let flows = egress_flows(plan, ctx);
    let iptables = render_restore_text(&snat_entries(plan), config)
        .unwrap_or_else(|e| format!("# cannot render the SNAT rules: {e}\n"));
    RenderedDatapath {
        flows: render_sorted(&flows.flows, 1, Style::Names)
            .lines()
            .map(str::to_string)
            .collect(),
        iptables,
        unprogrammed: flows.unprogrammed.iter().map(ToString::to_string).collect(),
        placeholders,
    }
}
