//! Traffic and inspection helpers for datapath tests: ping, a TCP transfer checked end to end,
//! and a normalized `dump-flows` for golden files (volatile fields stripped).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Netns;
use crate::node::Node;

/// `ping -c 3` from `ns` to `target`, tolerating a first lost packet (new tunnel neighbour).
pub fn ping(ns: &Netns, target: &str) -> Result<String> {
    ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", target])
}

/// Packets counted so far by the rule of `pod`'s INPUT chain that names `src` (tests add an
/// `-s src` counting rule to see what reached the Pod); panics when there is no such rule.
pub fn icmp_from(pod: &Netns, src: &str) -> u64 {
    let table = pod
        .exec(&["iptables", "-nvxL", "INPUT"])
        .unwrap_or_else(|e| panic!("iptables -nvxL INPUT: {e:#}"));
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == src))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {src} in\n{table}"))
}

/// Fetches a ~30 KB file over TCP from an HTTP server started in `server` on `ip`:8080 and
/// checks it arrived intact.
pub fn tcp_transfer(client: &Netns, server: &Netns, ip: Ipv4Addr) -> Result<()> {
    const FILE: &str = "/usr/share/openvswitch/vswitch.ovsschema";
    let ip = ip.to_string();
    let mut child = server
        .command("python3")
        .args(["-m", "http.server", "8080", "--bind", &ip])
        .args(["--directory", "/usr/share/openvswitch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting python3 http.server")?;
    let url = format!("http://{ip}:8080/vswitch.ovsschema");
    // Python start-up may take seconds on a loaded machine; retry for up to 15 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let fetched = loop {
        let got = client.exec(&["curl", "-sSf", "--max-time", "3", &url]);
        if got.is_ok() || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let body = fetched.with_context(|| format!("no HTTP answer from {ip}"))?;
    let want = std::fs::read_to_string(FILE)?;
    if body != want {
        bail!(
            "TCP transfer from {ip} corrupted: {} of {} bytes",
            body.len(),
            want.len()
        );
    }
    Ok(())
}

/// One `dump-flows` line without its volatile fields (duration, counters, ages).
pub fn without_counters(line: &str) -> String {
    const VOLATILE: [&str; 5] = [
        "duration=",
        "n_packets=",
        "n_bytes=",
        "idle_age=",
        "hard_age=",
    ];
    line.trim()
        .split(", ")
        .filter(|f| !VOLATILE.iter().any(|v| f.starts_with(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ovs-ofctl --names dump-flows br-int` without volatile fields (duration, counters, ages),
/// with each `(text, placeholder)` of `replace` substituted (e.g. random Pod MACs), flows
/// grouped by table in dump order and sorted by priority (descending) within a table.
pub fn normalized_dump(node: &Node, replace: &[(String, String)]) -> Result<String> {
    let text = node
        .ovs
        .ofctl(&["--names", "-O", "OpenFlow15", "dump-flows", "br-int"])?;
    let mut tables: Vec<(String, Vec<(u32, String)>)> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cookie="))
    {
        let mut flow = without_counters(line);
        let head = flow
            .split_once(" actions=")
            .context("flow without actions")?
            .0
            .to_string();
        let fields: Vec<&str> = head.split(", ").collect();
        for (from, to) in replace {
            flow = flow.replace(from.as_str(), to);
        }
        let table = fields
            .iter()
            .find_map(|f| f.strip_prefix("table="))
            .unwrap_or("0")
            .to_string();
        let priority = fields
            .iter()
            .find_map(|f| f.split(',').next()?.strip_prefix("priority="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(32768);
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, flows)) => flows.push((priority, flow)),
            None => tables.push((table, vec![(priority, flow)])),
        }
    }
    let mut out = String::new();
    for (_, mut flows) in tables {
        flows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, f) in flows {
            out.push_str(&f);
            out.push('\n');
        }
    }
    Ok(out)
}
