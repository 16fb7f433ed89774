//! Egress proven with packets: two test-bed Nodes running the datapath runtime, Pods created
//! through the CNI plugin, and an external server on the underlay that records the source
//! address of every TCP connection it accepts (and tells the client). NodePlans come from
//! `plan::compute` on a cluster written as YAML; each Node applies its plan with the agent's own
//! apply path, `datapath::egress::EgressApplier` (SNAT rules → flows through the runtime, waiting
//! for the runtime to report them installed → OVS's tunnel neighbours → IPs → GARP → removals),
//! with flow inputs from the agent's `pipeline::egress::egress_context`. Userspace datapath, so the mark travels in the source
//! MAC, and OVS's tunnel neighbour cache is kept right by the production code (`ovs::tnl_neigh`),
//! never by hand. Needs root and Open vSwitch; fails (never skips) without them.
//!
//! IPv6: egress flows are programmed for IPv6 IPs (proven on a real switch in
//! `egress_ipv6_flows.rs`), but Pod networking is IPv4 only, so there is no IPv6 traffic to
//! test; the unsolicited NA frame is proven at unit level in `host::advertise`.

mod host_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ovs_egress::datapath::PortAcks;
use ovs_egress::datapath::egress::{ApplyReport, DeviceChoice, EgressApplier, EgressHost};
use ovs_egress::ovs::tnl_neigh::{TunnelNeighbours, parse_show};
use ovs_egress_core::pipeline::IpNetwork;
use ovs_egress_core::pipeline::egress::{
    EgressContext, EgressOptions, MarkCarrier, egress_context,
};
use ovs_egress_core::plan::{self, NodePlan};
use ovs_egress_core::render::parse_cluster;
use ovs_egress_host::iptables::SnatConfig;
use ovs_egress_integration::Netns;
use ovs_egress_integration::datapath::{CniPod, DatapathNode};
use ovs_egress_integration::ext_server::{self, ExtServer};
use ovs_egress_integration::underlay::Underlay;

use host_support::{Capture, in_netns};

const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 100);
const SERVER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 200);
const SERVICE_CIDR: &str = "10.96.0.0/12";

/// One connection from `pod` to the external server asking for `size` bytes.
fn fetch(pod: &Netns, size: usize, timeout: Duration) -> Result<(IpAddr, usize)> {
    ext_server::fetch(
        pod,
        SocketAddr::from((SERVER, ext_server::PORT)),
        size,
        timeout,
    )
}

/// `fetch` with retries for the first connection over a fresh path.
fn source_of(pod: &CniPod) -> IpAddr {
    let mut last = None;
    for _ in 0..5 {
        match fetch(pod.ns(), 10, Duration::from_secs(2)) {
            Ok((source, _)) => return source,
            Err(e) => last = Some(e),
        }
    }
    panic!("Pod {} cannot reach the server: {last:?}", pod.ip);
}

/// A test-bed Node with its Egress applier (taken while it runs in the Node's namespace).
struct EgressNode {
    applier: Option<EgressApplier>,
    dp: DatapathNode,
}

impl EgressNode {
    /// Replaces the host side of the applier (e.g. with another egress device).
    fn set_host(&mut self, host: EgressHost) {
        let handle = self.dp.runtime().expect("runtime started").handle();
        self.applier = Some(EgressApplier::new(host, handle));
    }
}

impl EgressNode {
    fn name(&self) -> String {
        format!("node{}", self.dp.node.index)
    }
}

/// Two Nodes, an external server namespace, Pods a1 (selected) and u1 (not) on Node 1 and b2
/// (selected) on Node 2. Field order = drop order.
struct Bed {
    server: ExtServer,
    pods: BTreeMap<&'static str, CniPod>,
    nodes: Vec<EgressNode>,
    underlay: Underlay,
}

