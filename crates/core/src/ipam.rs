//! IP pools: parsing `ipRanges` and allocating egress IPs exactly as Antrea does (ranges in spec
//! order, lowest free address first, a CIDR skips its network address and, for IPv4, its
//! broadcast address, start/end inclusive, at most 65536 addresses per range; special addresses
//! such as `0.0.0.1` or `::1` are never handed out). Pure: it never
//! talks to the API server; the controller writes what [`allocate_all`] decides.

use std::collections::{BTreeMap, HashMap};
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
    let cidr = ovs_egress_inputs::parse_cidr(text)
        .map_err(|_| RangeError(format!("invalid cidr {text}")))?;
    let (addr, prefix) = (cidr.network(), u32::from(cidr.prefix()));
    let bits = if addr.is_ipv4() { 32 } else { 128 };
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

pub use ovs_egress_inputs::{ip_to_u128, u128_to_ip};

/// Ranges one pool may have (`maxItems` of `spec.ipRanges` in the CRD, checked again by
/// validation and `render`): enough for any real pool, few enough that every check over all
/// pools stays cheap.
pub const MAX_IP_RANGES: usize = 128;

/// Addresses one range hands out at most, counted from its first address (Antrea's bitmap size).
pub const MAX_RANGE_SIZE: u32 = 65536;

/// `status.usage` of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
}

/// Why one allocator operation failed; every message names the pool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("cannot allocate IP in any range of ExternalIPPool {pool}")]
    Exhausted { pool: String },
    #[error("IP {ip} is not an allocatable address of ExternalIPPool {pool}")]
    NotInPool { ip: IpAddr, pool: String },
    #[error("IP {ip} of ExternalIPPool {pool} is already allocated")]
    AlreadyAllocated { ip: IpAddr, pool: String },
    #[error("IP {ip} of ExternalIPPool {pool} is not allocated")]
    NotAllocated { ip: IpAddr, pool: String },
}

/// Allocation state of one range: a bitmap over its first (at most [`MAX_RANGE_SIZE`])
/// allocatable addresses.
#[derive(Clone, Debug)]
struct RangeAllocator {
    first: u128,
    size: u32,
    ipv4: bool,
    /// One bit per address, set = allocated; the padding bits of the last word are set too, so a
    /// word is full exactly when it equals `u64::MAX`.
    words: Vec<u64>,
    used: u32,
    /// Addresses of the range that are never handed out (special addresses: their bits are set
    /// from the start and they count as neither total nor used).
    excluded: u32,
    /// Every word before this index is full: the search for the lowest free address starts here.
    first_free_word: usize,
}

impl RangeAllocator {
    fn new(range: &ParsedRange) -> Self {
        let first = ip_to_u128(range.first);
        // parse_range guarantees first <= last; the cap keeps the value within u32.
        let span = (ip_to_u128(range.last) - first).min(u128::from(MAX_RANGE_SIZE - 1));
        let size = span as u32 + 1;
        let mut words = vec![0u64; size.div_ceil(64) as usize];
        let tail = size % 64;
        if tail != 0
            && let Some(last) = words.last_mut()
        {
            *last = !0u64 << tail;
        }
        let ipv4 = range.first.is_ipv4();
        let last = first + u128::from(size - 1);
        let mut excluded = 0;
        for (from, to) in ovs_egress_inputs::special_spans(!ipv4, first, last) {
            for offset in (from - first) as usize..=(to - first) as usize {
                words[offset / 64] |= 1 << (offset % 64);
                excluded += 1;
            }
        }
        Self {
            first,
            size,
            ipv4,
            words,
            used: 0,
            excluded,
            first_free_word: 0,
        }
    }

    fn offset(&self, ip: IpAddr) -> Option<usize> {
        if ip.is_ipv4() != self.ipv4 {
            return None;
        }
        let offset = ip_to_u128(ip).checked_sub(self.first)?;
        (offset < u128::from(self.size) && ovs_egress_inputs::special_address(ip).is_none())
            .then_some(offset as usize)
    }

    fn is_set(&self, offset: usize) -> bool {
        self.words[offset / 64] & (1 << (offset % 64)) != 0
    }

    fn set(&mut self, offset: usize) {
        self.words[offset / 64] |= 1 << (offset % 64);
        self.used += 1;
    }

    fn clear(&mut self, offset: usize) {
        self.words[offset / 64] &= !(1 << (offset % 64));
        self.used -= 1;
        self.first_free_word = self.first_free_word.min(offset / 64);
    }

    fn allocate_next(&mut self) -> Option<IpAddr> {
        while let Some(&word) = self.words.get(self.first_free_word) {
            if word != u64::MAX {
                let offset = self.first_free_word * 64 + (!word).trailing_zeros() as usize;
                self.set(offset);
                return Some(u128_to_ip(self.first + offset as u128, self.ipv4));
            }
            self.first_free_word += 1;
        }
        None
    }
}

/// The allocator of one ExternalIPPool: its ranges in spec order, each handing out its lowest
/// free address first.
#[derive(Clone, Debug)]
pub struct PoolAllocator {
    pool: String,
    ranges: Vec<RangeAllocator>,
}

