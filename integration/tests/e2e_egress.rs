//! End-to-end tests of an Egress's lifecycle on the cluster-in-a-box, mirroring Antrea's e2e
//! suite (test/e2e/egress_test.go): changing `appliedTo`, changing `egressIP`, deleting the
//! Egress, two Egresses selecting one Pod, restarting the agent of the Node holding the IP, and
//! invalid objects. Every claim about traffic is checked with real connections from the Pods to
//! the box's external host, which reports the source address it saw. Needs root, Open vSwitch
//! and kubectl; fails loudly without them.
//!
//! Each test owns one box (two Nodes: `node-1` 10.10.0.101, `node-2` 10.10.0.102); scenarios
//! within a test run one after the other on it. Timeouts are generous: these tests prove
//! behaviour, benchmarks measure speed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use ovs_egress_core::api::{EgressCondition, v1beta1};
use ovs_egress_integration::cluster::{BoxPod, ClusterBox, node_ip};
use ovs_egress_integration::ext_server;

/// How long anything the tests wait for may take (realization, status, events, cleanup).
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

async fn start_box() -> ClusterBox {
    ClusterBox::start(&[1, 2])
        .await
        .expect("the cluster-in-a-box (needs root, Open vSwitch and kubectl)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl <args>` with `stdin`; panics with kubectl's output and the box's logs on failure.
fn kubectl_ok(c: &ClusterBox, args: &[&str], stdin: Option<&str>) -> String {
    c.kubectl_ok(args, stdin)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()))
}

fn apply(c: &ClusterBox, yaml: &str) {
    kubectl_ok(c, &["apply", "-f", "-"], Some(yaml));
}

fn pool_yaml(name: &str, start: &str, end: &str) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: {name}\n\
         spec:\n  ipRanges:\n  - start: {start}\n    end: {end}\n  nodeSelector: {{}}\n"
    )
}

/// An Egress selecting Pods labelled `app` in `apps`; `ip` is `egressIP: ..` or
/// `externalIPPool: ..`.
fn egress_yaml(name: &str, apps: &[&str], ip: &str) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: {name}\nspec:\n  \
         appliedTo:\n    podSelector:\n      matchExpressions:\n      - key: app\n        \
         operator: In\n        values: {apps:?}\n  {ip}\n"
    )
}

async fn get_egress(c: &ClusterBox, name: &str) -> Option<v1beta1::Egress> {
    let api: Api<v1beta1::Egress> = Api::all(c.client.clone());
    api.get_opt(name).await.expect("reading an Egress")
}

fn ip_assigned(egress: &v1beta1::Egress) -> Option<&EgressCondition> {
    let status = egress.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == "IPAssigned")
}

/// Polls Egress `name` until `done` holds; panics with the last object and the logs.
async fn wait_egress(
    c: &ClusterBox,
    name: &str,
    what: &str,
    done: impl Fn(&v1beta1::Egress) -> bool,
) -> v1beta1::Egress {
    c.wait_egress(name, WAIT, done)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", c.logs()))
}

/// Waits until Egress `name` has an egress IP (allocated or static) that Node `node` (any Node
/// when `None`) reports holding with `IPAssigned=True`; returns the IP and the Node.
async fn wait_realized(c: &ClusterBox, name: &str, node: Option<&str>) -> (IpAddr, String) {
    let what = format!("realized on {}", node.unwrap_or("some Node"));
    let egress = wait_egress(c, name, &what, |e| {
        let Some(status) = &e.status else {
            return false;
        };
        let spec_ip = e.spec.egress_ip.as_deref().filter(|ip| !ip.is_empty());
        spec_ip.is_some()
            && status.egress_ip.as_deref() == spec_ip
            && status.egress_node.as_deref().is_some_and(|n| !n.is_empty())
            && node.is_none_or(|n| status.egress_node.as_deref() == Some(n))
            && ip_assigned(e).is_some_and(|c| c.status == "True")
    })
    .await;
    let status = egress.status.unwrap_or_default();
    let ip = status.egress_ip.unwrap_or_default().parse().unwrap();
    (ip, status.egress_node.unwrap_or_default())
}

