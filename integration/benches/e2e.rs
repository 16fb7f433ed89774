//! End-to-end benchmarks of ovs-egress on the cluster-in-a-box (3 Nodes, real controller and
//! agent processes, a real kube-apiserver, one OVS per Node), each with a baseline from the same run:
//!
//! 1. `kubectl apply` → the first packet leaving with the egress IP, for a static Egress whose
//!    IP is another Node's (tunnel), a static Egress with a local IP, a pool-allocated Egress
//!    (held by another Node) and a pool nodeSelector change moving the IP to another Node.
//!    A Pod on node-1 connects to the external host in a tight loop (two threads, a new TCP
//!    connection every ~3 ms each); t1 is the first connection in the external host's log with
//!    the egress IP (for the move: the first SYN from the new Node's MAC with the egress IP,
//!    captured at the external host, since the source IP does not change). Baseline: the same
//!    apply until the object (its per-round annotation) shows up on a watch of the bench's own
//!    client: the API path alone. Between rounds the Egress is deleted and the Node IP seen
//!    again, and every Node's SNAT rules and held /32 addresses are gone.
//! 2. N pool Egresses over 3 Nodes (pool 10.20.0.0/22, no Pods selected) created through the
//!    client (16 in flight) until every one has its final status (`IPAssigned=True` with an
//!    egressNode for the ones a Node can hold, `IPAssigned=False` for the rest) and no status
//!    changed for 3 s; the time is that of the last change. Baseline: the time the creates take
//!    (API alone). N = 1,000 (more than the 3 × 255 IPs 3 Nodes can hold with marks 1..=255)
//!    and N = 750; each deleted again (timed until every Node released its IPs), 5 runs each.
//! 3. VmRSS (/proc/<pid>/status) and CPU (utime+stime, /proc/<pid>/stat) of every agent and
//!    the controller: idle (no Egress) over 10 s, over each burst of 2 (until its quiet period
//!    ended; memory as VmHWM, the peak since start), and idle over 10 s holding the Egresses of
//!    the first run of each size.
//!
//! Run (root, OVS, kubectl): `scripts/bench-e2e.sh`. Knobs: `OE_BENCH_ROUNDS` (default 20),
//! `OE_BENCH_BURSTS` (runs of each burst size, default 5).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use ovs_egress_core::api::v1beta1::{Egress, ExternalIPPool};
use ovs_egress_core::placement::MAX_EGRESS_IPS_PER_NODE;
use ovs_egress_integration::Netns;
use ovs_egress_integration::bench::env_or;
use ovs_egress_integration::cluster::{BoxNode, ClusterBox, node_ip};
use serde_json::json;

/// The annotation carrying a round's unique mark, so the watch sees when that apply arrived.
const MARK: &str = "bench.ovs-egress.dev/mark";
/// A secondary address of node-1 used as a static, local egress IP.
const LOCAL_STATIC_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 151);
/// The underlay pool of the pool scenarios (held by node-2 or node-3).
const POOL_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 10, 0, 11), Ipv4Addr::new(10, 10, 0, 20));
const REALIZED_TIMEOUT: Duration = Duration::from_secs(20);
const BURST_TIMEOUT: Duration = Duration::from_secs(180);
const IDLE: Duration = Duration::from_secs(10);
/// A burst is over when no status changed for this long.
const QUIET: Duration = Duration::from_secs(3);