fn bed() -> Bed {
    let underlay = Underlay::new().unwrap();
    let server = ExtServer::start(&underlay, SERVER).unwrap();
    let mut dps = vec![
        DatapathNode::new(&underlay, 1).unwrap(),
        DatapathNode::new(&underlay, 2).unwrap(),
    ];
    let remotes = [dps[1].as_remote(), dps[0].as_remote()];
    for (dp, remote) in dps.iter_mut().zip(remotes) {
        dp.start_runtime(vec![remote]).unwrap();
    }
    let mut pods = BTreeMap::new();
    for (name, node) in [("a1", 0), ("u1", 0), ("b2", 1)] {
        pods.insert(name, dps[node].add_pod(name).unwrap());
    }
    let transport_ips: Vec<(String, IpAddr)> = dps
        .iter()
        .map(|dp| (format!("node{}", dp.node.index), IpAddr::V4(dp.node.ip())))
        .collect();
    let nodes = dps
        .into_iter()
        .map(|dp| {
            let config = SnatConfig {
                gateway: "antrea-gw0".into(),
                random_fully: false,
                carrier: MarkCarrier::SourceMac,
                pod_cidrs: vec![IpNetwork::V4(dp.pod_cidr())],
            };
            let device = DeviceChoice {
                configured: Some("br-phy".into()),
                transport: "br-phy".into(),
            };
            let name = format!("node{}", dp.node.index);
            let others = transport_ips.iter().filter(|(n, _)| *n != name).cloned();
            let mut host = EgressHost::new(config, device)
                .with_tunnel_neighbours(TunnelNeighbours::new(dp.node.ovs.rundir()));
            host.set_remote_transport_ips(others.collect());
            let mut node = EgressNode { applier: None, dp };
            node.set_host(host);
            node
        })
        .collect();
    Bed {
        server,
        pods,
        nodes,
        underlay,
    }
}

