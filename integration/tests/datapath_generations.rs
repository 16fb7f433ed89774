//! The datapath runtime tells its caller what it installed: every change of inputs has a
//! generation, and `DatapathHandle::wait_installed` returns once that generation's flows are on
//! the switch, also when only a flow's actions changed (same match, new `tun_dst`), and fails
//! at once, naming the offending flow, when the switch rejects the bundle (not after the
//! timeout). Needs root and Open vSwitch; fails (never skips) without them.

use std::net::Ipv4Addr;
use std::time::Duration;

use ovs_egress::datapath::{InstallError, PortAcks};
use ovs_egress_core::pipeline::{Action, Category, Cookie, Flow, Match, Table};
use ovs_egress_integration::Underlay;
use ovs_egress_integration::datapath::DatapathNode;

/// Longer than any test here may take: a wait that ends before it did not time out.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An EgressMark flow for Pod port 7 tunnelling to `tun_dst`.
fn tunnel_flow(tun_dst: Ipv4Addr) -> Flow {
    Flow::new(
        Table::EgressMark,
        200,
        Match::new().ip().in_port(7),
        vec![
            Action::SetTunDst(tun_dst),
            Action::GotoTable(Table::L2ForwardingCalc),
        ],
        Cookie::new(Category::Egress, 7),
    )
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The actions of the Egress flow matching `in_port=7` on the switch.
fn installed_actions(n: &DatapathNode) -> String {
    let table = format!("table={}", Table::EgressMark.number());
    let dump = n
        .node
        .ovs
        .ofctl(&["-O", "OpenFlow15", "dump-flows", "br-int", &table])
        .unwrap();
    dump.lines()
        .find(|l| l.contains("in_port=7"))
        .and_then(|l| l.split_once("actions="))
        .map(|(_, a)| a.to_string())
        .unwrap_or_default()
}

#[test]
fn wait_installed_returns_once_an_action_only_change_is_on_the_switch() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    n.start_runtime(vec![]).unwrap();
    let handle = n.runtime().unwrap().handle();
    for tun_dst in [Ipv4Addr::new(10, 10, 0, 11), Ipv4Addr::new(10, 10, 0, 12)] {
        let generation =
            handle.set_extra_flows_and_acks(vec![tunnel_flow(tun_dst)], PortAcks::Installed);
        block(handle.wait_installed(generation, TIMEOUT)).unwrap();
        let actions = installed_actions(&n);
        assert!(
            actions.contains(&format!("{tun_dst}->tun_dst")),
            "generation {generation} reported installed, switch has: {actions}"
        );
    }
}

#[test]
fn a_rejected_bundle_fails_the_wait_at_once_naming_the_flow() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    n.start_runtime(vec![]).unwrap();
    let handle = n.runtime().unwrap().handle();
    // `goto_table` may only go forward: OVS rejects the whole bundle.
    let backwards = Flow::new(
        Table::EgressMark,
        200,
        Match::new().ip().in_port(9),
        vec![Action::GotoTable(Table::L3Forwarding)],
        Cookie::new(Category::Egress, 9),
    );
    let generation = handle.set_extra_flows_and_acks(vec![backwards], PortAcks::Installed);
    match block(handle.wait_installed(generation, TIMEOUT)) {
        Err(InstallError::Rejected {
            generation: g,
            error,
        }) => {
            assert!(g >= generation, "rejected generation {g} < {generation}");
            assert!(error.contains("in_port=9"), "{error}");
        }
        other => panic!("expected the rejection, got {other:?}"),
    }
    // A good generation after it is installed, and clears the rejection.
    let good = tunnel_flow(Ipv4Addr::new(10, 10, 0, 13));
    let generation = handle.set_extra_flows_and_acks(vec![good], PortAcks::Installed);
    block(handle.wait_installed(generation, TIMEOUT)).unwrap();
    assert_eq!(handle.status().borrow().rejected, None);
}
