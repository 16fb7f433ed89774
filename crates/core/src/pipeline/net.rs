//! The address types flows need: a MAC address, and the printing of addresses and prefixes
//! (the `ipnetwork` crate's, the one CIDR type of the project) exactly as `ovs-ofctl dump-flows`
//! prints them (lower-case MAC, a full-length prefix as a bare address, IPv6 as OVS's
//! `inet_ntop` writes it: [`OvsIpv6`]), so rendered flows compare equal to dumped ones.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// Antrea's global virtual MAC: the destination MAC of every packet sent into the tunnel.
pub const GLOBAL_VIRTUAL_MAC: Mac = Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);

/// A string that is not what its type expects; names the type and the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {text:?}")]
pub struct ParseError {
    pub kind: &'static str,
    pub text: String,
}

impl FromStr for Mac {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            kind: "MAC address",
            text: s.to_string(),
        };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IPv6 address as OVS prints it. Like Rust's `Display` (RFC 5952: lower case, the first
/// longest run of zero groups compressed) except for IPv4-compatible addresses
/// (`::a.b.c.d`, the first six groups zero and the seventh not), which glibc's `inet_ntop`
/// writes with the dotted IPv4 tail and Rust in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OvsIpv6(pub Ipv6Addr);

impl fmt::Display for OvsIpv6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.segments();
        if s[..6] == [0; 6] && s[6] != 0 {
            let [.., a, b, c, d] = self.0.octets();
            write!(f, "::{}", Ipv4Addr::new(a, b, c, d))
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A prefix as `ovs-ofctl dump-flows` prints it in a match: a full-length prefix as a bare
/// address, IPv6 addresses as [`OvsIpv6`]. Prefixes reach flows with their host bits cleared
/// (`ovs_egress_inputs::parse_cidr` clears them where they enter).
#[derive(Clone, Copy, Debug)]
pub struct OvsPrefix<N>(pub N);

impl fmt::Display for OvsPrefix<Ipv4Network> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = self.0;
        match net.prefix() {
            32 => write!(f, "{}", net.network()),
            prefix => write!(f, "{}/{prefix}", net.network()),
        }
    }
}

impl fmt::Display for OvsPrefix<Ipv6Network> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = self.0;
        match net.prefix() {
            128 => write!(f, "{}", OvsIpv6(net.network())),
            prefix => write!(f, "{}/{prefix}", OvsIpv6(net.network())),
        }
    }
}

/// The first address after the network address: where Antrea puts a Node's gateway.
pub fn first_host(net: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

/// The IPv4 prefixes among `cidrs`.
pub fn ipv4_only<'a>(cidrs: impl IntoIterator<Item = &'a IpNetwork>) -> Vec<Ipv4Network> {
    cidrs
        .into_iter()
        .filter_map(|c| match c {
            IpNetwork::V4(v4) => Some(*v4),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

/// The IPv6 prefixes among `cidrs`.
pub fn ipv6_only<'a>(cidrs: impl IntoIterator<Item = &'a IpNetwork>) -> Vec<Ipv6Network> {
    cidrs
        .into_iter()
        .filter_map(|c| match c {
            IpNetwork::V6(v6) => Some(*v6),
            IpNetwork::V4(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_prints_like_ovs_dump_flows() {
        // Left: any spelling; right: what `ovs-ofctl dump-flows` (OVS 3.1) prints for it.
        for (text, ovs) in [
            ("2001:DB8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),
            ("1:0:0:1:0:0:1:1", "1::1:0:0:1:1"),
            ("0:0:0:0:0:1:0:1", "::1:0:1"),
            ("::a00:1", "::10.0.0.1"),
            ("::0.0.0.2", "::2"),
            ("::ffff:0:1", "::ffff:0.0.0.1"),
            ("::1", "::1"),
            ("::", "::"),
            ("fe80::1", "fe80::1"),
        ] {
            let ip: Ipv6Addr = text.parse().unwrap();
            assert_eq!(OvsIpv6(ip).to_string(), ovs, "{text}");
        }
    }

    #[test]
    fn prefixes_print_like_ovs_dump_flows() {
        let cases: [(&str, &str); 5] = [
            ("fd00:10:244:1::/64", "fd00:10:244:1::/64"),
            ("fd00::1/128", "fd00::1"),
            ("::a00:1/128", "::10.0.0.1"),
            ("10.244.1.0/24", "10.244.1.0/24"),
            ("10.0.0.1/32", "10.0.0.1"),
        ];
        for (text, ovs) in cases {
            let printed = match text.parse::<IpNetwork>().unwrap() {
                IpNetwork::V4(v4) => OvsPrefix(v4).to_string(),
                IpNetwork::V6(v6) => OvsPrefix(v6).to_string(),
            };
            assert_eq!(printed, ovs, "{text}");
        }
        assert_eq!(
            OvsPrefix("0.0.0.0/0".parse::<Ipv4Network>().unwrap()).to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn first_host_is_the_gateway_and_families_split() {
        let net: Ipv4Network = "10.244.1.0/24".parse().unwrap();
        assert_eq!(first_host(net), Ipv4Addr::new(10, 244, 1, 1));
        let both: Vec<IpNetwork> = vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ];
        assert_eq!(ipv4_only(&both), vec!["10.96.0.0/12".parse().unwrap()]);
        assert_eq!(ipv6_only(&both), vec!["fd00:10:96::/112".parse().unwrap()]);
    }

    #[test]
    fn mac_round_trips_in_lower_case_and_rejects_bad_text() {
        let mac: Mac = "02:44:01:00:00:0A".parse().unwrap();
        assert_eq!(mac.to_string(), "02:44:01:00:00:0a");
        for bad in [
            "02:44:01:00:00",
            "02:44:01:00:00:0a:01",
            "0g:44:01:00:00:0a",
            "2:44:01:00:00:0a",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad} accepted");
        }
    }
}
