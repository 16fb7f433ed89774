//! The Node's side of encap-mode Pod networking, with rtnetlink in the calling thread's network
//! namespace: the gateway device gets the first address of the local Pod CIDR and is set up,
//! and every remote Node's Pod CIDR is routed through the gateway, on-link via that Node's
//! gateway IP (as Antrea does), so host traffic to remote Pods enters `br-int`.
//!
//! Ownership is kept in the kernel: our routes carry the route protocol [`OWNED_PROTO`], and
//! [`NodeRoutes::sync`] only ever removes routes with that protocol on the gateway device.
//! It never touches other routes, other devices, or addresses it did not add.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::addresses::{AddressError, Addresses, errno};

/// The route protocol marking the routes this agent added (`ip route` prints `proto 0x65`).
pub const OWNED_PROTO: u8 = 0x65;

/// A route to a remote Node's Pod CIDR: `cidr/prefix via <via> dev <gateway> onlink`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// The remote Node's gateway IP (first address of its Pod CIDR).
    pub via: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Device(#[from] AddressError),
    #[error("device {device:?}: {what}: {source}")]
    Netlink {
        device: String,
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// A netlink handle bound to the network namespace of the thread that created it.
#[derive(Clone, Debug)]
pub struct NodeRoutes {
    links: Addresses,
    handle: Handle,
}

impl NodeRoutes {
    /// Opens a netlink connection in the calling thread's namespace (inside a tokio runtime).
    pub fn connect() -> Result<NodeRoutes, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| RouteError::Device(AddressError::Connect(e)))?;
        tokio::spawn(conn);
        Ok(NodeRoutes {
            links: Addresses::connect()?,
            handle,
        })
    }

    /// Puts `ip/prefix` on `device` (kept if already there) and sets the device up.
    pub async fn configure_gateway(
        &self,
        device: &str,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), RouteError> {
        let link = self.links.link(device).await?;
        let netlink = |what: String| {
            let device = device.to_string();
            move |source| RouteError::Netlink {
                device,
                what,
                source,
            }
        };
        match self
            .handle
            .address()
            .add(link.index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(libc::EEXIST) => {
                return Err(netlink(format!("add address {ip}/{prefix}"))(e));
            }
            _ => {}
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).up().build())
            .execute()
            .await
            .map_err(netlink("set up".into()))
    }

    /// Makes the main table hold exactly `want` among our routes on `device`: adds the missing
    /// ones, removes ours that are no longer wanted. Returns (added, removed).
    pub async fn sync(
        &self,
        device: &str,
        want: &BTreeSet<NodeRoute>,
    ) -> Result<(usize, usize), RouteError> {
        let link = self.links.link(device).await?;
        let netlink = |what: String, source| RouteError::Netlink {
            device: device.to_string(),
            what,
            source,
        };
        let dump: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink("list routes".into(), e))?;
        let mut have = Vec::new();
        for msg in dump {
            let ours = msg.header.protocol == RouteProtocol::Other(OWNED_PROTO)
                && msg.header.table == RouteHeader::RT_TABLE_MAIN
                && msg.header.address_family == AddressFamily::Inet
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == link.index));
            if let (true, Some(route)) = (ours, node_route(&msg)) {
                have.push((route, msg));
            }
        }
        let mut removed = 0;
        for (route, msg) in &have {
            if !want.contains(route) {
                self.handle
                    .route()
                    .del(msg.clone())
                    .execute()
                    .await
                    .map_err(|e| netlink(format!("delete route {}", show(route)), e))?;
                removed += 1;
            }
        }
        let mut added = 0;
        for route in want.iter().filter(|r| !have.iter().any(|(h, _)| h == *r)) {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(route.dst, route.prefix)
                .gateway(route.via)
                .output_interface(link.index)
                .protocol(RouteProtocol::Other(OWNED_PROTO))
                .onlink()
                .build();
            self.handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(|e| netlink(format!("add route {}", show(route)), e))?;
            added += 1;
        }
        Ok((added, removed))
    }
}

fn show(r: &NodeRoute) -> String {
    format!("{}/{} via {}", r.dst, r.prefix, r.via)
}

fn node_route(msg: &RouteMessage) -> Option<NodeRoute> {
    let v4 = |a: &RouteAddress| match a {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    };
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => v4(d),
        _ => None,
    })?;
    let via = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => v4(g),
        _ => None,
    })?;
    Some(NodeRoute {
        dst,
        prefix: msg.header.destination_prefix_length,
        via,
    })
}
