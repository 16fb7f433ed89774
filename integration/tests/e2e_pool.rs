//! End-to-end tests of ExternalIPPools on the cluster-in-a-box (`ovs_egress_integration::cluster`):
//! allocation, usage, placement by the pools' nodeSelector, moving an IP between Nodes, pool
//! deletion, and bad input (a missing pool, a malformed object in the watch streams, the API
//! link to the API broken while an agent starts). Real controller and agent processes, a real kube-apiserver, one OVS
//! per Node; traffic is real TCP to the box's external host, which reports the source it saw.
//! Pool IPs lie on the underlay (10.10.0.0/24) so the external host can answer them. Needs root
//! and Open vSwitch; fails loudly without them.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::api::Api;
use ovs_egress_core::api::v1beta1;
use ovs_egress_integration::cluster::{BoxPod, ClusterBox, node_ip};
use ovs_egress_integration::ext_server;
use ovs_egress_integration::malformed::store_malformed_egress;
use ovs_egress_integration::relay::LinkMode;

/// How long anything asynchronous may take in these tests (bounds are benchmarked elsewhere).
const TIMEOUT: Duration = Duration::from_secs(20);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn kubectl_ok(c: &ClusterBox, args: &[&str], input: Option<&str>) {
    if let Err(e) = c.kubectl_ok(args, input) {
        panic!("{e:#}");
    }
}

fn apply(c: &ClusterBox, yaml: &str) {
    kubectl_ok(c, &["apply", "-f", "-"], Some(yaml));
}

/// An ExternalIPPool with `ranges` (YAML flow sequence) and a nodeSelector (YAML flow mapping).
fn apply_pool(c: &ClusterBox, name: &str, ranges: &str, node_selector: &str) {
    apply(
        c,
        &format!(
            "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: {name}\n\
             spec:\n  ipRanges: {ranges}\n  nodeSelector: {node_selector}\n"
        ),
    );
}

/// An Egress from pool `pool` for the Pods labelled `app=<app>`.
fn apply_pool_egress(c: &ClusterBox, name: &str, pool: &str, app: &str) {
    apply(
        c,
        &format!(
            "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: {name}\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        app: {app}\n  \
             externalIPPool: {pool}\n"
        ),
    );
}

/// Polls `check` every 100 ms until it succeeds; after [`TIMEOUT`] panics with its last error
/// and the box's logs.
async fn eventually<T>(
    c: &ClusterBox,
    what: &str,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    c.poll_until(what, TIMEOUT, Duration::from_millis(100), check)
        .await
}

async fn egress(c: &ClusterBox, name: &str) -> Result<v1beta1::Egress, String> {
    c.egress(name).await.map_err(|e| format!("{e:#}"))
}

/// `(status, reason, message)` of condition `kind` of an Egress.
fn condition(egress: &v1beta1::Egress, kind: &str) -> Option<(String, String, String)> {
    let status = egress.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == kind)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

fn spec_ip(egress: &v1beta1::Egress) -> Option<IpAddr> {
    egress.spec.egress_ip.as_deref()?.parse().ok()
}

fn egress_node(egress: &v1beta1::Egress) -> String {
    let status = egress.status.as_ref();
    status
        .and_then(|s| s.egress_node.clone())
        .unwrap_or_default()
}

/// Waits until the controller allocated `want` to Egress `name` (spec.egressIP and
/// `IPAllocated=True`).
async fn wait_allocated(c: &ClusterBox, name: &str, want: IpAddr) {
    eventually(c, &format!("Egress {name} allocated {want}"), async || {
        let e = egress(c, name).await?;
        match (spec_ip(&e), condition(&e, "IPAllocated")) {
            (Some(got), Some((status, ..))) if got == want && status == "True" => Ok(()),
            other => Err(format!("spec.egressIP and IPAllocated: {other:?}")),
        }
    })
    .await
}

/// Waits until an agent reports Egress `name` held by `node` (`IPAssigned=True`).
async fn wait_assigned(c: &ClusterBox, name: &str, node: &str) {
    eventually(
        c,
        &format!("Egress {name} assigned to {node}"),
        async || {
            let e = egress(c, name).await?;
            match (egress_node(&e), condition(&e, "IPAssigned")) {
                (got, Some((status, ..))) if got == node && status == "True" => Ok(()),
                other => Err(format!("egressNode and IPAssigned: {other:?}")),
            }
        },
    )
    .await
}

