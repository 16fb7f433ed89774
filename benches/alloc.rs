//! Benchmarks of IP allocation and placement (run with `cargo bench --bench alloc`).
//!
//! Timings are the median of RUNS runs, each printed next to a baseline measured in the same
//! run, as a ratio. Balance is deterministic and printed as max/mean load.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ovs_egress_core::api::{AppliedTo, IpRange, LabelSelector};
use ovs_egress_core::ipam::allocate_all;
use ovs_egress_core::model::{ClusterView, Egress, ExternalIpPool, Node, PlanConfig};
use ovs_egress_core::placement::{ip_key, place, rank};
use xxhash_rust::xxh3::xxh3_64;

const RUNS: usize = 11;

fn main() {
    allocation();
    placement_speed();
    balance();
}

/// Median wall time of `RUNS` calls of `f`.
fn median<T>(mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn report(what: &str, measured: Duration, baseline_what: &str, baseline: Duration) {
    println!(
        "{what}: {:.2} ms (median of {RUNS}); baseline {baseline_what}: {:.2} ms; ratio {:.2}",
        measured.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        measured.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn egress(name: String, created: i64, pool: String, ip: Option<String>) -> Egress {
    Egress {
        name,
        created,
        applied_to: AppliedTo::default(),
        egress_ip: ip,
        external_ip_pool: Some(pool),
        failure_policy: Default::default(),
    }
}

fn v4(value: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(value))
}

/// 10,000 Egresses over 50 pools (a /24 each, 254 addresses): new allocations, then the same
/// cluster where half the Egresses already have their IP (restore + allocate).
fn allocation() {
    const POOLS: u32 = 50;
    const EGRESSES: u32 = 10_000;
    let pools: Vec<ExternalIpPool> = (0..POOLS)
        .map(|p| ExternalIpPool {
            name: format!("pool-{p}"),
            created: 0,
            ip_ranges: vec![IpRange {
                cidr: Some(format!("10.{p}.0.0/24")),
                ..IpRange::default()
            }],
            node_selector: LabelSelector::default(),
        })
        .collect();
    // Egress i is the k-th of pool i % POOLS; in `half_restored` every even k already has the
    // address 254 - k/2 of its pool.
    let cluster = |restore: bool| -> Vec<Egress> {
        (0..EGRESSES)
            .map(|i| {
                let (pool, k) = (i % POOLS, i / POOLS);
                let ip = (restore && k.is_multiple_of(2))
                    .then(|| format!("10.{pool}.0.{}", 254 - k / 2));
                egress(
                    format!("eg-{i:05}"),
                    i64::from(i),
                    format!("pool-{pool}"),
                    ip,
                )
            })
            .collect()
    };
    let (fresh, half_restored) = (cluster(false), cluster(true));

    // Baseline: build the same result map from precomputed addresses (no allocator).
    let baseline = median(|| {
        fresh
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), Ok::<_, ()>(v4(0x0a00_0001 + i as u32))))
            .collect::<BTreeMap<_, _>>()
    });
    for egresses in [&fresh, &half_restored] {
        let allocated = allocate_all(&pools, egresses);
        let ok = allocated.by_egress.values().filter(|r| r.is_ok()).count();
        assert_eq!(ok, EGRESSES as usize, "every Egress must get an IP");
    }
    let new_only = median(|| allocate_all(&pools, &fresh));
    report(
        "allocate_all, 10,000 new IPs over 50 pools",
        new_only,
        "result map of 10,000 precomputed IPs",
        baseline,
    );
    let mixed = median(|| allocate_all(&pools, &half_restored));
    report(
        "allocate_all, 5,000 restored + 5,000 new IPs",
        mixed,
        "result map of 10,000 precomputed IPs",
        baseline,
    );
}

fn nodes(count: usize) -> Vec<Node> {
    (0..count)
        .map(|i| Node {
            name: format!("node-{i}"),
            ..Node::default()
        })
        .collect()
}

/// `count` Egresses with consecutive IPs from 10.0.0.1 in pool `pool`.
fn placed_egresses(count: u32, first: u32) -> Vec<Egress> {
    (0..count)
        .map(|i| {
            let ip = v4(first + i).to_string();
            egress(format!("eg-{i:05}"), i64::from(i), "pool".into(), Some(ip))
        })
        .collect()
}

fn cluster(nodes: Vec<Node>, egresses: Vec<Egress>) -> ClusterView {
    ClusterView {
        egresses,
        pools: vec![ExternalIpPool {
            name: "pool".into(),
            created: 0,
            ip_ranges: Vec::new(),
            node_selector: LabelSelector::default(),
        }],
        nodes,
        config: PlanConfig::default(),
        ..ClusterView::default()
    }
}

