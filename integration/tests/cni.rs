//! The CNI plugin binary on a real (private, userspace-datapath) OVS: invoked exactly as the
//! kubelet's runtime does (CNI_* variables, network config on stdin) inside a Node namespace,
//! it wires Pods, and every failure leaves no veth, no iptables rule, no OVS port and no IP
//! reservation behind. Needs root and Open vSwitch; fails (never skips) without them.
//!
//! The `#[ignore]`d `bench_*` test measures CNI ADD wall time (see its doc comment).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use ovs_egress_integration::cmd::run;
use ovs_egress_integration::cni::{self, Pod, plugin_binary, run_plugin};
use ovs_egress_integration::netns::unique_token;
use ovs_egress_integration::{Netns, OvsInstance};

/// A Node: a namespace with a private OVS, a netdev `br-int`, and a CNI state directory.
struct Node {
    state_dir: PathBuf,
    ovs: OvsInstance,
    ns: Netns,
}

impl Node {
    fn new() -> Result<Node> {
        let ns = Netns::new("node")?;
        let ovs = OvsInstance::start(&ns)?;
        ovs.vsctl(&[
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
        ])?;
        let state_dir = std::env::temp_dir().join(format!("{}-cni-state", unique_token()));
        Ok(Node { state_dir, ovs, ns })
    }