impl PoolAllocator {
    /// Ranges that do not parse, or that overlap an earlier range of the pool, are left out (as
    /// Antrea's controller skips ranges it cannot build); pool validation reports them.
    pub fn new(pool: &ExternalIpPool) -> Self {
        Self {
            pool: pool.name.clone(),
            ranges: kept_ranges(pool).iter().map(RangeAllocator::new).collect(),
        }
    }

    /// The lowest free address of the first range that has one.
    pub fn allocate_next(&mut self) -> Result<IpAddr, IpamError> {
        self.ranges
            .iter_mut()
            .find_map(RangeAllocator::allocate_next)
            .ok_or_else(|| IpamError::Exhausted {
                pool: self.pool.clone(),
            })
    }

    /// Mark `ip` allocated (an IP an Egress already has).
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let (range, offset) = self.locate(ip)?;
        let range = &mut self.ranges[range];
        if range.is_set(offset) {
            return Err(IpamError::AlreadyAllocated {
                ip,
                pool: self.pool.clone(),
            });
        }
        range.set(offset);
        Ok(())
    }

    /// Return `ip` to the pool.
    pub fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let (range, offset) = self.locate(ip)?;
        let range = &mut self.ranges[range];
        if !range.is_set(offset) {
            return Err(IpamError::NotAllocated {
                ip,
                pool: self.pool.clone(),
            });
        }
        range.clear(offset);
        Ok(())
    }

    /// Whether `ip` is one of the pool's allocatable addresses (free or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.locate(ip).is_ok()
    }

    /// Whether `ip` is currently allocated.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.locate(ip)
            .is_ok_and(|(range, offset)| self.ranges[range].is_set(offset))
    }

    pub fn usage(&self) -> Usage {
        self.ranges
            .iter()
            .fold(Usage::default(), |usage, range| Usage {
                total: usage.total + u64::from(range.size - range.excluded),
                used: usage.used + u64::from(range.used),
            })
    }

    fn locate(&self, ip: IpAddr) -> Result<(usize, usize), IpamError> {
        self.ranges
            .iter()
            .enumerate()
            .find_map(|(index, range)| Some((index, range.offset(ip)?)))
            .ok_or_else(|| IpamError::NotInPool {
                ip,
                pool: self.pool.clone(),
            })
    }
}

/// Disjoint spans (network..broadcast for a CIDR) by family and start: whether a new span meets
/// one of them is two lookups, O(log n).
#[derive(Clone, Debug, Default)]
pub(crate) struct Spans<T = ()> {
    by_start: BTreeMap<(bool, u128), (u128, T)>,
}

impl<T: Clone> Spans<T> {
    /// The value of a kept span that shares an address with `range`'s span, if any.
    pub(crate) fn overlapping(&self, range: &ParsedRange) -> Option<&T> {
        let family = range.span_start.is_ipv6();
        let (start, end) = (ip_to_u128(range.span_start), ip_to_u128(range.span_end));
        // Spans are disjoint: only the last one starting at or before `end` can reach `start`.
        self.by_start
            .range((family, 0)..=(family, end))
            .next_back()
            .filter(|(_, (kept_end, _))| *kept_end >= start)
            .map(|(_, (_, value))| value)
    }

    /// Keep `range`'s span with `value` unless it meets a kept one; whether it was kept.
    pub(crate) fn insert_with(&mut self, range: &ParsedRange, value: T) -> bool {
        if self.overlapping(range).is_some() {
            return false;
        }
        let key = (range.span_start.is_ipv6(), ip_to_u128(range.span_start));
        self.by_start
            .insert(key, (ip_to_u128(range.span_end), value));
        true
    }
}

impl Spans<()> {
    fn insert_if_disjoint(&mut self, range: &ParsedRange) -> bool {
        self.insert_with(range, ())
    }
}

/// The ranges of `pool` an allocator uses: those that parse and do not overlap an earlier one
/// of the pool, in spec order.
fn kept_ranges(pool: &ExternalIpPool) -> Vec<ParsedRange> {
    let mut kept = Spans::default();
    pool.ip_ranges
        .iter()
        .filter_map(|r| parse_range(r).ok())
        .filter(|range| kept.insert_if_disjoint(range))
        .collect()
}

/// A one-address range, to look `ip` up in [`Spans`].
fn point(ip: IpAddr) -> ParsedRange {
    ParsedRange {
        key: ip.to_string(),
        first: ip,
        last: ip,
        span_start: ip,
        span_end: ip,
    }
}

/// Why an Egress got no IP from its pool (becomes `IPAllocated=False/AllocationError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("ExternalIPPool {0} does not exist")]
    PoolNotFound(String),
    #[error("IP {ip} of Egress {egress} is not valid (ExternalIPPool {pool})")]
    InvalidIp {
        ip: String,
        egress: String,
        pool: String,
    },
    #[error(
        "error when allocating IP {ip} for Egress {egress} from ExternalIPPool {pool}: \
         IP is not within the allocatable IP ranges"
    )]
    OutOfPool {
        ip: IpAddr,
        egress: String,
        pool: String,
    },
    #[error(
        "error when allocating IP {ip} for Egress {egress} from ExternalIPPool {pool}: \
         IP is already allocated to Egress {holder}"
    )]
    Conflict {
        ip: IpAddr,
        egress: String,
        pool: String,
        holder: String,
    },
    #[error("cannot allocate an IP for Egress {egress}: ExternalIPPool {pool} is exhausted")]
    Exhausted { egress: String, pool: String },
    #[error(
        "cannot allocate an IP for Egress {egress}: ExternalIPPool {pool} is refused, {reason}"
    )]
    PoolRefused {
        egress: String,
        pool: String,
        reason: String,
    },
}

