//! Tells the neighbours that an egress IP now lives here: one gratuitous ARP (IPv4) or one
//! unsolicited Neighbour Advertisement (IPv6), sent once from a raw AF_PACKET socket on the
//! device holding the IP, right after the IP was added (make before break: last step).
//!
//! The send never blocks the caller: the socket is non-blocking and a single frame is handed to
//! the kernel; a full queue is an error to log, not a wait. It runs on the calling thread on
//! purpose (no `spawn_blocking`): the socket must be opened in the calling thread's network
//! namespace. The frame builders are pure, so their bytes are unit-tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};
use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

use super::addresses::Link;

const BROADCAST: [u8; 6] = [0xff; 6];
/// `ff02::1` (all nodes) and its Ethernet multicast address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Shortest Ethernet frame without FCS; shorter frames are padded with zeros.
const MIN_FRAME: usize = 60;
/// NDP option "Target Link-Layer Address" (RFC 4861 §4.6.1).
const OPT_TARGET_LLA: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    #[error("cannot advertise {ip} on device {device:?}: it has no Ethernet address")]
    NoMac { device: String, ip: IpAddr },
    #[error("cannot advertise {ip} on device {device:?}: {what}: {source}")]
    Io {
        device: String,
        ip: IpAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The gratuitous ARP for `ip`: Ethernet broadcast from `mac`, ARP request with
/// sender = target = `ip`, sender MAC = `mac`, target MAC = broadcast; padded to 60 bytes.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac,
        &ip.octets(),
        &BROADCAST,
        &ip.octets(),
    );
    // Invariant: both hardware addresses are 6 bytes and both protocol addresses 4 bytes, the
    // lengths ArpPacket::new requires to match.
    let arp = arp.expect("6-byte MACs and 4-byte IPv4 addresses form a valid ARP packet");
    let builder = PacketBuilder::ethernet2(mac, BROADCAST).arp(arp);
    let mut frame = Vec::with_capacity(MIN_FRAME);
    // Invariant: writing into a Vec cannot fail and an ARP packet has no checksum to overflow.
    builder
        .write(&mut frame)
        .expect("an ARP frame always serialises into a Vec");
    frame.resize(frame.len().max(MIN_FRAME), 0);
    frame
}

/// The unsolicited Neighbour Advertisement for `ip`: from `mac` / `ip` to `ff02::1`, hop limit
/// 255, flags Override only, target `ip`, option Target Link-Layer Address = `mac`.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let header = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let builder = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(ip.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(header));
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&[OPT_TARGET_LLA, 1]);
    payload.extend_from_slice(&mac);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Invariant: writing into a Vec cannot fail and a 24-byte payload cannot overflow the
    // IPv6 payload length.
    builder
        .write(&mut frame, &payload)
        .expect("a neighbour advertisement always serialises into a Vec");
    frame
}

/// Sends one gratuitous ARP (IPv4) or unsolicited NA (IPv6) for `ip` on `link`.
pub fn advertise(link: &Link, ip: IpAddr) -> Result<(), AdvertiseError> {
    let mac = link.mac.ok_or_else(|| AdvertiseError::NoMac {
        device: link.name.clone(),
        ip,
    })?;
    let (frame, dst, ethertype) = match ip {
        IpAddr::V4(v4) => (gratuitous_arp(mac, v4), BROADCAST, EtherType::ARP),
        IpAddr::V6(v6) => (unsolicited_na(mac, v6), ALL_NODES_MAC, EtherType::IPV6),
    };
    let io_err = |what, source| AdvertiseError::Io {
        device: link.name.clone(),
        ip,
        what,
        source,
    };
    // Protocol 0: send only, the socket receives nothing.
    let socket = Socket::new(Domain::PACKET, Type::RAW, None)
        .map_err(|e| io_err("open AF_PACKET socket", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| io_err("make the socket non-blocking", e))?;
    socket
        .send_to(&frame, &link_layer_address(link.index, dst, ethertype))
        .map_err(|e| io_err("send", e))?;
    Ok(())
}

/// The `sockaddr_ll` sending to `dst` out of interface `index`.
fn link_layer_address(index: u32, dst: [u8; 6], ethertype: EtherType) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_ll.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ethertype.0.to_be();
    ll.sll_ifindex = index as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dst);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised sockaddr_ll of `len` bytes.
    unsafe { SockAddr::new(storage, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x5e, 0x2f, 0x28, 0xab, 0x1d, 0xfc];

    /// RFC 1071 checksum, written independently of etherparse.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_with_sender_and_target_the_egress_ip() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(10, 77, 0, 5));
        let mut expected = vec![0xff; 6];
        expected.extend(MAC); // Ethernet source
        expected.extend([0x08, 0x06]); // ARP
        expected.extend([0x00, 0x01, 0x08, 0x00, 6, 4]); // Ethernet / IPv4, lengths
        expected.extend([0x00, 0x01]); // request
        expected.extend(MAC); // SHA
        expected.extend([10, 77, 0, 5]); // SPA
        expected.extend([0xff; 6]); // THA
        expected.extend([10, 77, 0, 5]); // TPA
        expected.resize(60, 0); // padding
        assert_eq!(frame, expected);
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_hop_limit_255_override_and_target_lla() {
        let ip: Ipv6Addr = "fd00:77::5".parse().unwrap();
        let frame = unsolicited_na(MAC, ip);
        let mut expected = vec![0x33, 0x33, 0, 0, 0, 1];
        expected.extend(MAC);
        expected.extend([0x86, 0xdd]);
        // IPv6: version 6, payload 32 bytes, next header ICMPv6 (58), hop limit 255.
        expected.extend([0x60, 0, 0, 0, 0, 32, 58, 255]);
        expected.extend(ip.octets());
        expected.extend(ALL_NODES.octets());
        // ICMPv6 type 136 code 0, checksum filled below, flags Override only, reserved.
        let icmp_start = expected.len();
        expected.extend([136, 0, 0, 0, 0x20, 0, 0, 0]);
        expected.extend(ip.octets());
        expected.extend([2, 1]);
        expected.extend(MAC);
        let mut pseudo = Vec::new();
        pseudo.extend(ip.octets());
        pseudo.extend(ALL_NODES.octets());
        pseudo.extend(32u32.to_be_bytes());
        pseudo.extend([0, 0, 0, 58]);
        pseudo.extend(&expected[icmp_start..]);
        let sum = internet_checksum(&pseudo).to_be_bytes();
        expected[icmp_start + 2] = sum[0];
        expected[icmp_start + 3] = sum[1];
        assert_eq!(frame, expected);
    }

    #[test]
    fn advertising_on_a_device_without_mac_names_the_device() {
        let link = Link {
            name: "tun7".into(),
            index: 7,
            mac: None,
        };
        let err = advertise(&link, "10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("\"tun7\""), "{err}");
    }
}
