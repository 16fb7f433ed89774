//! Failover of pool egress IPs on the cluster-in-a-box (`ovs_egress_integration::cluster`): the
//! agents' SWIM membership notices a holder that is gone, every agent computes the same next
//! holder, and that Node takes the IP once the old holder's lease (the address's valid
//! lifetime, renewed by its agent) has certainly run out. Real agent processes killed with
//! SIGKILL, real OVS, real TCP to the external host, which reports the source of every
//! connection. Needs root and Open vSwitch; fails loudly without them.
//!
//! The agents run with the default membership timing (probe every 100 ms, 40 ms probe timeout,
//! 200 ms suspicion) and a one-second address lease, so a Node declared down keeps its IPs for
//! placement during the lease bound (1 s + 1 s of kernel check interval).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use ovs_egress::api::v1beta1;
use ovs_egress::placement::{ip_key, rank};
use ovs_egress_integration::cluster::{ClusterBox, node_name};
use ovs_egress_integration::ext_server;
use ovs_egress_integration::netns::Netns;

/// How long anything asynchronous may take in these tests.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Worst-case detection of a dead Node with the default timing on 3 Nodes (probed within two
/// periods, one period to fail the probe, the suspicion), with a margin for a busy machine.
const DETECTION: Duration = Duration::from_millis(1000);
/// The default lease bound: a one-second lifetime plus the kernel's one-second check interval.
const LEASE_BOUND: Duration = Duration::from_secs(2);
/// Time for the next holder's apply (SNAT, flows, address, GARP) on a busy machine.
const APPLY: Duration = Duration::from_millis(1000);

fn kubectl_ok(c: &ClusterBox, args: &[&str], input: Option<&str>) {
    if let Err(e) = c.kubectl_ok(args, input) {
        panic!("{e:#}");
    }
}

async fn eventually<T>(
    c: &ClusterBox,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not after {TIMEOUT:?}; last: {last}\n{}", c.logs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn egress(c: &ClusterBox, name: &str) -> Result<v1beta1::Egress, String> {
    let api: Api<v1beta1::Egress> = Api::all(c.client.clone());
    api.get(name)
        .await
        .map_err(|e| format!("getting Egress {name}: {e}"))
}

/// `(egressNode, IPAssigned status)` of an Egress.
fn assignment(e: &v1beta1::Egress) -> (String, String) {
    let status = e.status.clone().unwrap_or_default();
    let assigned = status
        .conditions
        .iter()
        .find(|c| c.type_ == "IPAssigned")
        .map(|c| c.status.clone())
        .unwrap_or_default();
    (status.egress_node.unwrap_or_default(), assigned)
}

async fn wait_assigned(c: &ClusterBox, name: &str, node: &str) {
    eventually(
        c,
        &format!("Egress {name} assigned to {node}"),
        async || {
            let e = egress(c, name).await?;
            match assignment(&e) {
                (got, status) if got == node && status == "True" => Ok(()),
                other => Err(format!("egressNode and IPAssigned: {other:?}")),
            }
        },
    )
    .await
}

/// `(reason, note, reportingInstance)` of every Event regarding Egress `egress`.
async fn events_of(c: &ClusterBox, egress: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::all(c.client.clone());
    let list = api.list(&Default::default()).await.expect("listing Events");
    let mut events: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(egress))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect();
    events.sort();
    events
}

/// Which of `nodes` have `ip` as an address, every 50 ms, until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, Vec<bool>)>>,
}

