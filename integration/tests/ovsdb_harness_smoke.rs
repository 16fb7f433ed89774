//! Proves the test-bed harness: private OVS instances in our own namespaces come up, answer
//! `ovs-vsctl`/`ovs-ofctl`, survive a vswitchd restart, and leave nothing behind on drop or panic.
//! Needs root and Open vSwitch; fails (never skips) without them.

use std::process::Command;

use ovs_egress_integration::cmd::run;
use ovs_egress_integration::process::is_alive;
use ovs_egress_integration::{Netns, OvsInstance};

fn netns_exists(name: &str) -> bool {
    let list = run(Command::new("ip").args(["netns", "list"])).expect("ip netns list");
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn ovs_instance_serves_a_netdev_bridge_and_drop_removes_daemons_dir_and_namespace() {
    let ns = Netns::new("smoke").unwrap();
    let name = ns.name().to_owned();
    assert!(
        name.starts_with(&format!("oe{:x}x", std::process::id())),
        "{name}"
    );
    let ovs = OvsInstance::start(&ns).unwrap();
    ovs.vsctl(&[
        "add-br",
        "br-smoke",
        "--",
        "set",
        "bridge",
        "br-smoke",
        "datapath_type=netdev",
    ])
    .unwrap();
    let show = ovs.ofctl(&["show", "br-smoke"]).unwrap();
    assert!(show.contains("LOCAL(br-smoke)"), "{show}");
    // The bridge's internal port is a tap inside our namespace, not in the default one.
    ns.exec(&["ip", "link", "show", "br-smoke"]).unwrap();
    assert!(run(Command::new("ip").args(["link", "show", "br-smoke"])).is_err());
    assert!(ovs.appctl(&["version"]).unwrap().contains("ovs-vswitchd"));

    let pids = [ovs.ovsdb_server_pid().unwrap(), ovs.vswitchd_pid().unwrap()];
    let dir = ovs.rundir().to_owned();
    assert!(pids.iter().all(|p| is_alive(*p)));
    drop(ovs);
    drop(ns);
    assert!(
        pids.iter().all(|p| !is_alive(*p)),
        "daemons {pids:?} still alive"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(!netns_exists(&name), "namespace {name} not deleted");
}

#[test]
fn killed_vswitchd_restarts_and_rebuilds_bridges_from_the_database() {
    let ns = Netns::new("restart").unwrap();
    let mut ovs = OvsInstance::start(&ns).unwrap();
    ovs.vsctl(&[
        "add-br",
        "br-r",
        "--",
        "set",
        "bridge",
        "br-r",
        "datapath_type=netdev",
    ])
    .unwrap();
    let old = ovs.vswitchd_pid().unwrap();
    ovs.kill_vswitchd().unwrap();
    assert!(!is_alive(old));
    assert!(
        ovs.ofctl(&["show", "br-r"]).is_err(),
        "bridge answers without vswitchd"
    );
    ovs.start_vswitchd().unwrap();
    assert_ne!(ovs.vswitchd_pid(), Some(old));
    let show = ovs.ofctl(&["show", "br-r"]).unwrap();
    assert!(show.contains("LOCAL(br-r)"), "{show}");
}

#[test]
fn namespace_is_deleted_when_a_test_panics() {
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic").unwrap();
        let name = ns.name().to_owned();
        assert!(netns_exists(&name));
        std::panic::panic_any(name);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(!netns_exists(&name), "namespace {name} survived the panic");
}

#[test]
fn veth_pair_connects_two_namespaces_without_touching_the_default_one() {
    let a = Netns::new("va").unwrap();
    let b = Netns::new("vb").unwrap();
    a.veth_to("ve-a", &b, "ve-b").unwrap();
    assert!(run(Command::new("ip").args(["link", "show", "ve-a"])).is_err());
    for (ns, dev, ip) in [(&a, "ve-a", "10.250.0.1/30"), (&b, "ve-b", "10.250.0.2/30")] {
        ns.exec(&["ip", "addr", "add", ip, "dev", dev]).unwrap();
        ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
    }
    a.exec(&["ping", "-c1", "-W2", "10.250.0.2"]).unwrap();
}

#[test]
fn two_nodes_reach_each_other_over_the_underlay_through_their_br_phy() {
    use ovs_egress_integration::{Node, Underlay};
    let underlay = Underlay::new().unwrap();
    let n1 = Node::start(&underlay, 1).unwrap();
    let n2 = Node::start(&underlay, 2).unwrap();
    let peer = n2.ip().to_string();
    n1.netns()
        .exec(&["ping", "-c2", "-i0.2", "-W2", &peer])
        .unwrap();
    // The kernel of node 1 answered through br-phy (OVS), never on the quiet eth0.
    let neigh = n2
        .netns()
        .exec(&["ip", "neigh", "show", &n1.ip().to_string()])
        .unwrap();
    assert!(neigh.contains(&n1.phy_mac()), "{neigh}");
    let fdb = n1.ovs.appctl(&["fdb/show", "br-phy"]).unwrap();
    assert!(
        fdb.contains(&n2.phy_mac()),
        "br-phy did not learn node 2: {fdb}"
    );
}