/// Median, p90 and max of a sample.
fn summary(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let n = s.len();
    let median = (s[(n - 1) / 2] + s[n / 2]) / 2;
    let p90 = s[((n - 1) as f64 * 0.9).round() as usize];
    (median, p90, s[n - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// What the bench observes: its own watch, the Pod's connection loop, SYNs at the external host.

/// An Egress's status as far as "realized" goes: IPAssigned (None: not yet written), the Node,
/// the reason and message of a False, and since when it says so.
#[derive(Clone, Debug, PartialEq)]
struct Assigned {
    assigned: Option<bool>,
    node: Option<String>,
    why: String,
}

#[derive(Default)]
struct Watched {
    /// When each mark was first seen on the watch.
    marks: HashMap<String, Instant>,
    /// The current state of every Egress and when it entered it.
    egresses: HashMap<String, (Assigned, Instant)>,
}

fn assigned_of(egress: &Egress) -> Assigned {
    let status = egress.status.clone().unwrap_or_default();
    let condition = status.conditions.iter().find(|c| c.type_ == "IPAssigned");
    Assigned {
        assigned: condition.map(|c| c.status == "True" && status.egress_node.is_some()),
        node: status.egress_node.clone(),
        why: condition
            .filter(|c| c.status != "True")
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default(),
    }
}

/// Watches Egresses and ExternalIPPools from the bench's own client into a shared [`Watched`].
fn watch(client: &kube::Client) -> Arc<Mutex<Watched>> {
    let watched = Arc::new(Mutex::new(Watched::default()));
    let pools: Api<ExternalIPPool> = Api::all(client.clone());
    let seen = watched.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(
            watcher(pools, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(Ok(pool)) = stream.next().await {
            let now = Instant::now();
            if let Some(mark) = pool.metadata.annotations.as_ref().and_then(|a| a.get(MARK)) {
                lock(&seen).marks.entry(mark.clone()).or_insert(now);
            }
        }
    });
    let egresses: Api<Egress> = Api::all(client.clone());
    let seen = watched.clone();
    tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher(egresses, watcher::Config::default()).default_backoff());
        while let Some(Ok(event)) = stream.next().await {
            let now = Instant::now();
            let mut w = lock(&seen);
            match event {
                Event::Apply(e) | Event::InitApply(e) => {
                    if let Some(mark) = e.metadata.annotations.as_ref().and_then(|a| a.get(MARK)) {
                        w.marks.entry(mark.clone()).or_insert(now);
                    }
                    let state = assigned_of(&e);
                    let name = e.metadata.name.unwrap_or_default();
                    if w.egresses.get(&name).is_none_or(|(s, _)| *s != state) {
                        w.egresses.insert(name, (state, now));
                    }
                }
                Event::Delete(e) => {
                    w.egresses.remove(&e.metadata.name.unwrap_or_default());
                }
                Event::Init | Event::InitDone => {}
            }
        }
    });
    watched
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Threads in a Pod's namespace opening one connection to the external host after another
/// (each reads the server's reply, so the server closes first and the Pod keeps no TIME_WAIT).
struct ConnectLoop {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl ConnectLoop {
    fn start(ns: &Netns, server: SocketAddr, threads: usize) -> ConnectLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                ns.spawn_in(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = connect_once(server);
                        std::thread::sleep(Duration::from_millis(3));
                    }
                })
            })
            .collect();
        ConnectLoop { stop, threads }
    }
}

fn connect_once(server: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_millis(50))?;
    stream.set_read_timeout(Some(Duration::from_millis(300)))?;
    stream.write_all(b"0\n")?;
    stream.read_to_end(&mut Vec::new()).map(drop)
}

impl Drop for ConnectLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One captured SYN: when, source MAC, source IP.
type Syn = (Instant, [u8; 6], Ipv4Addr);

/// TCP SYNs to the external host's port captured on its interface.
struct SynCapture {
    stop: Arc<AtomicBool>,
    syns: Arc<Mutex<Vec<Syn>>>,
    thread: Option<std::thread::JoinHandle<Result<Result<()>>>>,
}

impl SynCapture {
    fn start(ns: &Netns, port: u16) -> SynCapture {
        let stop = Arc::new(AtomicBool::new(false));
        let syns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, syns2) = (stop.clone(), syns.clone());
        let thread = ns.spawn_in(move || capture(port, &stop2, &syns2));
        SynCapture {
            stop,
            syns,
            thread: Some(thread),
        }
    }

    /// The first SYN at or after `since` from `mac` with source `ip`.
    fn first(&self, since: Instant, mac: [u8; 6], ip: Ipv4Addr) -> Option<Instant> {
        lock(&self.syns)
            .iter()
            .find(|(t, m, s)| *t >= since && *m == mac && *s == ip)
            .map(|(t, ..)| *t)
    }
}

