//! Egress flows as a pure function of the Node's plan: which external traffic of which Pod is
//! marked for SNAT on this Node, tunnelled to the Node holding its egress IP, or left to the
//! default masquerade, as Antrea's Egress flows do. The flows live in L3Forwarding priority 190 and
//! EgressMark priorities 190–210, the slots `pod_network_flows` leaves free; they are appended
//! to its output before programming.
//!
//! A Pod whose Egress has no IP and the failure policy `drop` gets a drop flow in the slot its
//! marking flow would take, so its external traffic is dropped instead of leaving with the
//! Node's IP.
//!
//! It never decides anything the plan already decided (which Pod uses which IP, which IP is
//! local, which mark it has); it only turns those decisions into flows. How the mark reaches
//! iptables depends on the datapath ([`MarkCarrier`]): `pkt_mark` on the kernel datapath, the
//! source MAC [`mark_mac`] on the userspace one (the `mangle` rule of `host::iptables` turns it
//! back into the mark).
//!
//! Both families, as Antrea programs each enabled one: an IPv6 egress IP gets the flows of an
//! IPv4 one, spelled `ipv6`, `ipv6_dst=` and `tun_ipv6_dst`; a Pod's IPv6 traffic is selected by
//! `ipv6,in_port=<port>`, its IPv4 traffic by `ip,in_port=<port>`. The per-family flows that do
//! not depend on the plan (the hand-off from L3Forwarding, the drop of new tunnelled
//! connections) always exist for both families, so new tunnelled connections for an IPv6 IP
//! this Node no longer holds are dropped even when it holds no IPv6 IP at all. IPv6 cluster
//! destinations come from [`Ipv6Bypass`].
//!
//! What IPv6 traffic reaches these flows today: none. Pod networking (`pipeline::pod`) is IPv4
//! only: PipelineRootClassifier passes `arp` and `ip` and drops everything else, so no IPv6
//! packet from a Pod, the gateway or the tunnel gets to L3Forwarding. The IPv6 flows are
//! complete (a test on a real switch installs them and reads them back unchanged) and start
//! carrying traffic, unchanged, once Pod networking carries IPv6 (root classifier, spoof guard
//! by the Pods' IPv6 addresses, conntrack, neighbour discovery).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU8;

use super::flow::{Action, Category, Cookie, CtFlag, CtState, Flow, Match};
use super::net::{
    GLOBAL_VIRTUAL_MAC, IpNetwork, Ipv4Network, Ipv6Network, Mac, ipv4_only, ipv6_only,
};
use super::regs;
use super::table::Table;
use crate::model::Node;
use crate::plan::{IpLocality, NodePlan};

/// The mask of the mark bits Egress owns (Antrea's SNAT mark bits 0..7). The contract between
/// the flows and the host's SNAT rules: the flows set the mark under this mask, `host::iptables`
/// matches `--mark M/MARK_MASK`.
pub const MARK_MASK: u32 = 0xff;

/// The source MAC that carries `mark` from OVS to the gateway on the userspace datapath, where
/// `pkt_mark` does not survive the trip to the kernel: `02:ee:00:00:00:<mark>` (locally
/// administered, unicast). The single source of truth: the flows set this MAC, the `mangle`
/// rule of `host::iptables` turns it back into the mark.
pub fn mark_mac(mark: NonZeroU8) -> [u8; 6] {
    [0x02, 0xee, 0x00, 0x00, 0x00, mark.get()]
}

/// How the mark travels from OVS to iptables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkCarrier {
    /// Kernel datapath (`system`): the skb keeps OVS's `pkt_mark`.
    PktMark,
    /// Userspace datapath (`netdev`): the mark is encoded in the source MAC ([`mark_mac`]) and
    /// restored by a `mangle` rule on the gateway.
    SourceMac,
}

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
    /// `0.0.0.0` when the Node has no IPv4 transport IP (no bypass flow for it then).
    pub local_transport_ip: Ipv4Addr,
    pub remote_transport_ips: Vec<Ipv4Addr>,
    /// Every Node's Pod CIDR (this one's included).
    pub pod_cidrs: Vec<Ipv4Network>,
    pub service_cidrs: Vec<Ipv4Network>,
    /// `egress.exceptCIDRs`: external destinations that keep the Node's default masquerade.
    pub except_cidrs: Vec<Ipv4Network>,
    /// The IPv6 counterparts of the transport IPs and CIDRs above (empty in an IPv4-only cluster).
    pub ipv6: Ipv6Bypass,
    pub carrier: MarkCarrier,
}

/// The agent's settings that shape the Egress flows (`render` takes the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressOptions {
    /// `system` (kernel: `pkt_mark`) or `netdev` (userspace: mark in the source MAC).
    pub carrier: MarkCarrier,
    /// Either family; each bypasses Egress in its own family's flows.
    pub service_cidrs: Vec<IpNetwork>,
    /// `egress.exceptCIDRs`, either family.
    pub except_cidrs: Vec<IpNetwork>,
}

