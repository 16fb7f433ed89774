//! The table catalog: which OpenFlow tables exist on `br-int`, in which order, what each is for
//! and what happens to a packet no flow matches. It mirrors the subset of Antrea's pipeline that
//! encap-mode Pod networking and Egress need, numbered consecutively from 0 in Antrea's order.
//! This is the single source of truth: `ovs-flows/pipeline.md`, the `Flow_Table` names written
//! by bridge set-up and every flow's table number come from here. A table must never be renumbered
//! by hand-written flows (`goto_table` may only go forward:
//! OVS rejects a backward one with `OFPBIC_BAD_TABLE_ID`).

use std::fmt::Write as _;

use super::flow::{Action, Cookie, Flow, Match};
use super::regs;

/// One table of the pipeline. The declaration order is the table number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    PipelineRootClassifier,
    ArpSpoofGuard,
    ArpResponder,
    Classifier,
    SpoofGuard,
    ConntrackZone,
    ConntrackState,
    L3Forwarding,
    EgressMark,
    L3DecTtl,
    L2ForwardingCalc,
    ConntrackCommit,
    Output,
}

/// What a table does with a packet that matches none of its flows; installed as the table's
/// priority-0 flow (cookie category Default), as Antrea does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    Drop,
    /// `goto_table` the next table in the catalog.
    Next,
    /// Antrea's EgressMark default: mark the packet for the gateway and skip to
    /// L2ForwardingCalc (Pods' external traffic leaves through the Node's own routing and
    /// masquerade unless an Egress flow took it first).
    ToGateway,
}

impl Table {
    /// Every table, in pipeline order.
    pub const ALL: [Table; 13] = [
        Table::PipelineRootClassifier,
        Table::ArpSpoofGuard,
        Table::ArpResponder,
        Table::Classifier,
        Table::SpoofGuard,
        Table::ConntrackZone,
        Table::ConntrackState,
        Table::L3Forwarding,
        Table::EgressMark,
        Table::L3DecTtl,
        Table::L2ForwardingCalc,
        Table::ConntrackCommit,
        Table::Output,
    ];

    /// The OpenFlow table id.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The name shown by `ovs-ofctl --names` (Antrea's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Table::PipelineRootClassifier => "PipelineRootClassifier",
            Table::ArpSpoofGuard => "ARPSpoofGuard",
            Table::ArpResponder => "ARPResponder",
            Table::Classifier => "Classifier",
            Table::SpoofGuard => "SpoofGuard",
            Table::ConntrackZone => "ConntrackZone",
            Table::ConntrackState => "ConntrackState",
            Table::L3Forwarding => "L3Forwarding",
            Table::EgressMark => "EgressMark",
            Table::L3DecTtl => "L3DecTTL",
            Table::L2ForwardingCalc => "L2ForwardingCalc",
            Table::ConntrackCommit => "ConntrackCommit",
            Table::Output => "Output",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Table::PipelineRootClassifier => {
                "Entry point: ARP goes to ARPSpoofGuard, IPv4 to Classifier."
            }
            Table::ArpSpoofGuard => {
                "ARP from a local Pod must carry the Pod's own MAC and IP; the gateway may send any ARP."
            }
            Table::ArpResponder => {
                "Answers ARP requests for remote Nodes' gateway IPs with the global virtual MAC; \
                 sends other ARP to the port that owns the target IP (no NORMAL action)."
            }
            Table::Classifier => {
                "Records where the packet came from in reg0[0..3] (tunnel 1, gateway 2, Pod 3); \
                 tunnel packets also get RewriteMAC (reg0[9]) and skip SpoofGuard."
            }
            Table::SpoofGuard => {
                "IPv4 from a local Pod must carry the Pod's own MAC and IP; the gateway is trusted."
            }
            Table::ConntrackZone => {
                "Sends every IPv4 packet through conntrack zone 65520 (with NAT)."
            }
            Table::ConntrackState => "Drops packets conntrack marks invalid.",
            Table::L3Forwarding => {
                "Routes by destination IP: local Pods (MAC rewrite), the gateway IP, remote Pod CIDRs \
                 through the tunnel with tun_dst = the remote Node's transport IP; the rest goes on to \
                 EgressMark."
            }
            Table::EgressMark => {
                "Egress: chooses how external traffic of selected Pods is SNATed (mark for the \
                 local gateway, or tunnel to the egress IP); by default external traffic goes to the \
                 gateway."
            }
            Table::L3DecTtl => {
                "Decrements the TTL of routed packets, except those from the gateway (the host has \
                 already routed them)."
            }
            Table::L2ForwardingCalc => {
                "Maps the destination MAC to an output port in reg1 and sets OutputToOFPort (reg0[21..22])."
            }
            Table::ConntrackCommit => {
                "Commits new connections in zone 65520, recording their source (reg0[0..3]) in ct_mark[0..3]."
            }
            Table::Output => "Outputs to the port in reg1.",
        }
    }

    pub fn miss(self) -> Miss {
        match self {
            Table::PipelineRootClassifier
            | Table::ArpSpoofGuard
            | Table::ArpResponder
            | Table::Classifier
            | Table::SpoofGuard
            | Table::Output => Miss::Drop,
            Table::EgressMark => Miss::ToGateway,
            Table::ConntrackZone
            | Table::ConntrackState
            | Table::L3Forwarding
            | Table::L3DecTtl
            | Table::L2ForwardingCalc
            | Table::ConntrackCommit => Miss::Next,
        }
    }

    /// The table after this one; `None` for the last.
    pub fn next(self) -> Option<Table> {
        Table::ALL.get(usize::from(self.number()) + 1).copied()
    }

    /// The table with OpenFlow id `number`, if the catalog has one.
    pub fn from_number(number: u8) -> Option<Table> {
        Table::ALL.get(usize::from(number)).copied()
    }
}