fn capture(port: u16, stop: &AtomicBool, syns: &Mutex<Vec<Syn>>) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ETH_P_IP: u16 = 0x0800;
    // SAFETY: plain socket(2); the fd is owned (and closed) by `OwnedFd` below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_IP.to_be())) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: SO_RCVTIMEO with a timeval of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: recv into a buffer of `buf.len()` bytes we own.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        let now = Instant::now();
        if n < 54 {
            continue; // timeout, or too short for Ethernet + IPv4 + TCP
        }
        let ihl = usize::from(buf[14] & 0x0f) * 4;
        let tcp = 14 + ihl;
        let is_syn = buf[12..14] == ETH_P_IP.to_be_bytes()
            && buf[23] == 6
            && tcp + 14 <= buf.len()
            && buf[tcp + 2..tcp + 4] == port.to_be_bytes()
            && buf[tcp + 13] & 0x12 == 0x02;
        if is_syn {
            let mac: [u8; 6] = buf[6..12].try_into().unwrap_or_default();
            let ip = Ipv4Addr::new(buf[26], buf[27], buf[28], buf[29]);
            lock(syns).push((now, mac, ip));
        }
    }
    Ok(())
}

impl Drop for SynCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process resources.

/// CPU time (utime+stime) and memory of one process.
#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