impl Default for EgressOptions {
    fn default() -> Self {
        EgressOptions {
            carrier: MarkCarrier::PktMark,
            // Kubernetes' default Service CIDR.
            service_cidrs: Ipv4Network::new(Ipv4Addr::new(10, 96, 0, 0), 12)
                .map(IpNetwork::V4)
                .into_iter()
                .collect(),
            except_cidrs: Vec::new(),
        }
    }
}

/// The inputs of the Egress flows of Node `node`, from the cluster's Nodes and what only the
/// Node knows (its Pods' OpenFlow ports by `namespace/name`, its gateway MAC): every Node's
/// transport IPs and Pod CIDRs are cluster destinations that bypass Egress, as are the Service
/// and except CIDRs. The one place these inputs are assembled: the agent and `render` both call
/// it, so `render` shows the flows an agent installs.
pub fn egress_context(
    nodes: &[Node],
    node: &str,
    pod_ofports: BTreeMap<String, u32>,
    gateway_mac: Mac,
    options: &EgressOptions,
) -> EgressContext {
    let v4 = |ip: Option<IpAddr>| match ip {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    };
    EgressContext {
        pod_ofports,
        gateway_mac,
        local_transport_ip: nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| v4(n.transport_ip))
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        remote_transport_ips: nodes
            .iter()
            .filter(|n| n.name != node)
            .filter_map(|n| v4(n.transport_ip))
            .collect(),
        pod_cidrs: ipv4_only(nodes.iter().filter_map(|n| n.pod_cidr.as_ref())),
        service_cidrs: ipv4_only(&options.service_cidrs),
        except_cidrs: ipv4_only(&options.except_cidrs),
        ipv6: Ipv6Bypass::from_cluster(nodes, &options.service_cidrs, &options.except_cidrs),
        carrier: options.carrier,
    }
}

/// The IPv6 destinations that bypass Egress: inside the cluster, or excepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Bypass {
    /// Every Node's IPv6 transport IP (this one's included).
    pub transport_ips: Vec<Ipv6Addr>,
    /// Every Node's IPv6 Pod CIDR.
    pub pod_cidrs: Vec<Ipv6Network>,
    pub service_cidrs: Vec<Ipv6Network>,
    /// The IPv6 entries of `egress.exceptCIDRs`.
    pub except_cidrs: Vec<Ipv6Network>,
}

