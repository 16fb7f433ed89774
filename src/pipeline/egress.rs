//! Egress flows as a pure function of the Node's plan: which external traffic of which Pod is
//! marked for SNAT on this Node, tunnelled to the Node holding its egress IP, or left to the
//! default masquerade (facts §4.4, DESIGN §3). The flows live in L3Forwarding priority 190 and
//! EgressMark priorities 190–210, the slots `pod_network_flows` leaves free; they are appended
//! to its output before programming.
//!
//! It never decides anything the plan already decided (which Pod uses which IP, which IP is
//! local, which mark it has); it only turns those decisions into flows. How the mark reaches
//! iptables depends on the datapath ([`MarkCarrier`]): `pkt_mark` on the kernel datapath, the
//! source MAC [`mark_mac`] on the userspace one (the `mangle` rule of `host::iptables` turns it
//! back into the mark). The pipeline is IPv4 only: IPv6 egress IPs are reported, not programmed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU8;

use super::flow::{Action, Category, Cookie, CtFlag, CtState, Flow, Match};
use super::net::{GLOBAL_VIRTUAL_MAC, Ipv4Cidr, Mac};
use super::regs;
use super::table::Table;
use crate::host::iptables::{MARK_MASK, MarkCarrier, mark_mac};
use crate::plan::{IpLocality, NodePlan};

/// L3Forwarding: non-reply traffic L3 forwarding did not route elsewhere enters EgressMark.
pub const PRIORITY_TO_EGRESS: u16 = 190;
/// EgressMark: cluster destinations bypass Egress.
pub const PRIORITY_BYPASS: u16 = 210;
/// EgressMark: per Pod and per local egress IP.
pub const PRIORITY_SNAT: u16 = 200;
/// EgressMark: new tunnelled connections for no local egress IP are dropped.
pub const PRIORITY_DROP: u16 = 190;

/// What the Egress flows depend on besides the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressContext {
    /// The OpenFlow port of every attached local Pod, by `namespace/name` (the plan's key).
    pub pod_ofports: BTreeMap<String, u32>,
    pub gateway_mac: Mac,
    pub local_transport_ip: Ipv4Addr,
    pub remote_transport_ips: Vec<Ipv4Addr>,
    /// Every Node's Pod CIDR (this one's included).
    pub pod_cidrs: Vec<Ipv4Cidr>,
    pub service_cidrs: Vec<Ipv4Cidr>,
    /// `egress.exceptCIDRs`: external destinations that keep the Node's default masquerade.
    pub except_cidrs: Vec<Ipv4Cidr>,
    pub carrier: MarkCarrier,
}

/// Something of the plan the flows could not express, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unprogrammed {
    /// The Pod has no port on br-int yet: its flow follows when the port appears.
    #[error("Pod {pod}: no port on br-int yet")]
    PodNotAttached { pod: String },
    /// The pipeline carries IPv4 only.
    #[error("egress IP {ip}: IPv6 is not supported by the IPv4-only pipeline")]
    Ipv6 { ip: Ipv6Addr },
    /// The plan names a local IP without a usable mark (0 means "no mark").
    #[error("egress IP {ip}: mark 0 is not a SNAT mark")]
    NoMark { ip: IpAddr },
}

/// The Egress flows of a Node and what of its plan they leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressFlows {
    pub flows: Vec<Flow>,
    pub unprogrammed: Vec<Unprogrammed>,
}

/// Cookie of the Node-wide Egress flows.
const EGRESS: Cookie = Cookie::new(Category::Egress, 0);

/// Send to the gateway: what EgressMark's table-miss does, so the same actions everywhere.
fn to_gateway(mut actions: Vec<Action>) -> Vec<Action> {
    actions.push(Action::SetReg(regs::TO_GATEWAY));
    actions.push(Action::GotoTable(Table::L2ForwardingCalc));
    actions
}

/// The actions carrying `mark` to iptables.
fn mark_actions(mark: NonZeroU8, carrier: MarkCarrier) -> Vec<Action> {
    match carrier {
        MarkCarrier::PktMark => vec![Action::SetPktMark {
            value: u32::from(mark.get()),
            mask: MARK_MASK,
        }],
        MarkCarrier::SourceMac => vec![Action::SetEthSrc(Mac(mark_mac(mark)))],
    }
}

fn tracked() -> CtState {
    CtState::default().set(CtFlag::Trk)
}

