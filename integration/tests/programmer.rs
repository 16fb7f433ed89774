//! The flow programmer against a real OVS (private instance in our own namespace): rendered
//! flows read back unchanged, changes are minimal and atomic, a rejected flow leaves the switch
//! and the programmer untouched and is named, a round switch never leaves a gap, and
//! verification repairs what was changed behind the programmer's back.
//! Needs root and Open vSwitch; fails (never skips) without them.

mod programmer_support;

use std::sync::atomic::{AtomicBool, Ordering};

use ovs_egress::ovs::ofctl::{Change, FlowProgrammer, OfctlError, Repair};
use ovs_egress_core::pipeline::{Action, Category, Cookie, Flow, Match, Table, pod_network_flows};
use programmer_support::{Bridge, block, expected, node};

fn round_count(flows: &std::collections::BTreeSet<(u64, String, String)>, round: u16) -> usize {
    flows
        .iter()
        .filter(|(cookie, _, _)| cookie >> 48 == u64::from(round))
        .count()
}

#[test]
fn installed_pod_flows_read_back_exactly_as_rendered_so_verification_finds_nothing() {
    let bridge = Bridge::start("prog-canon");
    let desired = pod_network_flows(&node(1, &[10, 11], &[2, 3]));
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    let change = block(p.sync(&desired)).unwrap();
    assert_eq!(change.added, desired.len());
    assert_eq!(bridge.flows(), expected(&desired, 1));
    assert_eq!(block(p.verify()).unwrap(), Repair::default());
}

#[test]
fn sync_sends_only_the_difference_and_an_unchanged_set_changes_nothing() {
    let bridge = Bridge::start("prog-diff");
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    let first = pod_network_flows(&node(1, &[10, 11], &[2]));
    block(p.sync(&first)).unwrap();

    // Pod 11 leaves, Pod 12 arrives, Node 2 gets a new transport IP (same key, new actions).
    let mut changed = node(1, &[10, 12], &[2]);
    changed.remote_nodes[0].transport_ip = "172.30.0.99".parse().unwrap();
    let second = pod_network_flows(&changed);
    let pod_flows = second.iter().filter(|f| f.cookie.object == 12).count();
    let change = block(p.sync(&second)).unwrap();
    assert_eq!(
        change,
        Change {
            added: pod_flows,
            modified: 1,
            deleted: pod_flows
        }
    );
    assert_eq!(bridge.flows(), expected(&second, 1));
    assert_eq!(p.owned_len(), second.len());

    assert!(block(p.sync(&second)).unwrap().is_empty());
    let change = block(p.sync(&[])).unwrap();
    assert_eq!(change.deleted, second.len());
    assert!(bridge.flows().is_empty());
}

/// A flow whose `goto_table` jumps backwards: ovs-ofctl refuses it (OFPBIC_BAD_TABLE_ID).
fn backwards_flow() -> Flow {
    Flow::new(
        Table::L3Forwarding,
        123,
        Match::new().ip(),
        vec![Action::GotoTable(Table::Classifier)],
        Cookie::new(Category::Egress, 7),
    )
}

#[test]
fn a_rejected_flow_rejects_the_whole_bundle_names_the_flow_and_keeps_owned_state() {
    let bridge = Bridge::start("prog-reject");
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    let first = pod_network_flows(&node(1, &[10], &[2]));
    block(p.sync(&first)).unwrap();
    let before = bridge.flows();

    // Big enough (~150 KB) that ovs-ofctl stops reading stdin at the bad line, long before the end.
    let hosts: Vec<u8> = (10..=250).collect();
    let mut bad = pod_network_flows(&node(1, &hosts, &[2, 3]));
    bad.push(backwards_flow());
    let err = block(p.sync(&bad)).unwrap_err();
    let OfctlError::Rejected { flow, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        flow.contains("table=7,priority=123,ip actions=goto_table:3"),
        "{err}"
    );
    assert_eq!(
        bridge.flows(),
        before,
        "part of a rejected bundle was applied"
    );
    // Owned state unchanged: syncing the first set again has nothing to do.
    assert!(block(p.sync(&first)).unwrap().is_empty());
}

#[test]
fn a_flow_the_switch_refuses_rejects_the_whole_bundle_and_names_the_flow() {
    let bridge = Bridge::start("prog-full");
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    let first = pod_network_flows(&node(1, &[10], &[2]));
    block(p.sync(&first)).unwrap();
    let before = bridge.flows();
    let l3 = first
        .iter()
        .filter(|f| f.table == Table::L3Forwarding)
        .count();
    // The switch itself (not ovs-ofctl) refuses flows beyond the limit of L3Forwarding.
    bridge
        .ovs
        .vsctl(&[
            "--",
            "--id=@ft",
            "create",
            "Flow_Table",
            &format!("flow_limit={l3}"),
            "overflow_policy=refuse",
            "--",
            "set",
            "Bridge",
            "br-int",
            "flow_tables:7=@ft",
        ])
        .unwrap();
    let more = pod_network_flows(&node(1, &[10, 11, 12], &[2, 3]));
    let err = block(p.sync(&more)).unwrap_err();
    let OfctlError::Rejected { flow, stderr, .. } = &err else {
        panic!("{err}")
    };
    assert!(stderr.contains("OFPFMFC_TABLE_FULL"), "{err}");
    assert!(
        flow.starts_with("add ") && flow.contains(",table=7,"),
        "{err}"
    );
    assert_eq!(
        bridge.flows(),
        before,
        "part of a rejected bundle was applied"
    );
}

