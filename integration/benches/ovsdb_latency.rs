//! Latency of small OVSDB write transactions through our client vs spawning
//! `ovs-vsctl --no-wait set` for the same write, measured in the same run against one private
//! OVS (own namespace). Reports per-run medians, p99, and the median of the runs as a ratio.
//!
//! Run (root, OVS installed): `cargo bench -p ovs-egress-integration --bench ovsdb_latency`
//! Knobs: `OE_BENCH_N` transactions per run (default 1000), `OE_BENCH_RUNS` runs (default 5).

use std::time::{Duration, Instant};

use anyhow::Result;
use ovs_egress_integration::bench::env_or;
use ovs_egress_integration::{Netns, OvsInstance};
use ovs_egress_ovsdb::{Client, ClientOptions, Operation, Row, Value};

const BRIDGE: &str = "br-bench";

/// Sorted samples → (median, p99).
fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn client_run(c: &Client, n: usize, run: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let ids = Value::map([("bench", format!("c{run}-{i}"))]);
        let op = Operation::update("Bridge", Row::new().with("external_ids", ids))
            .where_eq("name", BRIDGE);
        let t = Instant::now();
        c.transact(&[op]).await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

fn vsctl_run(ovs: &OvsInstance, n: usize, run: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let set = format!("external_ids:bench=v{run}-{i}");
        let t = Instant::now();
        ovs.vsctl_no_wait(&["set", "Bridge", BRIDGE, &set])?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = env_or("OE_BENCH_N", 1000)?;
    let runs = env_or("OE_BENCH_RUNS", 5)?;
    let ovs = OvsInstance::start(&Netns::new("bench")?)?;
    ovs.vsctl(&[
        "add-br",
        BRIDGE,
        "--",
        "set",
        "bridge",
        BRIDGE,
        "datapath_type=netdev",
    ])?;
    let c = Client::connect(&ovs.db_socket(), ClientOptions::default()).await?;
    client_run(&c, 50, 0).await?; // warm-up
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    println!("{n} sequential small write transactions per run, {runs} runs");
    for run in 1..=runs {
        let (m, p99) = stats(client_run(&c, n, run).await?);
        println!("run {run}: client      median {m:>10.1?}  p99 {p99:>10.1?}");
        ours.push(m);
        let (m, p99) = stats(tokio::task::block_in_place(|| vsctl_run(&ovs, n, run))?);
        println!("run {run}: ovs-vsctl   median {m:>10.1?}  p99 {p99:>10.1?}");
        theirs.push(m);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "median of run medians: client {ours:.1?}, ovs-vsctl --no-wait {theirs:.1?}, ratio {:.1}x faster",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}