impl Sampler {
    fn start(nodes: Vec<Netns>, ip: IpAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let needle = format!("inet {ip}/");
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let held = nodes
                    .iter()
                    .map(|n| {
                        n.exec(&["ip", "-o", "addr", "show"])
                            .map(|out| out.contains(&needle))
                            .unwrap_or(false)
                    })
                    .collect();
                samples.push((at, held));
                let next = at + Duration::from_millis(50);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, Vec<bool>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A thread in a Pod connecting to the external host every 20 ms until stopped; returns how
/// many connections failed.
struct Caller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Caller {
    fn start(c: &ClusterBox, netns: Netns) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let (server, flag) = (c.server.address(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut failed = 0;
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                if ext_server::fetch(&netns, server, 0, Duration::from_millis(500)).is_err() {
                    failed += 1;
                }
                let next = at + Duration::from_millis(20);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            failed
        });
        Caller { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_holders_agent_moves_its_ip_to_the_next_ranked_node_after_the_lease_never_on_two_nodes_and_never_with_a_wrong_source()
 {
    let mut c = ClusterBox::start(&[1, 2, 3])
        .await
        .expect("the cluster-in-a-box");
    let names: Vec<String> = (1..=3).map(node_name).collect();
    let egress_ip: IpAddr = "10.10.0.60".parse().unwrap();
    let ranked = rank(&ip_key(egress_ip), names.iter().map(String::as_str));
    let (holder, next, bystander) = (
        ranked[0].to_string(),
        ranked[1].to_string(),
        ranked[2].to_string(),
    );

    c.ensure_namespace("prod", &[]).await.unwrap();
    let pod = c
        .create_pod("prod", "web-1", &bystander, &[("app", "web")])
        .await
        .unwrap();
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: ha\n\
             spec:\n  ipRanges: [{start: 10.10.0.60, end: 10.10.0.60}]\n  nodeSelector: {}\n\
             ---\napiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: eg-ha\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        app: web\n  \
             externalIPPool: ha\n",
        ),
    );
    wait_assigned(&c, "eg-ha", &holder).await;
    if let Err(e) = c.wait_source(&pod, egress_ip, TIMEOUT).await {
        panic!("{e}\n{}", c.logs());
    }

    let netns: Vec<Netns> = names
        .iter()
        .map(|n| c.node(n).unwrap().netns().clone())
        .collect();
    let start = Instant::now();
    let sampler = Sampler::start(netns, egress_ip);
    let caller = Caller::start(&c, pod.netns.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = c
        .node(&holder)
        .unwrap()
        .agent_pid()
        .expect("the holder's agent PID");
    // SAFETY: kill(2) has no memory effects; the PID is the agent process this box started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();

    wait_assigned(&c, "eg-ha", &next).await;
    let assigned_after = killed.elapsed();
    let bound = killed + DETECTION + LEASE_BOUND + APPLY;
    tokio::time::sleep((bound + Duration::from_secs(1)).saturating_duration_since(Instant::now()))
        .await;
    let failed = caller.finish();
    let samples = sampler.finish();

    // The external host saw only the egress IP for the Pod, and again after the takeover.
    let seen = c.server.seen_since(start);
    let wrong: Vec<IpAddr> = seen
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| *s != egress_ip)
        .collect();
    assert_eq!(
        wrong,
        Vec::<IpAddr>::new(),
        "connections with a wrong source"
    );
    let mut times: Vec<Instant> = seen.iter().map(|(t, _)| *t).collect();
    times.sort();
    assert!(
        times.iter().any(|t| *t > bound),
        "no connection after the takeover\n{}",
        c.logs()
    );
    let gap = times
        .windows(2)
        .filter(|w| w[1] >= killed)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();

    // Never on two Nodes; on exactly one (the next holder) after the bound.
    let holder_index = names.iter().position(|n| *n == holder).unwrap();
    let next_index = names.iter().position(|n| *n == next).unwrap();
    for (at, held) in &samples {
        let count = held.iter().filter(|h| **h).count();
        let offset = at.saturating_duration_since(killed);
        assert!(
            count <= 1,
            "{egress_ip} on {count} Nodes {offset:?} after the kill: {held:?}"
        );
        if *at >= bound {
            assert!(
                held[next_index] && count == 1,
                "{egress_ip} not on {next} alone {offset:?} after the kill: {held:?}"
            );
        }
    }
    let old_gone = samples
        .iter()
        .find(|(at, held)| *at >= killed && !held[holder_index])
        .map(|(at, _)| *at - killed);
    let new_held = samples
        .iter()
        .find(|(at, held)| *at >= killed && held[next_index])
        .map(|(at, _)| *at - killed);

    // Status and events: IPAssigned by the new holder, and IPUnassigned for the old one,
    // written by the new holder.
    let events = eventually(&c, "the takeover's events", async || {
        let events = events_of(&c, "eg-ha").await;
        let assigned = (
            "IPAssigned".to_string(),
            format!("Assigned Egress eg-ha with IP {egress_ip} on Node {next}"),
            next.clone(),
        );
        let unassigned = (
            "IPUnassigned".to_string(),
            format!("Unassigned Egress eg-ha with IP {egress_ip} from Node {holder}"),
            next.clone(),
        );
        if events.contains(&assigned) && events.contains(&unassigned) {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    eprintln!(
        "failover (SIGKILL of {holder}'s agent): {next} assigned after {:.2} s; address gone \
         from {holder} after {old_gone:?}, on {next} after {new_held:?}; gap between good \
         connections {:.3} s; {failed} failed connection(s); {} samples; events {events:?}",
        assigned_after.as_secs_f64(),
        gap.as_secs_f64(),
        samples.len()
    );
}