/// The Egress flows for `plan` on a Node described by `ctx`. Deterministic for a given input.
pub fn egress_flows(plan: &NodePlan, ctx: &EgressContext) -> EgressFlows {
    let mut out = EgressFlows {
        flows: skeleton(ctx),
        unprogrammed: Vec::new(),
    };
    // Tunnelled traffic for each local egress IP gets its mark.
    let mut marks: BTreeMap<Ipv4Addr, NonZeroU8> = BTreeMap::new();
    for rule in &plan.snat_rules {
        let (ip, mark) = match (rule.ip, NonZeroU8::new(rule.mark)) {
            (IpAddr::V6(ip), _) => {
                out.unprogrammed.push(Unprogrammed::Ipv6 { ip });
                continue;
            }
            (ip, None) => {
                out.unprogrammed.push(Unprogrammed::NoMark { ip });
                continue;
            }
            (IpAddr::V4(ip), Some(mark)) => (ip, mark),
        };
        marks.insert(ip, mark);
        out.flows.push(Flow::new(
            Table::EgressMark,
            PRIORITY_SNAT,
            Match::new().ip().ct_state(tracked()).tun_dst(ip),
            to_gateway(mark_actions(mark, ctx.carrier)),
            Cookie::new(Category::Egress, u32::from(mark.get())),
        ));
    }
    for (pod, binding) in &plan.pods {
        let Some(IpAddr::V4(ip)) = binding.egress_ip else {
            continue;
        };
        let Some(&ofport) = ctx.pod_ofports.get(pod) else {
            out.unprogrammed
                .push(Unprogrammed::PodNotAttached { pod: pod.clone() });
            continue;
        };
        let cookie = Cookie::new(Category::Egress, ofport);
        let flow = match (plan.egress_ips.get(&IpAddr::V4(ip)), marks.get(&ip)) {
            (Some(IpLocality::Local { .. }), Some(&mark)) => Flow::new(
                Table::EgressMark,
                PRIORITY_SNAT,
                Match::new().ip().ct_state(tracked()).in_port(ofport),
                to_gateway(mark_actions(mark, ctx.carrier)),
                cookie,
            ),
            // Local without a mark was reported above; the Pod keeps the default masquerade.
            (Some(IpLocality::Local { .. }), None) => continue,
            (Some(IpLocality::Remote) | None, _) => Flow::new(
                Table::EgressMark,
                PRIORITY_SNAT,
                Match::new().ip().in_port(ofport),
                vec![
                    Action::SetEthSrc(ctx.gateway_mac),
                    Action::SetEthDst(GLOBAL_VIRTUAL_MAC),
                    Action::SetTunDst(ip),
                    Action::SetReg(regs::TO_TUNNEL),
                    Action::GotoTable(Table::L2ForwardingCalc),
                ],
                cookie,
            ),
        };
        out.flows.push(flow);
    }
    // Remote IPv6 IPs (local ones were reported with the SNAT rules).
    out.unprogrammed
        .extend(
            plan.egress_ips
                .iter()
                .filter_map(|(ip, locality)| match (ip, locality) {
                    (IpAddr::V6(ip), IpLocality::Remote) => Some(Unprogrammed::Ipv6 { ip: *ip }),
                    _ => None,
                }),
        );
    out
}

/// Flows that exist once per Node: entry into EgressMark, the bypasses and the drop.
fn skeleton(ctx: &EgressContext) -> Vec<Flow> {
    let non_reply = CtState::default().clear(CtFlag::Rpl).set(CtFlag::Trk);
    let mut flows = vec![
        Flow::new(
            Table::L3Forwarding,
            PRIORITY_TO_EGRESS,
            Match::new().ip().ct_state(non_reply).reg(regs::FROM_POD),
            vec![Action::GotoTable(Table::EgressMark)],
            EGRESS,
        ),
        // Tunnelled packets carry the virtual MAC; towards the gateway they need its MAC.
        Flow::new(
            Table::L3Forwarding,
            PRIORITY_TO_EGRESS,
            Match::new().ip().ct_state(non_reply).reg(regs::FROM_TUNNEL),
            vec![
                Action::SetEthDst(ctx.gateway_mac),
                Action::GotoTable(Table::EgressMark),
            ],
            EGRESS,
        ),
        Flow::new(
            Table::EgressMark,
            PRIORITY_DROP,
            Match::new()
                .ip()
                .ct_state(CtState::default().set(CtFlag::New).set(CtFlag::Trk))
                .reg(regs::FROM_TUNNEL),
            vec![Action::Drop],
            EGRESS,
        ),
    ];
    let mut bypass: Vec<Ipv4Cidr> = std::iter::once(ctx.local_transport_ip)
        .chain(ctx.remote_transport_ips.iter().copied())
        .map(Ipv4Cidr::host)
        .chain(ctx.pod_cidrs.iter().copied())
        .chain(ctx.service_cidrs.iter().copied())
        .chain(ctx.except_cidrs.iter().copied())
        .collect();
    bypass.sort();
    bypass.dedup();
    flows.extend(bypass.into_iter().map(|cidr| {
        Flow::new(
            Table::EgressMark,
            PRIORITY_BYPASS,
            Match::new().ip().nw_dst(cidr),
            to_gateway(Vec::new()),
            EGRESS,
        )
    }));
    flows
}

#[cfg(test)]
mod tests;
