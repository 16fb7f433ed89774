//! Egress IPs on the egress device: add and remove them as /32 (IPv4) or /128 (IPv6, without
//! duplicate address detection) with rtnetlink, in the calling thread's network namespace.
//!
//! Ownership is recorded in the kernel, not in a state file: every address this module adds
//! carries the address protocol [`OWNED_PROTO`] (`IFA_PROTO`, Linux 6.1+; iproute2 versions
//! that know it print `proto 0x65`; an older kernel drops it, and then nothing is ever removed:
//! the safe failure). It survives agent restarts, needs no file, and cannot go stale. This
//! module removes only addresses carrying that protocol: a static address the admin configured
//! (protocol 0, or anything else) is never removed, even when it equals an egress IP.
//!
//! Leases: an address may carry a valid (and preferred) lifetime in whole seconds; the agent
//! renews it well before it runs out ([`Addresses::renew`]), so when the agent is frozen or
//! killed the kernel removes the address by itself, at most the lifetime plus about one second
//! (the kernel's check interval) after the last renewal.
//!
//! Choosing the device: the configured one; otherwise a dummy `ovs-egress0` (created, never set
//! up, as Antrea's `antrea-egress0`); otherwise, when the kernel has no dummy driver, the
//! transport interface (the userspace datapath only terminates tunnels addressed to IPs on the
//! transport bridge's own interface anyway).

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol, CacheInfo,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkDummy};

/// The `IFA_PROTO` value marking the addresses this agent added.
pub const OWNED_PROTO: u8 = 0x65;
/// The dummy device tried when no egress device is configured.
pub const DUMMY_DEVICE: &str = "ovs-egress0";

/// A network device, as far as egress IPs and advertisements need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// The hardware address; `None` for devices without one (e.g. tunnels).
    pub mac: Option<[u8; 6]>,
}

/// What [`Addresses::add`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The address was added (and is now ours).
    New,
    /// It was already there and ours (e.g. after an agent restart).
    AlreadyOwned,
    /// It was already there, configured by someone else: we leave it alone and never remove it.
    AlreadyStatic,
}

/// What [`Addresses::remove`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    Removed,
    /// Not on the device (already removed).
    Absent,
    /// On the device but not added by us: left in place.
    NotOwned,
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("egress device {device:?} does not exist")]
    DeviceNotFound { device: String },
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
pub struct Addresses {
    handle: Handle,
}

/// The errno carried by a netlink error, if any.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn is_owned(msg: &AddressMessage) -> bool {
    msg.attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == OWNED_PROTO))
}

/// The address of an address message (`IFA_LOCAL`, else `IFA_ADDRESS`).
pub(crate) fn message_ip(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn link_from(msg: LinkMessage, name: &str) -> Link {
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    });
    Link {
        name: name.to_string(),
        index: msg.header.index,
        mac,
    }
}

