//! The datapath runtime recovers by itself: flows deleted behind its back come back at the next
//! verification, and a runtime started while OVS is down reports not-ready with an error naming
//! the OVSDB socket, keeps retrying, and programs the bridge once OVS appears.
//! Needs root and Open vSwitch; fails (never skips) without them.

use std::time::Duration;

use ovs_egress_core::pipeline::Table;
use ovs_egress_integration::Underlay;
use ovs_egress_integration::datapath::DatapathNode;

fn flow_count(n: &DatapathNode) -> usize {
    let dump = n.node.ovs.ofctl(&["dump-flows", "br-int"]).unwrap();
    dump.lines().filter(|l| l.contains("cookie=")).count()
}

#[test]
fn flows_deleted_behind_its_back_are_restored_by_periodic_verification() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    let mut cfg = n.config();
    cfg.verify_interval = Duration::from_millis(300);
    n.start_runtime_with(cfg, vec![]).unwrap();
    let rt = n.runtime().unwrap();
    let status = rt.wait_for(Duration::from_secs(30), |s| s.ready).unwrap();
    n.add_pod("a").unwrap();
    let before = rt.status().flows;
    assert_eq!(flow_count(&n), before);
    let table = format!("table={}", Table::L3Forwarding.number());
    n.node.ovs.ofctl(&["del-flows", "br-int", &table]).unwrap();
    assert!(flow_count(&n) < before, "del-flows removed nothing");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flow_count(&n) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "flows not repaired within 10 s: {} of {before}",
            flow_count(&n)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rt.status().round, status.round, "repair keeps the round");
}

#[test]
fn ovs_down_at_start_reports_not_ready_naming_the_socket_then_recovers_when_ovs_appears() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    n.node.ovs.kill_vswitchd().unwrap();
    n.node.ovs.stop_ovsdb_server().unwrap();
    let cfg = n.config();
    let socket = cfg.ovsdb_socket.display().to_string();
    n.start_runtime_with(cfg, vec![]).unwrap();
    let down = n
        .runtime()
        .unwrap()
        .wait_for(Duration::from_secs(5), |s| {
            s.error.as_deref().is_some_and(|e| e.contains(&socket))
        })
        .unwrap();
    assert!(!down.ready);
    // Still retrying a while later, still saying why.
    std::thread::sleep(Duration::from_millis(500));
    let still = n.runtime().unwrap().status();
    assert!(!still.ready && still.error.is_some_and(|e| e.contains(&socket)));

    n.node.ovs.start_ovsdb_server().unwrap();
    // OVSDB is back but ovs-vswitchd is not: the bridge is configured, flows cannot be yet.
    let waiting = n
        .runtime()
        .unwrap()
        .wait_for(Duration::from_secs(10), |s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("br-int.mgmt"))
        })
        .unwrap();
    assert!(!waiting.ready);
    n.node.ovs.start_vswitchd().unwrap();
    let up = n
        .runtime()
        .unwrap()
        .wait_for(Duration::from_secs(10), |s| s.ready)
        .unwrap();
    assert_eq!(up.round, Some(1));
    assert_eq!(flow_count(&n), up.flows);
    n.add_pod("a")
        .expect("a Pod wired after the recovery gets its flows");
}

#[test]
fn ovsdb_server_lost_while_running_reports_not_ready_then_resyncs_and_learns_new_pods() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    let ready = n.start_runtime(vec![]).unwrap();
    let socket = n.config().ovsdb_socket.display().to_string();
    n.node.ovs.stop_ovsdb_server().unwrap();
    let down = n
        .runtime()
        .unwrap()
        .wait_for(Duration::from_secs(5), |s| !s.ready)
        .unwrap();
    let error = down.error.unwrap_or_default();
    assert!(error.contains(&socket), "not-ready reason: {error}");

    n.node.ovs.start_ovsdb_server().unwrap();
    let back = n
        .runtime()
        .unwrap()
        .wait_for(Duration::from_secs(10), |s| s.ready)
        .unwrap();
    assert_eq!(back.round, ready.round, "a reconnect is not a restart");
    assert_eq!(
        flow_count(&n),
        ready.flows,
        "the flows survived the OVSDB outage"
    );
    n.add_pod("a")
        .expect("Pod ports are learned again after the resync");
}