impl Bed {
    /// The cluster as YAML: both Nodes (Node `pool_holder` labelled eligible for the pool),
    /// the Pods, and Egress `web` selecting `app: web` with [`EGRESS_IP`], static or from a
    /// pool.
    fn cluster(&self, pool_holder: Option<usize>) -> String {
        let mut docs = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let label = if pool_holder == Some(i) { "yes" } else { "no" };
            docs.push(format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {}, labels: {{egress: '{label}'}}}}\n\
                 spec: {{podCIDR: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
                n.name(),
                n.dp.pod_cidr(),
                n.dp.node.ip()
            ));
        }
        docs.push("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n".into());
        for (name, pod) in &self.pods {
            let app = if name.starts_with('u') {
                "other"
            } else {
                "web"
            };
            let node = if name.ends_with('1') {
                "node1"
            } else {
                "node2"
            };
            docs.push(format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\n\
                 spec: {{nodeName: {node}}}\nstatus: {{phase: Running, podIPs: [{{ip: {}}}]}}\n",
                pod.ip
            ));
        }
        let pool = if pool_holder.is_some() {
            docs.push(format!(
                "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {{name: pool}}\n\
                 spec: {{ipRanges: [{{start: {EGRESS_IP}, end: {EGRESS_IP}}}], \
                 nodeSelector: {{matchLabels: {{egress: 'yes'}}}}}}\n"
            ));
            ", externalIPPool: pool"
        } else {
            ""
        };
        docs.push(format!(
            "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {{name: web}}\n\
             spec: {{appliedTo: {{podSelector: {{matchLabels: {{app: web}}}}}}, egressIP: {EGRESS_IP}{pool}}}\n"
        ));
        docs.join("---\n")
    }

    /// The plan of Node `i` for `cluster`, with `local_ips` configured on it.
    fn plan(&self, i: usize, cluster: &str, local_ips: &[IpAddr]) -> NodePlan {
        let mut view = parse_cluster(cluster).unwrap().view;
        view.local_ips = local_ips.iter().copied().collect();
        view.local_ips
            .insert(IpAddr::V4(self.nodes[i].dp.node.ip()));
        plan::compute(&view, &self.nodes[i].name(), None)
    }

    /// The Egress flow inputs of Node `i`, assembled as the agent does: its Pods' real ofports
    /// and gateway MAC, the cluster's Nodes, the Service CIDR.
    fn context(&self, i: usize) -> EgressContext {
        let node = &self.nodes[i];
        let mut pod_ofports = BTreeMap::new();
        for (name, pod) in &self.pods {
            let here = node
                .dp
                .node
                .netns()
                .exec(&["ip", "link", "show", &pod.host_if]);
            if here.is_ok() {
                let ofport = node
                    .dp
                    .node
                    .ovs
                    .vsctl(&["get", "Interface", &pod.host_if, "ofport"])
                    .unwrap();
                pod_ofports.insert(format!("default/{name}"), ofport.trim().parse().unwrap());
            }
        }
        let nodes = parse_cluster(&self.cluster(None)).unwrap().view.nodes;
        let options = EgressOptions {
            carrier: MarkCarrier::SourceMac,
            service_cidrs: vec![SERVICE_CIDR.parse().unwrap()],
            except_cidrs: Vec::new(),
        };
        egress_context(
            &nodes,
            &node.name(),
            pod_ofports,
            node.dp.gateway_mac(),
            &options,
        )
    }

    /// Applies `plan` on Node `i` with the agent's apply path, on a thread in the Node's
    /// namespace.
    fn apply(&mut self, i: usize, plan: &NodePlan) -> ApplyReport {
        let ctx = self.context(i);
        let name = self.nodes[i].name();
        let ns = self.nodes[i].dp.node.netns().clone();
        let mut applier = self.nodes[i].applier.take().expect("applier present");
        let p = plan.clone();
        let (applier, result) = in_netns(&ns, move || async move {
            let result = applier.apply(&p, &ctx, PortAcks::Installed).await;
            (applier, result)
        });
        self.nodes[i].applier = Some(applier);
        result.unwrap_or_else(|e| panic!("{name}: plan not applied: {e}"))
    }

    /// The MAC Node `i`'s OVS tunnels [`EGRESS_IP`] to (`tnl/neigh/show`), if it has one.
    fn tunnel_mac(&self, i: usize) -> Option<String> {
        let show = self.nodes[i]
            .dp
            .node
            .ovs
            .appctl(&["tnl/neigh/show"])
            .unwrap();
        parse_show(&show)
            .into_iter()
            .find(|e| e.ip == egress_ip())
            .map(|e| e.mac.to_string())
    }

    /// Makes Node `i`'s OVS behave as if it had not snooped the advertisement of [`EGRESS_IP`]
    /// from its new owner (MAC `owner_mac`), as happens when the GARP is lost or hits a cached
    /// datapath flow: once it snooped it (or after 1 s), the entry is set back to the MAC of a
    /// former owner (a gone Node). Only the production refresh can then repair it.
    fn miss_the_advertisement(&self, i: usize, owner_mac: &str) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.tunnel_mac(i).as_deref() != Some(owner_mac) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stale = "02:30:00:00:00:1f";
        let ip = EGRESS_IP.to_string();
        let ovs = &self.nodes[i].dp.node.ovs;
        ovs.appctl(&["tnl/neigh/set", "br-phy", &ip, stale])
            .unwrap();
        assert_eq!(self.tunnel_mac(i).as_deref(), Some(stale));
    }

    fn node_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.nodes[i].dp.node.ip())
    }
}

fn egress_ip() -> IpAddr {
    IpAddr::V4(EGRESS_IP)
}

fn assert_clean(report: &ApplyReport, what: &str) {
    assert!(report.ip_errors.is_empty(), "{what}: {report:?}");
}