/// The IP a Pod leaves with when no Egress applies: its Node's.
fn node_ip_of(c: &ClusterBox, pod: &BoxPod) -> IpAddr {
    c.node(&pod.node).unwrap().node.ip().into()
}

/// Each Pod with its Node's IP.
fn at_node_ips<'a>(c: &ClusterBox, pods: &[&'a BoxPod]) -> Vec<(&'a BoxPod, IpAddr)> {
    pods.iter().map(|p| (*p, node_ip_of(c, p))).collect()
}

/// Waits until every Pod is seen by the external host with its expected source.
async fn expect_sources(c: &ClusterBox, scenario: &str, expected: &[(&BoxPod, IpAddr)]) {
    for (pod, ip) in expected {
        if let Err(e) = c.wait_source(pod, *ip, WAIT).await {
            panic!("{scenario}: {e}\n{}", c.logs());
        }
    }
}

/// `(reason, note)` of every Event regarding Egress `egress`, sorted.
async fn events_of(c: &ClusterBox, egress: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::all(c.client.clone());
    let list = api.list(&Default::default()).await.expect("listing Events");
    let mut events: Vec<(String, String)> = list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(egress))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    events.sort();
    events
}

fn assigned(egress: &str, ip: IpAddr, node: &str) -> (String, String) {
    let note = format!("Assigned Egress {egress} with IP {ip} on Node {node}");
    ("IPAssigned".to_string(), note)
}

fn unassigned(egress: &str, ip: IpAddr, node: &str) -> (String, String) {
    let note = format!("Unassigned Egress {egress} with IP {ip} from Node {node}");
    ("IPUnassigned".to_string(), note)
}