impl Ipv6Bypass {
    /// The IPv6 part of a cluster whose inputs mix both families: the Nodes' IPv6 transport
    /// IPs and Pod CIDRs, and the IPv6 Service and except CIDRs (IPv4 entries are skipped).
    pub fn from_cluster(
        nodes: &[Node],
        service_cidrs: &[IpNetwork],
        except_cidrs: &[IpNetwork],
    ) -> Self {
        Ipv6Bypass {
            transport_ips: nodes
                .iter()
                .filter_map(|n| match n.transport_ip? {
                    IpAddr::V6(ip) => Some(ip),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            pod_cidrs: ipv6_only(nodes.iter().filter_map(|n| n.pod_cidr.as_ref())),
            service_cidrs: ipv6_only(service_cidrs),
            except_cidrs: ipv6_only(except_cidrs),
        }
    }
}

/// Something of the plan the flows could not express, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unprogrammed {
    /// The Pod has no port on br-int yet: its flow follows when the port appears.
    #[error("Pod {pod}: no port on br-int yet")]
    PodNotAttached { pod: String },
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

/// `ip` or `ipv6`: the traffic of `ip`'s family.
fn family_of(ip: IpAddr) -> Match {
    match ip {
        IpAddr::V4(_) => Match::new().ip(),
        IpAddr::V6(_) => Match::new().ipv6(),
    }
}

/// Tunnelled traffic addressed to `ip` (`tun_dst` or `tun_ipv6_dst`).
fn tunnelled_to(ip: IpAddr) -> Match {
    match ip {
        IpAddr::V4(v4) => Match::new().ip().tun_dst(v4),
        IpAddr::V6(v6) => Match::new().ipv6().tun_ipv6_dst(v6),
    }
}

/// Traffic to `cidr` (`nw_dst` or `ipv6_dst`).
fn towards(cidr: IpNetwork) -> Match {
    match cidr {
        IpNetwork::V4(v4) => Match::new().ip().nw_dst(v4),
        IpNetwork::V6(v6) => Match::new().ipv6().ipv6_dst(v6),
    }
}

/// Tunnel the packet to `ip` itself (`tun_dst` or `tun_ipv6_dst`).
fn set_tunnel_destination(ip: IpAddr) -> Action {
    match ip {
        IpAddr::V4(v4) => Action::SetTunDst(v4),
        IpAddr::V6(v6) => Action::SetTunIpv6Dst(v6),
    }
}

/// The Egress flows for `plan` on a Node described by `ctx`. Deterministic for a given input.
pub fn egress_flows(plan: &NodePlan, ctx: &EgressContext) -> EgressFlows {
    let mut out = EgressFlows {
        flows: skeleton(ctx),
        unprogrammed: Vec::new(),
    };
    // Tunnelled traffic for each local egress IP gets its mark.
    let mut marks: BTreeMap<IpAddr, NonZeroU8> = BTreeMap::new();
    for rule in &plan.snat_rules {
        let Some(mark) = NonZeroU8::new(rule.mark) else {
            out.unprogrammed.push(Unprogrammed::NoMark { ip: rule.ip });
            continue;
        };
        marks.insert(rule.ip, mark);
        out.flows.push(Flow::new(
            Table::EgressMark,
            PRIORITY_SNAT,
            tunnelled_to(rule.ip).ct_state(tracked()),
            to_gateway(mark_actions(mark, ctx.carrier)),
            Cookie::new(Category::Egress, u32::from(mark.get())),
        ));
    }
    for (pod, binding) in &plan.pods {
        if binding.egress_ip.is_none() && !binding.drop_external {
            continue;
        }
        let Some(&ofport) = ctx.pod_ofports.get(pod) else {
            out.unprogrammed
                .push(Unprogrammed::PodNotAttached { pod: pod.clone() });
            continue;
        };
        let cookie = Cookie::new(Category::Egress, ofport);
        let Some(ip) = binding.egress_ip else {
            // Failure policy `drop`: external traffic of both families goes nowhere (cluster
            // destinations still bypass at a higher priority).
            for family in [Match::new().ip(), Match::new().ipv6()] {
                out.flows.push(Flow::new(
                    Table::EgressMark,
                    PRIORITY_SNAT,
                    family.in_port(ofport),
                    vec![Action::Drop],
                    cookie,
                ));
            }
            continue;
        };
        let flow = match (plan.egress_ips.get(&ip), marks.get(&ip)) {
            (Some(IpLocality::Local { .. }), Some(&mark)) => Flow::new(
                Table::EgressMark,
                PRIORITY_SNAT,
                family_of(ip).ct_state(tracked()).in_port(ofport),
                to_gateway(mark_actions(mark, ctx.carrier)),
                cookie,
            ),
            // Local without a mark was reported above; the Pod keeps the default masquerade.
            (Some(IpLocality::Local { .. }), None) => continue,
            (Some(IpLocality::Remote { .. }) | None, _) => Flow::new(
                Table::EgressMark,
                PRIORITY_SNAT,
                family_of(ip).in_port(ofport),
                vec![
                    Action::SetEthSrc(ctx.gateway_mac),
                    Action::SetEthDst(GLOBAL_VIRTUAL_MAC),
                    set_tunnel_destination(ip),
                    Action::SetReg(regs::TO_TUNNEL),
                    Action::GotoTable(Table::L2ForwardingCalc),
                ],
                cookie,
            ),
        };
        out.flows.push(flow);
    }
    out
}

/// Flows that exist once per Node: per family the entry into EgressMark and the drop, then
/// the bypasses.
fn skeleton(ctx: &EgressContext) -> Vec<Flow> {
    let non_reply = CtState::default().clear(CtFlag::Rpl).set(CtFlag::Trk);
    let new = CtState::default().set(CtFlag::New).set(CtFlag::Trk);
    let mut flows = Vec::new();
    for family in [Match::new().ip(), Match::new().ipv6()] {
        flows.extend([
            Flow::new(
                Table::L3Forwarding,
                PRIORITY_TO_EGRESS,
                family.clone().ct_state(non_reply).reg(regs::FROM_POD),
                vec![Action::GotoTable(Table::EgressMark)],
                EGRESS,
            ),
            // Tunnelled packets carry the virtual MAC; towards the gateway they need its MAC.
            Flow::new(
                Table::L3Forwarding,
                PRIORITY_TO_EGRESS,
                family.clone().ct_state(non_reply).reg(regs::FROM_TUNNEL),
                vec![
                    Action::SetEthDst(ctx.gateway_mac),
                    Action::GotoTable(Table::EgressMark),
                ],
                EGRESS,
            ),
            Flow::new(
                Table::EgressMark,
                PRIORITY_DROP,
                family.ct_state(new).reg(regs::FROM_TUNNEL),
                vec![Action::Drop],
                EGRESS,
            ),
        ]);
    }
    let v6 = &ctx.ipv6;
    let mut bypass: Vec<IpNetwork> = std::iter::once(ctx.local_transport_ip)
        .chain(ctx.remote_transport_ips.iter().copied())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| IpNetwork::V4(Ipv4Network::from(ip)))
        .chain(
            v6.transport_ips
                .iter()
                .map(|&ip| Ipv6Network::from(ip).into()),
        )
        .chain(
            [&ctx.pod_cidrs, &ctx.service_cidrs, &ctx.except_cidrs]
                .into_iter()
                .flatten()
                .map(|&c| c.into()),
        )
        .chain(
            [&v6.pod_cidrs, &v6.service_cidrs, &v6.except_cidrs]
                .into_iter()
                .flatten()
                .map(|&c| c.into()),
        )
        .collect();
    bypass.sort();
    bypass.dedup();
    flows.extend(bypass.into_iter().map(|cidr| {
        Flow::new(
            Table::EgressMark,
            PRIORITY_BYPASS,
            towards(cidr),
            to_gateway(Vec::new()),
            EGRESS,
        )
    }));
    flows
}

#[cfg(test)]
mod tests;