#[test]
fn selected_pods_leave_with_the_static_egress_ip_on_either_node_and_others_with_their_node_ip() {
    let mut bed = bed();
    let cluster = bed.cluster(None);
    let static_on = |bed: &Bed, owner: usize| {
        for (i, n) in bed.nodes.iter().enumerate() {
            let verb = if i == owner { "add" } else { "del" };
            let _ = n.dp.node.netns().exec(&[
                "ip",
                "addr",
                verb,
                &format!("{EGRESS_IP}/32"),
                "dev",
                "br-phy",
            ]);
        }
        bed.server
            .netns
            .exec(&["ip", "neigh", "flush", "to", &EGRESS_IP.to_string()])
            .unwrap();
    };
    for owner in [1, 0] {
        // (a) the IP on Node 2, then (b) on Node 1; the owner applies first.
        static_on(&bed, owner);
        for i in [owner, 1 - owner] {
            let local: &[IpAddr] = if i == owner { &[egress_ip()] } else { &[] };
            let plan = bed.plan(i, &cluster, local);
            assert_eq!(plan.mark_of(egress_ip()).is_some(), i == owner);
            let report = bed.apply(i, &plan);
            assert_clean(&report, "apply");
        }
        for pod in ["a1", "b2"] {
            assert_eq!(
                source_of(&bed.pods[pod]),
                egress_ip(),
                "selected Pod {pod}, egress IP on node{}",
                owner + 1
            );
            let (source, got) = fetch(bed.pods[pod].ns(), 200_000, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("200 KB to {pod}: {e}"));
            assert_eq!((source, got), (egress_ip(), 200_000), "{pod}");
        }
        assert_eq!(source_of(&bed.pods["u1"]), bed.node_ip(0), "unselected Pod");
    }
}

#[test]
fn failure_policy_drop_drops_selected_pods_while_no_node_can_hold_the_ip_and_node_ip_lets_them_out()
{
    let mut bed = bed();
    // A pool no Node is eligible for: the Egress's IP has no holder.
    let no_holder = bed.cluster(Some(usize::MAX));
    let dropping = no_holder.replace(
        "metadata: {name: web}",
        "metadata: {name: web, annotations: {egress.ovs-egress.io/failure-policy: drop}}",
    );
    assert_ne!(dropping, no_holder);
    for i in [0, 1] {
        let plan = bed.plan(i, &dropping, &[]);
        assert!(plan.pods.values().all(|b| b.drop_external), "{plan:?}");
        assert_clean(&bed.apply(i, &plan), "apply with the drop policy");
    }
    for pod in ["a1", "b2"] {
        for _ in 0..3 {
            let seen = fetch(bed.pods[pod].ns(), 10, Duration::from_millis(700));
            assert!(
                seen.is_err(),
                "{pod} got out while its Egress has no holder: {seen:?}"
            );
        }
    }
    assert_eq!(source_of(&bed.pods["u1"]), bed.node_ip(0), "unselected Pod");
    // The default policy: the selected Pods leave with their Node's IP again.
    for i in [0, 1] {
        let plan = bed.plan(i, &no_holder, &[]);
        assert!(plan.pods.values().all(|b| !b.drop_external), "{plan:?}");
        assert_clean(&bed.apply(i, &plan), "apply with the default policy");
    }
    assert_eq!(source_of(&bed.pods["a1"]), bed.node_ip(0));
    assert_eq!(source_of(&bed.pods["b2"]), bed.node_ip(1));
}