/// 1,000 IPs over 5,000 Nodes. Baseline: the naive rendezvous loop, one xxh3 of the
/// concatenated (IP, Node name) bytes per pair, keeping the maximum.
fn placement_speed() {
    let view = cluster(nodes(5000), placed_egresses(1000, 0x0a00_0001));
    let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    let ips: Vec<IpAddr> = (0..1000).map(|i| v4(0x0a00_0001 + i)).collect();
    let naive = median(|| {
        let mut buffer = Vec::with_capacity(64);
        ips.iter()
            .map(|ip| {
                names
                    .iter()
                    .max_by_key(|name| {
                        buffer.clear();
                        buffer.extend_from_slice(&ip_key(*ip));
                        buffer.extend_from_slice(name.as_bytes());
                        xxh3_64(&buffer)
                    })
                    .copied()
            })
            .collect::<Vec<_>>()
    });
    let measured = median(|| place(&view));
    report(
        "place, 1,000 IPs x 5,000 Nodes",
        measured,
        "naive pairwise xxh3 rendezvous",
        naive,
    );
}

/// max/mean load of the top-ranked Node of each IP.
fn max_over_mean(loads: &BTreeMap<&str, usize>, nodes: usize, ips: usize) -> f64 {
    let max = loads.values().max().copied().unwrap_or_default();
    max as f64 / (ips as f64 / nodes as f64)
}

/// 1,000 IPs over 10 Nodes through `place` (capacity 255, not binding): the fixed set
/// 10.0.0.1.., then 1,000 disjoint sets of 1,000 consecutive IPs through `rank`, compared with an
/// Antrea-style ring (crc32-IEEE, 50 virtual Nodes per Node, key = IP text).
fn balance() {
    let view = cluster(nodes(10), placed_egresses(1000, 0x0a00_0001));
    let mut loads = BTreeMap::new();
    for (_, node) in place(&view).into_values().flatten() {
        *loads.entry(node).or_insert(0usize) += 1;
    }
    let loads: BTreeMap<&str, usize> = loads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    println!(
        "balance, 1,000 IPs (10.0.0.1..) over 10 Nodes via place: max/mean {:.3} (target <= 1.15), loads {:?}",
        max_over_mean(&loads, 10, 1000),
        loads.values().collect::<Vec<_>>()
    );

    let names: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
    let ring = Ring::new(&names);
    let (mut hrw, mut antrea) = (Vec::new(), Vec::new());
    for set in 0..1000u32 {
        let (mut by_rank, mut by_ring) = (BTreeMap::new(), BTreeMap::new());
        for i in 0..1000 {
            let ip = v4(0x0a00_0000 + set * 1000 + i);
            let best = rank(&ip_key(ip), names.iter().map(String::as_str))[0];
            *by_rank.entry(best).or_insert(0) += 1;
            *by_ring.entry(ring.lookup(&ip.to_string())).or_insert(0) += 1;
        }
        hrw.push(max_over_mean(&by_rank, 10, 1000));
        antrea.push(max_over_mean(&by_ring, 10, 1000));
    }
    for (label, mut ratios) in [("rendezvous/xxh3", hrw), ("Antrea-style ring", antrea)] {
        ratios.sort_by(f64::total_cmp);
        let within = ratios.iter().filter(|r| **r <= 1.15).count();
        println!(
            "balance over 1,000 disjoint sets of 1,000 IPs, {label}: max/mean median {:.3}, p90 {:.3}, worst {:.3}; {:.1} % of sets <= 1.15",
            ratios[500],
            ratios[900],
            ratios[999],
            within as f64 / 10.0
        );
    }
}

/// A consistent-hash ring as Antrea builds it, for comparison only.
struct Ring<'a> {
    points: BTreeMap<u32, &'a str>,
}

impl<'a> Ring<'a> {
    fn new(names: &'a [String]) -> Self {
        let mut points = BTreeMap::new();
        for name in names {
            for replica in 0..50 {
                points.insert(crc32(format!("{replica}{name}").as_bytes()), name.as_str());
            }
        }
        Self { points }
    }

    fn lookup(&self, key: &str) -> &'a str {
        let hash = crc32(key.as_bytes());
        let mut clockwise = self.points.range(hash..).chain(self.points.iter());
        clockwise.next().map_or("", |(_, name)| name)
    }
}

/// CRC-32 (IEEE 802.3, reflected), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