/// Waits until pool `name` reports `(total, used)` in status.usage.
async fn wait_usage(c: &ClusterBox, name: &str, want: (i64, i64)) {
    eventually(
        c,
        &format!("ExternalIPPool {name} usage {want:?}"),
        async || {
            let api: Api<v1beta1::ExternalIPPool> = Api::all(c.client.clone());
            let pool = api.get(name).await.map_err(|e| e.to_string())?;
            let usage = pool.status.and_then(|s| s.usage);
            match usage {
                Some(u) if (u.total, u.used) == want => Ok(()),
                other => Err(format!("status.usage {other:?}")),
            }
        },
    )
    .await
}

async fn wait_source(c: &ClusterBox, pod: &BoxPod, want: IpAddr) {
    if let Err(e) = c.wait_source(pod, want, TIMEOUT).await {
        panic!("{e}\n{}", c.logs());
    }
}

/// Whether `node` has `ip` as an address (`ip addr` in its namespace).
fn node_has_ip(c: &ClusterBox, node: &str, ip: IpAddr) -> bool {
    c.node(node).unwrap().has_ip(ip).unwrap()
}

/// Whether `node` has a SNAT rule to `ip` (`iptables -t nat -S` in its namespace).
fn node_has_snat(c: &ClusterBox, node: &str, ip: IpAddr) -> bool {
    !c.node(node).unwrap().snat_rules_to(ip).unwrap().is_empty()
}

