//! Netlink operations of the plugin (rtnetlink 0.24): the veth pair, addresses, the default
//! route, and the TX-checksum switch (ethtool ioctl). Each function acts in the network namespace
//! of the netlink connection (or ioctl socket) it is given; it never changes namespaces itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::CniError;

const ENODEV: i32 = libc::ENODEV;
/// `ETHTOOL_STXCSUM` from linux/ethtool.h (not exported by the libc crate).
const ETHTOOL_STXCSUM: u32 = 0x17;

/// What we need to know of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: String,
    pub mtu: u32,
}

/// Open a netlink connection in the current thread's network namespace; its I/O task runs on
/// the current runtime.
pub fn connect() -> Result<Handle, CniError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| CniError::host("opening a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Create the veth pair: `host` here, its peer directly in the namespace `peer_ns` under the
/// name `peer`, both with `mtu`; `host_arp = false` sets NOARP on the host end.
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    peer_ns: RawFd,
    mtu: u32,
    host_arp: bool,
) -> Result<(), CniError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .mtu(mtu)
        .setns_by_fd(peer_ns)
        .build();
    let msg = LinkVeth::new(host, peer)
        .mtu(mtu)
        .arp(host_arp)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| CniError::host(format!("creating veth {host} with peer {peer}"), e))
}

/// The link named `name`, or `None` if there is none.
pub async fn get(handle: &Handle, name: &str) -> Result<Option<Link>, CniError> {
    let found = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(Some(msg)) => Ok(Some(to_link(&msg))),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
        Err(e) => Err(CniError::host(format!("looking up link {name}"), e)),
    }
}

fn to_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        mac: String::new(),
        mtu: 0,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(bytes) => {
                link.mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            _ => {}
        }
    }
    link
}

pub async fn set_up(handle: &Handle, link: &Link, name: &str) -> Result<(), CniError> {
    let msg = LinkUnspec::new_with_index(link.index).up().build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| CniError::host(format!("setting link {name} up"), e))
}

/// Delete the link named `name`; a missing link is not an error.
pub async fn delete(handle: &Handle, name: &str) -> Result<bool, CniError> {
    let Some(link) = get(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(false),
        Err(e) => Err(CniError::host(format!("deleting link {name}"), e)),
    }
}

pub async fn add_address(
    handle: &Handle,
    link: &Link,
    name: &str,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), CniError> {
    handle
        .address()
        .add(link.index, ip, prefix)
        .execute()
        .await
        .map_err(|e| CniError::host(format!("adding address {ip}/{prefix} to {name}"), e))
}

/// The addresses (with prefix length) on `link`.
pub async fn addresses(handle: &Handle, link: &Link) -> Result<Vec<(IpAddr, u8)>, CniError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| CniError::host("listing addresses", e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == link.index)
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

fn default_route(gateway: IpAddr) -> RouteMessage {
    match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build(),
    }
}

pub async fn add_default_route(handle: &Handle, gateway: IpAddr) -> Result<(), CniError> {
    handle
        .route()
        .add(default_route(gateway))
        .execute()
        .await
        .map_err(|e| CniError::host(format!("adding default route via {gateway}"), e))
}

/// The gateways of the default routes of `gateway`'s family in the main table.
pub async fn default_gateways(handle: &Handle, gateway: IpAddr) -> Result<Vec<IpAddr>, CniError> {
    let msgs: Vec<_> = handle
        .route()
        .get(default_route(gateway))
        .execute()
        .try_collect()
        .await
        .map_err(|e| CniError::host("listing routes", e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.destination_prefix_length == 0)
        .flat_map(|m| {
            m.attributes.iter().filter_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                _ => None,
            })
        })
        .collect())
}

/// `ethtool -K <name> tx off` in the current thread's network namespace (OVS
/// userspace forwards CHECKSUM_PARTIAL skbs from veths with wrong TCP checksums).
pub fn disable_tx_checksum(name: &str) -> Result<(), CniError> {
    let fail =
        |e: std::io::Error| CniError::host(format!("turning TX checksum offload off on {name}"), e);
    // Any socket of this namespace carries the ioctl; binding the wildcard needs no address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(fail)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(fail(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name and the ethtool_value behind ifru_data,
    // both of which live until the call returns.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `struct ethtool_value` of linux/ethtool.h.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}
