//! Restarts on a live datapath: the agent's runtime restarted while a Pod pings across Nodes
//! (the new round is installed before the old one is retired: not one packet lost), and
//! ovs-vswitchd killed and started again (the runtime notices on the OpenFlow management socket
//! and reinstalls every flow; the time from vswitchd being back to all flows installed is
//! printed, median of 3). Needs root and Open vSwitch; fails (never skips) without them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ovs_egress_integration::Node;
use ovs_egress_integration::datapath::{DatapathNode, TwoNodes};
use ovs_egress_integration::traffic::ping;

/// Flows on br-int whose cookie carries `round`, and all flows.
fn flows_of_round(node: &Node, round: u16) -> (usize, usize) {
    let dump = node.ovs.ofctl(&["dump-flows", "br-int"]).unwrap();
    let cookies: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("cookie=0x"))
        .filter_map(|l| u64::from_str_radix(l.split(',').next()?, 16).ok())
        .collect();
    let ours = cookies
        .iter()
        .filter(|c| *c >> 48 == u64::from(round))
        .count();
    (ours, cookies.len())
}

fn stored_round(node: &Node) -> String {
    node.ovs
        .vsctl(&["get", "bridge", "br-int", "external_ids:ovs-egress-round"])
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string()
}

fn restart_runtime(n: &mut DatapathNode, other: &DatapathNode) -> u16 {
    let before = n.runtime().unwrap().status().round.unwrap();
    let status = n.start_runtime(vec![other.as_remote()]).unwrap();
    let round = status.round.unwrap();
    assert_eq!(round, before + 1, "a restarted runtime uses the next round");
    assert_eq!(stored_round(&n.node), round.to_string());
    let (ours, all) = flows_of_round(&n.node, round);
    assert_eq!(
        ours, all,
        "flows of the previous round were not all retired"
    );
    assert_eq!(
        all, status.flows,
        "switch holds exactly the runtime's flows"
    );
    round
}

#[test]
fn agent_restart_with_ping_running_loses_nothing_and_retires_the_previous_round() {
    let TwoNodes {
        mut n1,
        mut n2,
        underlay: _underlay,
    } = TwoNodes::start().unwrap();
    let a = n1.add_pod("a").unwrap();
    let c = n2.add_pod("c").unwrap();
    ping(a.ns(), &c.ip.to_string()).unwrap();
    let pinger = a
        .ns()
        .command("ping")
        .args(["-i", "0.05", "-c", "100", "-W", "1", &c.ip.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    restart_runtime(&mut n1, &n2);
    std::thread::sleep(Duration::from_millis(500));
    restart_runtime(&mut n2, &n1);
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("100 packets transmitted, 100 received"),
        "packets lost across the runtime restarts:\n{text}"
    );
}

#[test]
fn vswitchd_restart_gets_all_flows_back_and_traffic_resumes() {
    let mut nodes = TwoNodes::start().unwrap();
    let a = nodes.n1.add_pod("a").unwrap();
    let c = nodes.n2.add_pod("c").unwrap();
    let status = nodes.n1.runtime().unwrap().status();
    let (round, flows) = (status.round.unwrap(), status.flows);
    let mut restore = Vec::new();
    for run in 1..=3u64 {
        nodes.n1.node.ovs.kill_vswitchd().unwrap();
        let down = nodes
            .n1
            .runtime()
            .unwrap()
            .wait_for(Duration::from_secs(5), |s| !s.ready)
            .unwrap();
        let error = down.error.unwrap_or_default();
        assert!(error.contains("br-int.mgmt"), "not-ready reason: {error}");
        nodes.n1.node.ovs.start_vswitchd().unwrap();
        let back = Instant::now();
        loop {
            if flows_of_round(&nodes.n1.node, round) == (flows, flows) {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "flows not restored 10 s after vswitchd came back: {:?} of {flows}",
                flows_of_round(&nodes.n1.node, round)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        restore.push(back.elapsed());
        let st = nodes
            .n1
            .runtime()
            .unwrap()
            .wait_for(Duration::from_secs(10), |s| s.ready)
            .unwrap();
        assert_eq!(
            st.full_installs,
            1 + run,
            "one full reinstall per vswitchd restart"
        );
        ping(a.ns(), "10.244.1.1").expect("Pod to its gateway after the restart");
        ping(a.ns(), &c.ip.to_string()).expect("Pod to remote Pod after the restart");
    }
    restore.sort();
    println!(
        "flows back after vswitchd restart: median {:?} (runs {restore:?}; {flows} flows)",
        restore[1]
    );
}