impl Addresses {
    /// Opens a netlink connection in the calling thread's network namespace and spawns its
    /// driver on the current tokio runtime. The socket stays in that namespace whichever thread
    /// later uses the handle. Must be called inside a tokio runtime.
    pub fn connect() -> Result<Addresses, AddressError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AddressError::Connect)?;
        tokio::spawn(conn);
        Ok(Addresses { handle })
    }

    /// Looks a device up by name.
    pub async fn link(&self, name: &str) -> Result<Link, AddressError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_from(msg, name)),
            Ok(None) => Err(AddressError::DeviceNotFound {
                device: name.to_string(),
            }),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(AddressError::DeviceNotFound {
                device: name.to_string(),
            }),
            Err(source) => Err(AddressError::Netlink {
                device: name.to_string(),
                what: "get link".into(),
                source,
            }),
        }
    }

    /// The device egress IPs go on: `configured` if given (it must exist); else the dummy
    /// [`DUMMY_DEVICE`], created if missing; else, when the kernel has no dummy driver,
    /// `transport`.
    pub async fn choose_device(
        &self,
        configured: Option<&str>,
        transport: &str,
    ) -> Result<Link, AddressError> {
        if let Some(name) = configured {
            return self.link(name).await;
        }
        match self.link(DUMMY_DEVICE).await {
            Ok(link) => return Ok(link),
            Err(AddressError::DeviceNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let created = self
            .handle
            .link()
            .add(LinkDummy::new(DUMMY_DEVICE).build())
            .execute()
            .await;
        match created {
            Ok(()) => self.link(DUMMY_DEVICE).await,
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                tracing::info!(
                    device = transport,
                    "no dummy driver in this kernel; egress IPs go on the transport interface"
                );
                self.link(transport).await
            }
            Err(source) => Err(AddressError::Netlink {
                device: DUMMY_DEVICE.into(),
                what: "create dummy device".into(),
                source,
            }),
        }
    }

    /// All addresses on `link`.
    async fn dump(&self, link: &Link) -> Result<Vec<AddressMessage>, AddressError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| AddressError::Netlink {
                device: link.name.clone(),
                what: "list addresses".into(),
                source,
            })
    }

    /// The egress IPs on `link` that this agent added.
    pub async fn owned(&self, link: &Link) -> Result<BTreeSet<IpAddr>, AddressError> {
        Ok(self
            .dump(link)
            .await?
            .iter()
            .filter(|m| is_owned(m))
            .filter_map(message_ip)
            .collect())
    }

    /// Adds `ip` as /32 (/128, no DAD) on `link`, marked as ours, without a lifetime.
    /// Idempotent.
    pub async fn add(&self, link: &Link, ip: IpAddr) -> Result<Added, AddressError> {
        self.add_leased(link, ip, None).await
    }

    /// A request for `ip` on `link`, ours, with a valid and preferred lifetime of `lease`
    /// seconds (none: forever); `replace` updates an existing address in place.
    async fn request(
        &self,
        link: &Link,
        ip: IpAddr,
        lease: Option<u32>,
        replace: bool,
    ) -> Result<(), rtnetlink::Error> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(link.index, ip, prefix);
        let msg = req.message_mut();
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                OWNED_PROTO,
            )));
        if let Some(seconds) = lease {
            let mut info = CacheInfo::default();
            info.ifa_preferred = seconds;
            info.ifa_valid = seconds;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        if ip.is_ipv6() {
            // Advertise at once: a tentative address cannot send the unsolicited NA.
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        if replace {
            req.replace().execute().await
        } else {
            req.execute().await
        }
    }

    /// Adds `ip` as /32 (/128, no DAD) on `link`, marked as ours, valid for `lease` seconds
    /// when given (the kernel removes it unless [`Self::renew`] extends it). An address of ours
    /// already there gets the new lifetime (without a lease it is left as it is). Idempotent.
    pub async fn add_leased(
        &self,
        link: &Link,
        ip: IpAddr,
        lease: Option<u32>,
    ) -> Result<Added, AddressError> {
        let failed = |source| AddressError::Netlink {
            device: link.name.clone(),
            what: format!("add address {ip}"),
            source,
        };
        match self.request(link, ip, lease, false).await {
            Ok(()) => Ok(Added::New),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let existing = self.dump(link).await?;
                let ours = existing
                    .iter()
                    .any(|m| message_ip(m) == Some(ip) && is_owned(m));
                if !ours {
                    return Ok(Added::AlreadyStatic);
                }
                if lease.is_some() {
                    self.request(link, ip, lease, true).await.map_err(failed)?;
                }
                Ok(Added::AlreadyOwned)
            }
            Err(source) => Err(failed(source)),
        }
    }

    /// Extends the lifetime of our addresses among `ips` on `link` to `lease` seconds from now;
    /// returns those of `ips` that are no longer there (their lease ran out, or someone removed
    /// them). A static address equal to one of `ips` is left alone. Never adds an address.
    pub async fn renew(
        &self,
        link: &Link,
        ips: &BTreeSet<IpAddr>,
        lease: u32,
    ) -> Result<Vec<IpAddr>, AddressError> {
        let present = self.dump(link).await?;
        let mut missing = Vec::new();
        for ip in ips {
            let mut same_ip = present.iter().filter(|m| message_ip(m) == Some(*ip));
            let Some(first) = same_ip.next() else {
                missing.push(*ip);
                continue;
            };
            if !is_owned(first) && !same_ip.any(is_owned) {
                continue; // a static address: not ours to lease
            }
            self.request(link, *ip, Some(lease), true)
                .await
                .map_err(|source| AddressError::Netlink {
                    device: link.name.clone(),
                    what: format!("renew the lease of address {ip}"),
                    source,
                })?;
        }
        Ok(missing)
    }

    /// The remaining valid lifetime (seconds) of our address `ip` on `link`; `None` when it is
    /// not there, `Some(u32::MAX)` for forever.
    pub async fn valid_lifetime(
        &self,
        link: &Link,
        ip: IpAddr,
    ) -> Result<Option<u32>, AddressError> {
        Ok(self.dump(link).await?.iter().find_map(|m| {
            if message_ip(m) != Some(ip) || !is_owned(m) {
                return None;
            }
            Some(
                m.attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::CacheInfo(info) => Some(info.ifa_valid),
                        _ => None,
                    })
                    .unwrap_or(u32::MAX),
            )
        }))
    }

    /// Removes `ip` from `link` if this agent added it. Idempotent.
    pub async fn remove(&self, link: &Link, ip: IpAddr) -> Result<Removed, AddressError> {
        let mut same_ip: Vec<AddressMessage> = self
            .dump(link)
            .await?
            .into_iter()
            .filter(|m| message_ip(m) == Some(ip))
            .collect();
        if same_ip.is_empty() {
            return Ok(Removed::Absent);
        }
        // The same IP may sit there twice (ours as /32 and a static one with another prefix).
        let Some(pos) = same_ip.iter().position(is_owned) else {
            return Ok(Removed::NotOwned);
        };
        let msg = same_ip.swap_remove(pos);
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(Removed::Removed),
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(Removed::Absent),
            Err(source) => Err(AddressError::Netlink {
                device: link.name.clone(),
                what: format!("remove address {ip}"),
                source,
            }),
        }
    }

    /// Makes the owned egress IPs on `link` exactly `desired`: adds the missing ones, removes
    /// ours that are no longer desired. Returns the IPs newly added (to be advertised) and
    /// those removed.
    pub async fn sync(
        &self,
        link: &Link,
        desired: &BTreeSet<IpAddr>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), AddressError> {
        let owned = self.owned(link).await?;
        let mut added = Vec::new();
        for ip in desired.difference(&owned) {
            if self.add(link, *ip).await? == Added::New {
                added.push(*ip);
            }
        }
        let mut removed = Vec::new();
        for ip in owned.difference(desired) {
            if self.remove(link, *ip).await? == Removed::Removed {
                removed.push(*ip);
            }
        }
        Ok((added, removed))
    }
}
