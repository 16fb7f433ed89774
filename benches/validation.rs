//! Benchmark of ExternalIPPool validation at its largest (run with `cargo bench --bench
//! validation`): a pool with the maximum number of ranges (`ipam::MAX_IP_RANGES`) checked
//! against 1,000 other pools that have as many, which is what the webhook runs for every
//! CREATE/UPDATE of a pool. Timings are the median of RUNS runs, each printed next to a
//! baseline measured in the same run, as a ratio: parsing every range once (the least any check
//! must do), and the pairwise check validation used before (every pair of ranges compared).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ovs_egress_core::api::validation::validate_pool;
use ovs_egress_core::api::{IpRange, LabelSelector};
use ovs_egress_core::ipam::{MAX_IP_RANGES, ParsedRange, ip_to_u128, parse_range};
use ovs_egress_core::model::ExternalIpPool;

const RUNS: usize = 5;
const OTHER_POOLS: usize = 1_000;

fn main() {
    // Pool p owns 10.0.0.0/8 addresses [p * 1024 * 8, ...): range i is a /29 (8 addresses), so
    // nothing overlaps and every range is checked against everything.
    let pool = |p: usize| ExternalIpPool {
        name: format!("pool-{p}"),
        created: 0,
        ip_ranges: (0..MAX_IP_RANGES)
            .map(|i| {
                let base = 0x0a00_0000u32 + ((p * MAX_IP_RANGES + i) * 8) as u32;
                IpRange {
                    cidr: Some(format!("{}/29", Ipv4Addr::from(base))),
                    ..IpRange::default()
                }
            })
            .collect(),
        node_selector: LabelSelector::default(),
    };
    let new = pool(OTHER_POOLS);
    let others: Vec<ExternalIpPool> = (0..OTHER_POOLS).map(pool).collect();
    let ranges = (OTHER_POOLS + 1) * MAX_IP_RANGES;

    let validate = median(RUNS, || validate_pool(&new, None, &others));
    assert_eq!(validate_pool(&new, None, &others), Ok(()));
    let parse = median(RUNS, || {
        std::iter::once(&new)
            .chain(&others)
            .flat_map(|p| &p.ip_ranges)
            .filter_map(|r| parse_range(r).ok())
            .count()
    });
    let pairwise = median(RUNS, || pairwise_overlaps(&new, &others));
    println!(
        "validate_pool, {MAX_IP_RANGES} ranges against {OTHER_POOLS} pools of {MAX_IP_RANGES} \
         ({ranges} ranges): {:.2} ms (median of {RUNS})",
        ms(validate)
    );
    println!(
        "  baseline parsing every range once: {:.2} ms; ratio {:.2}",
        ms(parse),
        validate.as_secs_f64() / parse.as_secs_f64()
    );
    println!(
        "  baseline pairwise check (before): {:.2} ms; ratio {:.4}",
        ms(pairwise),
        validate.as_secs_f64() / pairwise.as_secs_f64()
    );

    // The shape of the attack: one pool with 78,000 ranges (about 2 MB of JSON).
    let huge = ExternalIpPool {
        name: "huge".to_string(),
        created: 0,
        ip_ranges: (0..78_000u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0b00_0000 + i).to_string();
                IpRange {
                    start: Some(ip.clone()),
                    end: Some(ip),
                    ..IpRange::default()
                }
            })
            .collect(),
        node_selector: LabelSelector::default(),
    };
    let rejected = median(RUNS, || validate_pool(&huge, None, &others));
    println!(
        "validate_pool, one pool of 78,000 ranges (rejected by the bound): {:.3} ms (median of {RUNS}); \
         ratio to the maximal valid input {:.4}",
        ms(rejected),
        rejected.as_secs_f64() / validate.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// The overlap check as validation did it before: every range of `new` against every earlier
/// range of `new` and every range of every other pool (parsed again for each).
fn pairwise_overlaps(new: &ExternalIpPool, others: &[ExternalIpPool]) -> usize {
    let overlaps = |a: &ParsedRange, b: &ParsedRange| {
        a.span_start.is_ipv4() == b.span_start.is_ipv4()
            && ip_to_u128(a.span_start) <= ip_to_u128(b.span_end)
            && ip_to_u128(a.span_end) >= ip_to_u128(b.span_start)
    };
    let parsed: Vec<ParsedRange> = new
        .ip_ranges
        .iter()
        .filter_map(|r| parse_range(r).ok())
        .collect();
    let mut found = 0;
    for (n, a) in parsed.iter().enumerate() {
        found += parsed[..n].iter().filter(|b| overlaps(a, b)).count();
        for other in others {
            found += other
                .ip_ranges
                .iter()
                .filter_map(|r| parse_range(r).ok())
                .filter(|b| overlaps(a, b))
                .count();
        }
    }
    found
}