/// `kubectl label node <node> key=value --overwrite`.
fn label_node(c: &ClusterBox, node: &str, label: &str) {
    kubectl_ok(c, &["label", "node", node, label, "--overwrite"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_allocate_their_lowest_free_ips_report_usage_and_pods_leave_with_them_until_the_pool_is_deleted()
 {
    let mut c = ClusterBox::start(&[1, 2])
        .await
        .expect("the cluster-in-a-box");
    c.ensure_namespace("prod", &[]).await.unwrap();
    let a1 = c
        .create_pod("prod", "a-1", "node-1", &[("app", "a")])
        .await
        .unwrap();
    let a2 = c
        .create_pod("prod", "a-2", "node-2", &[("app", "a")])
        .await
        .unwrap();
    let r1 = c
        .create_pod("prod", "r-1", "node-2", &[("app", "r")])
        .await
        .unwrap();
    let other = c
        .create_pod("prod", "other-1", "node-1", &[("app", "other")])
        .await
        .unwrap();

    // A /30 holds exactly two IPs: the third Egress gets none.
    apply_pool(&c, "small", "[{cidr: 10.10.0.20/30}]", "{}");
    wait_usage(&c, "small", (2, 0)).await;
    for (name, app, want) in [("eg-a", "a", "10.10.0.21"), ("eg-b", "b", "10.10.0.22")] {
        apply_pool_egress(&c, name, "small", app);
        wait_allocated(&c, name, ip(want)).await;
    }
    apply_pool_egress(&c, "eg-c", "small", "c");
    let (status, reason, message) = eventually(&c, "eg-c IPAllocated=False", async || {
        let e = egress(&c, "eg-c").await?;
        match condition(&e, "IPAllocated") {
            Some(cond) if cond.0 == "False" => Ok(cond),
            other => Err(format!("IPAllocated {other:?}")),
        }
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AllocationError")
    );
    assert!(message.contains("small"), "{message}");
    assert_eq!(spec_ip(&egress(&c, "eg-c").await.unwrap()), None);
    wait_usage(&c, "small", (2, 2)).await;

    // An IPv4 /28 counts 14 IPs; a start-end range hands out its IPs in order.
    apply_pool(&c, "big", "[{cidr: 10.10.0.32/28}]", "{}");
    wait_usage(&c, "big", (14, 0)).await;
    apply_pool(&c, "span", "[{start: 10.10.0.50, end: 10.10.0.52}]", "{}");
    for (name, app, want) in [
        ("eg-r", "r", "10.10.0.50"),
        ("eg-s", "s", "10.10.0.51"),
        ("eg-t", "t", "10.10.0.52"),
    ] {
        apply_pool_egress(&c, name, "span", app);
        wait_allocated(&c, name, ip(want)).await;
    }
    wait_usage(&c, "span", (3, 3)).await;

    // Selected Pods on both Nodes leave with the allocated IP, held by one Node.
    let a_ip = ip("10.10.0.21");
    for pod in [&a1, &a2] {
        wait_source(&c, pod, a_ip).await;
    }
    wait_source(&c, &r1, ip("10.10.0.50")).await;
    let holder = egress_node(&egress(&c, "eg-a").await.unwrap());
    assert!(holder == "node-1" || holder == "node-2", "{holder:?}");
    assert!(node_has_ip(&c, &holder, a_ip));
    assert_eq!(
        c.source_of(&other, TIMEOUT).unwrap(),
        IpAddr::from(node_ip(1))
    );

    // Deleting the pool clears the IPs of its Egresses; their Pods leave with their Node's IP.
    kubectl_ok(&c, &["delete", "externalippool", "small"], None);
    for name in ["eg-a", "eg-b"] {
        eventually(&c, &format!("{name} loses its IP"), async || {
            let e = egress(&c, name).await?;
            match (spec_ip(&e), condition(&e, "IPAllocated")) {
                (None, Some((status, _, message)))
                    if status == "False" && message.contains("small") =>
                {
                    Ok(())
                }
                other => Err(format!("spec.egressIP and IPAllocated: {other:?}")),
            }
        })
        .await;
    }
    wait_source(&c, &a1, node_ip(1).into()).await;
    wait_source(&c, &a2, node_ip(2).into()).await;
    eventually(&c, "the deleted pool's IP leaves its Node", async || {
        if node_has_ip(&c, &holder, a_ip) || node_has_snat(&c, &holder, a_ip) {
            Err(format!("{holder} still has {a_ip} or its SNAT rule"))
        } else {
            Ok(())
        }
    })
    .await;
    // The other pools are untouched.
    wait_source(&c, &r1, ip("10.10.0.50")).await;
}

/// A thread in `pod` connecting to the external host in a loop until stopped.
struct Caller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Caller {
    fn start(c: &ClusterBox, pod: &BoxPod) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, server, flag) = (pod.netns.clone(), c.server.address(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match ext_server::fetch(&netns, server, 0, Duration::from_secs(1)) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed)
        });
        Caller { stop, thread }
    }

    /// Stops the loop: (connections answered, errors of the failed ones).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_ip_is_held_only_by_nodes_its_selector_matches_and_moves_with_the_selector_without_a_wrong_source()
 {
    let mut c = ClusterBox::start(&[1, 2])
        .await
        .expect("the cluster-in-a-box");
    c.ensure_namespace("prod", &[]).await.unwrap();
    let web1 = c
        .create_pod("prod", "web-1", "node-1", &[("app", "web")])
        .await
        .unwrap();
    let web2 = c
        .create_pod("prod", "web-2", "node-2", &[("app", "web")])
        .await
        .unwrap();
    let egress_ip = ip("10.10.0.25");

    // No Node matches: allocated, but not assigned, and no egressNode.
    apply_pool(
        &c,
        "zoned",
        "[{cidr: 10.10.0.24/30}]",
        "{matchLabels: {egress-zone: a}}",
    );
    apply_pool_egress(&c, "eg-web", "zoned", "web");
    wait_allocated(&c, "eg-web", egress_ip).await;
    let (node, (status, reason, message)) = eventually(&c, "eg-web IPAssigned=False", async || {
        let e = egress(&c, "eg-web").await?;
        match condition(&e, "IPAssigned") {
            // Until the controller's IP reaches the agents the message says so: wait for the
            // placement's verdict.
            Some(cond) if cond.2.contains("no Node available") => Ok((egress_node(&e), cond)),
            other => Err(format!("IPAssigned {other:?}")),
        }
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str(), node.as_str()),
        ("False", "AssignmentError", "")
    );
    assert!(
        message.starts_with("Failed to assign the IP to EgressNode"),
        "{message}"
    );
    assert!(!node_has_ip(&c, "node-1", egress_ip) && !node_has_ip(&c, "node-2", egress_ip));

    // A Node labelled to match takes the IP.
    label_node(&c, "node-1", "egress-zone=a");
    wait_assigned(&c, "eg-web", "node-1").await;
    for pod in [&web1, &web2] {
        wait_source(&c, pod, egress_ip).await;
    }
    assert!(node_has_ip(&c, "node-1", egress_ip));

    // Switching the selector to node-2's label moves the IP, while both Pods keep calling out.
    // No connection may leave with another source. A connection may time out (1 s, one SYN):
    // the agents act independently, and in the few ms between node-1 letting the IP go and
    // node-2 taking it (and the external host's ARP entry following), a SYN can be lost.
    label_node(&c, "node-2", "egress-zone=b");
    let since = Instant::now();
    let callers = [Caller::start(&c, &web1), Caller::start(&c, &web2)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubectl_ok(
        &c,
        &[
            "patch",
            "externalippool",
            "zoned",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeSelector":{"matchLabels":{"egress-zone":"b"}}}}"#,
        ],
        None,
    );
    wait_assigned(&c, "eg-web", "node-2").await;
    eventually(
        &c,
        "the IP and its SNAT rule leave node-1",
        async || match (
            node_has_ip(&c, "node-1", egress_ip),
            node_has_snat(&c, "node-1", egress_ip),
        ) {
            (false, false) => Ok(()),
            other => Err(format!("node-1 (address, SNAT rule): {other:?}")),
        },
    )
    .await;
    assert!(node_has_ip(&c, "node-2", egress_ip) && node_has_snat(&c, "node-2", egress_ip));
    let node2_mac = c.node("node-2").unwrap().node.phy_mac();
    eventually(
        &c,
        "the external host reaches the IP at node-2",
        async || {
            let neigh = c
                .server
                .netns
                .exec(&["ip", "neigh", "show", &egress_ip.to_string()])
                .map_err(|e| e.to_string())?;
            if neigh.contains(&node2_mac) {
                Ok(())
            } else {
                Err(format!("neighbour entry {neigh:?}, node-2 is {node2_mac}"))
            }
        },
    )
    .await;
    let after_move = Instant::now();
    for pod in [&web1, &web2] {
        wait_source(&c, pod, egress_ip).await;
    }
    while Instant::now() < after_move + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [caller1, caller2] = callers;
    let (counts1, counts2) = (caller1.finish(), caller2.finish());
    let seen = c.server.seen_since(since);
    let wrong: Vec<IpAddr> = seen
        .iter()
        .map(|(_, source)| *source)
        .filter(|source| *source != egress_ip)
        .collect();
    let seen_after = seen.iter().filter(|(t, _)| *t >= after_move).count();
    eprintln!(
        "move: {} connections seen by the external host, {} with a wrong source {wrong:?}; \
         callers (answered, errors): web-1 {counts1:?}, web-2 {counts2:?}",
        seen.len(),
        wrong.len()
    );
    assert!(seen_after > 0, "no connection seen after the move");
    assert_eq!(
        wrong,
        Vec::<IpAddr>::new(),
        "connections with a source other than {egress_ip}"
    );
}

/// The EgressMark flows of `node`, without counters and ages (which move with traffic).
fn egress_mark_flows(c: &ClusterBox, node: &str) -> Vec<String> {
    let dump = c
        .node(node)
        .unwrap()
        .dump_flows(Some("EgressMark"))
        .unwrap();
    let volatile = [
        "duration=",
        "n_packets=",
        "n_bytes=",
        "idle_age=",
        "hard_age=",
    ];
    let mut flows: Vec<String> = dump
        .lines()
        .filter(|l| l.contains("table="))
        .map(|l| {
            l.trim()
                .split(", ")
                .filter(|part| !volatile.iter().any(|v| part.starts_with(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    flows.sort();
    flows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pool_malformed_egress_and_api_down_at_agent_start_are_reported_or_skipped_and_the_rest_keeps_working()
 {
    let mut c = ClusterBox::start(&[1, 2])
        .await
        .expect("the cluster-in-a-box");
    c.ensure_namespace("prod", &[]).await.unwrap();
    let web1 = c
        .create_pod("prod", "web-1", "node-1", &[("app", "web")])
        .await
        .unwrap();
    let web2 = c
        .create_pod("prod", "web-2", "node-2", &[("app", "web")])
        .await
        .unwrap();
    let egress_ip = ip("10.10.0.61");
    apply_pool(&c, "main", "[{cidr: 10.10.0.60/30}]", "{}");
    apply_pool_egress(&c, "eg-web", "main", "web");
    wait_allocated(&c, "eg-web", egress_ip).await;
    for pod in [&web1, &web2] {
        wait_source(&c, pod, egress_ip).await;
    }

    // An Egress naming a pool that does not exist: IPAllocated=False naming the pool.
    apply_pool_egress(&c, "eg-missing", "no-such-pool", "none");
    eventually(&c, "eg-missing IPAllocated=False", async || {
        let e = egress(&c, "eg-missing").await?;
        match condition(&e, "IPAllocated") {
            Some((status, _, message)) if status == "False" && message.contains("no-such-pool") => {
                Ok(())
            }
            other => Err(format!("IPAllocated {other:?}")),
        }
    })
    .await;

    // A malformed Egress in the watch streams: logged by name and skipped by the controller
    // and every agent; the others keep working and new Egresses are still served.
    store_malformed_egress(
        &c.client,
        "malformed-egress",
        Some(ovs_egress_integration::webhook::CONFIGURATION_NAME),
    )
    .await
    .expect("storing a malformed Egress");
    let skipped = |log: &str| {
        log.lines()
            .any(|l| l.contains("skipping malformed object") && l.contains("malformed-egress"))
    };
    eventually(&c, "the malformed Egress is logged by name", async || {
        let mut logs = vec![("controller".to_string(), c.controller_log())];
        logs.extend(c.nodes.iter().map(|n| (n.name.clone(), n.agent_logs())));
        match logs.iter().find(|(_, log)| !skipped(log)) {
            Some((process, _)) => Err(format!("{process} did not log it")),
            None => Ok(()),
        }
    })
    .await;
    let db2 = c
        .create_pod("prod", "db-2", "node-2", &[("app", "db")])
        .await
        .unwrap();
    apply_pool_egress(&c, "eg-db", "main", "db");
    wait_allocated(&c, "eg-db", ip("10.10.0.62")).await;
    wait_source(&c, &db2, ip("10.10.0.62")).await;
    wait_source(&c, &web1, egress_ip).await;

    // The holder's link to the API server is broken (every connection closed) while its agent
    // restarts: the new agent keeps the datapath it finds (flows, IP, SNAT) and Pods keep the
    // egress IP.
    let holder = egress_node(&egress(&c, "eg-web").await.unwrap());
    let before = egress_mark_flows(&c, &holder);
    assert!(!before.is_empty(), "no EgressMark flows on {holder}");
    c.set_link(&holder, LinkMode::Broken).unwrap();
    c.respawn_agent(&holder).unwrap();
    eventually(
        &c,
        "the restarted agent meets the broken link to the API",
        async || {
            let log = c.node(&holder).unwrap().agent_logs();
            if log.contains("watch error") {
                Ok(())
            } else {
                Err("no watch error in the new agent's log yet".to_string())
            }
        },
    )
    .await;
    for pod in [&web1, &web2] {
        assert_eq!(c.source_of(pod, TIMEOUT).unwrap(), egress_ip);
    }
    assert_eq!(egress_mark_flows(&c, &holder), before);
    assert!(node_has_ip(&c, &holder, egress_ip) && node_has_snat(&c, &holder, egress_ip));

    // Once the API answers again, the agent syncs, becomes ready and serves new Pods.
    c.set_link(&holder, LinkMode::Pass).unwrap();
    if let Err(e) = c.wait_agent_ready_of(&holder).await {
        panic!("{e:#}\n{}", c.logs());
    }
    let web3 = c
        .create_pod("prod", "web-3", &holder, &[("app", "web")])
        .await
        .unwrap();
    wait_source(&c, &web3, egress_ip).await;
    for pod in [&web1, &web2] {
        wait_source(&c, pod, egress_ip).await;
    }
    wait_assigned(&c, "eg-web", &holder).await;
}
