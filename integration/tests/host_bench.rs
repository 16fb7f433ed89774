//! Benchmarks of the host adapters (ignored by default; numbers, not assertions on time):
//! the iptables applier against a bare `iptables-restore --noflush` of the same text, and
//! rtnetlink address adds against `ip addr add`, each measured in the same run, in a private
//! namespace. Run with:
//! `cargo test -p ovs-egress-integration --test host_bench -- --ignored --nocapture`

mod host_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU8;
use std::process::Stdio;
use std::time::{Duration, Instant};

use host_support::in_netns;
use ovs_egress_core::pipeline::egress::MarkCarrier;
use ovs_egress_host::addresses::{Added, Addresses};
use ovs_egress_host::iptables::{Applier, Family, SnatConfig, SnatEntry, render_family};
use ovs_egress_integration::Netns;
use tokio::io::AsyncWriteExt;

const RUNS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` (at most 200) local egress IPs 172.18.<offset>.1.. with marks 1+offset.. (two sets with
/// different offsets differ in every rule of both tables).
fn entries(n: u8, offset: u8) -> Vec<SnatEntry> {
    (1..=n)
        .map(|i| SnatEntry {
            ip: IpAddr::V4(Ipv4Addr::new(172, 18, offset, i)),
            mark: NonZeroU8::new(i + offset * 55).unwrap(),
        })
        .collect()
}

fn config() -> SnatConfig {
    SnatConfig {
        gateway: "antrea-gw0".into(),
        random_fully: false,
        carrier: MarkCarrier::SourceMac,
        pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
    }
}

/// Runs a command in the current thread's namespace (untimed set-up), failing loudly.
fn sh(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{argv:?}: {out:?}");
}

/// Removes our jumps and chains, so the next apply starts from scratch.
fn reset_iptables() {
    for (table, hook) in [("nat", "POSTROUTING"), ("mangle", "PREROUTING")] {
        sh(&["iptables", "-t", table, "-F", hook]);
    }
    for (table, chain) in [
        ("nat", "OVS-EGRESS-POSTROUTING"),
        ("mangle", "OVS-EGRESS-PREROUTING"),
    ] {
        let _ = std::process::Command::new("iptables")
            .args(["-t", table, "-F", chain])
            .output();
        let _ = std::process::Command::new("iptables")
            .args(["-t", table, "-X", chain])
            .output();
    }
}

async fn raw_restore(text: &str) {
    let mut child = tokio::process::Command::new("iptables-restore")
        .args(["--noflush", "--wait=10"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
}

async fn bench_iptables(n: u8) {
    let (a, b) = (entries(n, 0), entries(n, 1));
    let text = |e: &[SnatEntry]| -> String {
        render_family(e, &config(), Family::V4)
            .unwrap()
            .iter()
            .map(|c| c.restore_text())
            .collect()
    };
    let (text_a, text_b) = (text(&a), text(&b));
    let (mut scratch, mut change, mut noop, mut verify) = (vec![], vec![], vec![], vec![]);
    let (mut raw_scratch, mut raw_change) = (vec![], vec![]);
    for _ in 0..RUNS {
        // Baseline: the same text through one bare restore per transition (both tables in it).
        reset_iptables();
        let t = Instant::now();
        raw_restore(&text_a).await;
        raw_scratch.push(t.elapsed());
        let t = Instant::now();
        raw_restore(&text_b).await;
        raw_change.push(t.elapsed());

        reset_iptables();
        let mut applier = Applier::new(config());
        let t = Instant::now();
        applier.apply(&a).await.unwrap();
        scratch.push(t.elapsed());

        let t = Instant::now();
        applier.apply(&b).await.unwrap();
        change.push(t.elapsed());

        let t = Instant::now();
        assert_eq!(applier.apply(&b).await.unwrap(), []);
        noop.push(t.elapsed());

        let t = Instant::now();
        assert_eq!(applier.verify().await.unwrap(), []);
        verify.push(t.elapsed());
    }
    let (base_scratch, base_change) = (median(raw_scratch), median(raw_change));
    println!(
        "iptables, {n} local egress IPs ({} nat + {n} mangle rules), median of {RUNS}:",
        usize::from(n) + 1
    );
    for (what, v, base) in [
        (
            "apply from scratch (2 restores, 2 jump checks + inserts)",
            scratch,
            base_scratch,
        ),
        ("apply of a changed set (2 restores)", change, base_change),
        ("apply of an unchanged set", noop, base_change),
        (
            "verify without drift (2 reads, 2 jump checks)",
            verify,
            base_change,
        ),
    ] {
        let m = median(v);
        println!(
            "  {what:<58} {:>8.2} ms  ({:.2}x baseline)",
            ms(m),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "  baseline, bare iptables-restore --noflush: from scratch {:.2} ms, change {:.2} ms",
        ms(base_scratch),
        ms(base_change)
    );
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_iptables_applier_against_bare_iptables_restore() {
    let ns = Netns::new("bench").unwrap();
    in_netns(&ns, || async {
        bench_iptables(1).await;
        bench_iptables(200).await;
    });
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_rtnetlink_address_add_against_ip_addr_add() {
    const N: u8 = 100;
    let ns = Netns::new("bench").unwrap();
    ns.exec(&["ip", "link", "add", "eg0", "type", "bridge"])
        .unwrap();
    in_netns(&ns, || async {
        let nl = Addresses::connect().unwrap();
        let link = nl.link("eg0").await.unwrap();
        let ips: Vec<IpAddr> = (1..=N)
            .map(|i| IpAddr::V4(Ipv4Addr::new(172, 19, 0, i)))
            .collect();
        let (mut rtnl, mut ip_cmd) = (vec![], vec![]);
        for _ in 0..RUNS {
            let t = Instant::now();
            for ip in &ips {
                assert_eq!(nl.add(&link, *ip).await.unwrap(), Added::New);
            }
            rtnl.push(t.elapsed() / u32::from(N));
            let (_, removed) = nl.sync(&link, &BTreeSet::new()).await.unwrap();
            assert_eq!(removed.len(), usize::from(N));

            let t = Instant::now();
            for ip in &ips {
                sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eg0"]);
            }
            ip_cmd.push(t.elapsed() / u32::from(N));
            sh(&["ip", "addr", "flush", "dev", "eg0"]);
        }
        let (r, i) = (median(rtnl), median(ip_cmd));
        println!("address add, per address, {N} per run, median of {RUNS}:");
        println!(
            "  rtnetlink (Addresses::add)   {:>8.1} µs",
            r.as_secs_f64() * 1e6
        );
        println!(
            "  `ip addr add` process        {:>8.1} µs",
            i.as_secs_f64() * 1e6
        );
        println!(
            "  ratio ip / rtnetlink         {:>8.1}x",
            i.as_secs_f64() / r.as_secs_f64()
        );
    });
}