/// Waits until the Events regarding `egress` are exactly `want` (in any order).
async fn expect_events(c: &ClusterBox, egress: &str, mut want: Vec<(String, String)>) {
    want.sort();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = events_of(c, egress).await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "Events of Egress {egress}: want {want:#?}\ngot {got:#?}\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The name of `pod`'s port on its Node's br-int.
fn pod_port(c: &ClusterBox, pod: &BoxPod) -> String {
    let name = format!("external_ids:k8s-pod-name={}", pod.name);
    let namespace = format!("external_ids:k8s-pod-namespace={}", pod.namespace);
    let found = c.node(&pod.node).unwrap().node.ovs.vsctl(&[
        "--bare",
        "--columns=name",
        "find",
        "Interface",
        &name,
        &namespace,
    ]);
    let port = found
        .expect("finding the Pod's OVS port")
        .trim()
        .to_string();
    assert!(!port.is_empty(), "no OVS port for Pod {}", pod.name);
    port
}

/// The EgressMark flows of `pod` on its Node (matching its port).
fn pod_egress_flows(c: &ClusterBox, pod: &BoxPod, port: &str) -> Vec<String> {
    let in_port = format!("in_port={port}");
    let dump = c.node(&pod.node).unwrap().dump_flows(Some("EgressMark"));
    dump.expect("dumping EgressMark")
        .lines()
        .filter(|l| l.split([',', ' ']).any(|field| field == in_port))
        .map(str::to_string)
        .collect()
}

/// The lines of `iptables -t nat -S` in Node `node` that SNAT to `ip`.
fn snat_rules_to(c: &ClusterBox, node: &str, ip: IpAddr) -> Vec<String> {
    c.node(node)
        .unwrap()
        .snat_rules_to(ip)
        .expect("iptables -t nat -S")
}

/// Whether `ip` is configured on an interface of Node `node`.
fn node_has_ip(c: &ClusterBox, node: &str, ip: IpAddr) -> bool {
    c.node(node).unwrap().has_ip(ip).expect("ip -br addr")
}

/// Polls `check` (a description of what is still wrong, or `None`) until it passes.
async fn eventually(c: &ClusterBox, what: &str, check: impl Fn() -> Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let Some(wrong) = check() else { return };
        if Instant::now() > deadline {
            panic!("{what} not reached after {WAIT:?}: {wrong}\n{}", c.logs());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_applied_to_change_then_delete_then_egress_ip_change_move_sources_flows_rules_and_events()
 {
    let mut c = start_box().await;
    c.ensure_namespace("shop", &[]).await.unwrap();
    let mut pods = BTreeMap::new();
    for (name, node, app) in [
        ("web-1", "node-1", "web"),
        ("web-2", "node-2", "web"),
        ("db-1", "node-1", "db"),
        ("db-2", "node-2", "db"),
    ] {
        let pod = c.create_pod("shop", name, node, &[("app", app)]).await;
        pods.insert(name, pod.unwrap());
    }
    let [web1, web2, db1, db2] = ["web-1", "web-2", "db-1", "db-2"].map(|n| &pods[n]);

    // appliedTo change: an Egress with an IP from a pool selects app=web, then app=db.
    apply(&c, &pool_yaml("shop-pool", "10.10.0.11", "10.10.0.20"));
    apply(
        &c,
        &egress_yaml("shop", &["web"], "externalIPPool: shop-pool"),
    );
    let (eip, owner) = wait_realized(&c, "shop", None).await;
    let scenario = "appliedTo app=web";
    expect_sources(&c, scenario, &[(web1, eip), (web2, eip)]).await;
    expect_sources(&c, scenario, &at_node_ips(&c, &[db1, db2])).await;
    expect_events(&c, "shop", vec![assigned("shop", eip, &owner)]).await;

    let patch = r#"{"spec":{"appliedTo":{"podSelector":{"matchExpressions":[
        {"key":"app","operator":"In","values":["db"]}]}}}}"#;
    kubectl_ok(
        &c,
        &["patch", "egress", "shop", "--type=merge", "-p", patch],
        None,
    );
    let scenario = "appliedTo patched to app=db";
    expect_sources(&c, scenario, &at_node_ips(&c, &[web1, web2])).await;
    expect_sources(&c, scenario, &[(db1, eip), (db2, eip)]).await;
    assert_eq!(wait_realized(&c, "shop", None).await, (eip, owner.clone()));

    // Delete restores defaults: sources, per-Pod EgressMark flows, the SNAT rule, the IP.
    let ports = [db1, db2].map(|p| (p, pod_port(&c, p)));
    for (pod, port) in &ports {
        let flows = pod_egress_flows(&c, pod, port);
        assert!(
            !flows.is_empty(),
            "no EgressMark flow of {} before delete",
            pod.name
        );
    }
    assert!(
        !snat_rules_to(&c, &owner, eip).is_empty(),
        "no SNAT rule to {eip}"
    );
    assert!(node_has_ip(&c, &owner, eip), "{owner} does not hold {eip}");
    kubectl_ok(&c, &["delete", "egress", "shop"], None);
    expect_sources(&c, "deleted", &at_node_ips(&c, &[web1, web2, db1, db2])).await;
    eventually(&c, "per-Pod EgressMark flows removed", || {
        let left: Vec<String> = ports
            .iter()
            .flat_map(|(pod, port)| pod_egress_flows(&c, pod, port))
            .collect();
        (!left.is_empty()).then(|| format!("{left:#?}"))
    })
    .await;
    eventually(&c, "SNAT rule and egress IP removed", || {
        let rules = snat_rules_to(&c, &owner, eip);
        let held = node_has_ip(&c, &owner, eip);
        (!rules.is_empty() || held).then(|| format!("rules {rules:?}, IP held: {held}"))
    })
    .await;
    expect_events(
        &c,
        "shop",
        vec![
            assigned("shop", eip, &owner),
            unassigned("shop", eip, &owner),
        ],
    )
    .await;

    // egressIP change: a static Egress on node-2's IP moves to node-1's IP.
    let (ip1, ip2): (IpAddr, IpAddr) = (node_ip(1).into(), node_ip(2).into());
    apply(
        &c,
        &egress_yaml("static", &["web"], &format!("egressIP: {ip2}")),
    );
    wait_realized(&c, "static", Some("node-2")).await;
    expect_sources(&c, "static on node-2", &[(web1, ip2), (web2, ip2)]).await;
    expect_events(&c, "static", vec![assigned("static", ip2, "node-2")]).await;
    assert!(
        !snat_rules_to(&c, "node-2", ip2).is_empty(),
        "no SNAT rule to {ip2} on node-2"
    );
    let patch = format!(r#"{{"spec":{{"egressIP":"{ip1}"}}}}"#);
    kubectl_ok(
        &c,
        &["patch", "egress", "static", "--type=merge", "-p", &patch],
        None,
    );
    wait_realized(&c, "static", Some("node-1")).await;
    let scenario = "static moved to node-1";
    expect_sources(&c, scenario, &[(web1, ip1), (web2, ip1)]).await;
    expect_sources(&c, scenario, &at_node_ips(&c, &[db1, db2])).await;
    expect_events(
        &c,
        "static",
        vec![
            assigned("static", ip2, "node-2"),
            unassigned("static", ip2, "node-2"),
            assigned("static", ip1, "node-1"),
        ],
    )
    .await;
    eventually(&c, "SNAT rule moved from node-2 to node-1", || {
        let old = snat_rules_to(&c, "node-2", ip2);
        let new = snat_rules_to(&c, "node-1", ip1);
        (!old.is_empty() || new.is_empty()).then(|| format!("node-2 {old:?}, node-1 {new:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_egresses_on_one_pod_the_oldest_wins_every_time_and_the_other_takes_over_on_delete() {
    let mut c = start_box().await;
    c.ensure_namespace("shop", &[]).await.unwrap();
    let web1 = c.create_pod("shop", "web-1", "node-1", &[("app", "web")]);
    let web1 = web1.await.unwrap();
    let web2 = c.create_pod("shop", "web-2", "node-2", &[("app", "web")]);
    let web2 = web2.await.unwrap();
    // Probes: selected by the newer Egress only, one per Node, to see each Node realize it.
    let probe1 = c.create_pod("shop", "probe-1", "node-1", &[("app", "probe")]);
    let probe1 = probe1.await.unwrap();
    let probe2 = c.create_pod("shop", "probe-2", "node-2", &[("app", "probe")]);
    let probe2 = probe2.await.unwrap();

    // The older Egress has the lexically later name: name order would make the newer win.
    let older_ip: IpAddr = node_ip(2).into();
    apply(
        &c,
        &egress_yaml("zz-older", &["web"], &format!("egressIP: {older_ip}")),
    );
    wait_realized(&c, "zz-older", Some("node-2")).await;
    expect_sources(&c, "older only", &[(&web1, older_ip), (&web2, older_ip)]).await;
    let created = |e: &v1beta1::Egress| e.metadata.creation_timestamp.clone().unwrap().0;
    let older_created = created(&get_egress(&c, "zz-older").await.unwrap());
    // creationTimestamp has second resolution: the newer one must be created a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(&c, &pool_yaml("shop-pool", "10.10.0.11", "10.10.0.20"));
    let newer = egress_yaml("aa-newer", &["web", "probe"], "externalIPPool: shop-pool");
    apply(&c, &newer);
    let (newer_ip, _) = wait_realized(&c, "aa-newer", None).await;
    let newer_created = created(&get_egress(&c, "aa-newer").await.unwrap());
    assert!(
        older_created < newer_created,
        "zz-older ({older_created}) must be older than aa-newer ({newer_created})"
    );
    // Both Nodes have realized the newer Egress ...
    expect_sources(&c, "newer", &[(&probe1, newer_ip), (&probe2, newer_ip)]).await;
    // ... and every connection of the web Pods still leaves with the older one's IP.
    for round in 0..5 {
        for pod in [&web1, &web2] {
            let source = c.source_of(pod, Duration::from_secs(5));
            assert_eq!(
                source.unwrap(),
                older_ip,
                "connection {round} of {}: the older Egress must win\n{}",
                pod.name,
                c.logs()
            );
        }
    }

    kubectl_ok(&c, &["delete", "egress", "zz-older"], None);
    let scenario = "older deleted";
    expect_sources(&c, scenario, &[(&web1, newer_ip), (&web2, newer_ip)]).await;
}

/// What the probe saw: when each connection started, from which Pod, and its outcome.
type Probes = Vec<(Instant, String, Result<IpAddr, String>)>;

/// Connections from Pods to the external host, one Pod after the other, until stopped (also
/// when the test panics).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Probes>>,
}

impl Prober {
    fn start(c: &ClusterBox, pods: &[&BoxPod]) -> Prober {
        let server = c.server.address();
        let pods: Vec<_> = pods
            .iter()
            .map(|p| (p.netns.clone(), p.name.clone()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                for (netns, name) in &pods {
                    let started = Instant::now();
                    let result = ext_server::fetch(netns, server, 0, Duration::from_secs(2));
                    let source = result.map(|(ip, _)| ip).map_err(|e| format!("{e:#}"));
                    seen.push((started, name.clone(), source));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        thread.join().expect("the probe thread")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_owners_agent_keeps_the_egress_realized_its_traffic_on_the_egress_ip_and_its_events()
 {
    let mut c = start_box().await;
    c.ensure_namespace("shop", &[]).await.unwrap();
    let web1 = c.create_pod("shop", "web-1", "node-1", &[("app", "web")]);
    let web1 = web1.await.unwrap();
    let web2 = c.create_pod("shop", "web-2", "node-2", &[("app", "web")]);
    let web2 = web2.await.unwrap();
    apply(&c, &pool_yaml("shop-pool", "10.10.0.11", "10.10.0.20"));
    apply(
        &c,
        &egress_yaml("shop", &["web"], "externalIPPool: shop-pool"),
    );
    let (eip, owner) = wait_realized(&c, "shop", None).await;
    expect_sources(&c, "before restart", &[(&web1, eip), (&web2, eip)]).await;
    expect_events(&c, "shop", vec![assigned("shop", eip, &owner)]).await;
    let status_before = get_egress(&c, "shop").await.unwrap().status;

    let prober = Prober::start(&c, &[&web1, &web2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart_began = Instant::now();
    c.restart_agent(&owner)
        .await
        .expect("restarting the owner's agent");
    let restarted = Instant::now();
    // The restarted agent published its first plan's events before reporting ready.
    let events = events_of(&c, "shop").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probes = prober.finish();

    let during = probes
        .iter()
        .filter(|(t, _, _)| (restart_began..restarted).contains(t))
        .count();
    let wrong: Vec<_> = probes
        .iter()
        .filter(|(_, _, r)| r.as_ref() != Ok(&eip))
        .map(|(t, pod, r)| (t.saturating_duration_since(restart_began), pod, r))
        .collect();
    assert!(
        wrong.is_empty(),
        "connections not seen with {eip} around the restart of {owner}'s agent \
         (offsets from the restart): {wrong:#?}\n{}",
        c.logs()
    );
    assert!(
        during > 0,
        "no connection was made while {owner}'s agent restarted ({} in all)",
        probes.len()
    );
    assert_eq!(
        events,
        vec![assigned("shop", eip, &owner)],
        "the restarted agent must not announce an assignment that never changed"
    );
    let status_after = get_egress(&c, "shop").await.unwrap().status;
    assert_eq!(status_after, status_before, "status changed by the restart");
    expect_sources(&c, "after restart", &[(&web1, eip), (&web2, eip)]).await;

    // The restarted agent still knows it holds the IP: deleting the Egress unassigns it.
    kubectl_ok(&c, &["delete", "egress", "shop"], None);
    let defaults = [
        (&web1, node_ip_of(&c, &web1)),
        (&web2, node_ip_of(&c, &web2)),
    ];
    expect_sources(&c, "deleted after restart", &defaults).await;
    expect_events(
        &c,
        "shop",
        vec![
            assigned("shop", eip, &owner),
            unassigned("shop", eip, &owner),
        ],
    )
    .await;
}

/// `kubectl apply` of `yaml` must fail with a message containing `message`, and leave no
/// `kind/name` behind.
async fn expect_rejected(c: &ClusterBox, kind: &str, name: &str, yaml: &str, message: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "{kind} {name} was admitted: {said}\n{yaml}"
    );
    assert!(
        said.contains(message),
        "{kind} {name}: the message must contain {message:?}, kubectl said: {said}"
    );
    let get = c.kubectl(&["get", kind, name]).unwrap();
    assert!(
        !get.status.success() && text(&get.stderr).contains("NotFound"),
        "{kind} {name} was stored: {}{}",
        text(&get.stdout),
        text(&get.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_egresses_and_pools_are_rejected_by_kubectl_naming_the_field_and_nothing_else_changes()
 {
    let mut c = start_box().await;
    c.ensure_namespace("shop", &[]).await.unwrap();
    let web1 = c.create_pod("shop", "web-1", "node-1", &[("app", "web")]);
    let web1 = web1.await.unwrap();
    let db1 = c.create_pod("shop", "db-1", "node-1", &[("app", "db")]);
    let db1 = db1.await.unwrap();
    apply(&c, &pool_yaml("shop-pool", "10.10.0.11", "10.10.0.20"));
    apply(
        &c,
        &egress_yaml("shop", &["web"], "externalIPPool: shop-pool"),
    );
    let (eip, _) = wait_realized(&c, "shop", None).await;
    expect_sources(&c, "valid Egress", &[(&web1, eip)]).await;
    let egress_before = get_egress(&c, "shop").await.unwrap();
    let pool_before = kubectl_ok(&c, &["get", "eip", "shop-pool", "-o", "json"], None);

    let header = "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name:";
    let web = "appliedTo:\n    podSelector:\n      matchLabels:\n        app: web";
    let egress_cases = [
        (
            "bad-ip",
            format!("{header} bad-ip\nspec:\n  {web}\n  egressIP: 10.10.0.300\n"),
            "spec.egressIP: Invalid value: \"10.10.0.300\": spec.egressIP in body must be of type ipv4",
        ),
        (
            "outside-pool",
            format!(
                "{header} outside-pool\nspec:\n  {web}\n  egressIP: 10.10.0.99\n  externalIPPool: shop-pool\n"
            ),
            "denied the request: Egress outside-pool: spec.egressIP: IP 10.10.0.99 is not within the IP range",
        ),
        (
            "unknown-pool",
            format!(
                "{header} unknown-pool\nspec:\n  {web}\n  egressIP: 10.10.0.12\n  externalIPPool: no-such-pool\n"
            ),
            "denied the request: Egress unknown-pool: spec.externalIPPool: ExternalIPPool no-such-pool does not exist",
        ),
        (
            "no-applied-to",
            format!("{header} no-applied-to\nspec:\n  egressIP: 10.10.0.102\n"),
            "spec.appliedTo: Required value",
        ),
        (
            "no-ip",
            format!("{header} no-ip\nspec:\n  {web}\n"),
            // The CRD's anyOf/oneOf on spec: kube-apiserver names the first alternative.
            "\"spec\" must validate at least one schema (anyOf)\n* spec.egressIP: Required value",
        ),
    ];
    for (name, yaml, message) in &egress_cases {
        expect_rejected(&c, "egress", name, yaml, message).await;
    }
    let pool_cases = [
        (
            "reversed",
            pool_yaml("reversed", "10.10.0.40", "10.10.0.31"),
            "denied the request: ExternalIPPool reversed: spec.ipRanges[0]: range start 10.10.0.40 should not be greater than range end 10.10.0.31",
        ),
        (
            "overlapping",
            pool_yaml("overlapping", "10.10.0.20", "10.10.0.25"),
            "denied the request: ExternalIPPool overlapping: spec.ipRanges[0]: range [10.10.0.20-10.10.0.25] overlaps with range [10.10.0.11-10.10.0.20] of ExternalIPPool shop-pool",
        ),
    ];
    for (name, yaml, message) in &pool_cases {
        expect_rejected(&c, "externalippool", name, yaml, message).await;
    }

    // An empty appliedTo is valid (it selects nothing, as in the user guide): admitted, and the
    // Pod it does not select keeps its Node's IP.
    let empty =
        format!("{header} selects-nothing\nspec:\n  appliedTo: {{}}\n  egressIP: 10.10.0.102\n");
    apply(&c, &empty);
    wait_realized(&c, "selects-nothing", Some("node-2")).await;
    expect_sources(&c, "empty appliedTo", &[(&db1, node_ip_of(&c, &db1))]).await;

    // Nothing else changed: the valid Egress, its pool and its Pod's traffic.
    expect_sources(&c, "after the rejections", &[(&web1, eip)]).await;
    let egress_after = get_egress(&c, "shop").await.unwrap();
    assert_eq!(
        (
            &egress_after.spec,
            &egress_after.status,
            &egress_after.metadata.resource_version
        ),
        (
            &egress_before.spec,
            &egress_before.status,
            &egress_before.metadata.resource_version
        )
    );
    let pool_after = kubectl_ok(&c, &["get", "eip", "shop-pool", "-o", "json"], None);
    assert_eq!(pool_after, pool_before);
}
