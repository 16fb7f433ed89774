//! `ovs-egress render` predicts exactly what the agents program: the user guide's cluster (three
//! Nodes, Pods in `prod` and `staging`, the high-availability example, then the static one) runs
//! in the cluster-in-a-box; the cluster as `kubectl get -o yaml` shows it is the file handed to
//! `ovs-egress render --json --datapath-type netdev` for each Node; the Egress flows
//! (`L3Forwarding` and `EgressMark`, cookie category Egress) each Node's switch really has and
//! the rules of its `OVS-EGRESS-*` iptables chains must equal what `render` printed for it, once
//! Pod ports and the gateway MAC (placeholders in `render`) are replaced by names on both
//! sides. Marks depend on history (an IP keeps its mark); the examples are applied in the order
//! that makes that history agree with the fresh numbering `render` shows (lower IPs first).
//! Each agent's `GET /plan` (what the Node applied and programmed, real ofports and MAC) must
//! show the same plan as `render`, the same flows once normalised, and `ovs-egress inspect
//! --agent URL` must print the same text as `render` up to the flows.
//! Needs root and Open vSwitch; fails loudly without them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ovs_egress::ovs::ofctl::parse_dump;
use ovs_egress_core::pipeline::Category;
use ovs_egress_integration::bins;
use ovs_egress_integration::cluster::{AGENT_HEALTH, BoxNode, ClusterBox};
use ovs_egress_integration::user_guide::{
    HA_EXAMPLE, PODS, STATIC_EXAMPLE, next_second, wait_placed,
};
use serde_json::Value;

/// How long the switches may take to match (they normally do within a second).
const SETTLE: Duration = Duration::from_secs(20);

/// A Node's Egress datapath, normalised: flow lines and SNAT chain rules.
#[derive(Debug, PartialEq, Eq)]
struct Normalised {
    flows: BTreeSet<String>,
    rules: BTreeSet<String>,
}

/// `in_port=<n>` → `in_port=<pod>`, the gateway MAC → `<gateway-mac>`, the cookie's round and
/// (for per-Pod flows, whose object is the port) its object dropped; OVS's `--names` table names
/// on both sides.
fn normalise_flow(
    table: &str,
    priority: u16,
    matches: &str,
    actions: &str,
    cookie: u64,
    ports: &BTreeMap<String, String>,
    gateway_mac: &str,
) -> String {
    let mut matches: Vec<String> = matches.split(',').map(str::to_string).collect();
    let mut per_pod = false;
    for m in &mut matches {
        if let Some(port) = m.strip_prefix("in_port=") {
            let port = port.trim_matches('"');
            let pod = ports
                .get(port)
                .cloned()
                .unwrap_or(format!("unknown:{port}"));
            *m = format!("in_port=<{pod}>");
            per_pod = true;
        }
    }
    let object = if per_pod {
        "<pod>".to_string()
    } else {
        (cookie & 0xffff_ffff).to_string()
    };
    let category = (cookie >> 40) & 0xff;
    format!(
        "cookie={category}:{object} table={table} priority={priority},{} actions={}",
        matches.join(","),
        actions.replace(gateway_mac, "<gateway-mac>")
    )
}

/// The `-A OVS-EGRESS-…` lines of a text (render's restore text or `iptables -S`).
fn chain_rules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("-A OVS-EGRESS-"))
        .map(str::to_string)
        .collect()
}

/// What Node `node` of the box really has.
fn programmed(node: &BoxNode) -> Result<Normalised> {
    let ns = node.netns();
    let gateway_mac = ns
        .exec(&["cat", "/sys/class/net/antrea-gw0/address"])?
        .trim()
        .to_string();
    // Port name → `namespace/name` of its Pod, from the Interfaces' CNI external_ids.
    let list = node.node.ovs.vsctl(&[
        "--format=json",
        "--columns=name,external_ids",
        "list",
        "Interface",
    ])?;
    let list: Value = serde_json::from_str(&list)?;
    let mut ports = BTreeMap::new();
    for row in list["data"].as_array().context("vsctl list: no data")? {
        let name = row[0].as_str().unwrap_or_default().to_string();
        let ids: BTreeMap<String, String> = row[1][1]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv[0].as_str()?.into(), kv[1].as_str()?.into())))
            .collect();
        if let (Some(ns), Some(pod)) = (ids.get("k8s-pod-namespace"), ids.get("k8s-pod-name")) {
            ports.insert(name, format!("{ns}/{pod}"));
        }
    }
    let mut flows = BTreeSet::new();
    for table in ["L3Forwarding", "EgressMark"] {
        // OpenFlow 1.5, the protocol the agent programs with: actions read as `render` prints
        // them (`set_field`, `goto_table`).
        let filter = format!("table={table}");
        let dump = node.node.ovs.ofctl(&[
            "-O",
            "OpenFlow15",
            "--names",
            "dump-flows",
            "br-int",
            &filter,
        ])?;
        let dumped = parse_dump(&dump.replace(&format!("table={table}"), "table=0"))
            .map_err(|line| anyhow::anyhow!("unparsable dump line {line}"))?;
        for f in dumped.iter().filter(|f| Category::Egress.holds(f.cookie)) {
            flows.insert(normalise_flow(
                table,
                f.key.priority,
                &f.key.matches,
                &f.actions,
                f.cookie,
                &ports,
                &gateway_mac,
            ));
        }
    }
    let mut rules = BTreeSet::new();
    for table in ["nat", "mangle"] {
        rules.extend(chain_rules(&ns.exec(&["iptables", "-t", table, "-S"])?));
    }
    Ok(Normalised { flows, rules })
}

