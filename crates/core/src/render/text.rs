//! The human-readable form of a rendered Node plan. The one place that formats a plan as text;
//! it must not decide anything (every decision is already in the `Rendered` value).

use std::fmt::Write;

use super::Rendered;
use crate::plan::{IpLocality, status::EgressStatus};

/// The text `ovs-egress render` prints.
pub fn to_text(rendered: &Rendered) -> String {
    let mut out = String::new();
    // Writing to a String never fails; the results of `writeln!` are ignored for that reason.
    let plan = &rendered.plan;
    let _ = writeln!(
        out,
        "Node {}  transport IP {}  podCIDR {}",
        rendered.node,
        rendered
            .transport_ip
            .map_or("-".to_string(), |ip| ip.to_string()),
        rendered
            .pod_cidr
            .map_or("-".to_string(), |cidr| cidr.to_string()),
    );
    if !rendered.down_nodes.is_empty() {
        let _ = writeln!(out, "Nodes down: {}", rendered.down_nodes.join(", "));
    }

    let _ = writeln!(out, "\nEgress IPs this Node holds:");
    list(&mut out, plan.hold_ips.iter().map(|ip| ip.to_string()));

    let _ = writeln!(out, "\nSNAT rules (mark -> source IP):");
    list(
        &mut out,
        plan.snat_rules
            .iter()
            .map(|r| format!("mark {:<3} -> {}", r.mark, r.ip)),
    );

    let _ = writeln!(out, "\nLocal Pods with an Egress:");
    list(
        &mut out,
        plan.pods.iter().map(|(pod, binding)| {
            let ips: Vec<String> = binding.ips.iter().map(|ip| ip.to_string()).collect();
            let route = match binding.egress_ip {
                None if binding.drop_external => {
                    "no egress IP: external traffic dropped (failure policy drop)".to_string()
                }
                None => "no egress IP: default masquerade (see its status)".to_string(),
                Some(ip) => match plan.egress_ips.get(&ip) {
                    Some(IpLocality::Local { mark }) => format!("{ip} (local, mark {mark})"),
                    _ => format!("{ip} (remote: tunnel to {ip})"),
                },
            };
            let mut line = format!("{pod} [{}]: {} -> {route}", ips.join(" "), binding.egress);
            if !binding.losers.is_empty() {
                let _ = write!(line, "; also selected by {}", binding.losers.join(", "));
            }
            line
        }),
    );

    let _ = writeln!(
        out,
        "\nEgress status as Node {} sees it (* = this Node writes it):",
        rendered.node
    );
    list(
        &mut out,
        plan.statuses
            .iter()
            .map(|(name, status)| status_line(name, status)),
    );

    if !rendered.allocations.is_empty() {
        let _ = writeln!(out, "\nController allocation (IPAllocated):");
        list(
            &mut out,
            rendered
                .allocations
                .iter()
                .map(|(name, a)| match (&a.ip, &a.error) {
                    (_, Some(error)) => format!("{name}: False AllocationError: {error}"),
                    (Some(ip), None) => format!("{name}: True Allocated: {ip} from {}", a.pool),
                    (None, None) => format!("{name}: not allocated"),
                }),
        );
    }
    datapath(&mut out, rendered);
    out
}

/// The flows and iptables rules, with the placeholders named.
fn datapath(out: &mut String, rendered: &Rendered) {
    let datapath = &rendered.datapath;
    let _ = writeln!(
        out,
        "\nEgress flows on br-int (ovs-ofctl --names syntax; {})",
        datapath.placeholders
    );
    list(out, datapath.flows.iter().cloned());
    if !datapath.unprogrammed.is_empty() {
        let _ = writeln!(out, "\nNot programmed:");
        list(out, datapath.unprogrammed.iter().cloned());
    }
    let _ = writeln!(out, "\niptables rules (iptables-restore syntax):");
    list(out, datapath.iptables.lines().map(str::to_string));
}

fn status_line(name: &str, status: &EgressStatus) -> String {
    let writer = if status.writer { '*' } else { ' ' };
    let condition = status
        .ip_assigned
        .as_ref()
        .map_or("IPAssigned unknown here".to_string(), |c| {
            format!("IPAssigned={:?} {:?}: {}", c.status, c.reason, c.message)
        });
    format!(
        "{writer}{name}: egressIP={:?} egressNode={:?} {condition}",
        status.egress_ip, status.egress_node
    )
}

fn list(out: &mut String, lines: impl Iterator<Item = String>) {
    let mut empty = true;
    for line in lines {
        empty = false;
        let _ = writeln!(out, "  {line}");
    }
    if empty {
        let _ = writeln!(out, "  (none)");
    }
}
