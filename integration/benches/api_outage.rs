//! How soon after an API outage a change is realized: on a 2-Node cluster-in-a-box (real
//! kube-apiserver, controller, agents, OVS), a Pod on node-1 and a static Egress whose IP is
//! node-2's. Each round measures `kubectl apply` of the Egress → the Pod seen by the external
//! host with the egress IP, twice: with the API server up all along (the baseline), and right
//! after the API server was stopped for `OE_OUTAGE_SECS` (default 20) and started again on the
//! same etcd data (the time counts from the server's return to ready). It does this for the
//! agents' default retry cap and for a 30 s cap (kube-rs's default back-off, what the agent
//! used before), each in its own box, `OE_BENCH_ROUNDS` rounds (default 5), and prints the
//! medians and maxima and the ratio to the baseline.
//!
//! Run (root, OVS): `scripts/bench-api-outage.sh`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ovs_egress_integration::bench::env_or;
use ovs_egress_integration::cluster::{ClusterBox, node_ip};

/// A 30 s cap with its jitter may wait up to 60 s after the outage before the next watch.
const REALIZED_TIMEOUT: Duration = Duration::from_secs(120);

fn egress_yaml(ip: IpAddr) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: web\nspec:\n  \
         appliedTo:\n    podSelector:\n      matchLabels:\n        app: web\n  egressIP: {ip}\n"
    )
}

fn median_max(samples: &[Duration]) -> (Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let n = s.len();
    ((s[(n - 1) / 2] + s[n / 2]) / 2, s[n - 1])
}

/// One box with the agents' and the controller's retry cap set to `retry_max_ms`; returns the
/// baseline and the after-outage samples.
async fn measure(
    retry_max_ms: u64,
    rounds: usize,
    outage: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    // The box's processes inherit the variable (the flag's environment name).
    // SAFETY: set before the box starts any thread that reads the environment.
    unsafe {
        std::env::set_var(
            "OVS_EGRESS_API_RETRY_MAX_DELAY_MS",
            retry_max_ms.to_string(),
        )
    };
    let mut c = ClusterBox::start(&[1, 2])
        .await
        .context("the cluster-in-a-box")?;
    c.ensure_namespace("prod", &[]).await?;
    let pod = c
        .create_pod("prod", "web-1", "node-1", &[("app", "web")])
        .await?;
    let node1: IpAddr = node_ip(1).into();
    let egress_ip: IpAddr = node_ip(2).into();
    let (mut baseline, mut after_outage) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for outage_first in [false, true] {
            if outage_first {
                c.api_server()?.stop();
                tokio::time::sleep(outage).await;
                c.api_server()?.restart()?;
            }
            let t0 = Instant::now();
            c.apply(&egress_yaml(egress_ip))?;
            c.wait_source(&pod, egress_ip, REALIZED_TIMEOUT)
                .await
                .map_err(|e| anyhow!("round {round}: {e}\n{}", c.logs()))?;
            let took = t0.elapsed();
            println!(
                "  cap {retry_max_ms} ms, round {round}, {}: {:.0} ms",
                if outage_first {
                    "after the outage"
                } else {
                    "baseline"
                },
                took.as_secs_f64() * 1000.0
            );
            if outage_first {
                &mut after_outage
            } else {
                &mut baseline
            }
            .push(took);
            c.kubectl_ok(&["delete", "egress", "web"], None)?;
            c.wait_source(&pod, node1, REALIZED_TIMEOUT)
                .await
                .map_err(|e| anyhow!("round {round}, Egress deleted: {e}"))?;
        }
    }
    Ok((baseline, after_outage))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds = env_or("OE_BENCH_ROUNDS", 5)?;
    let outage = Duration::from_secs(env_or("OE_OUTAGE_SECS", 20)? as u64);
    println!("API outage of {outage:?}, {rounds} rounds per retry cap");
    let mut lines = Vec::new();
    for cap_ms in [500, 30_000] {
        let (baseline, after) = measure(cap_ms, rounds, outage).await?;
        let (b_med, b_max) = median_max(&baseline);
        let (a_med, a_max) = median_max(&after);
        lines.push(format!(
            "retry cap {cap_ms:>6} ms: apply -> realized, API up: median {:.0} ms (max {:.0}); \
             right after the outage: median {:.0} ms (max {:.0}); ratio {:.1}",
            b_med.as_secs_f64() * 1000.0,
            b_max.as_secs_f64() * 1000.0,
            a_med.as_secs_f64() * 1000.0,
            a_max.as_secs_f64() * 1000.0,
            a_med.as_secs_f64() / b_med.as_secs_f64()
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
