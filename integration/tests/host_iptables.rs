//! The iptables applier against real iptables (nf_tables backend), each test in a namespace of
//! its own: chains, jumps and rules are created, left alone when unchanged, repaired after a
//! flush, removed with the IP, placed before foreign masquerade rules, split by family, a
//! rejected rule set leaves the previous one intact, and packets really leave with the egress IP.

mod host_support;

use std::num::NonZeroU8;
use std::time::Duration;

use host_support::{Capture, enable_ipv6, in_netns};
use ovs_egress_core::pipeline::Mac;
use ovs_egress_core::pipeline::egress::{MarkCarrier, mark_mac};
use ovs_egress_host::addresses::Addresses;
use ovs_egress_host::iptables::{
    Applier, Change, Family, IptablesError, SnatConfig, SnatEntry, Table,
};
use ovs_egress_integration::Netns;

fn entry(ip: &str, mark: u8) -> SnatEntry {
    SnatEntry {
        ip: ip.parse().unwrap(),
        mark: NonZeroU8::new(mark).unwrap(),
    }
}

fn config(gateway: &str) -> SnatConfig {
    SnatConfig {
        gateway: gateway.into(),
        random_fully: false,
        carrier: MarkCarrier::SourceMac,
        pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
    }
}

/// The `-A` lines of `chain` in `table`, as `iptables -S` prints them.
fn rules(ns: &Netns, program: &str, table: &str, chain: &str) -> Vec<String> {
    ns.exec(&[program, "-t", table, "-S", chain])
        .unwrap_or_else(|e| panic!("{program} -t {table} -S {chain}: {e:#}"))
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

fn nat(ns: &Netns) -> Vec<String> {
    rules(ns, "iptables", "nat", "OVS-EGRESS-POSTROUTING")
}

#[test]
fn apply_creates_both_chains_their_jumps_and_one_snat_rule_per_ip() {
    let ns = Netns::new("ipt").unwrap();
    let changes = in_netns(&ns, || async {
        let mut a = Applier::new(config("antrea-gw0"));
        a.apply(&[entry("172.18.0.20", 1), entry("172.18.0.10", 2)])
            .await
            .unwrap()
    });
    assert_eq!(
        changes,
        [
            Change::ChainWritten(Family::V4, Table::Nat),
            Change::JumpInserted(Family::V4, Table::Nat),
            Change::ChainWritten(Family::V4, Table::Mangle),
            Change::JumpInserted(Family::V4, Table::Mangle),
        ]
    );
    let nat = nat(&ns);
    assert_eq!(nat.len(), 3, "{nat:#?}");
    assert!(nat[0].contains("--mark 0x2/0xff") && nat[0].ends_with("--to-source 172.18.0.10"));
    assert!(nat[0].contains("--comment \"ovs-egress: SNAT to 172.18.0.10\""));
    assert!(nat[1].contains("--mark 0x1/0xff") && nat[1].ends_with("--to-source 172.18.0.20"));
    assert!(nat[2].contains("-s 10.244.1.0/24") && nat[2].ends_with("-j MASQUERADE"));
    assert!(nat.iter().all(|r| r.contains("! -o antrea-gw0")));
    let mangle = rules(&ns, "iptables", "mangle", "OVS-EGRESS-PREROUTING");
    assert_eq!(mangle.len(), 2, "{mangle:#?}");
    // Same order as the SNAT rules: by IP.
    assert!(mangle[0].contains("-i antrea-gw0 -m mac --mac-source 02:ee:00:00:00:02"));
    assert!(mangle[0].ends_with("-j MARK --set-xmark 0x2/0xff"));
    let post = rules(&ns, "iptables", "nat", "POSTROUTING");
    assert_eq!(post.len(), 1);
    assert!(post[0].ends_with("-j OVS-EGRESS-POSTROUTING"));
    let pre = rules(&ns, "iptables", "mangle", "PREROUTING");
    assert!(pre[0].ends_with("-j OVS-EGRESS-PREROUTING"));
}

#[test]
fn reapplying_the_same_set_writes_nothing_and_verify_finds_no_drift() {
    let ns = Netns::new("ipt").unwrap();
    let entries = [entry("172.18.0.10", 1), entry("172.18.0.11", 2)];
    let (second, verified) = in_netns(&ns, move || async move {
        let mut a = Applier::new(config("antrea-gw0"));
        a.apply(&entries).await.unwrap();
        let second = a.apply(&entries).await.unwrap();
        // The rendered rules equal what iptables prints back, so verification sees no drift.
        (second, a.verify().await.unwrap())
    });
    assert_eq!(second, []);
    assert_eq!(verified, []);
    assert_eq!(rules(&ns, "iptables", "nat", "POSTROUTING").len(), 1);
}

#[test]
fn verify_repairs_a_flushed_chain_and_a_deleted_jump() {
    let ns = Netns::new("ipt").unwrap();
    let probe = ns.clone();
    let (before, repairs) = in_netns(&ns, move || async move {
        let mut a = Applier::new(config("antrea-gw0"));
        a.apply(&[entry("172.18.0.10", 7)]).await.unwrap();
        let before = nat(&probe);
        probe
            .exec(&["iptables", "-t", "nat", "-F", "OVS-EGRESS-POSTROUTING"])
            .unwrap();
        probe
            .exec(&["iptables", "-t", "nat", "-D", "POSTROUTING", "1"])
            .unwrap();
        assert_eq!(nat(&probe), Vec::<String>::new());
        (before, a.verify().await.unwrap())
    });
    assert_eq!(
        repairs,
        [
            Change::ChainWritten(Family::V4, Table::Nat),
            Change::JumpInserted(Family::V4, Table::Nat),
        ]
    );
    assert_eq!(nat(&ns), before);
    assert_eq!(rules(&ns, "iptables", "nat", "POSTROUTING").len(), 1);
}

#[test]
fn rules_of_an_ip_that_left_are_removed_and_an_empty_set_empties_the_chains() {
    let ns = Netns::new("ipt").unwrap();
    let probe = ns.clone();
    let (one_left, none_left) = in_netns(&ns, move || async move {
        let mut cfg = config("antrea-gw0");
        cfg.pod_cidrs.clear();
        let mut a = Applier::new(cfg);
        a.apply(&[entry("172.18.0.10", 1), entry("172.18.0.11", 2)])
            .await
            .unwrap();
        a.apply(&[entry("172.18.0.11", 2)]).await.unwrap();
        let one_left = nat(&probe);
        a.apply(&[]).await.unwrap();
        (one_left, nat(&probe))
    });
    assert_eq!(one_left.len(), 1);
    assert!(one_left[0].ends_with("--to-source 172.18.0.11"));
    assert_eq!(none_left, Vec::<String>::new());
    assert_eq!(
        rules(&ns, "iptables", "mangle", "OVS-EGRESS-PREROUTING"),
        Vec::<String>::new()
    );
}

#[test]
fn the_jump_is_inserted_before_a_pre_existing_masquerade_rule() {
    let ns = Netns::new("ipt").unwrap();
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.244.0.0/16",
        "-j",
        "MASQUERADE",
    ])
    .unwrap();
    in_netns(&ns, || async {
        let mut a = Applier::new(config("antrea-gw0"));
        a.apply(&[entry("172.18.0.10", 1)]).await.unwrap();
    });
    let post = rules(&ns, "iptables", "nat", "POSTROUTING");
    assert_eq!(post.len(), 2, "{post:#?}");
    assert!(post[0].ends_with("-j OVS-EGRESS-POSTROUTING"), "{post:#?}");
    assert!(post[1].ends_with("-j MASQUERADE"), "{post:#?}");
}

