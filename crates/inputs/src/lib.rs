//! Rules for values that enter from outside (CRDs, config files, CNI stdin, cluster files),
//! checked where they enter so nothing downstream (paths, `iptables-restore` input, OVSDB,
//! the allocator) ever sees them unchecked: Linux interface names, CNI network names, and
//! addresses and prefixes that can never be an egress IP, a pool or a Pod subnet. Pure: no I/O.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// Linux's rule for interface names (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no
/// `/`, `:`, whitespace or NUL. Also refuses other control characters, which no tool prints
/// faithfully. The error says which rule is broken.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_string());
    }
    if name.len() > 15 {
        return Err(format!(
            "{name:?} is {} bytes, more than the 15 an interface name may have",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} contains {c:?}; interface names may not contain '/', ':', whitespace or \
             control characters"
        ));
    }
    Ok(())
}

/// The CNI specification's rule for network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (so never
/// an absolute path, never a path with `/`, never `.` or `..`).
pub fn check_cni_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} does not match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$ (the CNI specification's \
             network name)"
        ))
    }
}

/// Address blocks that can never be an egress IP, a pool address or a Pod address: (IPv6?,
/// first, last, what it is).
const SPECIAL: [(bool, u128, u128, &str); 9] = [
    (
        false,
        0x0000_0000,
        0x00ff_ffff,
        "\"this network\" (0.0.0.0/8)",
    ),
    (false, 0x7f00_0000, 0x7fff_ffff, "loopback (127.0.0.0/8)"),
    (
        false,
        0xa9fe_0000,
        0xa9fe_ffff,
        "link-local (169.254.0.0/16)",
    ),
    (false, 0xe000_0000, 0xefff_ffff, "multicast (224.0.0.0/4)"),
    (
        false,
        0xffff_ffff,
        0xffff_ffff,
        "broadcast (255.255.255.255)",
    ),
    (true, 0, 0, "unspecified (::)"),
    (true, 1, 1, "loopback (::1)"),
    (
        true,
        0xfe80 << 112,
        (0xfebf << 112) | ((1 << 112) - 1),
        "link-local (fe80::/10)",
    ),
    (true, 0xff00 << 112, u128::MAX, "multicast (ff00::/8)"),
];

/// What kind of special address `ip` is, if it is one.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    special_in(ip.is_ipv6(), ip_to_u128(ip), ip_to_u128(ip))
}

/// The first special block that shares an address with `first..=last` of one family.
pub fn special_in(ipv6: bool, first: u128, last: u128) -> Option<&'static str> {
    SPECIAL
        .iter()
        .find(|(family, start, end, _)| *family == ipv6 && *start <= last && first <= *end)
        .map(|(_, _, _, what)| *what)
}

/// Every special block of one family clipped to `first..=last`, as (first, last).
pub fn special_spans(ipv6: bool, first: u128, last: u128) -> impl Iterator<Item = (u128, u128)> {
    SPECIAL
        .iter()
        .filter(move |(family, start, end, _)| *family == ipv6 && *start <= last && first <= *end)
        .map(move |(_, start, end, _)| ((*start).max(first), (*end).min(last)))
}

/// A CIDR where it enters (configuration, netconf, CRDs, flags): `ADDRESS/PREFIX` as
/// Kubernetes writes them, a decimal prefix that fits the family, host bits cleared. The error
/// names the text and what is wrong with it.
pub fn parse_cidr(text: &str) -> Result<IpNetwork, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not ADDRESS/PREFIX"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} has an invalid address"))?;
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix.parse::<u8>() {
        Ok(n) if prefix.bytes().all(|b| b.is_ascii_digit()) && n <= bits => n,
        _ => return Err(format!("{text:?} needs a prefix length from 0 to {bits}")),
    };
    let net = IpNetwork::new(addr, prefix).map_err(|e| format!("{text:?}: {e}"))?;
    IpNetwork::new(net.network(), prefix).map_err(|e| format!("{text:?}: {e}"))
}