/// `(number, name)` of every table, for `ovs::bridge::BridgeConfig::table_names` (the
/// `Flow_Table` rows bridge set-up writes) so that
/// `ovs-ofctl --names dump-flows` shows Antrea-like table names.
pub fn table_names() -> Vec<(u8, String)> {
    Table::ALL
        .iter()
        .map(|t| (t.number(), t.name().to_string()))
        .collect()
}

/// The priority-0 flow of every table, implementing its [`Miss`] behaviour.
pub fn miss_flows() -> Vec<Flow> {
    Table::ALL
        .iter()
        .map(|&table| {
            let actions = match (table.miss(), table.next()) {
                (Miss::Next, Some(next)) => vec![Action::GotoTable(next)],
                (Miss::ToGateway, _) => vec![
                    Action::SetReg(regs::TO_GATEWAY),
                    Action::GotoTable(Table::L2ForwardingCalc),
                ],
                (Miss::Drop, _) | (Miss::Next, None) => vec![Action::Drop],
            };
            Flow::new(table, 0, Match::new(), actions, Cookie::DEFAULT)
        })
        .collect()
}

/// `ovs-flows/pipeline.md`: the catalog as a Markdown table.
pub fn catalog_markdown() -> String {
    let mut out = String::from(
        "# br-int pipeline\n\n\
         Generated from `src/pipeline/table.rs` by `pipeline::catalog_markdown()`; do not edit.\n\
         Regenerate with `UPDATE_GOLDEN=1 cargo test -p ovs-egress-core --lib pipeline::`.\n\n\
         | # | table | purpose | on miss |\n|---|---|---|---|\n",
    );
    for table in Table::ALL {
        let miss = match (table.miss(), table.next()) {
            (Miss::Next, Some(next)) => format!("goto {}", next.name()),
            (Miss::ToGateway, _) => {
                "to the gateway (reg0 ToGateway, goto L2ForwardingCalc)".to_string()
            }
            (Miss::Drop, _) | (Miss::Next, None) => "drop".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            table.number(),
            table.name(),
            table.purpose(),
            miss
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_numbered_consecutively_in_catalog_order() {
        for (i, table) in Table::ALL.iter().enumerate() {
            assert_eq!(usize::from(table.number()), i, "{}", table.name());
            assert_eq!(Table::from_number(table.number()), Some(*table));
        }
        assert_eq!(Table::Output.next(), None);
        assert_eq!(Table::from_number(13), None);
    }

    #[test]
    fn every_miss_flow_jumps_forward_only() {
        for flow in miss_flows() {
            for action in &flow.actions {
                if let Action::GotoTable(to) = action {
                    assert!(
                        *to > flow.table,
                        "{} jumps back to {}",
                        flow.table.name(),
                        to.name()
                    );
                }
            }
        }
    }

    #[test]
    fn table_names_are_unique() {
        let names = table_names();
        let mut unique: Vec<_> = names.iter().map(|(_, n)| n.as_str()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