#[test]
fn round_switch_installs_the_new_round_before_retiring_the_old_one_without_a_gap() {
    let bridge = Bridge::start("prog-round");
    let old = pod_network_flows(&node(1, &[10, 11], &[2]));
    block(FlowProgrammer::new(bridge.ofctl(), 1).sync(&old)).unwrap();
    assert_eq!(round_count(&bridge.flows(), 1), old.len());

    // The restarted agent: round 2, owns nothing; Pod 11 is gone, Pod 12 is new.
    let new = pod_network_flows(&node(1, &[10, 12], &[2]));
    let stale = old.iter().filter(|f| f.cookie.object == 11).count();
    let kept: Vec<String> = old
        .iter()
        .filter(|f| new.iter().any(|n| n.key() == f.key()))
        .map(|f| f.key().to_string())
        .collect();
    let done = AtomicBool::new(false);
    let (dumps, gaps) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut dumps, mut gaps) = (0, Vec::new());
            while !done.load(Ordering::SeqCst) || dumps == 0 {
                let now = bridge.flows();
                dumps += 1;
                for key in &kept {
                    if !now.iter().any(|(_, k, _)| k == key) {
                        gaps.push(key.clone());
                    }
                }
            }
            (dumps, gaps)
        });
        let mut p = FlowProgrammer::new(bridge.ofctl(), 2);
        block(p.sync(&new)).unwrap();
        let mid = bridge.flows();
        assert_eq!(round_count(&mid, 2), new.len());
        assert_eq!(
            round_count(&mid, 1),
            stale,
            "only the flows the new round does not replace remain"
        );
        block(p.retire_round(1)).unwrap();
        done.store(true, Ordering::SeqCst);
        watcher.join().unwrap()
    });
    assert!(dumps > 0);
    assert!(gaps.is_empty(), "flows missing during the switch: {gaps:?}");
    let after = bridge.flows();
    assert_eq!(round_count(&after, 1), 0);
    assert_eq!(after, expected(&new, 2));
}

#[test]
fn retiring_the_current_round_is_refused() {
    let bridge = Bridge::start("prog-retire");
    let p = FlowProgrammer::new(bridge.ofctl(), 3);
    assert!(matches!(
        block(p.retire_round(3)),
        Err(OfctlError::RetireCurrentRound { round: 3, .. })
    ));
}

#[test]
fn verification_repairs_deleted_and_altered_flows_and_removes_strays_of_its_round() {
    let bridge = Bridge::start("prog-verify");
    let desired = pod_network_flows(&node(1, &[10, 11], &[2]));
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    block(p.sync(&desired)).unwrap();
    let of = |args: &[&str]| {
        let mut argv = vec!["--no-names", "-O", "OpenFlow15"];
        argv.extend_from_slice(args);
        bridge.ovs.ofctl(&argv).unwrap();
    };
    of(&[
        "--strict",
        "del-flows",
        "br-int",
        "table=7,priority=200,ip,nw_dst=10.244.2.0/24",
    ]);
    of(&[
        "--strict",
        "mod-flows",
        "br-int",
        "table=12,priority=200,reg0=0x200000/0x600000 actions=drop",
    ]);
    of(&[
        "add-flow",
        "br-int",
        "cookie=0x1010000000063,table=7,priority=99,ip actions=drop",
    ]);
    // A flow of another owner (cookie 0) is left alone.
    of(&["add-flow", "br-int", "table=7,priority=98,ip actions=drop"]);

    let repair = block(p.verify()).unwrap();
    assert_eq!(
        repair,
        Repair {
            missing: 1,
            different: 1,
            unexpected: 1
        }
    );
    let mut want = expected(&desired, 1);
    want.insert((0, "table=7,priority=98,ip".into(), "drop".into()));
    assert_eq!(bridge.flows(), want);
    assert_eq!(block(p.verify()).unwrap(), Repair::default());
}

#[test]
fn after_an_ovs_restart_verification_reinstalls_every_flow() {
    let mut bridge = Bridge::start("prog-restart");
    let desired = pod_network_flows(&node(1, &[10, 11], &[2]));
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    block(p.sync(&desired)).unwrap();
    bridge.ovs.kill_vswitchd().unwrap();
    let err = block(p.verify()).unwrap_err();
    assert!(
        matches!(&err, OfctlError::Failed { target, .. } if target.ends_with("br-int.mgmt")),
        "{err}"
    );
    bridge.ovs.start_vswitchd().unwrap();
    assert!(
        bridge.flows().is_empty(),
        "a restarted vswitchd keeps no flows"
    );
    let repair = block(p.verify()).unwrap();
    assert_eq!(repair.missing, desired.len());
    assert_eq!(bridge.flows(), expected(&desired, 1));
}
