//! Benchmark, not a test (ignored by `cargo test`; run `scripts/bench-programmer.sh`): the time
//! the flow programmer needs to install 10,000 flows on an empty bridge (rendering, diffing, one
//! `ovs-ofctl --bundle` with the flows on stdin) against the bare `ovs-ofctl --bundle add-flows`
//! of the same, pre-rendered flows, measured alternately in the same run on the same private OVS.
//! Prints the medians and their ratio (target ≤ 1.5), plus the time of a one-flow change.
//! Needs root and Open vSwitch.

mod programmer_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ovs_egress::ovs::ofctl::FlowProgrammer;
use ovs_egress_core::pipeline::{Flow, Ipv4Network, LocalPod, Style, pod_network_flows};
use programmer_support::{Bridge, block, expected, node};

const FLOWS: usize = 10_000;

/// 10,000 Pod networking flows: a Node with enough Pods, cut to exactly `FLOWS`.
fn bench_flows() -> Vec<Flow> {
    let mut net = node(1, &[], &[2, 3]);
    net.pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 244, 0, 0), 16).expect("valid prefix");
    net.pods = (0..FLOWS as u32 / 6 + 1)
        .map(|i| LocalPod {
            ofport: 100 + i,
            mac: format!("02:44:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
                .parse()
                .expect("mac"),
            ip: Ipv4Addr::new(10, 244, 1 + (i / 250) as u8, 2 + (i % 250) as u8),
        })
        .collect();
    let mut flows = pod_network_flows(&net);
    flows.truncate(FLOWS);
    assert_eq!(flows.len(), FLOWS);
    flows
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
#[ignore = "benchmark: run scripts/bench-programmer.sh"]
fn bench_programmer_vs_raw_ofctl_bundle_10k_flows() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7)
        .max(5);
    let bridge = Bridge::start("bench");
    let flows = bench_flows();
    let raw_text: String = flows
        .iter()
        .map(|f| f.render(1, Style::Numeric) + "\n")
        .collect();
    let clear = || {
        bridge
            .ovs
            .ofctl(&["--no-names", "-O", "OpenFlow15", "del-flows", "br-int"])
            .expect("del-flows");
    };
    let raw_once = || {
        let t = Instant::now();
        bridge
            .ovs
            .ofctl_stdin(
                &[
                    "--no-names",
                    "-O",
                    "OpenFlow15",
                    "--bundle",
                    "add-flows",
                    "br-int",
                    "-",
                ],
                raw_text.as_bytes(),
            )
            .expect("raw bundle");
        t.elapsed()
    };
    let (mut raw, mut prog) = (Vec::new(), Vec::new());
    let (mut no_change, mut one_change) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut programmer = FlowProgrammer::new(bridge.ofctl(), 1);
        let mut program_once = || {
            let t = Instant::now();
            block(programmer.sync(&flows)).expect("programmer sync");
            t.elapsed()
        };
        clear();
        // Alternate the order so that drift of the shared machine hits both sides alike.
        if run % 2 == 0 {
            raw.push(raw_once());
            clear();
            prog.push(program_once());
        } else {
            prog.push(program_once());
            clear();
            // Installs the very flows (same cookies) the programmer owns.
            raw.push(raw_once());
        }
        assert!(
            bridge.flows() == expected(&flows, 1),
            "run {run}: the bridge does not hold the benchmark flows"
        );
        // One flow changes (loses its last action): the programmer sends a one-line bundle.
        // Nothing changes: only rendering and diffing, no ovs-ofctl call.
        let t = Instant::now();
        assert!(
            block(programmer.sync(&flows))
                .expect("no change")
                .is_empty()
        );
        no_change.push(t.elapsed());
        let mut changed = flows.clone();
        changed[FLOWS - 1].actions.pop();
        let t = Instant::now();
        let change = block(programmer.sync(&changed)).expect("one change");
        one_change.push(t.elapsed());
        assert_eq!(change.modified, 1);
    }
    let (raw_med, prog_med) = (median(raw.clone()), median(prog.clone()));
    println!("flow programming benchmark, {FLOWS} flows, {runs} runs (ms):");
    println!(
        "  raw ovs-ofctl --bundle add-flows: median {:.1}  all {:?}",
        ms(raw_med),
        raw.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "  FlowProgrammer::sync (empty→10k): median {:.1}  all {:?}",
        ms(prog_med),
        prog.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "  ratio programmer/raw: {:.2} (target <= 1.5)",
        prog_med.as_secs_f64() / raw_med.as_secs_f64()
    );
    println!(
        "  FlowProgrammer::sync, nothing changed (render + diff only): median {:.1}",
        ms(median(no_change))
    );
    println!(
        "  FlowProgrammer::sync, 1 of 10k flows changed: median {:.1}",
        ms(median(one_change))
    );
}