    fn conf(&self, pod_cidr: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "oe-test",
            "type": "ovs-egress",
            "podCIDR": pod_cidr,
            "mtu": 1450,
            "ovsBridge": "br-int",
            "ovsDbSocket": self.ovs.db_socket(),
            "datapathType": "netdev",
            "stateDir": self.state_dir,
            // No agent on this Node: do not wait for one (tests of the wait set their own).
            "flowsReadyTimeoutMs": 0,
        })
    }

    /// Run the plugin in the Node namespace as the runtime would; returns exit success and the
    /// parsed stdout (Null when empty).
    fn cni(&self, env: &[(&str, &str)], stdin: &[u8]) -> Result<(bool, Value)> {
        run_plugin(&self.ns, env, stdin)
    }

    fn call(&self, command: &str, pod: &Pod, conf: &Value) -> Result<(bool, Value)> {
        cni::call(&self.ns, command, pod, conf)
    }

    /// Host interfaces created by the plugin (`oe…` names; the harness uses none).
    fn plugin_links(&self) -> Result<Vec<String>> {
        let out = self.ns.exec(&["ip", "-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("oe"))
            .collect())
    }

    fn reserved_ips(&self) -> Result<Vec<String>> {
        if !self.state_dir.exists() {
            return Ok(vec![]);
        }
        let mut ips = vec![];
        for entry in std::fs::read_dir(&self.state_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                ips.push(name);
            }
        }
        Ok(ips)
    }

    fn ports(&self) -> Result<Vec<String>> {
        Ok(self
            .ovs
            .vsctl(&["list-ports", "br-int"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn raw_rules(&self) -> Result<String> {
        self.ns.exec(&["iptables", "-t", "raw", "-S", "PREROUTING"])
    }

    /// Nothing of the plugin is left: no veth, no rule, no port, no reservation.
    fn assert_clean(&self) -> Result<()> {
        let (links, ips, ports) = (self.plugin_links()?, self.reserved_ips()?, self.ports()?);
        let rules = self.raw_rules()?;
        if !links.is_empty() || !ips.is_empty() || !ports.is_empty() || rules.contains("DROP") {
            bail!("leftovers: links {links:?}, ips {ips:?}, ports {ports:?}, rules {rules}");
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn code(v: &Value) -> i64 {
    v["code"].as_i64().unwrap_or(-1)
}

fn link_json(ns: &Netns, dev: &str) -> Result<Value> {
    let out = ns.exec(&["ip", "-j", "addr", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v[0].clone())
}

fn tx_checksum_off(ns: &Netns, dev: &str) -> Result<bool> {
    let out = ns.exec(&["ethtool", "-k", dev])?;
    Ok(out.lines().any(|l| l.trim() == "tx-checksumming: off"))
}

#[test]
fn add_wires_pod_and_ovs_port_check_passes_del_removes_all_and_is_idempotent() -> Result<()> {
    let node = Node::new()?;
    let pod = Pod::new("web-0")?;
    let conf = node.conf("10.244.1.0/24");
    let (ok, result) = node.call("ADD", &pod, &conf)?;
    assert!(ok, "ADD failed: {result}");

    // The Result (CNI 1.0.0).
    assert_eq!(result["cniVersion"], "1.0.0");
    let host = result["interfaces"][0]["name"]
        .as_str()
        .context("host name")?
        .to_string();
    assert!(
        host.len() <= 15 && result["interfaces"][0].get("sandbox").is_none(),
        "{result}"
    );
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        pod.netns_path().as_str()
    );
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(result["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(
        result["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
    );

    // The Pod side: address, MTU, MAC, default route, TX checksum offload off (OVS userspace
    // forwards CHECKSUM_PARTIAL frames with a wrong TCP checksum).
    let eth0 = link_json(&pod.ns, "eth0")?;
    assert_eq!(eth0["mtu"], 1450);
    assert_eq!(eth0["address"], result["interfaces"][1]["mac"]);
    let addrs = eth0["addr_info"].as_array().context("addr_info")?;
    assert!(
        addrs
            .iter()
            .any(|a| a["local"] == "10.244.1.2" && a["prefixlen"] == 24),
        "{eth0}"
    );
    let routes = pod.ns.exec(&["ip", "route", "show", "default"])?;
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );
    assert!(tx_checksum_off(&pod.ns, "eth0")?);

    // The Node side: MTU, NOARP, forwarding off, raw DROP rule (the kernel
    // must not answer ARP or forward copies of what OVS reads via AF_PACKET), TX checksum off.
    let host_link = link_json(&node.ns, &host)?;
    assert_eq!(host_link["mtu"], 1450);
    assert!(
        host_link["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("NOARP")),
        "{host_link}"
    );
    let fwd = node
        .ns
        .exec(&["sysctl", "-n", &format!("net.ipv4.conf.{host}.forwarding")])?;
    assert_eq!(fwd.trim(), "0");
    assert!(
        node.raw_rules()?
            .contains(&format!("-A PREROUTING -i {host} -j DROP"))
    );
    assert!(tx_checksum_off(&node.ns, &host)?);

    // The OVS port and the external_ids the agent reads.
    assert_eq!(node.ports()?, vec![host.clone()]);
    for (key, value) in [
        ("container-id", pod.container_id.as_str()),
        ("k8s-pod-name", "web-0"),
        ("k8s-pod-namespace", "default"),
        ("ip", "10.244.1.2"),
        ("mac", result["interfaces"][1]["mac"].as_str().unwrap()),
    ] {
        let column = format!("external_ids:{key}");
        let got = node.ovs.vsctl(&["get", "Interface", &host, &column])?;
        assert_eq!(got.trim().trim_matches('"'), value, "{column}");
    }
    assert_eq!(node.reserved_ips()?, vec!["10.244.1.2".to_string()]);

    // CHECK against the prevResult.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result.clone();
    let (ok, out) = node.call("CHECK", &pod, &check_conf)?;
    assert!(ok, "CHECK failed: {out}");

    // DEL removes everything, twice in a row.
    for round in 0..2 {
        let (ok, out) = node.call("DEL", &pod, &check_conf)?;
        assert!(ok && out.is_null(), "DEL #{round}: {out}");
        node.assert_clean()?;
        assert!(pod.ns.exec(&["ip", "link", "show", "eth0"]).is_err());
    }
    // CHECK now reports what is missing.
    let (ok, out) = node.call("CHECK", &pod, &check_conf)?;
    assert!(!ok && code(&out) == 102, "{out}");
    Ok(())
}

#[test]
fn del_succeeds_and_cleans_up_when_the_pod_netns_is_already_gone() -> Result<()> {
    let node = Node::new()?;
    let pod = Pod::new("gone")?;
    let conf = node.conf("10.244.2.0/24");
    let (ok, out) = node.call("ADD", &pod, &conf)?;
    assert!(ok, "{out}");
    let Pod {
        ns,
        container_id,
        cni_args,
    } = pod;
    let path = format!("/run/netns/{}", ns.name());
    drop(ns);
    assert!(!Path::new(&path).exists());
    let env = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", container_id.as_str()),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", cni_args.as_str()),
    ];
    let (ok, out) = node.cni(&env, conf.to_string().as_bytes())?;
    assert!(ok, "DEL: {out}");
    node.assert_clean()
}

#[test]
fn exhausted_pod_cidr_is_error_101_naming_the_cidr_and_leaks_nothing() -> Result<()> {
    let node = Node::new()?;
    let conf = node.conf("10.244.3.0/30");
    let first = Pod::new("first")?;
    let (ok, out) = node.call("ADD", &first, &conf)?;
    assert!(ok, "{out}");
    assert_eq!(out["ips"][0]["address"], "10.244.3.2/30");
    let second = Pod::new("second")?;
    let (ok, out) = node.call("ADD", &second, &conf)?;
    assert!(!ok && code(&out) == 101, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("10.244.3.0/30"),
        "{out}"
    );
    assert_eq!(node.plugin_links()?.len(), 1);
    assert_eq!(node.reserved_ips()?, vec!["10.244.3.2".to_string()]);
    assert_eq!(node.ports()?.len(), 1);
    assert!(second.ns.exec(&["ip", "link", "show", "eth0"]).is_err());
    // Releasing the first makes room again.
    assert!(node.call("DEL", &first, &conf)?.0);
    let (ok, out) = node.call("ADD", &second, &conf)?;
    assert!(ok, "{out}");
    Ok(())
}

/// One bad invocation: its environment, stdin, the CNI code and a word the error must name.
struct BadCase {
    env: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
    code: i64,
    names: &'static str,
}

#[test]
fn bad_input_gets_its_cni_error_code_and_message_and_creates_nothing() -> Result<()> {
    let node = Node::new()?;
    let pod = Pod::new("bad")?;
    let conf = node.conf("10.244.4.0/24").to_string();
    let env = |netns: String| {
        vec![
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", pod.container_id.clone()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_NETNS", netns),
        ]
    };
    let case = |env, stdin: &str, code, names| BadCase {
        env,
        stdin: stdin.as_bytes().to_vec(),
        code,
        names,
    };
    let missing_ns = format!("/run/netns/{}-missing", pod.ns.name());
    let no_config = r#"{"cniVersion":"1.0.0","name":"n","type":"ovs-egress"}"#;
    let cases = [
        case(env(pod.netns_path()), r#"{"cniVersion":"#, 6, "not JSON"),
        case(env(pod.netns_path()), no_config, 7, "podCIDR"),
        case(
            env(pod.netns_path()),
            &conf.replace("1.0.0", "0.2.0"),
            1,
            "0.2.0",
        ),
        case(env(missing_ns), &conf, 3, "CNI_NETNS"),
        case(
            env("/etc/hostname".into()),
            &conf,
            4,
            "not a network namespace",
        ),
        case(env(pod.netns_path())[..3].to_vec(), &conf, 4, "CNI_NETNS"),
    ];
    for BadCase {
        env,
        stdin,
        code: want,
        names,
    } in cases
    {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ok, out) = node.cni(&env, &stdin)?;
        assert!(!ok, "expected failure naming {names}: {out}");
        assert_eq!(code(&out), want, "{out}");
        let text = format!("{} {}", out["msg"], out["details"]);
        assert!(text.contains(names), "{names} not in {text}");
        assert!(out["cniVersion"].is_string(), "{out}");
        node.assert_clean()?;
    }
    assert!(pod.ns.exec(&["ip", "link", "show", "eth0"]).is_err());
    Ok(())
}

#[test]
fn failure_after_the_veth_exists_rolls_back_veth_rule_port_and_ip() -> Result<()> {
    let node = Node::new()?;
    let pod = Pod::new("rollback")?;
    let missing_db = node.ovs.rundir().join("missing.sock");
    let cases = [
        ("ovsBridge", json!("br-missing"), 100, "br-missing"),
        (
            "ovsDbSocket",
            json!(missing_db),
            11,
            "OVSDB is not reachable",
        ),
    ];
    for (field, value, want, names) in cases {
        let mut conf = node.conf("10.244.5.0/24");
        conf[field] = value;
        let (ok, out) = node.call("ADD", &pod, &conf)?;
        assert!(!ok && code(&out) == want, "{field}: {out}");
        assert!(out["msg"].as_str().unwrap().contains(names), "{out}");
        node.assert_clean()?;
        assert!(pod.ns.exec(&["ip", "link", "show", "eth0"]).is_err());
    }
    Ok(())
}

#[test]
fn version_lists_the_supported_versions() -> Result<()> {
    let node = Node::new()?;
    let (ok, out) = node.cni(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#)?;
    assert!(ok, "{out}");
    assert_eq!(
        out,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]})
    );
    Ok(())
}

#[test]
fn two_pods_on_one_node_reach_each_other_through_br_int() -> Result<()> {
    let node = Node::new()?;
    let conf = node.conf("10.244.6.0/24");
    let (a, b) = (Pod::new("a")?, Pod::new("b")?);
    for pod in [&a, &b] {
        let (ok, out) = node.call("ADD", pod, &conf)?;
        assert!(ok, "{out}");
    }
    node.ovs.ofctl(&["add-flow", "br-int", "actions=NORMAL"])?;
    a.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.6.3"])?;
    b.ns.exec(&["ping", "-c", "1", "-W", "2", "10.244.6.2"])?;
    // TCP too: it breaks (ping does not) if TX checksum offload was left on (OVS
    // userspace forwards CHECKSUM_PARTIAL skbs from veths with wrong TCP checksums).
    let mut server =
        b.ns.command("python3")
            .args(["-m", "http.server", "8080", "--bind", "10.244.6.3"])
            .args(["--directory", "/usr/share/openvswitch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
    let url = "http://10.244.6.3:8080/vswitch.ovsschema";
    // The server (python start-up) may take seconds on a loaded machine; retry for up to 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let fetched = loop {
        let got = a.ns.exec(&["curl", "-sSf", "--max-time", "3", url]);
        if got.is_ok() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    server.kill()?;
    server.wait()?;
    let body = fetched.context("no HTTP answer from pod b")?;
    let schema = std::fs::read_to_string("/usr/share/openvswitch/vswitch.ovsschema")?;
    assert_eq!(body, schema, "the ~30 KB file arrived intact over TCP");
    Ok(())
}

/// The OVS port of `pod` once ovs-vswitchd has given it an OpenFlow port (ADD still running).
fn wait_port_realized(node: &Node, pod: &Pod) -> Result<String> {
    let port = ovs_egress_cni::plugin::host_ifname(&pod.container_id, "eth0");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ofport = node
            .ovs
            .vsctl(&["--if-exists", "get", "Interface", &port, "ofport"]);
        if ofport.is_ok_and(|o| o.trim().parse::<i64>().is_ok_and(|n| n > 0)) {
            return Ok(port);
        }
        if Instant::now() > deadline {
            bail!("port {port} not realized within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn add_returns_only_once_the_agent_acknowledges_the_pod_flows_on_its_interface() -> Result<()> {
    use ovs_egress_ovsdb::bridge::pod_port_keys::{FLOWS_READY, FLOWS_READY_VALUE};
    let node = Node::new()?;
    let pod = Pod::new("acked")?;
    let mut conf = node.conf("10.244.8.0/24");
    conf["flowsReadyTimeoutMs"] = json!(60_000);
    let mut add = cni::spawn_call(&node.ns, "ADD", &pod, &conf)?;
    let port = wait_port_realized(&node, &pod)?;
    // The port is wired; ADD keeps waiting for the agent, however long it takes.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        add.try_wait()?.is_none(),
        "ADD returned before the acknowledgement"
    );
    let ack = format!("external_ids:{FLOWS_READY}={FLOWS_READY_VALUE}");
    node.ovs.vsctl(&["set", "Interface", &port, &ack])?;
    let (ok, out, stderr) = cni::finish_plugin(add)?;
    assert!(ok, "ADD failed: {out}\n{stderr}");
    assert!(!stderr.contains("did not acknowledge"), "{stderr}");
    assert_eq!(out["interfaces"][0]["name"], port.as_str());
    Ok(())
}

#[test]
fn add_without_an_agent_succeeds_after_the_flows_ready_timeout_and_says_so_on_stderr() -> Result<()>
{
    let node = Node::new()?;
    let pod = Pod::new("alone")?;
    let mut conf = node.conf("10.244.9.0/24");
    conf["flowsReadyTimeoutMs"] = json!(300);
    let (ok, out, stderr) = cni::finish_plugin(cni::spawn_call(&node.ns, "ADD", &pod, &conf)?)?;
    assert!(ok, "ADD failed: {out}\n{stderr}");
    let port = out["interfaces"][0]["name"].as_str().context("host name")?;
    assert!(
        stderr.contains("did not acknowledge")
            && stderr.contains("default/alone")
            && stderr.contains(port),
        "{stderr}"
    );
    assert_eq!(node.ports()?, vec![port.to_string()], "the Pod stays wired");
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Benchmark, not a correctness test: median wall time of CNI ADD (the plugin process started
/// through `ip netns exec <node>`, as in the tests) over 9 Pods, against the baseline of doing
/// the bare minimum by hand in the same run (`ip netns add` + `ip netns exec <node> ip link add
/// … type veth peer … netns <pod>`). Run as root:
/// `cargo test -p ovs-egress-integration --test cni -- --ignored --nocapture bench_`
#[test]
#[ignore]
fn bench_cni_add_wall_time_against_ip_link_add_baseline() -> Result<()> {
    const RUNS: usize = 9;
    let node = Node::new()?;
    let conf = node.conf("10.244.7.0/24");
    plugin_binary();
    let (mut add, mut del, mut base) = (vec![], vec![], vec![]);
    for i in 0..RUNS {
        let pod = Pod::new(&format!("bench{i}"))?;
        let start = Instant::now();
        let (ok, out) = node.call("ADD", &pod, &conf)?;
        add.push(start.elapsed());
        assert!(ok, "{out}");
        let start = Instant::now();
        assert!(node.call("DEL", &pod, &conf)?.0);
        del.push(start.elapsed());

        let name = format!("{}-base", unique_token());
        let started = Instant::now();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let veth = node.ns.exec(&[
            "ip", "link", "add", "oebase", "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        let elapsed = started.elapsed();
        // Deleting the namespace also destroys the veth pair.
        run(Command::new("ip").args(["netns", "del", &name]))?;
        veth?;
        base.push(elapsed);
    }
    let (add, del, base) = (median(add), median(del), median(base));
    println!(
        "CNI ADD median {add:?}, DEL median {del:?}, baseline (ip netns add + ip link add veth) median {base:?}, ADD/baseline {:.1}x ({RUNS} runs)",
        add.as_secs_f64() / base.as_secs_f64()
    );
    Ok(())
}