/// What `render` printed for a Node (`--json`).
fn rendered(json: &Value) -> Result<Normalised> {
    // render's placeholder ports: 100, 101, … in the order of the plan's Pods.
    let pods = json["plan"]["pods"]
        .as_object()
        .context("render --json: no plan.pods")?;
    let ports: BTreeMap<String, String> = pods
        .keys()
        .enumerate()
        .map(|(i, pod)| ((100 + i).to_string(), pod.clone()))
        .collect();
    rendered_with(json, &ports, "0a:00:00:00:00:01")
}

/// What an agent's `/plan` shows: real ofports (mapped to Pods from OVSDB) and gateway MAC.
fn live(node: &BoxNode, json: &Value) -> Result<Normalised> {
    let gateway_mac = node
        .netns()
        .exec(&["cat", "/sys/class/net/antrea-gw0/address"])?
        .trim()
        .to_string();
    let list = node.node.ovs.vsctl(&[
        "--format=json",
        "--columns=ofport,external_ids",
        "list",
        "Interface",
    ])?;
    let list: Value = serde_json::from_str(&list)?;
    let mut ports = BTreeMap::new();
    for row in list["data"].as_array().context("vsctl list: no data")? {
        let ofport = row[0].as_i64().unwrap_or(-1).to_string();
        let ids: BTreeMap<String, String> = row[1][1]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv[0].as_str()?.into(), kv[1].as_str()?.into())))
            .collect();
        if let (Some(ns), Some(pod)) = (ids.get("k8s-pod-namespace"), ids.get("k8s-pod-name")) {
            ports.insert(ofport, format!("{ns}/{pod}"));
        }
    }
    rendered_with(json, &ports, &gateway_mac)
}

/// The flows and chain rules of a `Rendered` JSON, ports and gateway MAC normalised.
fn rendered_with(
    json: &Value,
    ports: &BTreeMap<String, String>,
    gateway_mac: &str,
) -> Result<Normalised> {
    let mut flows = BTreeSet::new();
    for line in json["datapath"]["flows"]
        .as_array()
        .context("render --json: no datapath.flows")?
    {
        let line = line.as_str().context("flow line")?;
        let table = line
            .split(", ")
            .find_map(|f| f.strip_prefix("table="))
            .context("flow without table")?
            .to_string();
        let parsed = parse_dump(&line.replace(&format!("table={table}"), "table=0"))
            .map_err(|l| anyhow::anyhow!("unparsable rendered flow {l}"))?;
        for f in parsed {
            flows.insert(normalise_flow(
                &table,
                f.key.priority,
                &f.key.matches,
                &f.actions,
                f.cookie,
                ports,
                gateway_mac,
            ));
        }
    }
    let rules = chain_rules(
        json["datapath"]["iptables"]
            .as_str()
            .context("render --json: no datapath.iptables")?,
    );
    Ok(Normalised { flows, rules })
}

/// `ovs-egress render --json --datapath-type netdev --node NODE -f FILE`.
fn render(file: &std::path::Path, node: &str) -> Result<Value> {
    Ok(serde_json::from_str(&render_output(file, node, true)?)?)
}

