//! IP pools: parsing `ipRanges` and allocating egress IPs exactly as Antrea does (ranges in spec
//! order, lowest free address first, a CIDR skips its network address and, for IPv4, its
//! broadcast address, start/end inclusive, at most 65536 addresses per range). Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::api::IpRange;
use crate::model::{Egress, ExternalIpPool};

/// A validated range: the first and last allocatable address (inclusive) and the span used for
/// overlap checks (network..broadcast for a CIDR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRange {
    /// The text that identifies the range (normalized CIDR, or `start-end` as typed).
    pub key: String,
    pub first: IpAddr,
    pub last: IpAddr,
    pub span_start: IpAddr,
    pub span_end: IpAddr,
}

/// Why a range cannot be used; the message names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

/// Parse one `ipRanges` entry: exactly one of `cidr` or `start`+`end`, both ends of one family,
/// start ≤ end. A CIDR is normalized (host bits cleared) and excludes its network address and,
/// for IPv4, its broadcast address from allocation.
pub fn parse_range(range: &IpRange) -> Result<ParsedRange, RangeError> {
    match (&range.cidr, &range.start, &range.end) {
        (Some(cidr), None, None) => parse_cidr(cidr),
        (None, Some(start), Some(end)) => {
            let first: IpAddr = start
                .parse()
                .map_err(|_| RangeError(format!("invalid start ip address {start}")))?;
            let last: IpAddr = end
                .parse()
                .map_err(|_| RangeError(format!("invalid end ip address {end}")))?;
            if first.is_ipv4() != last.is_ipv4() {
                return Err(RangeError(format!(
                    "range start {start} and range end {end} should belong to same family"
                )));
            }
            if ip_to_u128(first) > ip_to_u128(last) {
                return Err(RangeError(format!(
                    "range start {start} should not be greater than range end {end}"
                )));
            }
            Ok(ParsedRange {
                key: format!("{start}-{end}"),
                first,
                last,
                span_start: first,
                span_end: last,
            })
        }
        _ => Err(RangeError(
            "an IP range must have either cidr, or both start and end".to_string(),
        )),
    }
}

fn parse_cidr(text: &str) -> Result<ParsedRange, RangeError> {
    let invalid = || RangeError(format!("invalid cidr {text}"));
    let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return Err(invalid());
    }
    let host_bits = bits - prefix;
    let host_mask: u128 = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let network = ip_to_u128(addr) & !host_mask;
    let broadcast = network | host_mask;
    let span_start = u128_to_ip(network, addr.is_ipv4());
    let span_end = u128_to_ip(broadcast, addr.is_ipv4());
    // Network address excluded; for IPv4 the broadcast address too.
    let first = network.saturating_add(1);
    let last = if addr.is_ipv4() {
        broadcast.saturating_sub(1)
    } else {
        broadcast
    };
    if host_bits == 0 || first > last {
        return Err(RangeError(format!(
            "cidr {text} has no allocatable address"
        )));
    }
    Ok(ParsedRange {
        key: format!("{span_start}/{prefix}"),
        first: u128_to_ip(first, addr.is_ipv4()),
        last: u128_to_ip(last, addr.is_ipv4()),
        span_start,
        span_end,
    })
}

/// An address as an integer, for range arithmetic (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`ip_to_u128`] for the given family.
pub fn u128_to_ip(value: u128, ipv4: bool) -> IpAddr {
    if ipv4 {
        // Callers only pass values derived from IPv4 addresses, which fit in 32 bits.
        IpAddr::V4(std::net::Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(value))
    }
}

/// `status.usage` of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
}

/// Why an Egress got no IP from its pool (becomes `IPAllocated=False/AllocationError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("ExternalIPPool {0} does not exist")]
    PoolNotFound(String),
    #[error("{0}")]
    Other(String),
}

/// The controller's decision for the whole cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// For each Egress that names a pool: its IP, or why it has none.
    pub by_egress: BTreeMap<String, Result<IpAddr, AllocationError>>,
    /// Usage of every pool.
    pub usage: BTreeMap<String, Usage>,
}

/// Deterministic allocation for every Egress naming a pool: first restore the IPs Egresses
/// already have (oldest creationTimestamp, then name, keeps a contested IP), then allocate new
/// IPs in the same order for Egresses without one.
pub fn allocate_all(pools: &[ExternalIpPool], egresses: &[Egress]) -> Allocations {
    let _ = (pools, egresses);
    todo!("ipam::allocate_all")
}