/// The controller's decision for the whole cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// For each Egress that names a pool: its IP, or why it has none.
    pub by_egress: BTreeMap<String, Result<IpAddr, AllocationError>>,
    /// Usage of every pool.
    pub usage: BTreeMap<String, Usage>,
    /// Pools nothing is allocated from, with the reason (for the pool's status).
    pub refused: BTreeMap<String, String>,
}

/// Deterministic allocation for every Egress naming a pool, with one holder per IP across the
/// whole cluster, whatever the webhook let through:
///
/// 1. Pools are taken oldest first (creationTimestamp, then name); a pool with a range that
///    shares an address with a range of an earlier taken pool is refused: nothing is allocated
///    from it, and its Egresses get [`AllocationError::PoolRefused`].
/// 2. Every IP an Egress already has (static or from a pool) is reserved, oldest Egress first;
///    a later Egress with the same IP gets [`AllocationError::Conflict`] naming the holder, and
///    a pool address a static Egress uses is never handed out.
/// 3. Then Egresses without an IP get new ones, in the same order.
///
/// Independent of the order of the inputs.
pub fn allocate_all(pools: &[ExternalIpPool], egresses: &[Egress]) -> Allocations {
    let mut ordered_pools: Vec<&ExternalIpPool> = pools.iter().collect();
    ordered_pools.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    // Every address of a taken pool's ranges, with the pool's name.
    let mut taken: Spans<&str> = Spans::default();
    let mut allocators: BTreeMap<&str, PoolAllocator> = BTreeMap::new();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for pool in ordered_pools {
        let ranges = kept_ranges(pool);
        let clash = ranges.iter().find_map(|r| {
            let other = *taken.overlapping(r)?;
            (other != pool.name).then(|| (r.key.clone(), other))
        });
        if let Some((range, other)) = clash {
            refused.insert(
                pool.name.clone(),
                format!("its range [{range}] overlaps ExternalIPPool {other}"),
            );
        } else if !allocators.contains_key(pool.name.as_str()) {
            for range in &ranges {
                taken.insert_with(range, &pool.name);
            }
        }
        allocators
            .entry(pool.name.as_str())
            .or_insert_with(|| PoolAllocator::new(pool));
    }

    let mut ordered: Vec<&Egress> = egresses.iter().collect();
    ordered.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let mut by_egress = BTreeMap::new();
    // Who holds each IP, across the cluster.
    let mut holders: HashMap<IpAddr, &str> = HashMap::new();
    for &egress in &ordered {
        let Some(text) = non_empty(&egress.egress_ip) else {
            continue;
        };
        let pool = non_empty(&egress.external_ip_pool);
        let result =
            pool.map(|pool| restore(&mut allocators, &refused, &holders, egress, pool, text));
        // The IP is in the Egress's spec, so it is in use whether the controller likes it or
        // not (static, outside its pool, refused pool, pool gone: until the controller's write
        // clears it), unless an older Egress holds it.
        let holds = !matches!(result, Some(Err(AllocationError::Conflict { .. })));
        if let (true, Ok(ip)) = (holds, text.parse::<IpAddr>())
            && !holders.contains_key(&ip)
        {
            holders.insert(ip, &egress.name);
            if let Some(owner) = taken.overlapping(&point(ip))
                && let Some(allocator) = allocators.get_mut(owner)
                && !allocator.is_allocated(ip)
            {
                // Only fails for an address the allocator never hands out anyway.
                let _ = allocator.allocate(ip);
            }
        }
        if let Some(result) = result {
            by_egress.insert(egress.name.clone(), result);
        }
    }
    for &egress in &ordered {
        let Some(pool) = non_empty(&egress.external_ip_pool) else {
            continue;
        };
        if non_empty(&egress.egress_ip).is_some() {
            continue;
        }
        let result = match (allocators.get_mut(pool), refused.get(pool)) {
            (None, _) => Err(AllocationError::PoolNotFound(pool.to_string())),
            (Some(_), Some(reason)) => Err(refused_error(egress, pool, reason)),
            (Some(allocator), None) => {
                allocator
                    .allocate_next()
                    .map_err(|_| AllocationError::Exhausted {
                        egress: egress.name.clone(),
                        pool: pool.to_string(),
                    })
            }
        };
        if let Ok(ip) = result {
            holders.insert(ip, &egress.name);
        }
        by_egress.insert(egress.name.clone(), result);
    }
    let usage = allocators
        .iter()
        .map(|(name, allocator)| (name.to_string(), allocator.usage()))
        .collect();
    Allocations {
        by_egress,
        usage,
        refused,
    }
}