/// A Node's `spec.podCIDR`: `ADDRESS/PREFIX` of one family, prefix 1 to 32 (IPv4) or 128
/// (IPv6), no special addresses in it. Other Nodes route and bypass Egress by it, so
/// `0.0.0.0/0` would quietly send everything around Egress.
pub fn parse_pod_cidr(text: &str) -> Result<IpNetwork, String> {
    let net = parse_cidr(text)?;
    let bits: u8 = if net.is_ipv4() { 32 } else { 128 };
    if net.prefix() == 0 {
        return Err(format!(
            "{text:?} needs a prefix length from 1 to {bits} (0 would be every address)"
        ));
    }
    // Zero for a full-length prefix (a shift by 128 would overflow).
    let host_mask = u128::MAX
        .checked_shr(128 - u32::from(bits) + u32::from(net.prefix()))
        .unwrap_or(0);
    let start = ip_to_u128(net.network());
    match special_in(net.is_ipv6(), start, start | host_mask) {
        Some(what) => Err(format!("{text:?} contains {what} addresses")),
        None => Ok(net),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_need_a_nonzero_prefix_and_no_special_addresses() {
        for good in [
            "10.244.1.0/24",
            "fd00:10::/64",
            "10.0.0.1/32",
            "2001:db8::/128",
        ] {
            assert_eq!(
                parse_pod_cidr(good).map(|net| net.to_string()),
                Ok(good.to_string())
            );
        }
        for (bad, why) in [
            ("0.0.0.0/0", "prefix length"),
            ("::/0", "prefix length"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0", "ADDRESS/PREFIX"),
            ("x/8", "invalid address"),
            ("127.0.0.0/8", "loopback"),
            ("224.1.0.0/16", "multicast"),
            ("fe80::/64", "link-local"),
            ("0.0.0.0/8", "this network"),
        ] {
            let error = parse_pod_cidr(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn cidrs_clear_host_bits_and_refuse_other_spellings() {
        for (text, parsed) in [
            ("10.244.1.77/24", "10.244.1.0/24"),
            ("fd00:10:244:1::77/64", "fd00:10:244:1::/64"),
            ("10.0.0.1/32", "10.0.0.1/32"),
            ("fd00::1/128", "fd00::1/128"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ] {
            assert_eq!(parse_cidr(text).map(|n| n.to_string()), Ok(parsed.into()));
        }
        for (bad, why) in [
            ("10.0.0.0/33", "prefix length from 0 to 32"),
            ("fd00::/129", "prefix length from 0 to 128"),
            ("10.0.0.0/255.0.0.0", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0/8", "invalid address"),
            ("10.0.0.1", "not ADDRESS/PREFIX"),
            ("", "not ADDRESS/PREFIX"),
        ] {
            let error = parse_cidr(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn interface_names_follow_linux_rules() {
        for good in ["br-int", "antrea-gw0", "eth0.100", "a", "123456789012345"] {
            assert_eq!(check_interface_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a:1",
            "br int",
            "br\nint",
            "br\0",
            "gw\t",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cni_network_names_follow_the_spec_pattern() {
        for good in ["antrea", "k8s-pod-network", "a.b_c-1", "0"] {
            assert_eq!(check_cni_network_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "/etc", "..", ".", "../x", "a/b", "-a", "_a", "a b", "a\n",
        ] {
            assert!(check_cni_network_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn special_addresses_are_named_and_ordinary_ones_are_not() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        for (text, what) in [
            ("0.0.0.1", "this network"),
            ("0.0.0.0", "this network"),
            ("127.0.0.1", "loopback"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.255", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            let found = special_address(ip(text));
            assert!(found.is_some_and(|f| f.contains(what)), "{text}: {found:?}");
        }
        for ordinary in [
            "10.0.0.1",
            "1.0.0.0",
            "126.255.255.255",
            "223.255.255.255",
            "::2",
            "fec0::1",
            "2001:db8::1",
            "::a00:1",
        ] {
            assert_eq!(special_address(ip(ordinary)), None, "{ordinary}");
        }
    }
}