#[test]
fn ipv6_egress_ips_are_programmed_through_ip6tables_only() {
    let ns = Netns::new("ipt").unwrap();
    enable_ipv6(&ns).unwrap();
    in_netns(&ns, || async {
        let mut cfg = config("antrea-gw0");
        cfg.random_fully = true;
        cfg.pod_cidrs.push("fd00:10:244:1::/64".parse().unwrap());
        let mut a = Applier::new(cfg);
        a.apply(&[entry("fd00:18::10", 3), entry("172.18.0.10", 4)])
            .await
            .unwrap();
    });
    let nat6 = rules(&ns, "ip6tables", "nat", "OVS-EGRESS-POSTROUTING");
    assert_eq!(nat6.len(), 2, "{nat6:#?}");
    assert!(nat6[0].contains("--mark 0x3/0xff"));
    assert!(nat6[0].ends_with("--to-source fd00:18::10 --random-fully"));
    assert!(nat6[1].contains("-s fd00:10:244:1::/64"));
    let mangle6 = rules(&ns, "ip6tables", "mangle", "OVS-EGRESS-PREROUTING");
    assert_eq!(mangle6.len(), 1);
    assert!(mangle6[0].contains("--mac-source 02:ee:00:00:00:03"));
    let nat4 = nat(&ns);
    assert!(nat4.iter().all(|r| !r.contains("fd00")), "{nat4:#?}");
    assert!(nat4[0].ends_with("--to-source 172.18.0.10 --random-fully"));
    assert_eq!(rules(&ns, "ip6tables", "nat", "POSTROUTING").len(), 1);
}

