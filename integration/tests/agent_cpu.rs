//! Benchmark, ignored by `cargo test` (run it with `scripts/bench-agent-cpu.sh`): the CPU time
//! one `ovs-egress agent` process (status-only, `--no-datapath`) spends on a burst of Egress
//! updates arriving through the real API server, in a cluster large enough that handling an
//! event costs something: 1,000 Nodes, 1,000 Namespaces, 200 Egresses selecting the 100 Pods
//! of the agent's Node (the knobs below, from the environment).
//!
//! Each round patches an annotation of the Egresses `OE_BENCH_UPDATES` (default 1,000) times,
//! round-robin, at a fixed pace (one every `OE_BENCH_INTERVAL_US`, default 6,000 µs, at most 8
//! in flight: the agent's debounce coalesces events the same way whatever it runs), and reads the agent's utime+stime from `/proc/<pid>/stat`
//! from the first patch until a fixed tail after the last one. The baseline, measured in the
//! same round, is the agent's CPU time over a window of the same length with nothing changing
//! (its resyncs, watch keep-alives, the netlink watch). It prints every round and the medians
//! of `OE_BENCH_ROUNDS` (default 5) rounds: burst CPU, idle CPU, their ratio (an idle window
//! under one clock tick counts as one tick), and the CPU per update (burst minus idle, divided
//! by the updates).

#[path = "controller/harness.rs"]
#[allow(dead_code)]
mod ctl;
#[path = "agent/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use ovs_egress_integration::bench::env_or;
use serde_json::json;

use harness::*;

const NODE: &str = "node-0000";
/// How long after the last patch the burst window ends (the last events' passes included).
const TAIL: Duration = Duration::from_secs(2);

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading the stat");
    // The fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').expect("a stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Waits until the agent used less than 20 ms of CPU over one second (at most 60 s).
async fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_seconds(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_seconds(pid);
        if now - last < 0.02 {
            return;
        }
        last = now;
    }
    panic!("the agent did not settle within 60 s");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test]
#[ignore = "benchmark: run scripts/bench-agent-cpu.sh"]
async fn agent_cpu_for_a_burst_of_egress_updates() {
    let nodes = env_or("OE_BENCH_NODES", 1_000).unwrap();
    let namespaces = env_or("OE_BENCH_NAMESPACES", 1_000).unwrap();
    let pods = env_or("OE_BENCH_PODS", 100).unwrap();
    let egresses = env_or("OE_BENCH_EGRESSES", 200).unwrap();
    let updates = env_or("OE_BENCH_UPDATES", 1_000).unwrap();
    let rounds = env_or("OE_BENCH_ROUNDS", 5).unwrap();
    let interval = Duration::from_micros(env_or("OE_BENCH_INTERVAL_US", 6_000).unwrap() as u64);
    let bed = Bed::start().await;
    let started = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|i| {
            let ip = format!("10.10.{}.{}", i / 250, i % 250 + 1);
            bed.create(node(&format!("node-{i:04}"), &ip, &[("zone", "a")]))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    futures::stream::iter(0..namespaces)
        .map(|i| bed.create(namespace(&format!("ns-{i:04}"))))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    futures::stream::iter(0..pods)
        .map(|i| {
            let ip = format!("10.244.1.{}", i + 2);
            let ns = format!("ns-{:04}", i % namespaces.max(1));
            bed.create_pod(pod(&ns, &format!("web-{i:04}"), NODE, &ip))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    futures::stream::iter(0..egresses)
        .map(|i| {
            let ip = format!("10.30.{}.{}", i / 250, i % 250 + 1);
            bed.create(egress(&format!("bench-{i:04}"), &ip, None))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    println!(
        "cluster: {nodes} Nodes, {namespaces} Namespaces, {pods} Pods on {NODE}, {egresses} \
         Egresses (created in {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let health = ctl::free_port();
    let log = bed.cluster.dir.0.join("agent-cpu.log");
    let mut command = Command::new(ctl::cargo_bin("ovs-egress"));
    command
        .args([
            "agent",
            "--no-datapath",
            "--node-name",
            NODE,
            "--kubeconfig",
        ])
        .arg(&bed.cluster.kubeconfig)
        .args(["--health-listen", &health.to_string()])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).expect("creating the agent log"));
    let agent = ctl::Process(command.spawn().expect("starting ovs-egress agent"));
    let pid = agent.0.id();
    ctl::eventually("the agent is ready", 60.0, || async {
        let stream = tokio::net::TcpStream::connect(health).await.ok()?;
        let (status, _) = ctl::http(stream, "GET", "/readyz", "").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    settle(pid).await;

    let api = bed.egresses();
    let (mut bursts, mut idles, mut ratios, mut per_update) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let before = cpu_seconds(pid);
        let start = Instant::now();
        futures::stream::iter(0..updates)
            .then(|i| async move {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                i
            })
            .map(|i| {
                let api = api.clone();
                async move {
                    let name = format!("bench-{:04}", i % egresses);
                    let patch = json!({"metadata": {"annotations": {
                        "bench.ovs-egress.io/update": format!("{round}-{i}")}}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("patching an Egress");
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let patching = start.elapsed();
        tokio::time::sleep(TAIL).await;
        let window = start.elapsed();
        let burst = cpu_seconds(pid) - before;
        settle(pid).await;
        let before = cpu_seconds(pid);
        tokio::time::sleep(window).await;
        let idle = cpu_seconds(pid) - before;
        let each = (burst - idle) / updates as f64;
        // SAFETY: sysconf has no memory effects.
        let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let ratio = burst / idle.max(tick);
        println!(
            "round {round}: {updates} updates in {:.2} s; agent CPU over {:.2} s: burst {:.3} s, \
             idle {:.3} s, ratio {:.1}, {:.0} us per update",
            patching.as_secs_f64(),
            window.as_secs_f64(),
            burst,
            idle,
            ratio,
            each * 1e6
        );
        bursts.push(burst);
        idles.push(idle);
        ratios.push(ratio);
        per_update.push(each);
    }
    println!(
        "median of {rounds} rounds: burst {:.3} s, idle {:.3} s (same window), ratio {:.1}, \
         {:.0} us of agent CPU per Egress update",
        median(&mut bursts),
        median(&mut idles),
        median(&mut ratios),
        median(&mut per_update) * 1e6
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log.contains(" ERROR "), "the agent logged errors:\n{log}");
    drop(agent);
}
