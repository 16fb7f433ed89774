//! The admission rules of Antrea's validating webhooks for `ExternalIPPool` and `Egress`, as pure
//! functions: the controller's webhook and the offline renderer call them. Each error names the
//! object, the field (or range) and the rule. Nothing here does I/O or consults the allocator:
//! an IP that another Egress already uses is the controller's business (AllocationError), not
//! a validation error.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::selector::{LabelSelector, Operator};
use super::{non_empty, v1beta1};
use crate::ipam::{MAX_IP_RANGES, ParsedRange, ip_to_u128, parse_range};
use crate::model::{ExternalIpPool, FAILURE_POLICY_ANNOTATION, FailurePolicy};

/// One rejected rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {rule}")]
pub struct ValidationError {
    /// `Egress` or `ExternalIPPool`.
    pub kind: &'static str,
    pub name: String,
    /// The offending field, e.g. `spec.ipRanges[1]`.
    pub field: String,
    /// What is wrong, in Antrea's words where Antrea has them.
    pub rule: String,
}

/// Validate an ExternalIPPool on CREATE (`old` = None) or UPDATE: every range parses, no range
/// overlaps another of this pool or of `others` (a pool named like `new` in `others` is
/// ignored), existing ranges are kept, and the nodeSelector's expressions are well-formed.
pub fn validate_pool(
    new: &ExternalIpPool,
    old: Option<&ExternalIpPool>,
    others: &[ExternalIpPool],
) -> Result<(), Vec<ValidationError>> {
    let error = |field: String, rule: String| ValidationError {
        kind: "ExternalIPPool",
        name: new.name.clone(),
        field,
        rule,
    };
    let mut errors = Vec::new();
    if new.ip_ranges.len() > MAX_IP_RANGES {
        let rule = format!(
            "must have at most {MAX_IP_RANGES} items, has {}",
            new.ip_ranges.len()
        );
        errors.push(error("spec.ipRanges".to_string(), rule));
        return Err(errors);
    }
    let mut parsed: Vec<(usize, ParsedRange)> = Vec::new();
    for (i, range) in new.ip_ranges.iter().enumerate() {
        match parse_range(range).map_err(|e| e.0).and_then(ordinary_range) {
            Ok(p) => parsed.push((i, p)),
            Err(rule) => errors.push(error(format!("spec.ipRanges[{i}]"), rule)),
        }
    }
    let theirs: Vec<(&str, ParsedRange)> = others
        .iter()
        .filter(|o| o.name != new.name)
        .flat_map(|o| {
            o.ip_ranges
                .iter()
                .filter_map(|r| parse_range(r).ok())
                .map(|r| (o.name.as_str(), r))
        })
        .collect();
    for (i, rule) in overlap_rules(&parsed, &theirs) {
        errors.push(error(format!("spec.ipRanges[{i}]"), rule));
    }
    if let Some(old) = old {
        let kept: BTreeSet<String> = new.ip_ranges.iter().map(range_key).collect();
        let missing: Vec<String> = old
            .ip_ranges
            .iter()
            .map(range_key)
            .filter(|k| !kept.contains(k))
            .collect();
        if !missing.is_empty() {
            let rule = format!(
                "existing IPRanges [{}] cannot be updated or deleted",
                missing.join(", ")
            );
            errors.push(error("spec.ipRanges".to_string(), rule));
        }
    }
    for (field, rule) in selector_errors(&new.node_selector, "spec.nodeSelector") {
        errors.push(error(field, rule));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A range that holds only addresses an egress IP can have: not a whole family (prefix 0),
/// nothing unspecified, loopback, link-local, multicast or broadcast.
fn ordinary_range(range: ParsedRange) -> Result<ParsedRange, String> {
    let (first, last) = (ip_to_u128(range.span_start), ip_to_u128(range.span_end));
    let whole = if range.span_start.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    if first == 0 && last == whole {
        return Err(format!(
            "range [{}] is every address of its family (prefix length 0)",
            range.key
        ));
    }
    match ovs_egress_inputs::special_in(range.span_start.is_ipv6(), first, last) {
        Some(what) => Err(format!(
            "range [{}] contains {what} addresses, which cannot be egress IPs",
            range.key
        )),
        None => Ok(range),
    }
}

/// Validate an Egress on CREATE (`old` = None) or UPDATE against the existing pools, with
/// Antrea's rules, plus ours for the failure-policy annotation (`node-ip` or `drop`):
/// `egressIPs`/`externalIPPools` are not supported yet, `bandwidth` rate and
/// burst are Kubernetes quantities, and, only when `egressIP` or `externalIPPool` changed and
/// both are set, the IP parses, the pool exists and the IP lies inside one of its ranges.
///
/// Takes v1beta1 objects: the webhook is registered for v1beta1 (the API server converts), and
/// both versions have the same fields, so any version's YAML deserializes into them.
pub fn validate_egress(
    new: &v1beta1::Egress,
    old: Option<&v1beta1::Egress>,
    pools: &[ExternalIpPool],
) -> Result<(), Vec<ValidationError>> {
    let name = new.metadata.name.clone().unwrap_or_default();
    let error = |field: &str, rule: String| ValidationError {
        kind: "Egress",
        name: name.clone(),
        field: field.to_string(),
        rule,
    };
    let spec = &new.spec;
    let mut errors = Vec::new();
    if !spec.egress_ips.is_empty() {
        let rule = "spec.egressIPs is not supported yet".to_string();
        errors.push(error("spec.egressIPs", rule));
    }
    if !spec.external_ip_pools.is_empty() {
        let rule = "spec.externalIPPools is not supported yet".to_string();
        errors.push(error("spec.externalIPPools", rule));
    }
    let annotations = new.metadata.annotations.as_ref();
    if let Some(policy) = annotations.and_then(|a| a.get(FAILURE_POLICY_ANNOTATION))
        && !FailurePolicy::is_valid_annotation(policy)
    {
        errors.push(error(
            &format!("metadata.annotations[{FAILURE_POLICY_ANNOTATION}]"),
            format!("must be node-ip or drop, not {policy:?}"),
        ));
    }
    if let Some(bandwidth) = &spec.bandwidth {
        for (field, label, value) in [
            ("spec.bandwidth.rate", "Rate", &bandwidth.rate),
            ("spec.bandwidth.burst", "Burst", &bandwidth.burst),
        ] {
            if let Err(e) = parse_quantity(value) {
                errors.push(error(
                    field,
                    format!("{label} {value} in Egress {name} is invalid: {e}"),
                ));
            }
        }
    }
    let (ip, pool) = (
        non_empty(&spec.egress_ip),
        non_empty(&spec.external_ip_pool),
    );
    if let Some(text) = &ip {
        match text.parse::<IpAddr>() {
            Err(_) if pool.is_none() => {
                errors.push(error("spec.egressIP", format!("IP {text} is not valid")));
            }
            Ok(addr) => {
                if let Some(what) = ovs_egress_inputs::special_address(addr) {
                    let rule = format!("IP {text} is {what}, not usable as an egress IP");
                    errors.push(error("spec.egressIP", rule));
                }
            }
            // With a pool, the pool rules below say it.
            Err(_) => {}
        }
    }
    let changed = old.is_none_or(|o| {
        non_empty(&o.spec.egress_ip) != ip || non_empty(&o.spec.external_ip_pool) != pool
    });
    if let (true, Some(ip), Some(pool)) = (changed, ip, pool)
        && let Err((field, rule)) = check_ip_in_pool(&ip, &pool, pools)
    {
        errors.push(error(field, rule));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Rules 6–8: the IP parses, the pool exists, the IP is inside one of the pool's ranges (a
/// CIDR's broadcast address counts as inside, its network address does not).
fn check_ip_in_pool(
    ip: &str,
    pool: &str,
    pools: &[ExternalIpPool],
) -> Result<(), (&'static str, String)> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| ("spec.egressIP", format!("IP {ip} is not valid")))?;
    let pool = pools.iter().find(|p| p.name == pool).ok_or_else(|| {
        (
            "spec.externalIPPool",
            format!("ExternalIPPool {pool} does not exist"),
        )
    })?;
    let value = ip_to_u128(addr);
    let inside = pool
        .ip_ranges
        .iter()
        .filter_map(|r| parse_range(r).ok())
        .any(|r| {
            r.first.is_ipv4() == addr.is_ipv4()
                && ip_to_u128(r.first) <= value
                && value <= ip_to_u128(r.span_end)
        });
    if inside {
        Ok(())
    } else {
        Err((
            "spec.egressIP",
            format!("IP {ip} is not within the IP range"),
        ))
    }
}

/// The overlap rules of a pool's ranges (`ours`, with their index in spec order): a range that
/// shares an address with an earlier range of the pool names one of them, a range that shares
/// one with another pool's range (`theirs`, with the pool's name) names one of those. Exactly
/// the ranges a pairwise check would flag, at most two rules each, in O(n log n) for n ranges
/// in all: sorted span starts and a running "furthest end" index ([`Reach`]).
fn overlap_rules(
    ours: &[(usize, ParsedRange)],
    theirs: &[(&str, ParsedRange)],
) -> Vec<(usize, String)> {
    let starts = ours
        .iter()
        .map(|(_, r)| r)
        .chain(theirs.iter().map(|(_, r)| r));
    let mut other_pools = Reach::new(starts.clone().map(|r| span(r).0));
    for (id, (_, range)) in theirs.iter().enumerate() {
        other_pools.add(range, id);
    }
    let mut earlier = Reach::new(starts.map(|r| span(r).0));
    let mut rules = Vec::new();
    for (id, (i, range)) in ours.iter().enumerate() {
        if let Some(other) = earlier.overlapping(range) {
            let rule = format!(
                "range [{}] overlaps with range [{}]",
                range.key, ours[other].1.key
            );
            rules.push((*i, rule));
        }
        if let Some(other) = other_pools.overlapping(range) {
            let (pool, held) = &theirs[other];
            let rule = format!(
                "range [{}] overlaps with range [{}] of ExternalIPPool {pool}",
                range.key, held.key
            );
            rules.push((*i, rule));
        }
        earlier.add(range, id);
    }
    rules
}

/// A point of the address space: (IPv6?, value), so that the two families never meet.
type Point = (bool, u128);

/// A range's full span (network to broadcast for a CIDR) as its first and last point.
fn span(range: &ParsedRange) -> (Point, Point) {
    let family = range.span_start.is_ipv6();
    (
        (family, ip_to_u128(range.span_start)),
        (family, ip_to_u128(range.span_end)),
    )
}

/// The spans added so far, indexed by start (a Fenwick tree of maxima over the sorted starts
/// it may be given): "which span starting at or before a point reaches furthest" in O(log n),
/// and a span overlaps an added one exactly when the one reaching furthest among those
/// starting at or before its end reaches its start.
struct Reach {
    starts: Vec<Point>,
    /// Per tree node: the furthest end below it and the id of its span.
    tree: Vec<Option<(Point, usize)>>,
}

impl Reach {
    fn new(starts: impl Iterator<Item = Point>) -> Self {
        let mut starts: Vec<Point> = starts.collect();
        starts.sort_unstable();
        starts.dedup();
        let tree = vec![None; starts.len()];
        Self { starts, tree }
    }

    /// Add `range` (whose start was given to `new`) under `id`.
    fn add(&mut self, range: &ParsedRange, id: usize) {
        let (start, end) = span(range);
        let Ok(position) = self.starts.binary_search(&start) else {
            return; // every start was given to `new`
        };
        let mut node = position + 1;
        while node <= self.tree.len() {
            let slot = &mut self.tree[node - 1];
            if slot.is_none_or(|(furthest, _)| end > furthest) {
                *slot = Some((end, id));
            }
            node += node & node.wrapping_neg();
        }
    }

    /// The id of an added span sharing a point with `range`, if any.
    fn overlapping(&self, range: &ParsedRange) -> Option<usize> {
        let (start, end) = span(range);
        let mut node = self.starts.partition_point(|s| *s <= end);
        let mut best: Option<(Point, usize)> = None;
        while node > 0 {
            if let Some((furthest, id)) = self.tree[node - 1]
                && best.is_none_or(|(b, _)| furthest > b)
            {
                best = Some((furthest, id));
            }
            node -= node & node.wrapping_neg();
        }
        best.filter(|(furthest, _)| *furthest >= start)
            .map(|(_, id)| id)
    }
}

/// The identity of a range for the "existing ranges are kept" rule: the normalized CIDR or
/// `start-end`; the text as written when it does not parse.
fn range_key(range: &super::IpRange) -> String {
    parse_range(range).map(|p| p.key).unwrap_or_else(|_| {
        let part = |s: &Option<String>| s.clone().unwrap_or_default();
        match &range.cidr {
            Some(cidr) => cidr.clone(),
            None => format!("{}-{}", part(&range.start), part(&range.end)),
        }
    })
}

/// The API server's rules for set-based requirements: In/NotIn need values, Exists and
/// DoesNotExist take none. Yields (field, rule).
fn selector_errors(selector: &LabelSelector, field: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for (i, r) in selector.match_expressions.iter().enumerate() {
        let needs_values = matches!(r.operator, Operator::In | Operator::NotIn);
        let rule = match (needs_values, r.values.is_empty()) {
            (true, true) => "must be specified when `operator` is 'In' or 'NotIn'",
            (false, false) => "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            _ => continue,
        };
        errors.push((
            format!("{field}.matchExpressions[{i}].values"),
            rule.to_string(),
        ));
    }
    errors
}

/// Accept what Kubernetes' `resource.ParseQuantity` accepts: a signed decimal number, then
/// nothing, a binary suffix (Ki…Ei), a decimal suffix (n u m k M G T P E) or an exponent (e3).
fn parse_quantity(text: &str) -> Result<(), &'static str> {
    const FORMAT: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
        return Err(FORMAT);
    }
    let exponent = |s: &str| {
        let Some(rest) = s.strip_prefix(['e', 'E']) else {
            return false;
        };
        let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    const SUFFIXES: [&str; 16] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) || exponent(suffix) {
        Ok(())
    } else {
        Err("unable to parse quantity's suffix")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Bandwidth, IpRange, LabelSelectorRequirement, v1beta1::EgressSpec};

    fn cidr(text: &str) -> IpRange {
        IpRange {
            cidr: Some(text.to_string()),
            ..Default::default()
        }
    }

    fn span(start: &str, end: &str) -> IpRange {
        IpRange {
            start: Some(start.to_string()),
            end: Some(end.to_string()),
            ..Default::default()
        }
    }

    fn pool(name: &str, ranges: Vec<IpRange>) -> ExternalIpPool {
        ExternalIpPool {
            name: name.to_string(),
            created: 0,
            ip_ranges: ranges,
            node_selector: LabelSelector::default(),
        }
    }

    fn rules(result: Result<(), Vec<ValidationError>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn valid_pool_with_disjoint_ranges_is_accepted() {
        let new = pool(
            "a",
            vec![span("10.0.0.2", "10.0.0.10"), cidr("10.0.1.0/28")],
        );
        let other = pool("b", vec![cidr("10.0.2.0/24"), cidr("::a00:10/124")]);
        assert_eq!(validate_pool(&new, None, &[other]), Ok(()));
    }

    #[test]
    fn unparsable_ranges_are_rejected_with_the_range_rule() {
        let new = pool(
            "a",
            vec![
                cidr("10.0.0.0/33"),
                span("10.0.0.x", "10.0.0.2"),
                span("10.0.0.1", "::2"),
                span("10.0.0.9", "10.0.0.1"),
            ],
        );
        assert_eq!(
            rules(validate_pool(&new, None, &[])),
            [
                "ExternalIPPool a: spec.ipRanges[0]: invalid cidr 10.0.0.0/33",
                "ExternalIPPool a: spec.ipRanges[1]: invalid start ip address 10.0.0.x",
                "ExternalIPPool a: spec.ipRanges[2]: range start 10.0.0.1 and range end ::2 should belong to same family",
                "ExternalIPPool a: spec.ipRanges[3]: range start 10.0.0.9 should not be greater than range end 10.0.0.1",
            ]
        );
    }

    #[test]
    fn ranges_of_one_pool_overlapping_on_the_cidr_broadcast_address_are_rejected() {
        let new = pool("a", vec![cidr("10.0.0.0/30"), span("10.0.0.3", "10.0.0.9")]);
        assert_eq!(
            rules(validate_pool(&new, None, &[])),
            [
                "ExternalIPPool a: spec.ipRanges[1]: range [10.0.0.3-10.0.0.9] overlaps with range [10.0.0.0/30]"
            ]
        );
    }

    #[test]
    fn range_overlapping_another_pool_is_rejected_naming_that_pool() {
        let new = pool("a", vec![span("10.0.0.250", "10.0.1.5")]);
        let others = [
            pool("b", vec![cidr("10.0.1.0/24")]),
            pool("c", vec![cidr("10.0.2.0/24")]),
        ];
        assert_eq!(
            rules(validate_pool(&new, None, &others)),
            [
                "ExternalIPPool a: spec.ipRanges[0]: range [10.0.0.250-10.0.1.5] overlaps with range [10.0.1.0/24] of ExternalIPPool b"
            ]
        );
    }

    #[test]
    fn the_pools_own_stored_version_is_not_an_overlapping_other_pool() {
        let old = pool("a", vec![cidr("10.0.0.0/24")]);
        let new = pool("a", vec![cidr("10.0.0.0/24"), cidr("10.0.1.0/24")]);
        assert_eq!(
            validate_pool(&new, Some(&old), std::slice::from_ref(&old)),
            Ok(())
        );
    }

    #[test]
    fn a_pool_with_more_than_the_maximum_of_ranges_is_rejected_before_any_range_is_checked() {
        // The attack's shape: tens of thousands of ranges in one object (78,000 took 9.3 s).
        let ranges: Vec<IpRange> = (0..78_000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
                span(&ip, &ip)
            })
            .collect();
        assert_eq!(
            rules(validate_pool(&pool("big", ranges), None, &[])),
            [format!(
                "ExternalIPPool big: spec.ipRanges: must have at most {MAX_IP_RANGES} items, has 78000"
            )]
        );
        let at_limit: Vec<IpRange> = (0..MAX_IP_RANGES as u32)
            .map(|i| cidr(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        assert_eq!(validate_pool(&pool("full", at_limit), None, &[]), Ok(()));
    }

    /// Ranges over 10.0.0.0/24 (and a few IPv6 ones), small enough to overlap often.
    fn small_range() -> impl proptest::strategy::Strategy<Value = IpRange> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..8, 28u8..=31)
                .prop_map(|(net, prefix)| cidr(&format!("10.0.0.{}/{prefix}", net * 16))),
            (0u8..120, 0u8..20).prop_map(|(start, len)| span(
                &format!("10.0.0.{start}"),
                &format!("10.0.0.{}", start + len)
            )),
            (0u8..120, 0u8..20).prop_map(|(start, len)| span(
                &format!("::a00:{start:x}"),
                &format!("::a00:{:x}", start + len)
            )),
        ]
    }

    proptest::proptest! {
        /// The indexed check flags exactly the ranges that the obvious pairwise check flags (a
        /// range overlapping an earlier one of its pool, or one of another pool), and every
        /// rule names a range that really overlaps.
        #[test]
        fn overlap_sweep_flags_exactly_the_ranges_the_pairwise_check_flags(
            ours in proptest::collection::vec(small_range(), 0..12),
            theirs in proptest::collection::vec(
                (0usize..3, small_range()), 0..12),
        ) {
            let new = pool("a", ours.clone());
            let mut others: Vec<ExternalIpPool> = (0..3).map(|p| pool(&format!("o{p}"), vec![])).collect();
            for (p, range) in &theirs {
                others[*p].ip_ranges.push(range.clone());
            }
            let parsed: Vec<(usize, ParsedRange)> = ours.iter().enumerate()
                .filter_map(|(i, r)| Some((i, parse_range(r).ok()?))).collect();
            let pairwise = |a: &ParsedRange, b: &ParsedRange| {
                a.span_start.is_ipv4() == b.span_start.is_ipv4()
                    && ip_to_u128(a.span_start) <= ip_to_u128(b.span_end)
                    && ip_to_u128(a.span_end) >= ip_to_u128(b.span_start)
            };
            let others_parsed: Vec<(String, ParsedRange)> = others.iter().flat_map(|o| {
                o.ip_ranges.iter().filter_map(|r| parse_range(r).ok()).map(|r| (o.name.clone(), r))
            }).collect();
            let mut expected = BTreeSet::new();
            for (n, (i, a)) in parsed.iter().enumerate() {
                for (j, b) in parsed.iter().take(n).chain(parsed.iter().skip(n + 1)) {
                    if pairwise(a, b) {
                        expected.insert(*i.max(j));
                    }
                }
                if others_parsed.iter().any(|(_, b)| pairwise(a, b)) {
                    expected.insert(*i);
                }
            }
            let errors = validate_pool(&new, None, &others).err().unwrap_or_default();
            let mut flagged = BTreeSet::new();
            for e in errors.iter().filter(|e| e.rule.contains("overlaps")) {
                let i: usize = e.field.trim_start_matches("spec.ipRanges[").trim_end_matches(']').parse().unwrap();
                flagged.insert(i);
                let (_, a) = parsed.iter().find(|(j, _)| *j == i).unwrap();
                let named = e.rule.split('[').nth(2).unwrap().split(']').next().unwrap();
                let partner = parsed.iter().map(|(_, r)| r).chain(others_parsed.iter().map(|(_, r)| r))
                    .find(|r| r.key == named && pairwise(a, r));
                proptest::prop_assert!(partner.is_some(), "{} names no overlapping range", e);
            }
            proptest::prop_assert_eq!(flagged, expected);
        }
    }

    #[test]
    fn pools_with_prefix_zero_or_special_addresses_are_rejected_with_the_reason() {
        let new = pool(
            "a",
            vec![
                cidr("0.0.0.0/0"),
                span("0.0.0.1", "0.0.0.9"),
                cidr("127.0.0.0/24"),
                span("223.255.255.250", "224.0.0.2"),
                cidr("169.254.0.0/24"),
                cidr("::/0"),
                cidr("fe80::/120"),
                span("::", "::5"),
                cidr("10.0.0.0/24"),
            ],
        );
        assert_eq!(
            rules(validate_pool(&new, None, &[])),
            [
                "ExternalIPPool a: spec.ipRanges[0]: range [0.0.0.0/0] is every address of its family (prefix length 0)",
                "ExternalIPPool a: spec.ipRanges[1]: range [0.0.0.1-0.0.0.9] contains \"this network\" (0.0.0.0/8) addresses, which cannot be egress IPs",
                "ExternalIPPool a: spec.ipRanges[2]: range [127.0.0.0/24] contains loopback (127.0.0.0/8) addresses, which cannot be egress IPs",
                "ExternalIPPool a: spec.ipRanges[3]: range [223.255.255.250-224.0.0.2] contains multicast (224.0.0.0/4) addresses, which cannot be egress IPs",
                "ExternalIPPool a: spec.ipRanges[4]: range [169.254.0.0/24] contains link-local (169.254.0.0/16) addresses, which cannot be egress IPs",
                "ExternalIPPool a: spec.ipRanges[5]: range [::/0] is every address of its family (prefix length 0)",
                "ExternalIPPool a: spec.ipRanges[6]: range [fe80::/120] contains link-local (fe80::/10) addresses, which cannot be egress IPs",
                "ExternalIPPool a: spec.ipRanges[7]: range [::-::5] contains unspecified (::) addresses, which cannot be egress IPs",
            ]
        );
    }

    #[test]
    fn special_egress_ips_are_rejected_with_or_without_a_pool() {
        for (ip, what) in [
            ("127.0.0.1", "loopback"),
            ("0.0.0.1", "\"this network\""),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
            ("169.254.0.7", "link-local"),
        ] {
            let errors = rules(validate_egress(&egress(Some(ip), None), None, &[]));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(&format!("Egress web: spec.egressIP: IP {ip} is {what}")),
                "{errors:?}"
            );
        }
        assert_eq!(
            rules(validate_egress(
                &egress(Some("10.0.0.300"), None),
                None,
                &[]
            )),
            ["Egress web: spec.egressIP: IP 10.0.0.300 is not valid"]
        );
    }

    #[test]
    fn ipv4_and_ipv6_ranges_with_equal_numeric_values_do_not_overlap() {
        let new = pool("a", vec![cidr("10.0.0.0/24"), cidr("::a00:0/120")]);
        assert_eq!(validate_pool(&new, None, &[]), Ok(()));
    }

    #[test]
    fn update_may_add_ranges_but_not_change_or_delete_existing_ones() {
        let old = pool("a", vec![cidr("10.0.0.0/24"), span("10.0.1.1", "10.0.1.9")]);
        let grown = pool(
            "a",
            vec![
                cidr("10.0.0.7/24"),
                span("10.0.1.1", "10.0.1.9"),
                cidr("10.0.2.0/24"),
            ],
        );
        assert_eq!(validate_pool(&grown, Some(&old), &[]), Ok(()));
        let changed = pool("a", vec![cidr("10.0.0.0/24"), span("10.0.1.1", "10.0.1.8")]);
        assert_eq!(
            rules(validate_pool(&changed, Some(&old), &[])),
            [
                "ExternalIPPool a: spec.ipRanges: existing IPRanges [10.0.1.1-10.0.1.9] cannot be updated or deleted"
            ]
        );
    }

    #[test]
    fn node_selector_expressions_need_values_exactly_for_in_and_not_in() {
        let requirement = |operator, values: &[&str]| LabelSelectorRequirement {
            key: "k".to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let mut new = pool("a", vec![cidr("10.0.0.0/24")]);
        new.node_selector.match_expressions = vec![
            requirement(Operator::In, &[]),
            requirement(Operator::NotIn, &["v"]),
            requirement(Operator::Exists, &["v"]),
            requirement(Operator::DoesNotExist, &[]),
        ];
        assert_eq!(
            rules(validate_pool(&new, None, &[])),
            [
                "ExternalIPPool a: spec.nodeSelector.matchExpressions[0].values: must be specified when `operator` is 'In' or 'NotIn'",
                "ExternalIPPool a: spec.nodeSelector.matchExpressions[2].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ]
        );
    }

    fn egress(ip: Option<&str>, pool: Option<&str>) -> v1beta1::Egress {
        v1beta1::Egress::new(
            "web",
            EgressSpec {
                egress_ip: ip.map(str::to_string),
                external_ip_pool: pool.map(str::to_string),
                ..Default::default()
            },
        )
    }

    fn pools() -> Vec<ExternalIpPool> {
        vec![pool(
            "p",
            vec![cidr("10.0.0.0/30"), span("10.0.1.1", "10.0.1.3")],
        )]
    }

    #[test]
    fn egress_ips_and_external_ip_pools_are_not_supported_yet() {
        let mut new = egress(None, None);
        new.spec.egress_ips = vec!["10.0.0.1".to_string()];
        new.spec.external_ip_pools = vec!["p".to_string()];
        assert_eq!(
            rules(validate_egress(&new, None, &pools())),
            [
                "Egress web: spec.egressIPs: spec.egressIPs is not supported yet",
                "Egress web: spec.externalIPPools: spec.externalIPPools is not supported yet",
            ]
        );
    }

    #[test]
    fn the_failure_policy_annotation_is_node_ip_or_drop() {
        let mut new = egress(None, Some("p"));
        for value in ["node-ip", "drop"] {
            new.metadata.annotations =
                Some([(FAILURE_POLICY_ANNOTATION.to_string(), value.to_string())].into());
            assert_eq!(validate_egress(&new, None, &pools()), Ok(()), "{value}");
        }
        new.metadata.annotations =
            Some([(FAILURE_POLICY_ANNOTATION.to_string(), "Drop".to_string())].into());
        assert_eq!(
            rules(validate_egress(&new, None, &pools())),
            [format!(
                "Egress web: metadata.annotations[{FAILURE_POLICY_ANNOTATION}]: must be node-ip \
                 or drop, not \"Drop\""
            )]
        );
    }

    #[test]
    fn bandwidth_rate_and_burst_must_be_quantities() {
        let mut new = egress(None, Some("p"));
        new.spec.bandwidth = Some(Bandwidth {
            rate: "100M".to_string(),
            burst: "2e8".to_string(),
        });
        assert_eq!(validate_egress(&new, None, &pools()), Ok(()));
        new.spec.bandwidth = Some(Bandwidth {
            rate: "fast".to_string(),
            burst: "100Mb".to_string(),
        });
        let errors = rules(validate_egress(&new, None, &pools()));
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("Egress web: spec.bandwidth.rate: Rate fast in Egress web is invalid: quantities must match"));
        assert_eq!(
            errors[1],
            "Egress web: spec.bandwidth.burst: Burst 100Mb in Egress web is invalid: unable to parse quantity's suffix"
        );
    }

    #[test]
    fn quantity_parser_accepts_kubernetes_forms_only() {
        for good in [
            "1", "+1.5", "-.5", "100M", "1Gi", "250m", "1e3", "2E-2", "5E", "3.",
        ] {
            assert_eq!(parse_quantity(good), Ok(()), "{good}");
        }
        for bad in ["", "M", ".", "1.2.3", "1MB", "1e", "1e+", "1 M", "++1"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unchanged_ip_and_pool_are_not_revalidated_on_update() {
        let old = egress(Some("10.9.9.9"), Some("gone"));
        let mut new = old.clone();
        new.spec.applied_to.pod_selector = Some(LabelSelector::default());
        assert_eq!(validate_egress(&new, Some(&old), &pools()), Ok(()));
        assert!(validate_egress(&new, None, &pools()).is_err());
    }

    #[test]
    fn ip_or_pool_alone_is_not_checked_against_pools() {
        assert_eq!(
            validate_egress(&egress(Some("10.9.9.9"), None), None, &[]),
            Ok(())
        );
        assert_eq!(
            validate_egress(&egress(None, Some("gone")), None, &[]),
            Ok(())
        );
        assert_eq!(
            validate_egress(&egress(Some(""), Some("gone")), None, &[]),
            Ok(())
        );
    }

    #[test]
    fn unparsable_egress_ip_is_rejected() {
        assert_eq!(
            rules(validate_egress(
                &egress(Some("10.0.0.300"), Some("p")),
                None,
                &pools()
            )),
            ["Egress web: spec.egressIP: IP 10.0.0.300 is not valid"]
        );
    }

    #[test]
    fn unknown_pool_is_rejected() {
        assert_eq!(
            rules(validate_egress(
                &egress(Some("10.0.0.1"), Some("q")),
                None,
                &pools()
            )),
            ["Egress web: spec.externalIPPool: ExternalIPPool q does not exist"]
        );
    }

    #[test]
    fn ip_must_lie_in_a_pool_range_where_the_cidr_broadcast_counts_and_the_network_does_not() {
        for inside in ["10.0.0.1", "10.0.0.3", "10.0.1.1", "10.0.1.3"] {
            let new = egress(Some(inside), Some("p"));
            assert_eq!(validate_egress(&new, None, &pools()), Ok(()), "{inside}");
        }
        for outside in ["10.0.0.0", "10.0.1.4", "::a00:1"] {
            let new = egress(Some(outside), Some("p"));
            assert_eq!(
                rules(validate_egress(&new, None, &pools())),
                [format!(
                    "Egress web: spec.egressIP: IP {outside} is not within the IP range"
                )]
            );
        }
    }

    #[test]
    fn changing_the_pool_while_keeping_an_ip_outside_it_is_rejected() {
        let old = egress(Some("10.0.0.1"), Some("p"));
        let new = egress(Some("10.0.0.1"), Some("q"));
        let q = pool("q", vec![cidr("10.5.0.0/24")]);
        assert_eq!(
            rules(validate_egress(&new, Some(&old), &[q])),
            ["Egress web: spec.egressIP: IP 10.0.0.1 is not within the IP range"]
        );
    }

    #[test]
    fn user_guide_v1alpha2_yaml_deserializes_into_v1beta1_and_validates() {
        let new: v1beta1::Egress = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: Egress\nmetadata:\n  name: egress-prod-web\n\
             spec:\n  appliedTo:\n    podSelector: {matchLabels: {role: web}}\n\
             \x20 egressIP: 10.0.1.9\n  externalIPPool: p\n",
        )
        .unwrap();
        assert_eq!(
            rules(validate_egress(&new, None, &pools())),
            ["Egress egress-prod-web: spec.egressIP: IP 10.0.1.9 is not within the IP range"]
        );
    }
}
