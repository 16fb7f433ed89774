//! The two address types flows need and the standard library lacks: a MAC address and an IPv4
//! prefix. Both print exactly as `ovs-ofctl dump-flows` prints them (lower-case MAC, a /32 prefix
//! as a bare address), so rendered flows compare equal to dumped ones.

use std::fmt;
use std::net::Ipv4Addr;
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

#[cfg(test)]
mod tests {
    use super::*;

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
