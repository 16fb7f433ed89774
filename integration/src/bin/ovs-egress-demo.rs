//! `ovs-egress-demo` (run by `scripts/demo.sh`): the user guide's two usage examples on a
//! 3-Node cluster-in-a-box whose underlay is 10.10.0.0/24 with `node-4`, `node-5`, `node-6` at
//! 10.10.0.104–106, so the guide's manifests apply verbatim. It creates `app=web` and `app=db`
//! Pods in `prod` and `staging`, applies the examples with kubectl, has every Pod call the
//! external host and prints the source address the host saw next to the one the guide
//! promises, shows the EgressMark flows and a few metrics of one agent (egress IPs held, last
//! realization latency), and tears everything down (also on Ctrl-C).
//! Exits non-zero if any Pod is seen with a wrong source.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ovs_egress_integration::cluster::{BoxPod, ClusterBox, node_ip};
use ovs_egress_integration::traffic::without_counters;
use ovs_egress_integration::user_guide::{
    HA_EXAMPLE, PODS, STATIC_EXAMPLE, next_second, wait_placed,
};

/// How long a Pod may take to be seen with its expected source before it counts as wrong.
const REALIZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the guide promises for a Pod: leaving with an Egress's IP, or with its Node's IP.
#[derive(Clone, Copy)]
enum Expect {
    Egress(&'static str),
    NodeIp,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = run() => outcome,
        () = interrupted() => Err(anyhow::anyhow!("interrupted; tearing down")),
    };
    // `run`'s cluster was dropped (torn down) when its future completed or was cancelled.
    match outcome {
        Ok(0) => {
            println!(
                "\nEvery Pod left with the promised source address ({:.1} s).",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(wrong) => {
            eprintln!("\nFAILED: {wrong} Pod connection(s) seen with a wrong source address.");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nFAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The metric lines the demo shows: egress IPs held and the last realization latency.
fn demo_metric(line: &str) -> bool {
    line.starts_with("ovs_egress_agent_egress_ip_held{")
        || line.starts_with("ovs_egress_agent_last_realization_latency_seconds ")
        || line.starts_with("ovs_egress_agent_snat_rules ")
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The whole demo; returns the number of Pods seen with a wrong source.
async fn run() -> Result<usize> {
    step(
        "Starting the cluster-in-a-box: kube-apiserver and etcd with our CRDs \
         (charts/ovs-egress/crds), the controller, node-4/5/6 with OVS and an agent each; the \
         controller and the agents use their own ServiceAccount tokens",
    );
    let mut cluster = ClusterBox::start(&[4, 5, 6]).await?;
    kubectl(&cluster, &["get", "crd"])?;
    kubectl(&cluster, &["get", "nodes", "-o", "wide"])?;

    step("Creating Namespaces prod and staging and their Pods (Pod object, CNI ADD, Pod status)");
    for namespace in ["prod", "staging"] {
        cluster.ensure_namespace(namespace, &[]).await?;
    }
    let mut pods = Vec::new();
    for &(namespace, name, app, node) in PODS {
        let node = format!("node-{node}");
        pods.push(
            cluster
                .create_pod(namespace, name, &node, &[("app", app)])
                .await?,
        );
    }
    kubectl(&cluster, &["get", "pods", "-A", "-o", "wide"])?;

    step("Usage example 1: kubectl apply -f examples/user-guide/1-high-availability-egress.yaml");
    print!("{}", cluster.apply(HA_EXAMPLE)?);
    wait_placed(&cluster, &["egress-prod-web", "egress-staging-web"]).await?;
    kubectl(&cluster, &["get", "egress"])?;
    kubectl(&cluster, &["get", "eip"])?;
    let ha = |pod: &BoxPod| match (pod.namespace.as_str(), pod.name.starts_with("web")) {
        ("prod", true) => Expect::Egress("egress-prod-web"),
        ("staging", true) => Expect::Egress("egress-staging-web"),
        _ => Expect::NodeIp,
    };
    let mut wrong = check_sources(&cluster, &pods, ha).await?;
    if wrong > 0 {
        cluster.keep_logs();
    }

    step("Usage example 2: kubectl apply -f examples/user-guide/2-static-egress.yaml");
    println!(
        "(The web Pods match both a web Egress and a Namespace-wide one: the oldest Egress wins,\n \
         so they keep their pool IP; the db Pods now leave with their Namespace's static IP.)"
    );
    // creationTimestamp has a resolution of one second and ties go to the lower name: let the
    // clock pass the web Egresses' second so the static ones are really younger, as in the guide.
    next_second().await;
    print!("{}", cluster.apply(STATIC_EXAMPLE)?);
    wait_placed(&cluster, &["egress-prod", "egress-staging"]).await?;
    kubectl(&cluster, &["get", "egress"])?;
    let both = |pod: &BoxPod| match ha(pod) {
        Expect::NodeIp if pod.namespace == "prod" => Expect::Egress("egress-prod"),
        Expect::NodeIp => Expect::Egress("egress-staging"),
        web => web,
    };
    wrong += check_sources(&cluster, &pods, both).await?;
    if wrong > 0 {
        cluster.keep_logs();
    }

    step("The EgressMark flows on each Node (ovs-ofctl dump-flows br-int table=EgressMark)");
    for node in &cluster.nodes {
        println!("--- {} ---", node.name);
        print!("{}", strip_counters(&node.dump_flows(Some("EgressMark"))?));
    }
    if let Some(node) = cluster.nodes.first() {
        step(&format!(
            "Metrics of the agent of {} (curl http://127.0.0.1:10350/metrics, a few lines)",
            node.name
        ));
        let (_, metrics) = node.agent_get("/metrics")?;
        for line in metrics.lines().filter(|l| demo_metric(l)) {
            println!("{line}");
        }
    }
    for pod in &pods {
        cluster.delete_pod(pod).await?;
    }
    step("Tearing down");
    Ok(wrong)
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Runs and prints `kubectl <args>`; fails with its stderr.
fn kubectl(cluster: &ClusterBox, args: &[&str]) -> Result<()> {
    println!("$ kubectl {}", args.join(" "));
    let out = cluster.kubectl(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Has every Pod call the external host; prints what the host saw against what `expect` says;
/// returns how many were wrong (after waiting up to [`REALIZE_TIMEOUT`] for each).
async fn check_sources(
    cluster: &ClusterBox,
    pods: &[BoxPod],
    expect: impl Fn(&BoxPod) -> Expect,
) -> Result<usize> {
    let mut egress_ips = BTreeMap::new();
    println!(
        "{:<16} {:<7} {:<12} {:<34} {:<14} result",
        "POD", "NODE", "POD IP", "EXPECTED", "SEEN BY HOST"
    );
    let mut wrong = 0;
    for pod in pods {
        let (want, why): (IpAddr, String) = match expect(pod) {
            Expect::Egress(name) => {
                if !egress_ips.contains_key(name) {
                    let spec_ip = cluster.egress(name).await?.spec.egress_ip;
                    let ip: IpAddr = spec_ip
                        .as_deref()
                        .with_context(|| format!("Egress {name} has no egressIP"))?
                        .parse()?;
                    egress_ips.insert(name, ip);
                }
                (egress_ips[name], name.to_string())
            }
            Expect::NodeIp => {
                let index: u8 = pod.node.trim_start_matches("node-").parse()?;
                (node_ip(index).into(), "its Node".to_string())
            }
        };
        let (seen, result) = match cluster.wait_source(pod, want, REALIZE_TIMEOUT).await {
            Ok(()) => (want.to_string(), "ok"),
            Err(e) => {
                wrong += 1;
                eprintln!("  {e}");
                let last = cluster.source_of(pod, Duration::from_secs(1));
                (
                    last.map_or_else(|e| format!("error: {e}"), |s| s.to_string()),
                    "WRONG",
                )
            }
        };
        println!(
            "{:<16} {:<7} {:<12} {:<34} {:<14} {result}",
            format!("{}/{}", pod.namespace, pod.name),
            pod.node,
            pod.ip.to_string(),
            format!("{want} ({why})"),
            seen
        );
    }
    Ok(wrong)
}

/// A flow dump without the per-flow counters and ages, which only add noise to the demo.
fn strip_counters(dump: &str) -> String {
    dump.lines()
        .filter(|l| l.contains("actions="))
        .map(|line| format!(" {}\n", without_counters(line)))
        .collect()
}
