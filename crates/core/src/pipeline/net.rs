//! The address types flows need and the standard library lacks: a MAC address and IPv4/IPv6
//! prefixes. All print exactly as `ovs-ofctl dump-flows` prints them (lower-case MAC, a
//! full-length prefix as a bare address, IPv6 as OVS's `inet_ntop` writes it: [`OvsIpv6`]), so
//! rendered flows compare equal to dumped ones.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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

/// An IPv4 prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The prefix containing `addr`; `None` if `prefix` > 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        let mask = Self::mask_bits(prefix)?;
        Some(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// A single address (/32).
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr { addr, prefix: 32 }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first address after the network address: where Antrea puts a Node's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        // new() only builds prefixes <= 32, for which mask_bits is Some.
        let mask = Self::mask_bits(self.prefix).unwrap_or(u32::MAX);
        u32::from(ip) & mask == u32::from(self.addr)
    }

    fn mask_bits(prefix: u8) -> Option<u32> {
        match prefix {
            0 => Some(0),
            1..=32 => Some(u32::MAX << (32 - prefix)),
            _ => None,
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            kind: "IPv4 CIDR",
            text: s.to_string(),
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
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

/// An IPv6 prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix: u8,
}

impl Ipv6Cidr {
    /// The prefix containing `addr`; `None` if `prefix` > 128.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        let mask = Self::mask_bits(prefix)?;
        Some(Ipv6Cidr {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            prefix,
        })
    }

    /// A single address (/128).
    pub fn host(addr: Ipv6Addr) -> Self {
        Ipv6Cidr { addr, prefix: 128 }
    }

    pub fn network(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        // new() only builds prefixes <= 128, for which mask_bits is Some.
        let mask = Self::mask_bits(self.prefix).unwrap_or(u128::MAX);
        u128::from(ip) & mask == u128::from(self.addr)
    }

    fn mask_bits(prefix: u8) -> Option<u128> {
        match prefix {
            0 => Some(0),
            1..=128 => Some(u128::MAX << (128 - prefix)),
            _ => None,
        }
    }
}

impl FromStr for Ipv6Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            kind: "IPv6 CIDR",
            text: s.to_string(),
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u8>().map_err(|_| err())?),
            None => (s, 128),
        };
        let addr: Ipv6Addr = addr.parse().map_err(|_| err())?;
        Ipv6Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 128 {
            write!(f, "{}", OvsIpv6(self.addr))
        } else {
            write!(f, "{}/{}", OvsIpv6(self.addr), self.prefix)
        }
    }
}

/// A prefix of either family, for inputs that may hold both (Service CIDRs, except-CIDRs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// A single address (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => IpCidr::V4(Ipv4Cidr::host(v4)),
            IpAddr::V6(v6) => IpCidr::V6(Ipv6Cidr::host(v6)),
        }
    }

    pub fn v4(self) -> Option<Ipv4Cidr> {
        match self {
            IpCidr::V4(cidr) => Some(cidr),
            IpCidr::V6(_) => None,
        }
    }

    pub fn v6(self) -> Option<Ipv6Cidr> {
        match self {
            IpCidr::V6(cidr) => Some(cidr),
            IpCidr::V4(_) => None,
        }
    }
}

impl From<Ipv4Cidr> for IpCidr {
    fn from(cidr: Ipv4Cidr) -> Self {
        IpCidr::V4(cidr)
    }
}

impl From<Ipv6Cidr> for IpCidr {
    fn from(cidr: Ipv6Cidr) -> Self {
        IpCidr::V6(cidr)
    }
}

impl FromStr for IpCidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The address part decides the family (IPv6 addresses contain ':', IPv4 ones never).
        if s.split('/').next().is_some_and(|a| a.contains(':')) {
            s.parse().map(IpCidr::V6)
        } else {
            s.parse().map(IpCidr::V4)
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(cidr) => cidr.fmt(f),
            IpCidr::V6(cidr) => cidr.fmt(f),
        }
    }
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
    fn ipv6_cidr_clears_host_bits_and_prints_host_prefix_bare() {
        let cidr: Ipv6Cidr = "fd00:10:244:1::77/64".parse().unwrap();
        assert_eq!(cidr.to_string(), "fd00:10:244:1::/64");
        assert!(cidr.contains("fd00:10:244:1::200".parse().unwrap()));
        assert!(!cidr.contains("fd00:10:244:2::1".parse().unwrap()));
        assert_eq!(
            "fd00::/1".parse::<Ipv6Cidr>().unwrap().to_string(),
            "8000::/1"
        );
        assert_eq!(
            "fd00::1/128".parse::<Ipv6Cidr>().unwrap().to_string(),
            "fd00::1"
        );
        assert_eq!("fd00::1".parse::<Ipv6Cidr>().unwrap().prefix(), 128);
        for bad in ["fd00::/129", "fd00::/x", "10.0.0.0/8", "fd00:::/64"] {
            assert!(bad.parse::<Ipv6Cidr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ip_cidr_parses_either_family_by_its_address() {
        assert_eq!(
            "10.96.0.0/12".parse::<IpCidr>().unwrap(),
            IpCidr::V4("10.96.0.0/12".parse().unwrap())
        );
        let v6: IpCidr = "fd00:10:96::/112".parse().unwrap();
        assert_eq!(v6.v6().map(|c| c.prefix()), Some(112));
        assert_eq!(v6.v4(), None);
        assert_eq!(v6.to_string(), "fd00:10:96::/112");
        assert_eq!(
            IpCidr::host("fd00::5".parse().unwrap()).to_string(),
            "fd00::5"
        );
        let err = "fd00::/200".parse::<IpCidr>().unwrap_err();
        assert_eq!(err.kind, "IPv6 CIDR");
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("nonsense".parse::<IpCidr>().is_err());
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

    #[test]
    fn cidr_clears_host_bits_and_prints_host_prefix_bare() {
        let cidr: Ipv4Cidr = "10.244.1.77/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(
            "10.0.0.1/32".parse::<Ipv4Cidr>().unwrap().to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Cidr>().is_err());
    }
}