fn usage(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After "pid (comm)": field 3 (state) is index 0, utime (14) index 11, stime (15) index 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ')' in /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("empty status line")?
            .parse()?)
    };
    Ok(Usage {
        cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// The processes watched: every agent and the controller, by name and PID.
fn processes(c: &ClusterBox) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for node in &c.nodes {
        out.push((
            format!("agent {}", node.name),
            node.agent_pid().context("agent not running")?,
        ));
    }
    out.push(("controller".to_string(), c.controller_pid()));
    for (name, pid) in &out {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "ovs-egress" {
            bail!("{name}: PID {pid} is {comm:?}, not ovs-egress");
        }
    }
    Ok(out)
}

/// Usage of every process over a window.
struct Window {
    start: Instant,
    before: Vec<(String, u32, Usage)>,
}

/// One process over a closed window: CPU used in it, memory at its end.
struct Used {
    name: String,
    cpu: Duration,
    after: Usage,
}

impl Window {
    fn open(procs: &[(String, u32)]) -> Result<Window> {
        let before = procs
            .iter()
            .map(|(n, p)| Ok((n.clone(), *p, usage(*p)?)))
            .collect::<Result<_>>()?;
        Ok(Window {
            start: Instant::now(),
            before,
        })
    }

    /// The wall time since `open` and every process's usage over it.
    fn close(&self) -> Result<(Duration, Vec<Used>)> {
        let wall = self.start.elapsed();
        let used = self
            .before
            .iter()
            .map(|(name, pid, before)| {
                let after = usage(*pid)?;
                let cpu = after.cpu.saturating_sub(before.cpu);
                Ok(Used {
                    name: name.clone(),
                    cpu,
                    after,
                })
            })
            .collect::<Result<_>>()?;
        Ok((wall, used))
    }

    fn print(&self, what: &str) -> Result<()> {
        let (wall, used) = self.close()?;
        println!("[3] {what} ({:.1} s):", wall.as_secs_f64());
        for u in used {
            println!(
                "      {:<12} CPU {:>6.2} s = {:>5.1} % of a core   VmRSS {:>6.1} MiB   VmHWM {:>6.1} MiB",
                u.name,
                u.cpu.as_secs_f64(),
                100.0 * u.cpu.as_secs_f64() / wall.as_secs_f64(),
                u.after.rss_kib as f64 / 1024.0,
                u.after.hwm_kib as f64 / 1024.0,
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 1.

/// One round's measurement: apply → first packet, apply → object on the watch.
struct Round {
    packet: Duration,
    api: Duration,
}

fn kubectl_apply(c: &ClusterBox, yaml: &str) -> Result<()> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))?;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn egress_yaml(name: &str, mark: &str, source: &str) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: {name}\n  \
         annotations: {{{MARK}: \"{mark}\"}}\nspec:\n  appliedTo:\n    podSelector: \
         {{matchLabels: {{app: bench}}}}\n  {source}\n"
    )
}

fn pool_yaml(name: &str, mark: &str, (start, end): (Ipv4Addr, Ipv4Addr), node: &str) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: {name}\n  \
         annotations: {{{MARK}: \"{mark}\"}}\nspec:\n  ipRanges: [{{start: {start}, end: {end}}}]\n  \
         nodeSelector: {{matchLabels: {{kubernetes.io/hostname: {node}}}}}\n"
    )
}

/// Polls `f` every 5 ms until it returns `Some`, failing after `timeout` with `what`.
async fn until<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{} not after {timeout:?}", what());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The external host's first connection at or after `since` whose source satisfies `want`.
fn first_seen(
    c: &ClusterBox,
    since: Instant,
    want: impl Fn(IpAddr) -> bool,
) -> Option<(Instant, IpAddr)> {
    c.server
        .seen_since(since)
        .into_iter()
        .find(|(_, ip)| want(*ip))
}

/// True when no Node has a SNAT rule or a /32 egress address left.
fn nodes_clean(c: &ClusterBox) -> Result<bool> {
    for node in &c.nodes {
        let nat = node
            .netns()
            .exec(&["iptables", "-t", "nat", "-S", "OVS-EGRESS-POSTROUTING"])?;
        let addrs = node
            .netns()
            .exec(&["ip", "-o", "-4", "addr", "show", "dev", "br-phy"])?;
        if nat.contains("-j SNAT") || addrs.contains("/32") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates an Egress with kubectl and times its first packet, then deletes it and waits until
/// the Pod is seen with its Node IP again and every Node is clean.
async fn create_round(
    c: &ClusterBox,
    w: &Mutex<Watched>,
    name: &str,
    source: &str,
    egress_ip: impl Fn(IpAddr) -> bool,
) -> Result<Round> {
    let node_ip: IpAddr = node_ip(1).into();
    let t0 = Instant::now();
    kubectl_apply(c, &egress_yaml(name, name, source))?;
    let (t1, _) = until(
        REALIZED_TIMEOUT,
        || format!("Egress {name} realized\n{}", c.logs()),
        || Ok(first_seen(c, t0, &egress_ip)),
    )
    .await?;
    let seen = until(
        REALIZED_TIMEOUT,
        || format!("Egress {name} on the watch"),
        || Ok(lock(w).marks.get(name).copied()),
    )
    .await?;
    let api: Api<Egress> = Api::all(c.client.clone());
    let deleted = Instant::now();
    api.delete(name, &DeleteParams::default()).await?;
    until(
        REALIZED_TIMEOUT,
        || format!("Pod back on {node_ip} after deleting {name}"),
        || Ok(first_seen(c, deleted, |ip| ip == node_ip)),
    )
    .await?;
    until(
        REALIZED_TIMEOUT,
        || format!("Nodes clean after deleting {name}"),
        || Ok(nodes_clean(c)?.then_some(())),
    )
    .await?;
    Ok(Round {
        packet: t1 - t0,
        api: seen - t0,
    })
}

fn report(label: &str, rounds: &[Round]) {
    let packets: Vec<Duration> = rounds.iter().map(|r| r.packet).collect();
    let apis: Vec<Duration> = rounds.iter().map(|r| r.api).collect();
    let added: Vec<Duration> = rounds
        .iter()
        .map(|r| r.packet.saturating_sub(r.api))
        .collect();
    let (pm, p90, pmax) = summary(&packets);
    let (am, a90, amax) = summary(&apis);
    let within = packets
        .iter()
        .filter(|d| **d <= Duration::from_secs(1))
        .count();
    println!(
        "[1] {label:<34} packet {:>6.1} / {:>6.1} / {:>6.1} ms   API {:>5.1} / {:>5.1} / {:>5.1} ms   \
         ratio {:>4.1}x   added {:>6.1} ms   <=1 s: {within}/{}",
        ms(pm),
        ms(p90),
        ms(pmax),
        ms(am),
        ms(a90),
        ms(amax),
        pm.as_secs_f64() / am.as_secs_f64(),
        ms(summary(&added).0),
        rounds.len()
    );
    for (i, d) in packets.iter().enumerate() {
        if *d > Duration::from_secs(1) {
            println!(
                "      round {} of {}: {:.1} ms",
                i + 1,
                rounds.len(),
                ms(*d)
            );
        }
    }
}

fn mac_of(node: &BoxNode) -> Result<[u8; 6]> {
    let text = node
        .netns()
        .exec(&["cat", "/sys/class/net/br-phy/address"])?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {text:?} of br-phy on {}", node.name))
}

/// Moves a pool's IP between node-2 and node-3 `rounds` times by changing its nodeSelector.
async fn move_rounds(c: &ClusterBox, w: &Mutex<Watched>, rounds: usize) -> Result<Vec<Round>> {
    let range = (Ipv4Addr::new(10, 10, 0, 21), Ipv4Addr::new(10, 10, 0, 30));
    kubectl_apply(c, &pool_yaml("bench-move", "move-0", range, "node-2"))?;
    kubectl_apply(
        c,
        &egress_yaml("bench-move", "move-egress", "externalIPPool: bench-move"),
    )?;
    let in_range = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4 >= range.0 && v4 <= range.1);
    let t = Instant::now();
    let (_, egress_ip) = until(
        REALIZED_TIMEOUT,
        || "the moving Egress realized".into(),
        || Ok(first_seen(c, t, in_range)),
    )
    .await?;
    let IpAddr::V4(egress_ip) = egress_ip else {
        bail!("IPv6 egress IP {egress_ip}")
    };
    let capture = SynCapture::start(&c.server.netns, ovs_egress_integration::ext_server::PORT);
    let mut out = Vec::new();
    for round in 1..=rounds {
        let to = if round % 2 == 1 { "node-3" } else { "node-2" };
        let mac = mac_of(c.node(to)?)?;
        let mark = format!("move-{round}");
        let t0 = Instant::now();
        kubectl_apply(c, &pool_yaml("bench-move", &mark, range, to))?;
        let t1 = until(
            REALIZED_TIMEOUT,
            || format!("{egress_ip} via {to}\n{}", c.logs()),
            || Ok(capture.first(t0, mac, egress_ip)),
        )
        .await?;
        let seen = until(
            REALIZED_TIMEOUT,
            || format!("pool change {mark} on the watch"),
            || Ok(lock(w).marks.get(&mark).copied()),
        )
        .await?;
        // Settled: a connection with the IP accepted after the first SYN via the new Node, and
        // the old Node has let the IP go.
        let from = c.node(if to == "node-3" { "node-2" } else { "node-3" })?;
        until(
            REALIZED_TIMEOUT,
            || format!("{egress_ip} settled on {to}"),
            || {
                let gone = !from
                    .netns()
                    .exec(&["ip", "-o", "-4", "addr", "show", "dev", "br-phy"])?
                    .contains(&format!("{egress_ip}/32"));
                Ok(
                    (gone && first_seen(c, t1, |ip| ip == IpAddr::V4(egress_ip)).is_some())
                        .then_some(()),
                )
            },
        )
        .await?;
        out.push(Round {
            packet: t1 - t0,
            api: seen - t0,
        });
    }
    Api::<Egress>::all(c.client.clone())
        .delete("bench-move", &DeleteParams::default())
        .await?;
    Api::<ExternalIPPool>::all(c.client.clone())
        .delete("bench-move", &DeleteParams::default())
        .await?;
    until(
        REALIZED_TIMEOUT,
        || "Nodes clean after the move rounds".into(),
        || Ok(nodes_clean(c)?.then_some(())),
    )
    .await?;
    Ok(out)
}

async fn scenario_1(c: &ClusterBox, w: &Mutex<Watched>, rounds: usize) -> Result<()> {
    println!(
        "[1] kubectl apply -> first packet with the egress IP, {rounds} rounds; median / p90 / max;"
    );
    println!(
        "    baseline API = the same apply until the object is on a watch; added = packet - API"
    );
    let remote = IpAddr::V4(node_ip(2));
    let mut r = Vec::new();
    for i in 0..rounds {
        r.push(
            create_round(
                c,
                w,
                &format!("bench-remote-{i}"),
                &format!("egressIP: {remote}"),
                |ip| ip == remote,
            )
            .await?,
        );
    }
    report("static, IP of node-2 (tunnel)", &r);

    let local = IpAddr::V4(LOCAL_STATIC_IP);
    c.node("node-1")?.netns().exec(&[
        "ip",
        "addr",
        "add",
        &format!("{LOCAL_STATIC_IP}/24"),
        "dev",
        "br-phy",
    ])?;
    let mut r = Vec::new();
    for i in 0..rounds {
        r.push(
            create_round(
                c,
                w,
                &format!("bench-local-{i}"),
                &format!("egressIP: {local}"),
                |ip| ip == local,
            )
            .await?,
        );
    }
    report("static, IP on node-1 (local)", &r);

    kubectl_apply(c, &pool_yaml("bench-pool", "pool", POOL_RANGE, "node-2"))?;
    let in_pool =
        |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4 >= POOL_RANGE.0 && v4 <= POOL_RANGE.1);
    let mut r = Vec::new();
    for i in 0..rounds {
        r.push(
            create_round(
                c,
                w,
                &format!("bench-pool-{i}"),
                "externalIPPool: bench-pool",
                in_pool,
            )
            .await?,
        );
    }
    report("pool, held by node-2 (tunnel)", &r);
    Api::<ExternalIPPool>::all(c.client.clone())
        .delete("bench-pool", &DeleteParams::default())
        .await?;

    report(
        "move: nodeSelector node-2<->node-3",
        &move_rounds(c, w, rounds).await?,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scenario 2.

/// One burst: how long the creates took (API alone), until the final statuses, until the
/// deletes were released; the statuses by Node and reason and the /32s each Node held; the
/// processes' usage over the burst (until the quiet period ended).
struct Burst {
    created: Duration,
    realized: Duration,
    released: Duration,
    statuses: Vec<(String, usize)>,
    held: String,
    used: Vec<Used>,
}

/// Creates `n` pool Egresses (16 in flight), waits until each has its final status, then
/// deletes them all and waits until every Node let their IPs go.
async fn burst(
    c: &ClusterBox,
    w: &Mutex<Watched>,
    procs: &[(String, u32)],
    n: usize,
    idle_after: bool,
) -> Result<Burst> {
    let api: Api<Egress> = Api::all(c.client.clone());
    let holdable = n.min(c.nodes.len() * MAX_EGRESS_IPS_PER_NODE as usize);
    let window = Window::open(procs)?;
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let object: Egress = serde_json::from_value(json!({
                    "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                    "metadata": {"name": format!("burst-{i}")},
                    "spec": {"appliedTo": {"podSelector": {"matchLabels": {"app": "none"}}},
                             "externalIPPool": "burst"},
                }))?;
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating burst-{i}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let created = t0.elapsed();
    // Done: the holdable number are IPAssigned=True with a Node, the others False, and no
    // status changed for QUIET (statuses pass through transient values while IPs are allocated
    // and placement is recomputed, so the first moment the counts match is not the end).
    let states = until(
        BURST_TIMEOUT,
        || format!("{n} Egresses settled"),
        || {
            let w = lock(w);
            let states: Vec<(Assigned, Instant)> = w
                .egresses
                .iter()
                .filter(|(k, _)| k.starts_with("burst-"))
                .map(|(_, v)| v.clone())
                .collect();
            let count = |want| states.iter().filter(|(s, _)| s.assigned == want).count();
            let last = states.iter().map(|(_, t)| *t).max().unwrap_or(t0);
            let counts_match = count(Some(true)) == holdable && count(Some(false)) == n - holdable;
            Ok((counts_match && last.elapsed() >= QUIET).then_some(states))
        },
    )
    .await;
    let states = match states {
        Ok(s) => s,
        Err(e) => bail!("{e:#}\n{}", c.logs()),
    };
    let (_, used) = window.close()?;
    let realized = states.iter().map(|(_, t)| *t).max().unwrap_or(t0) - t0;
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for (s, _) in &states {
        let key = match s.assigned {
            Some(true) => format!("IPAssigned=True on {}", s.node.clone().unwrap_or_default()),
            _ => format!("IPAssigned=False ({})", s.why),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let mut statuses: Vec<_> = statuses.into_iter().collect();
    statuses.sort();
    let mut held = Vec::new();
    for node in &c.nodes {
        let addrs = node
            .netns()
            .exec(&["ip", "-o", "-4", "addr", "show", "dev", "br-phy"])?;
        held.push(format!("{} {}", node.name, addrs.matches("/32").count()));
    }
    if idle_after {
        let idle = Window::open(procs)?;
        tokio::time::sleep(IDLE).await;
        idle.print(&format!("idle, holding the {n} Egresses"))?;
    }

    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.delete(&format!("burst-{i}"), &DeleteParams::default())
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    until(
        BURST_TIMEOUT,
        || format!("{n} Egresses deleted and released"),
        || {
            let gone = !lock(w).egresses.keys().any(|k| k.starts_with("burst-"));
            Ok((gone && nodes_clean(c)?).then_some(()))
        },
    )
    .await?;
    Ok(Burst {
        created,
        realized,
        released: t0.elapsed(),
        statuses,
        held: held.join(", "),
        used,
    })
}

/// `runs` bursts of `n`: one line per run, then the medians and the last run's statuses.
async fn bursts(
    c: &ClusterBox,
    w: &Mutex<Watched>,
    procs: &[(String, u32)],
    n: usize,
    runs: usize,
) -> Result<()> {
    println!(
        "[2] {n} pool Egresses over {} Nodes, {runs} runs:",
        c.nodes.len()
    );
    let mut all = Vec::new();
    for run in 1..=runs {
        let b = burst(c, w, procs, n, run == 1).await?;
        let list =
            |f: &dyn Fn(&Used) -> String| b.used.iter().map(f).collect::<Vec<_>>().join(" / ");
        println!(
            "      run {run}: created {:.2} s (API alone), final statuses {:.2} s ({:.1}x), deleted \
             and released {:.2} s; CPU s {}; VmHWM MiB {}",
            b.created.as_secs_f64(),
            b.realized.as_secs_f64(),
            b.realized.as_secs_f64() / b.created.as_secs_f64(),
            b.released.as_secs_f64(),
            list(&|u| format!("{:.2}", u.cpu.as_secs_f64())),
            list(&|u| format!("{:.1}", u.after.hwm_kib as f64 / 1024.0)),
        );
        all.push(b);
    }
    let median = |f: fn(&Burst) -> Duration| summary(&all.iter().map(f).collect::<Vec<_>>()).0;
    let (created, realized) = (median(|b| b.created), median(|b| b.realized));
    println!(
        "[2] {n} median of {runs}: created {:.2} s (API alone), final statuses {:.2} s, ratio {:.1}x, \
         deleted and released {:.2} s",
        created.as_secs_f64(),
        realized.as_secs_f64(),
        realized.as_secs_f64() / created.as_secs_f64(),
        median(|b| b.released).as_secs_f64(),
    );
    let last = all.last().context("no burst run")?;
    for (k, count) in &last.statuses {
        println!("      {count:>5} x {k}");
    }
    println!("      /32 egress addresses held: {}", last.held);
    if all.iter().any(|b| b.statuses != last.statuses) {
        println!("      (the statuses differed between runs)");
    }
    Ok(())
}

async fn scenario_2(
    c: &ClusterBox,
    w: &Mutex<Watched>,
    procs: &[(String, u32)],
    runs: usize,
) -> Result<()> {
    kubectl_apply(
        c,
        "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: burst\nspec:\n  \
         ipRanges: [{cidr: 10.20.0.0/22}]\n  nodeSelector: {}\n",
    )?;
    println!(
        "    CPU s and VmHWM (peak RSS since start) per process: {}",
        procs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    bursts(c, w, procs, 1000, runs).await?;
    bursts(c, w, procs, 750, runs).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds = env_or("OE_BENCH_ROUNDS", 20)?;
    let started = Instant::now();
    let mut c = ClusterBox::start(&[1, 2, 3])
        .await
        .context("the cluster-in-a-box")?;
    let procs = processes(&c)?;
    let w = watch(&c.client);
    println!(
        "e2e benchmarks: 3 Nodes, cluster-in-a-box up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let idle = Window::open(&procs)?;
    tokio::time::sleep(IDLE).await;
    idle.print("idle, no Egress")?;

    c.ensure_namespace("bench", &[]).await?;
    let pod = c
        .create_pod("bench", "client", "node-1", &[("app", "bench")])
        .await?;
    {
        let _loop = ConnectLoop::start(&pod.netns, c.server.address(), 2);
        scenario_1(&c, &w, rounds).await?;
    }
    scenario_2(&c, &w, &procs, env_or("OE_BENCH_BURSTS", 5)?).await?;
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