/// `ovs-egress render [--json] --datapath-type netdev --node NODE -f FILE`: its stdout.
fn render_output(file: &std::path::Path, node: &str, json: bool) -> Result<String> {
    let out = Command::new(bins::binary("ovs-egress")?)
        .arg("render")
        .args(json.then_some("--json"))
        .args(["--datapath-type", "netdev", "--node", node])
        .arg("-f")
        .arg(file)
        .output()?;
    if !out.status.success() {
        bail!(
            "render --node {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The agent's `/plan` as JSON.
fn agent_plan(node: &BoxNode) -> Result<Value> {
    let (code, body) = node.agent_get("/plan")?;
    if code != 200 {
        bail!("{}: GET /plan answered {code}: {body}", node.name);
    }
    Ok(serde_json::from_str(&body)?)
}

/// `ovs-egress inspect --agent http://<the agent>` run inside the Node.
fn inspect(node: &BoxNode) -> Result<String> {
    let binary = bins::binary("ovs-egress")?;
    node.netns().exec(&[
        binary.to_str().context("binary path")?,
        "inspect",
        "--agent",
        &format!("http://{AGENT_HEALTH}"),
    ])
}

/// The text of `render` (or `inspect`) before the flows (which carry placeholders in `render`).
fn text_before_flows(text: &str) -> &str {
    text.split("\nEgress flows on br-int")
        .next()
        .unwrap_or(text)
}

#[tokio::test]
async fn render_prints_exactly_the_egress_flows_and_snat_rules_each_agent_programs() {
    let mut cluster = ClusterBox::start(&[4, 5, 6])
        .await
        .expect("starting the box");
    for namespace in ["prod", "staging"] {
        cluster.ensure_namespace(namespace, &[]).await.unwrap();
    }
    for &(namespace, name, app, node) in PODS {
        cluster
            .create_pod(namespace, name, &format!("node-{node}"), &[("app", app)])
            .await
            .unwrap();
    }
    cluster.apply(HA_EXAMPLE).unwrap();
    wait_placed(&cluster, &["egress-prod-web", "egress-staging-web"])
        .await
        .unwrap();
    next_second().await;
    cluster.apply(STATIC_EXAMPLE).unwrap();
    wait_placed(&cluster, &["egress-prod", "egress-staging"])
        .await
        .unwrap();

    let dump = cluster
        .kubectl_ok(
            &[
                "get",
                "nodes,namespaces,pods,externalippools,egresses",
                "-A",
                "-o",
                "yaml",
            ],
            None,
        )
        .unwrap();
    let file = cluster.dir.join("cluster.yaml");
    std::fs::write(&file, &dump).unwrap();

    let mut mismatches = Vec::new();
    for node in &cluster.nodes {
        let json = render(&file, &node.name).unwrap();
        let want = rendered(&json).unwrap();
        assert!(
            want.flows.iter().any(|f| f.contains("in_port=<")),
            "{}: render shows no per-Pod flow: {want:#?}",
            node.name
        );
        let deadline = Instant::now() + SETTLE;
        let mut have = programmed(node).unwrap();
        while have != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            have = programmed(node).unwrap();
        }
        if have != want {
            let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
                a.difference(b).cloned().collect::<Vec<_>>()
            };
            mismatches.push(format!(
                "{}:\n  flows only rendered: {:#?}\n  flows only programmed: {:#?}\n  \
                 rules only rendered: {:#?}\n  rules only programmed: {:#?}",
                node.name,
                only(&want.flows, &have.flows),
                only(&have.flows, &want.flows),
                only(&want.rules, &have.rules),
                only(&have.rules, &want.rules),
            ));
        }
    }
    if !mismatches.is_empty() {
        cluster.keep_logs();
    }
    assert!(
        mismatches.is_empty(),
        "render and the agents disagree:\n{}\ncluster file:\n{dump}",
        mismatches.join("\n")
    );

    // What each agent says it applied and programmed (`/plan`, `inspect`) is what render said.
    for node in &cluster.nodes {
        let json = render(&file, &node.name).unwrap();
        let deadline = Instant::now() + SETTLE;
        let mut live_json = agent_plan(node).unwrap();
        while live_json["plan"] != json["plan"] && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            live_json = agent_plan(node).unwrap();
        }
        assert_eq!(
            live_json["plan"], json["plan"],
            "{}: /plan and render disagree on the plan",
            node.name
        );
        assert_eq!(live_json["node"], json["node"]);
        assert_eq!(live_json["transport_ip"], json["transport_ip"]);
        assert_eq!(live_json["pod_cidr"], json["pod_cidr"]);
        assert_eq!(
            live(node, &live_json).unwrap(),
            rendered(&json).unwrap(),
            "{}: the flows and rules of /plan (real ports) and render (placeholders) differ",
            node.name
        );
        let inspected = inspect(node).unwrap();
        let predicted = render_output(&file, &node.name, false).unwrap();
        assert_eq!(
            text_before_flows(&inspected),
            text_before_flows(&predicted),
            "{}: inspect and render print different plans",
            node.name
        );
    }
}