#[test]
fn a_rejected_rule_names_the_table_chain_and_culprit_and_keeps_the_previous_rules() {
    let ns = Netns::new("ipt").unwrap();
    let err = in_netns(&ns, || async {
        let mut good = Applier::new(config("antrea-gw0"));
        good.apply(&[entry("172.18.0.10", 1)]).await.unwrap();
        let mut bad = Applier::new(config("a-much-too-long-gateway-name"));
        bad.apply(&[entry("172.18.0.10", 1), entry("172.18.0.11", 2)])
            .await
            .unwrap_err()
    });
    assert!(matches!(err, IptablesError::Command { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "iptables-restore",
        "table nat",
        "chain OVS-EGRESS-POSTROUTING",
        "a-much-too-long-gateway-name",
        "input line 3",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing in: {msg}");
    }
    let nat = nat(&ns);
    assert_eq!(nat.len(), 2, "{nat:#?}");
    assert!(nat[0].ends_with("--to-source 172.18.0.10"));
    assert!(nat.iter().all(|r| r.contains("! -o antrea-gw0")));
}

/// A Pod namespace `pod<n>` with `eth0` = `mac`/`ip`, plugged into bridge `antrea-gw0` of `node`.
fn pod(node: &Netns, n: u8, mac: &str) -> Netns {
    let pod = Netns::new(&format!("pod{n}")).unwrap();
    let port = format!("p{n}");
    pod.veth_to("eth0", node, &port).unwrap();
    let ip = format!("10.244.1.{n}/24");
    for argv in [
        vec!["ip", "link", "set", "eth0", "address", mac, "up"],
        vec!["ip", "addr", "add", &ip, "dev", "eth0"],
        vec!["ip", "route", "add", "default", "via", "10.244.1.1"],
    ] {
        pod.exec(&argv).unwrap();
    }
    node.exec(&["ip", "link", "set", &port, "master", "antrea-gw0", "up"])
        .unwrap();
    pod
}

/// Pings the external host from `pod` and returns the source address the external host saw.
fn source_seen_by_external(ext: &Netns, pod: &Netns) -> String {
    let capture = Capture::start(ext, "eth0", 1, &["icmp[icmptype] == icmp-echo"]).unwrap();
    pod.exec(&["ping", "-c", "1", "-W", "3", "172.18.0.100"])
        .expect("the reply comes back (un-SNAT and ARP for the egress IP work)");
    let seen = capture.finish(Duration::from_secs(5)).unwrap();
    let (before, _) = seen
        .split_once(" > 172.18.0.100: ICMP echo request")
        .unwrap_or_else(|| panic!("no echo request in {seen}"));
    before.split_whitespace().last().unwrap().to_string()
}

#[test]
fn packets_whose_source_mac_carries_the_mark_leave_with_the_egress_ip_the_rest_masqueraded() {
    let node = Netns::new("node").unwrap();
    let ext = Netns::new("ext").unwrap();
    node.veth_to("eth0", &ext, "eth0").unwrap();
    for argv in [
        &["ip", "link", "add", "antrea-gw0", "type", "bridge"][..],
        &["ip", "link", "set", "antrea-gw0", "up"],
        &["ip", "addr", "add", "10.244.1.1/24", "dev", "antrea-gw0"],
        &["ip", "link", "set", "eth0", "up"],
        &["ip", "addr", "add", "172.18.0.2/24", "dev", "eth0"],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ] {
        node.exec(argv).unwrap();
    }
    ext.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    ext.exec(&["ip", "addr", "add", "172.18.0.100/24", "dev", "eth0"])
        .unwrap();
    let mark = NonZeroU8::new(5).unwrap();
    let selected = pod(&node, 5, &Mac(mark_mac(mark)).to_string());
    let other = pod(&node, 6, "02:00:00:00:00:06");

    in_netns(&node, move || async move {
        // Make before break: SNAT rules first, then the IP (the flows would come in between).
        let mut a = Applier::new(config("antrea-gw0"));
        a.apply(&[SnatEntry {
            ip: "172.18.0.50".parse().unwrap(),
            mark,
        }])
        .await
        .unwrap();
        let nl = Addresses::connect().unwrap();
        let eth0 = nl.link("eth0").await.unwrap();
        nl.add(&eth0, "172.18.0.50".parse().unwrap()).await.unwrap();
    });
    assert_eq!(source_seen_by_external(&ext, &selected), "172.18.0.50");
    assert_eq!(source_seen_by_external(&ext, &other), "172.18.0.2");
}