fn refused_error(egress: &Egress, pool: &str, reason: &str) -> AllocationError {
    AllocationError::PoolRefused {
        egress: egress.name.clone(),
        pool: pool.to_string(),
        reason: reason.to_string(),
    }
}

/// Reserve the IP `egress` already has in its pool, unless another Egress holds it.
fn restore(
    allocators: &mut BTreeMap<&str, PoolAllocator>,
    refused: &BTreeMap<String, String>,
    holders: &HashMap<IpAddr, &str>,
    egress: &Egress,
    pool: &str,
    text: &str,
) -> Result<IpAddr, AllocationError> {
    let allocator = allocators
        .get_mut(pool)
        .ok_or_else(|| AllocationError::PoolNotFound(pool.to_string()))?;
    if let Some(reason) = refused.get(pool) {
        return Err(refused_error(egress, pool, reason));
    }
    let ip: IpAddr = text.parse().map_err(|_| AllocationError::InvalidIp {
        ip: text.to_string(),
        egress: egress.name.clone(),
        pool: pool.to_string(),
    })?;
    if let Some(holder) = holders.get(&ip) {
        return Err(AllocationError::Conflict {
            ip,
            egress: egress.name.clone(),
            pool: pool.to_string(),
            holder: holder.to_string(),
        });
    }
    match allocator.allocate(ip) {
        Ok(()) => Ok(ip),
        // Every IP the allocator has set so far has a holder (checked above), so the only
        // error left is an address outside the pool.
        Err(_) => Err(AllocationError::OutOfPool {
            ip,
            egress: egress.name.clone(),
            pool: pool.to_string(),
        }),
    }
}

