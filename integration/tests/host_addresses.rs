//! Egress IPs on a device, their advertisement and the local-IP watch, against the real kernel
//! inside namespaces each test creates: ownership tracking leaves static addresses alone, the
//! gratuitous ARP / unsolicited NA are on the wire and update a peer's neighbour entry, and
//! address changes made by someone else show up as events; a leased address stays while renewed
//! and is removed by the kernel once renewals stop.

mod host_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use host_support::{Capture, enable_ipv6, in_netns, mac_of, veth_pair};
use ovs_egress_host::addresses::{Added, AddressError, Addresses, Removed};
use ovs_egress_host::advertise::advertise;
use ovs_egress_host::local_ips::watch_local_ips;
use ovs_egress_integration::Netns;
use tokio::sync::watch;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip -o addr show dev <dev>` lines in `ns`.
fn addrs(ns: &Netns, dev: &str) -> String {
    ns.exec(&["ip", "-o", "addr", "show", "dev", dev]).unwrap()
}

#[test]
fn egress_ips_are_added_as_host_routes_tracked_and_removed_but_static_ones_never() {
    let (a, _b) = veth_pair("addr").unwrap();
    enable_ipv6(&a).unwrap();
    a.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", "va"])
        .unwrap();
    a.exec(&["ip", "addr", "add", "10.9.0.50/32", "dev", "va"])
        .unwrap();
    let probe = a.clone();
    in_netns(&a, move || async move {
        let nl = Addresses::connect().unwrap();
        let va = nl.link("va").await.unwrap();
        assert_eq!(nl.add(&va, ip("10.9.0.7")).await.unwrap(), Added::New);
        assert_eq!(
            nl.add(&va, ip("10.9.0.7")).await.unwrap(),
            Added::AlreadyOwned
        );
        assert_eq!(nl.add(&va, ip("fd00:9::7")).await.unwrap(), Added::New);
        let shown = addrs(&probe, "va");
        assert!(shown.contains("inet 10.9.0.7/32 "), "{shown}");
        assert!(shown.contains("inet6 fd00:9::7/128 "), "{shown}");
        let v6_line = shown.lines().find(|l| l.contains("fd00:9::7")).unwrap();
        assert!(v6_line.contains("nodad"), "{v6_line}");

        // The admin's addresses: an egress IP configured statically is not ours.
        assert_eq!(
            nl.add(&va, ip("10.9.0.50")).await.unwrap(),
            Added::AlreadyStatic
        );
        assert_eq!(
            nl.owned(&va).await.unwrap(),
            BTreeSet::from([ip("10.9.0.7"), ip("fd00:9::7")])
        );
        assert_eq!(
            nl.remove(&va, ip("10.9.0.50")).await.unwrap(),
            Removed::NotOwned
        );
        assert_eq!(
            nl.remove(&va, ip("10.9.0.1")).await.unwrap(),
            Removed::NotOwned
        );

        assert_eq!(
            nl.remove(&va, ip("10.9.0.7")).await.unwrap(),
            Removed::Removed
        );
        assert_eq!(
            nl.remove(&va, ip("10.9.0.7")).await.unwrap(),
            Removed::Absent
        );

        // sync: only owned addresses are reconciled.
        let desired = BTreeSet::from([ip("10.9.0.8"), ip("10.9.0.50")]);
        let (added, removed) = nl.sync(&va, &desired).await.unwrap();
        assert_eq!(added, [ip("10.9.0.8")]);
        assert_eq!(removed, [ip("fd00:9::7")]);
        let (added, removed) = nl.sync(&va, &BTreeSet::new()).await.unwrap();
        assert_eq!((added, removed), (vec![], vec![ip("10.9.0.8")]));
    });
    let shown = addrs(&a, "va");
    assert!(shown.contains("inet 10.9.0.1/24 "), "{shown}");
    assert!(shown.contains("inet 10.9.0.50/32 "), "{shown}");
    assert!(
        !shown.contains("10.9.0.7") && !shown.contains("10.9.0.8"),
        "{shown}"
    );
}

/// The lease: a leased address carries its lifetime, stays while renewed, and the kernel removes
/// it by itself about a second after the last renewal (whole seconds, checked at least a second
/// apart); renewing leaves a static address alone and reports the gone ones.
#[test]
fn a_leased_egress_ip_stays_while_renewed_and_the_kernel_removes_it_once_renewals_stop() {
    let (a, _b) = veth_pair("lease").unwrap();
    a.exec(&["ip", "addr", "add", "10.9.1.50/32", "dev", "va"])
        .unwrap();
    let probe = a.clone();
    in_netns(&a, move || async move {
        let nl = Addresses::connect().unwrap();
        let va = nl.link("va").await.unwrap();
        let leased = ip("10.9.1.7");
        assert_eq!(
            nl.add_leased(&va, leased, Some(1)).await.unwrap(),
            Added::New
        );
        let line = addrs(&probe, "va");
        let line = line
            .lines()
            .find(|l| l.contains("10.9.1.7"))
            .unwrap()
            .to_string();
        assert!(line.contains("valid_lft 1sec"), "{line}");
        let held = BTreeSet::from([leased, ip("10.9.1.50")]);
        let started = std::time::Instant::now();
        let mut last_renewal = started;
        while started.elapsed() < Duration::from_millis(2500) {
            assert!(addrs(&probe, "va").contains("10.9.1.7/32"), "renewed");
            last_renewal = std::time::Instant::now();
            assert_eq!(nl.renew(&va, &held, 1).await.unwrap(), Vec::<IpAddr>::new());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        while addrs(&probe, "va").contains("10.9.1.7/32") {
            assert!(
                last_renewal.elapsed() < Duration::from_millis(2100),
                "the kernel did not remove the address within its lease bound (1 s + 1 s)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gone_after = last_renewal.elapsed();
        assert!(
            gone_after >= Duration::from_millis(950),
            "gone after {gone_after:?}"
        );
        assert_eq!(nl.renew(&va, &held, 1).await.unwrap(), vec![leased]);
        eprintln!("lease of 1 s: address gone {gone_after:?} after the last renewal");
    });
    assert!(
        addrs(&a, "va").contains("inet 10.9.1.50/32 "),
        "the static address stays"
    );
}

#[test]
fn a_missing_egress_device_is_an_error_naming_it() {
    let ns = Netns::new("addr").unwrap();
    let err = in_netns(&ns, || async {
        let nl = Addresses::connect().unwrap();
        nl.choose_device(Some("eg-missing0"), "lo")
            .await
            .unwrap_err()
    });
    assert!(
        matches!(err, AddressError::DeviceNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"eg-missing0\""), "{err}");
}

#[test]
fn without_a_configured_device_the_dummy_is_used_or_else_the_transport_interface() {
    let (a, _b) = veth_pair("dev").unwrap();
    let chosen = in_netns(&a, || async {
        let nl = Addresses::connect().unwrap();
        nl.choose_device(None, "va").await.unwrap()
    });
    // Whether this kernel has a dummy driver decides which one is right.
    let dummy_supported = a
        .exec(&["ip", "link", "add", "probe0", "type", "dummy"])
        .is_ok();
    if dummy_supported {
        assert_eq!(chosen.name, "ovs-egress0");
        let shown = a
            .exec(&["ip", "-d", "link", "show", "ovs-egress0"])
            .unwrap();
        assert!(shown.contains("dummy"), "{shown}");
    } else {
        assert_eq!(chosen.name, "va");
        assert_eq!(
            chosen
                .mac
                .map(|mac| ovs_egress_core::pipeline::Mac(mac).to_string()),
            Some(mac_of(&a, "va").unwrap())
        );
    }
}

/// Adds `egress` on `va` in node `a`, advertises it, and returns what tcpdump saw on the peer
/// `vb` and the peer's neighbour entry for it afterwards (pre-set to a wrong MAC).
fn advertise_and_observe(a: &Netns, b: &Netns, egress: &str, filter: &[&str]) -> (String, String) {
    let family = if egress.contains(':') { "-6" } else { "-4" };
    b.exec(&[
        "ip",
        family,
        "neigh",
        "replace",
        egress,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "vb",
        "nud",
        "stale",
    ])
    .unwrap();
    let capture = Capture::start(b, "vb", 1, filter).unwrap();
    let egress_ip = ip(egress);
    in_netns(a, move || async move {
        let nl = Addresses::connect().unwrap();
        let va = nl.link("va").await.unwrap();
        assert_eq!(nl.add(&va, egress_ip).await.unwrap(), Added::New);
        advertise(&va, egress_ip).unwrap();
    });
    let seen = capture.finish(Duration::from_secs(5)).unwrap();
    let neigh = b
        .exec(&["ip", family, "neigh", "show", egress, "dev", "vb"])
        .unwrap();
    (seen, neigh)
}

#[test]
fn a_gratuitous_arp_is_sent_and_moves_the_peers_neighbour_entry() {
    let (a, b) = veth_pair("garp").unwrap();
    a.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "va"])
        .unwrap();
    b.exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", "vb"])
        .unwrap();
    let mac = mac_of(&a, "va").unwrap();
    let (seen, neigh) = advertise_and_observe(&a, &b, "10.77.0.5", &["arp"]);
    assert!(
        seen.contains(&format!("{mac} > ff:ff:ff:ff:ff:ff")),
        "{seen}"
    );
    assert!(
        seen.contains("Request who-has 10.77.0.5 (ff:ff:ff:ff:ff:ff) tell 10.77.0.5"),
        "{seen}"
    );
    assert!(neigh.contains(&format!("lladdr {mac}")), "{neigh}");
}

#[test]
fn an_unsolicited_neighbour_advertisement_is_sent_and_moves_the_peers_entry() {
    let (a, b) = veth_pair("na").unwrap();
    for (ns, dev, addr) in [(&a, "va", "fd00:77::1/64"), (&b, "vb", "fd00:77::2/64")] {
        enable_ipv6(ns).unwrap();
        ns.exec(&["ip", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap();
    }
    let mac = mac_of(&a, "va").unwrap();
    let (seen, neigh) = advertise_and_observe(
        &a,
        &b,
        "fd00:77::5",
        &["icmp6", "and", "ip6[40]", "==", "136"],
    );
    assert!(
        seen.contains(&format!("{mac} > 33:33:00:00:00:01")),
        "{seen}"
    );
    assert!(seen.contains("hlim 255"), "{seen}");
    assert!(seen.contains("fd00:77::5 > ff02::1"), "{seen}");
    assert!(seen.contains("neighbor advertisement"), "{seen}");
    assert!(
        seen.contains("tgt is fd00:77::5, Flags [override]"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!(
            "destination link-address option (2), length 8 (1): {mac}"
        )),
        "{seen}"
    );
    assert!(seen.contains("icmp6 sum ok"), "{seen}");
    assert!(neigh.contains(&format!("lladdr {mac}")), "{neigh}");
}

/// The next value of the local-IP set, failing after 5 s without a change.
async fn next(rx: &mut watch::Receiver<BTreeSet<IpAddr>>) -> BTreeSet<IpAddr> {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("no local-IP event within 5 s")
        .expect("local-IP watch ended");
    rx.borrow_and_update().clone()
}

#[test]
fn local_ip_events_follow_addresses_added_elsewhere_except_on_kube_ipvs0() {
    let ns = Netns::new("lip").unwrap();
    // kube-proxy's device is a dummy; a bridge stands in where the kernel has no dummy driver.
    ns.exec(&["ip", "link", "add", "kube-ipvs0", "type", "bridge"])
        .unwrap();
    ns.exec(&["ip", "addr", "add", "10.96.0.1/32", "dev", "kube-ipvs0"])
        .unwrap();
    let probe = ns.clone();
    in_netns(&ns, move || async move {
        let mut rx = watch_local_ips().await.unwrap();
        let initial = rx.borrow_and_update().clone();
        assert!(initial.contains(&ip("127.0.0.1")), "{initial:?}");
        assert!(!initial.contains(&ip("10.96.0.1")), "{initial:?}");

        // Added on kube-ipvs0 first: the event for it is processed (and ignored) before the next.
        probe
            .exec(&["ip", "addr", "add", "10.96.0.2/32", "dev", "kube-ipvs0"])
            .unwrap();
        probe
            .exec(&["ip", "addr", "add", "10.55.0.9/32", "dev", "lo"])
            .unwrap();
        let mut set = next(&mut rx).await;
        while !set.contains(&ip("10.55.0.9")) {
            set = next(&mut rx).await;
        }
        assert!(!set.contains(&ip("10.96.0.2")), "{set:?}");

        probe
            .exec(&["ip", "addr", "del", "10.55.0.9/32", "dev", "lo"])
            .unwrap();
        let set = next(&mut rx).await;
        assert!(!set.contains(&ip("10.55.0.9")), "{set:?}");
        assert!(set.contains(&ip("127.0.0.1")), "{set:?}");
    });
}
