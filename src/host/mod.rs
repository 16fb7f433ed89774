//! Host-side adapters of the egress Node: iptables SNAT by mark, egress IPs on a device,
//! gratuitous ARP / unsolicited NA, and the set of IPs configured on this Node.
//!
//! Every adapter acts on the network namespace of the calling thread (the agent runs in the
//! Node's namespace; tests call them from a thread that entered a namespace they created). They
//! take plain inputs (IPs, marks, device names) and never decide anything: which IP gets which
//! mark, and which IPs this Node holds, is the plan's business.

pub mod addresses;
pub mod advertise;
pub mod iptables;
pub mod local_ips;
pub mod routes;

use std::fmt::Write as _;

/// A MAC address as `aa:bb:cc:dd:ee:ff` (lowercase, the form `ip` and `iptables -S` print).
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_mac_is_lowercase_colon_separated_with_leading_zeros() {
        assert_eq!(
            format_mac([0x02, 0xEE, 0x00, 0x0a, 0xff, 0x01]),
            "02:ee:00:0a:ff:01"
        );
    }
}