#[test]
fn moving_a_pool_egress_ip_never_shows_a_selected_pod_with_another_source() {
    let mut bed = bed();
    // Node 2 holds the IP: the applier adds it to br-phy and advertises it.
    let before = bed.cluster(Some(1));
    for i in [1, 0] {
        let plan = bed.plan(i, &before, &[]);
        let report = bed.apply(i, &plan);
        assert_clean(&report, "initial apply");
        assert_eq!(report.added.contains(&egress_ip()), i == 1);
    }
    assert_eq!(source_of(&bed.pods["a1"]), egress_ip());
    assert_eq!(source_of(&bed.pods["b2"]), egress_ip());
    assert_eq!(
        bed.tunnel_mac(0),
        Some(bed.nodes[1].dp.node.phy_mac()),
        "node1 tunnels the egress IP to node2"
    );

    // A client on a1 connects every 20 ms during the move.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        let ns = bed.pods["a1"].ns().clone();
        std::thread::spawn(move || {
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                if fetch(&ns, 10, Duration::from_millis(300)).is_err() {
                    failures += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let garp = Capture::start(
        bed.underlay.netns(),
        "br-u",
        1,
        &["arp", "and", "arp[14:4]", "=", "arp[24:4]"],
    )
    .unwrap();
    let t0 = Instant::now();
    let after = bed.cluster(Some(0));
    let new_owner_plan = bed.plan(0, &after, &[]);
    let report = bed.apply(0, &new_owner_plan);
    assert_clean(&report, "new owner");
    assert_eq!(report.added, [egress_ip()]);
    bed.miss_the_advertisement(1, &bed.nodes[0].dp.node.phy_mac());
    let old_owner_plan = bed.plan(1, &after, &[]);
    let report = bed.apply(1, &old_owner_plan);
    assert_clean(&report, "old owner");
    assert_eq!(report.removed, [egress_ip()]);
    let moved = Instant::now();
    let node1_mac = bed.nodes[0].dp.node.phy_mac();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();

    let seen = bed.server.seen_since(t0 - Duration::from_millis(300));
    let wrong: Vec<&(Instant, IpAddr)> = seen.iter().filter(|(_, ip)| *ip != egress_ip()).collect();
    assert!(
        wrong.is_empty(),
        "selected Pod seen with another source: {wrong:?}"
    );
    let first_after = seen
        .iter()
        .find(|(t, _)| *t >= moved)
        .map(|(t, _)| t.duration_since(moved));
    assert!(
        first_after.is_some_and(|d| d <= Duration::from_secs(1)),
        "server saw the egress IP again after {first_after:?} (move took {:?}, {failures} failed attempts)",
        moved.duration_since(t0)
    );
    eprintln!(
        "move: control plane {:?}, {} connections seen, {failures} failed attempts",
        moved.duration_since(t0),
        seen.len()
    );
    assert_eq!(
        bed.tunnel_mac(1),
        Some(node1_mac.clone()),
        "node2's tunnel neighbour for the egress IP after the move"
    );
    assert_eq!(
        source_of(&bed.pods["b2"]),
        egress_ip(),
        "b2 now tunnels to Node 1"
    );

    let frames = garp.finish(Duration::from_secs(2)).unwrap();
    assert!(
        frames.contains(&node1_mac) && frames.contains(&EGRESS_IP.to_string()),
        "no GARP from the new owner on the underlay: {frames}"
    );
    let neigh = bed
        .server
        .netns
        .exec(&["ip", "neigh", "show", &EGRESS_IP.to_string()])
        .unwrap();
    assert!(
        neigh.contains(&node1_mac),
        "external host's neighbour entry: {neigh}"
    );
}

#[test]
fn a_missing_egress_device_fails_only_its_egress_and_leaves_the_others_working() {
    let mut bed = bed();
    // Node 2 is told to put the pool IP on a device that does not exist.
    bed.nodes[1].set_host(EgressHost::new(
        SnatConfig {
            gateway: "antrea-gw0".into(),
            random_fully: false,
            carrier: MarkCarrier::SourceMac,
            pod_cidrs: vec!["10.244.2.0/24".parse::<IpNetwork>().unwrap()],
        },
        DeviceChoice {
            configured: Some("nope0".into()),
            transport: "br-phy".into(),
        },
    ));
    let cluster = bed.cluster(Some(1))
        + &format!(
            "---\napiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {{name: other}}\n\
         spec: {{appliedTo: {{podSelector: {{matchLabels: {{app: other}}}}}}, egressIP: {}}}\n",
            bed.node_ip(1)
        );
    let plan = bed.plan(1, &cluster, &[]);
    let report = bed.apply(1, &plan);
    let error = &report.ip_errors[&egress_ip()];
    assert!(
        error.contains("egress device \"nope0\" does not exist"),
        "{error}"
    );
    let statuses = report.statuses(&plan);
    let web = statuses["web"].ip_assigned.as_ref().unwrap();
    assert!(web.message.contains("nope0"), "{web:?}");
    let other = statuses["other"].ip_assigned.as_ref().unwrap();
    assert_eq!(other.message, plan::status::ASSIGNED_MESSAGE);

    // The other Egress (static: Node 2's own IP) still works for u1 on Node 1.
    let plan1 = bed.plan(0, &cluster, &[]);
    assert_clean(&bed.apply(0, &plan1), "node1");
    let node2_ip = bed.node_ip(1);
    assert_eq!(source_of(&bed.pods["u1"]), node2_ip);
}
