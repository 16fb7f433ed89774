//! The set of IPs configured on this Node, kept current from netlink address events, so a
//! static Egress IP is known to be local as soon as an admin adds it (and no longer once removed).
//!
//! Subscribes to the IPv4/IPv6 address groups first, then lists all addresses, so no change
//! falls between the two. Addresses on `kube-ipvs0` (kube-proxy's IPVS Service IPs) are not
//! Node IPs and are excluded. When the subscription is lost (socket error, overflow), it
//! subscribes and lists again, with a back-off. It only reads; it never changes an address.
//!
//! The socket lives in the network namespace of the thread that opens it; after a loss it is
//! reopened from whichever runtime thread runs the task, so every runtime thread must be in the
//! same namespace (true for the agent, which runs in the Node's namespace).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;

use super::addresses::message_ip;

/// Addresses on this device are not Node IPs.
pub const EXCLUDED_DEVICE: &str = "kube-ipvs0";
/// Wait before subscribing again after losing the subscription.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LocalIpsError {
    #[error("cannot subscribe to netlink address events: {0}")]
    Subscribe(#[source] std::io::Error),
    #[error("cannot list {what} over netlink: {source}")]
    List {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Which device indexes hold each IP (the same IP may sit on several devices).
#[derive(Default)]
struct Tracker {
    by_ip: BTreeMap<IpAddr, BTreeSet<u32>>,
}

impl Tracker {
    fn ips(&self) -> BTreeSet<IpAddr> {
        self.by_ip.keys().copied().collect()
    }

    fn add(&mut self, ip: IpAddr, index: u32) {
        self.by_ip.entry(ip).or_default().insert(index);
    }

    fn remove(&mut self, ip: IpAddr, index: u32) {
        if let Some(devices) = self.by_ip.get_mut(&ip) {
            devices.remove(&index);
            if devices.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// Starts watching this Node's IPs. Returns once the first full list is known; the receiver
/// then sees every change of the set. The watch stops when every receiver is dropped.
pub async fn watch_local_ips() -> Result<watch::Receiver<BTreeSet<IpAddr>>, LocalIpsError> {
    let (handle, events, tracker) = subscribe_and_list().await?;
    let (tx, rx) = watch::channel(tracker.ips());
    tokio::spawn(run(tx, handle, events, tracker));
    Ok(rx)
}

async fn subscribe_and_list() -> Result<(Handle, Events, Tracker), LocalIpsError> {
    let (conn, handle, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(LocalIpsError::Subscribe)?;
    tokio::spawn(conn);
    let tracker = list(&handle).await?;
    Ok((handle, events, tracker))
}

async fn list(handle: &Handle) -> Result<Tracker, LocalIpsError> {
    let excluded: BTreeSet<u32> = handle
        .link()
        .get()
        .execute()
        .try_filter_map(|l| async move {
            let name_is_excluded = l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == EXCLUDED_DEVICE));
            Ok(name_is_excluded.then_some(l.header.index))
        })
        .try_collect()
        .await
        .map_err(|source| LocalIpsError::List {
            what: "links",
            source,
        })?;
    let addresses: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| LocalIpsError::List {
            what: "addresses",
            source,
        })?;
    let mut tracker = Tracker::default();
    for m in addresses
        .iter()
        .filter(|m| !excluded.contains(&m.header.index))
    {
        if let Some(ip) = message_ip(m) {
            tracker.add(ip, m.header.index);
        }
    }
    Ok(tracker)
}

/// Whether device `index` is [`EXCLUDED_DEVICE`] (a device that is already gone is not).
async fn is_excluded(handle: &Handle, index: u32) -> bool {
    let mut links = handle.link().get().match_index(index).execute();
    matches!(links.try_next().await, Ok(Some(l)) if l.attributes.iter().any(
        |a| matches!(a, LinkAttribute::IfName(n) if n == EXCLUDED_DEVICE)))
}

async fn run(
    tx: watch::Sender<BTreeSet<IpAddr>>,
    mut handle: Handle,
    mut events: Events,
    mut tracker: Tracker,
) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = events.next() => next,
        };
        match next {
            Some((msg, _)) => {
                let NetlinkPayload::InnerMessage(msg) = msg.payload else {
                    continue;
                };
                match msg {
                    RouteNetlinkMessage::NewAddress(m) => {
                        if let Some(ip) = message_ip(&m)
                            && !is_excluded(&handle, m.header.index).await
                        {
                            tracker.add(ip, m.header.index);
                        }
                    }
                    RouteNetlinkMessage::DelAddress(m) => {
                        if let Some(ip) = message_ip(&m) {
                            tracker.remove(ip, m.header.index);
                        }
                    }
                    _ => continue,
                }
            }
            None => {
                tracing::warn!("netlink address subscription lost; subscribing and listing again");
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(RESUBSCRIBE_BACKOFF) => {}
                    }
                    match subscribe_and_list().await {
                        Ok((h, e, t)) => {
                            (handle, events, tracker) = (h, e, t);
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "re-listing local IPs failed"),
                    }
                }
            }
        }
        let ips = tracker.ips();
        tx.send_if_modified(|current| {
            let changed = *current != ips;
            *current = ips;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_on_two_devices_stays_local_until_removed_from_both() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut t = Tracker::default();
        t.add(ip, 2);
        t.add(ip, 3);
        t.remove(ip, 2);
        assert!(t.ips().contains(&ip));
        t.remove(ip, 3);
        assert!(t.ips().is_empty());
        t.remove(ip, 3);
        assert!(t.ips().is_empty());
    }
}