/// `Some` for a set, non-empty string field (the API treats `""` as unset).
pub(crate) fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppliedTo, LabelSelector};
    use proptest::prelude::*;

    fn cidr(text: &str) -> IpRange {
        IpRange {
            cidr: Some(text.into()),
            ..IpRange::default()
        }
    }

    fn span(start: &str, end: &str) -> IpRange {
        IpRange {
            start: Some(start.into()),
            end: Some(end.into()),
            ..IpRange::default()
        }
    }

    fn pool(name: &str, ranges: Vec<IpRange>) -> ExternalIpPool {
        ExternalIpPool {
            name: name.into(),
            created: 0,
            ip_ranges: ranges,
            node_selector: LabelSelector::default(),
        }
    }

    fn egress(name: &str, created: i64, pool: Option<&str>, ip: Option<&str>) -> Egress {
        Egress {
            name: name.into(),
            created,
            applied_to: AppliedTo::default(),
            egress_ip: ip.map(Into::into),
            external_ip_pool: pool.map(Into::into),
            failure_policy: Default::default(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_is_normalized_and_skips_network_and_ipv4_broadcast() {
        let range = parse_range(&cidr("192.168.0.77/24")).unwrap();
        assert_eq!(range.key, "192.168.0.0/24");
        assert_eq!(
            (range.first, range.last),
            (ip("192.168.0.1"), ip("192.168.0.254"))
        );
        assert_eq!(
            (range.span_start, range.span_end),
            (ip("192.168.0.0"), ip("192.168.0.255"))
        );
    }

    #[test]
    fn ipv6_cidr_keeps_its_last_address() {
        let range = parse_range(&cidr("2021:4::aaa0/124")).unwrap();
        assert_eq!(
            (range.first, range.last),
            (ip("2021:4::aaa1"), ip("2021:4::aaaf"))
        );
    }

    #[test]
    fn start_end_range_is_inclusive_and_keyed_as_typed() {
        let range = parse_range(&span("1.1.1.10", "1.1.1.20")).unwrap();
        assert_eq!(range.key, "1.1.1.10-1.1.1.20");
        assert_eq!((range.first, range.last), (ip("1.1.1.10"), ip("1.1.1.20")));
    }

    #[test]
    fn malformed_ranges_are_rejected_naming_the_rule() {
        let cases = [
            (cidr("10.0.0.0/33"), "invalid cidr"),
            (cidr("10.0.0.0/+24"), "invalid cidr"),
            (cidr("10.0.0.0"), "invalid cidr"),
            (cidr("10.0.0.0/32"), "no allocatable address"),
            (cidr("10.0.0.0/31"), "no allocatable address"),
            (cidr("2001:db8::/128"), "no allocatable address"),
            (span("10.0.0.9", "10.0.0.1"), "should not be greater than"),
            (span("10.0.0.1", "2001:db8::1"), "same family"),
            (span("10.0.0.x", "10.0.0.1"), "invalid start ip address"),
            (span("10.0.0.1", "10.0.0"), "invalid end ip address"),
            (IpRange::default(), "either cidr, or both start and end"),
            (
                IpRange {
                    cidr: Some("10.0.0.0/24".into()),
                    ..span("10.0.0.1", "10.0.0.2")
                },
                "either cidr, or both start and end",
            ),
        ];
        for (range, rule) in cases {
            let error = parse_range(&range).unwrap_err();
            assert!(error.0.contains(rule), "{range:?}: {error}");
        }
    }

    #[test]
    fn totals_match_antrea_for_cidr_span_and_ipv6() {
        let total = |ranges| PoolAllocator::new(&pool("p", ranges)).usage().total;
        assert_eq!(total(vec![cidr("10.10.10.0/30")]), 2);
        assert_eq!(total(vec![cidr("10.10.10.0/28")]), 14);
        // 11 + 2. Antrea's allocator unit test counts 14 for these ranges because it builds the
        // CIDR allocator without the broadcast reservation its pool controller adds.
        let mixed = vec![span("1.1.1.10", "1.1.1.20"), cidr("10.10.10.128/30")];
        assert_eq!(total(mixed), 13);
        assert_eq!(total(vec![cidr("2021:4::aaa0/124")]), 15);
    }

    #[test]
    fn ranges_are_capped_at_65536_addresses_from_their_first() {
        let mut wide = PoolAllocator::new(&pool("wide", vec![span("10.0.0.0", "10.9.0.0")]));
        assert_eq!(wide.usage().total, u64::from(MAX_RANGE_SIZE));
        assert!(wide.contains(ip("10.0.255.255")));
        assert!(!wide.contains(ip("10.1.0.0")));
        assert!(wide.allocate(ip("10.1.0.0")).is_err());
        let v6 = PoolAllocator::new(&pool("v6", vec![cidr("2001:db8::/64")]));
        assert_eq!(v6.usage().total, u64::from(MAX_RANGE_SIZE));
        assert!(v6.contains(ip("2001:db8::1:0")) && !v6.contains(ip("2001:db8::1:1")));
    }

    #[test]
    fn allocates_lowest_free_address_in_spec_order() {
        let mut pool = PoolAllocator::new(&pool(
            "p",
            vec![cidr("1.1.1.0/30"), span("1.1.2.10", "1.1.2.20")],
        ));
        let first: Vec<IpAddr> = (0..3).map(|_| pool.allocate_next().unwrap()).collect();
        assert_eq!(first, [ip("1.1.1.1"), ip("1.1.1.2"), ip("1.1.2.10")]);
        assert_eq!(pool.usage().used, 3);
        pool.release(ip("1.1.1.1")).unwrap();
        assert_eq!(pool.allocate_next().unwrap(), ip("1.1.1.1"));
    }

    #[test]
    fn ipv6_allocation_starts_after_the_block_address() {
        let mut pool = PoolAllocator::new(&pool("v6", vec![cidr("2021:4::aaa0/124")]));
        assert_eq!(pool.allocate_next().unwrap(), ip("2021:4::aaa1"));
    }

    #[test]
    fn network_broadcast_and_foreign_addresses_are_not_in_the_pool() {
        let mut pool = PoolAllocator::new(&pool("p", vec![cidr("10.0.0.0/30")]));
        for outside in ["10.0.0.0", "10.0.0.3", "10.0.0.4", "::a00:1"] {
            assert!(!pool.contains(ip(outside)), "{outside}");
            let error = pool.allocate(ip(outside)).unwrap_err();
            assert_eq!(
                error,
                IpamError::NotInPool {
                    ip: ip(outside),
                    pool: "p".into()
                }
            );
        }
    }

    #[test]
    fn exhaustion_double_allocation_and_unknown_release_are_errors_naming_the_pool() {
        let mut pool = PoolAllocator::new(&pool("small", vec![cidr("10.0.0.0/30")]));
        pool.allocate(ip("10.0.0.2")).unwrap();
        assert_eq!(
            pool.allocate(ip("10.0.0.2")).unwrap_err().to_string(),
            "IP 10.0.0.2 of ExternalIPPool small is already allocated"
        );
        assert_eq!(pool.allocate_next().unwrap(), ip("10.0.0.1"));
        assert_eq!(
            pool.allocate_next().unwrap_err().to_string(),
            "cannot allocate IP in any range of ExternalIPPool small"
        );
        pool.release(ip("10.0.0.1")).unwrap();
        assert_eq!(
            pool.release(ip("10.0.0.1")).unwrap_err().to_string(),
            "IP 10.0.0.1 of ExternalIPPool small is not allocated"
        );
    }

    #[test]
    fn invalid_and_overlapping_ranges_are_left_out() {
        let pool = PoolAllocator::new(&pool(
            "p",
            vec![
                cidr("10.0.0.0/30"),
                span("10.0.0.9", "10.0.0.1"),
                span("10.0.0.3", "10.0.0.5"),
                cidr("10.0.1.0/30"),
            ],
        ));
        assert_eq!(pool.usage().total, 4);
        assert!(!pool.contains(ip("10.0.0.4")));
    }

    #[test]
    fn restore_keeps_existing_ips_before_allocating_new_ones() {
        let pools = [pool("p", vec![cidr("10.0.0.0/29")])];
        let egresses = [
            egress("old", 1, Some("p"), None),
            egress("new", 2, Some("p"), Some("10.0.0.1")),
        ];
        let result = allocate_all(&pools, &egresses);
        assert_eq!(result.by_egress["new"], Ok(ip("10.0.0.1")));
        assert_eq!(result.by_egress["old"], Ok(ip("10.0.0.2")));
        assert_eq!(result.usage["p"], Usage { total: 6, used: 2 });
    }

    #[test]
    fn oldest_egress_keeps_a_contested_ip_and_later_ones_get_a_conflict() {
        let pools = [pool("p", vec![cidr("10.0.0.0/29")])];
        // Same timestamp: the name decides; listed newest first to show input order is ignored.
        let egresses = [
            egress("c", 5, Some("p"), Some("10.0.0.3")),
            egress("b", 5, Some("p"), Some("10.0.0.3")),
            egress("a", 7, Some("p"), Some("10.0.0.3")),
        ];
        let result = allocate_all(&pools, &egresses);
        assert_eq!(result.by_egress["b"], Ok(ip("10.0.0.3")));
        for loser in ["a", "c"] {
            let error = result.by_egress[loser].clone().unwrap_err();
            assert_eq!(
                error,
                AllocationError::Conflict {
                    ip: ip("10.0.0.3"),
                    egress: loser.into(),
                    pool: "p".into(),
                    holder: "b".into()
                }
            );
            let message = error.to_string();
            for name in ["10.0.0.3", loser, " p:", "Egress b"] {
                assert!(message.contains(name), "{message} lacks {name}");
            }
        }
        assert_eq!(result.usage["p"].used, 1);
    }

    #[test]
    fn every_allocation_error_names_the_egress_ip_and_pool() {
        let pools = [pool("p", vec![cidr("10.0.0.0/30")])];
        let egresses = [
            egress("missing-pool", 1, Some("nope"), None),
            // Its IP stays reserved until the controller clears it: not one of p's.
            egress("missing-pool-with-ip", 1, Some("nope"), Some("10.9.0.1")),
            egress("bad-ip", 1, Some("p"), Some("10.0.0.300")),
            egress("outside", 1, Some("p"), Some("10.0.0.3")),
            egress("first", 2, Some("p"), None),
            egress("second", 3, Some("p"), None),
            egress("third", 4, Some("p"), None),
        ];
        let result = allocate_all(&pools, &egresses);
        let error = |name: &str| result.by_egress[name].clone().unwrap_err();
        assert_eq!(
            error("missing-pool"),
            AllocationError::PoolNotFound("nope".into())
        );
        assert_eq!(
            error("missing-pool-with-ip"),
            AllocationError::PoolNotFound("nope".into())
        );
        assert_eq!(
            error("bad-ip").to_string(),
            "IP 10.0.0.300 of Egress bad-ip is not valid (ExternalIPPool p)"
        );
        assert_eq!(
            error("outside"),
            AllocationError::OutOfPool {
                ip: ip("10.0.0.3"),
                egress: "outside".into(),
                pool: "p".into()
            }
        );
        assert!(
            error("outside")
                .to_string()
                .contains("10.0.0.3 for Egress outside from ExternalIPPool p")
        );
        assert_eq!(result.by_egress["first"], Ok(ip("10.0.0.1")));
        assert_eq!(result.by_egress["second"], Ok(ip("10.0.0.2")));
        assert_eq!(
            error("third"),
            AllocationError::Exhausted {
                egress: "third".into(),
                pool: "p".into()
            }
        );
        assert_eq!(result.usage["p"], Usage { total: 2, used: 2 });
        assert!(!result.usage.contains_key("nope"));
    }

    #[test]
    fn egresses_without_a_pool_get_no_result_but_keep_their_ip_and_unused_pools_report_usage() {
        let pools = [
            pool("p", vec![cidr("10.0.0.0/30")]),
            pool("idle", vec![cidr("10.1.0.0/24")]),
        ];
        let egresses = [
            egress("static", 1, None, Some("10.0.0.1")),
            egress("empty-pool", 1, Some(""), Some("10.0.0.1")),
            egress("pooled", 2, Some("p"), Some("")),
        ];
        let result = allocate_all(&pools, &egresses);
        assert_eq!(result.by_egress.keys().collect::<Vec<_>>(), ["pooled"]);
        // 10.0.0.1 is the static Egresses' IP: the pool hands out the next one.
        assert_eq!(result.by_egress["pooled"], Ok(ip("10.0.0.2")));
        assert_eq!(
            result.usage["idle"],
            Usage {
                total: 254,
                used: 0
            }
        );
    }

    #[test]
    fn special_addresses_are_never_handed_out_nor_counted() {
        // Before: a pool containing them handed out 0.0.0.1, ::1 and :: first.
        let mut v4 = PoolAllocator::new(&pool("v4", vec![span("0.0.0.0", "0.0.0.3")]));
        assert_eq!(v4.usage().total, 0);
        assert!(v4.allocate_next().is_err());
        assert!(v4.allocate(ip("0.0.0.1")).is_err() && v4.release(ip("0.0.0.1")).is_err());
        let mut edge =
            PoolAllocator::new(&pool("edge", vec![span("126.255.255.254", "127.0.0.2")]));
        assert_eq!(edge.usage().total, 2);
        assert_eq!(edge.allocate_next(), Ok(ip("126.255.255.254")));
        assert_eq!(edge.allocate_next(), Ok(ip("126.255.255.255")));
        assert!(edge.allocate_next().is_err());
        let mut v6 = PoolAllocator::new(&pool("v6", vec![span("::", "::3")]));
        assert_eq!(v6.usage().total, 2);
        assert_eq!(v6.allocate_next(), Ok(ip("::2")));
        assert_eq!(v6.allocate_next(), Ok(ip("::3")));
        assert!(!v6.contains(ip("::1")));
    }

    #[test]
    fn overlapping_pools_never_hand_out_one_ip_twice_and_the_newer_pool_is_refused() {
        // Before: each pool allocated on its own, so a and b both handed out 10.0.0.1.
        let pools = [
            pool("b", vec![cidr("10.0.0.0/29")]),
            ExternalIpPool {
                created: -1,
                ..pool("a", vec![span("10.0.0.1", "10.0.0.3")])
            },
        ];
        let egresses = [
            egress("from-a", 1, Some("a"), None),
            egress("from-b", 2, Some("b"), None),
        ];
        let result = allocate_all(&pools, &egresses);
        assert_eq!(result.by_egress["from-a"], Ok(ip("10.0.0.1")));
        let error = result.by_egress["from-b"].clone().unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot allocate an IP for Egress from-b: ExternalIPPool b is refused, its range \
             [10.0.0.0/29] overlaps ExternalIPPool a"
        );
        assert_eq!(
            result.refused.keys().collect::<Vec<_>>(),
            ["b"],
            "{:?}",
            result.refused
        );
    }

    #[test]
    fn a_static_egress_ip_inside_a_pool_is_never_handed_out_and_wins_when_older() {
        let pools = [pool("p", vec![cidr("10.0.0.0/29")])];
        let egresses = [
            egress("static", 1, None, Some("10.0.0.1")),
            egress("new", 2, Some("p"), None),
            egress("copy", 3, Some("p"), Some("10.0.0.1")),
        ];
        let result = allocate_all(&pools, &egresses);
        // Before: "new" got 10.0.0.1, the static Egress's IP.
        assert_eq!(result.by_egress["new"], Ok(ip("10.0.0.2")));
        assert_eq!(
            result.by_egress["copy"],
            Err(AllocationError::Conflict {
                ip: ip("10.0.0.1"),
                egress: "copy".into(),
                pool: "p".into(),
                holder: "static".into()
            })
        );
        assert!(!result.by_egress.contains_key("static"));
        assert_eq!(result.usage["p"], Usage { total: 6, used: 2 });
    }

    #[test]
    fn an_ip_an_egress_has_outside_its_pool_is_not_handed_out_by_the_pool_that_contains_it() {
        let pools = [
            pool("p", vec![cidr("10.0.0.0/30")]),
            pool("q", vec![cidr("10.0.1.0/30")]),
        ];
        let egresses = [
            egress("stray", 1, Some("p"), Some("10.0.1.1")),
            egress("fresh", 2, Some("q"), None),
        ];
        let result = allocate_all(&pools, &egresses);
        assert!(matches!(
            result.by_egress["stray"],
            Err(AllocationError::OutOfPool { .. })
        ));
        assert_eq!(result.by_egress["fresh"], Ok(ip("10.0.1.2")));
    }

    /// The allocatable addresses of a pool in allocation order, computed without the bitmap: a
    /// range whose span (network..broadcast) meets an earlier kept span is left out.
    fn reference_order(ranges: &[IpRange]) -> Vec<IpAddr> {
        let mut spans: Vec<(u128, u128)> = Vec::new();
        let mut order = Vec::new();
        for range in ranges.iter().filter_map(|r| parse_range(r).ok()) {
            let (start, end) = (ip_to_u128(range.span_start), ip_to_u128(range.span_end));
            if spans.iter().any(|&(s, e)| start <= e && end >= s) {
                continue;
            }
            spans.push((start, end));
            let first = ip_to_u128(range.first);
            let last = ip_to_u128(range.last).min(first + u128::from(MAX_RANGE_SIZE) - 1);
            order.extend((first..=last).map(|v| u128_to_ip(v, range.first.is_ipv4())));
        }
        order
    }

    #[derive(Clone, Debug)]
    enum Op {
        Next,
        Allocate(u8),
        Release(u8),
    }

    fn small_range() -> impl Strategy<Value = IpRange> {
        prop_oneof![
            (0u8..4, 26u8..=30).prop_map(|(net, prefix)| cidr(&format!("10.0.{net}.0/{prefix}"))),
            (0u8..4, 0u8..40, 0u8..20).prop_map(|(net, start, len)| span(
                &format!("10.0.{net}.{start}"),
                &format!("10.0.{net}.{}", start + len)
            )),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Next),
            any::<u8>().prop_map(Op::Allocate),
            any::<u8>().prop_map(Op::Release)
        ]
    }

    proptest! {
        #[test]
        fn allocator_never_double_allocates_and_usage_stays_consistent(
            ranges in prop::collection::vec(small_range(), 1..4),
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let order = reference_order(&ranges);
            let mut pool = PoolAllocator::new(&pool("p", ranges));
            let mut allocated = std::collections::BTreeSet::new();
            // Candidate addresses for Allocate/Release: the whole 10.0.0.0/22, in or out of the pool.
            let pick = |byte: u8| ip(&format!("10.0.{}.{}", byte % 4, byte.wrapping_mul(7)));
            for op in ops {
                match op {
                    Op::Next => {
                        let expected = order.iter().find(|a| !allocated.contains(*a)).copied();
                        prop_assert_eq!(pool.allocate_next().ok(), expected);
                        allocated.extend(expected);
                    }
                    Op::Allocate(byte) => {
                        let address = pick(byte);
                        let fits = order.contains(&address) && !allocated.contains(&address);
                        prop_assert_eq!(pool.allocate(address).is_ok(), fits);
                        if fits {
                            allocated.insert(address);
                        }
                    }
                    Op::Release(byte) => {
                        let address = pick(byte);
                        prop_assert_eq!(pool.release(address).is_ok(), allocated.remove(&address));
                    }
                }
                prop_assert_eq!(pool.usage(), Usage { total: order.len() as u64, used: allocated.len() as u64 });
            }
            for address in &order {
                prop_assert_eq!(pool.is_allocated(*address), allocated.contains(address));
            }
        }

        #[test]
        fn allocate_all_is_independent_of_input_order(
            (egresses, shuffled) in prop::collection::vec(
                (0i64..3, 0u8..3, prop::option::of(0u8..12)),
                0..30,
            )
            .prop_map(|specs| specs.iter().enumerate().map(generated_egress).collect::<Vec<_>>())
            .prop_flat_map(|egresses| (Just(egresses.clone()), Just(egresses).prop_shuffle())),
            reverse_pools in any::<bool>(),
        ) {
            let mut pools = vec![
                pool("a", vec![cidr("10.0.0.0/29")]),
                pool("b", vec![span("10.1.0.1", "10.1.0.4"), cidr("10.1.1.0/30")]),
            ];
            let expected = allocate_all(&pools, &egresses);
            if reverse_pools {
                pools.reverse();
            }
            prop_assert_eq!(allocate_all(&pools, &shuffled), expected.clone());
            // No IP is handed to two Egresses of one pool.
            let mut seen = std::collections::BTreeSet::new();
            for egress in &egresses {
                if let Some(Ok(address)) = expected.by_egress.get(&egress.name) {
                    let first = seen.insert((egress.external_ip_pool.clone(), *address));
                    prop_assert!(first, "{} allocated twice", address);
                }
            }
        }
    }

    proptest! {
        /// Whatever pools overlap and whatever IPs Egresses already name, no IP is the result
        /// of two Egresses, and no new allocation is an IP any other Egress names.
        #[test]
        fn allocate_all_never_yields_one_ip_twice_across_pools_and_static_egresses(
            pools in prop::collection::vec(
                (prop::collection::vec(small_range(), 1..3), 0i64..3), 1..4),
            specs in prop::collection::vec(
                (0i64..4, prop::option::of(0usize..5), prop::option::of(any::<u8>())), 0..40),
        ) {
            let pools: Vec<ExternalIpPool> = pools.into_iter().enumerate()
                .map(|(i, (ranges, created))| ExternalIpPool {
                    created,
                    ..pool(&format!("p{i}"), ranges)
                })
                .collect();
            let egresses: Vec<Egress> = specs.iter().enumerate()
                .map(|(i, (created, pool, host))| {
                    // Pool index 4 and above may not exist.
                    let pool = pool.map(|p| format!("p{p}"));
                    let address = host.map(|h| format!("10.0.{}.{}", h % 4, h.wrapping_mul(7)));
                    egress(&format!("e{i}"), *created, pool.as_deref(), address.as_deref())
                })
                .collect();
            let result = allocate_all(&pools, &egresses);
            let mut seen = std::collections::BTreeMap::new();
            for (name, outcome) in &result.by_egress {
                if let Ok(address) = outcome {
                    let other = seen.insert(*address, name.clone());
                    prop_assert!(other.is_none(), "{} to {} and {:?}", address, name, other);
                }
            }
            for e in &egresses {
                let Some(Ok(address)) = result.by_egress.get(&e.name) else { continue };
                if non_empty(&e.egress_ip).is_some() {
                    continue;
                }
                for other in egresses.iter().filter(|o| o.name != e.name) {
                    let named = non_empty(&other.egress_ip).and_then(|t| t.parse::<IpAddr>().ok());
                    prop_assert_ne!(named, Some(*address), "{} got {}, which {} names", e.name, address, other.name);
                }
            }
        }
    }

    /// Egress `e<i>` of a generated (created, pool index, host) triple; pool 2 does not exist.
    fn generated_egress((i, (created, pool, host)): (usize, &(i64, u8, Option<u8>))) -> Egress {
        let pool_name = ["a", "b", "gone"][usize::from(*pool)];
        let address = host.map(|h| format!("10.{}.0.{h}", u8::from(*pool == 1)));
        egress(
            &format!("e{i}"),
            *created,
            Some(pool_name),
            address.as_deref(),
        )
    }
}
