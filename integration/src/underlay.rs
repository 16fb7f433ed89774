//! The "physical" L2 segment between Nodes: a Linux bridge `br-u` in a namespace of its own.
//! Each attachment is a veth created inside the underlay namespace whose peer is moved straight
//! into the attached namespace, so nothing is ever created in the default namespace.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use crate::netns::Netns;

/// The underlay namespace and its bridge. Dropping it (and every clone of its namespace)
/// deletes the namespace and with it the underlay ends of all attachments.
#[derive(Debug)]
pub struct Underlay {
    netns: Netns,
    ports: AtomicU32,
}

impl Underlay {
    pub fn new() -> Result<Underlay> {
        let netns = Netns::new("underlay")?;
        netns.exec(&["ip", "link", "add", "br-u", "type", "bridge"])?;
        netns.exec(&["ip", "link", "set", "br-u", "up"])?;
        Ok(Underlay {
            netns,
            ports: AtomicU32::new(0),
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Plugs `ns` into the segment as interface `ifname` (left down, no address). TX checksum
    /// offload is turned off on it (OVS userspace forwards CHECKSUM_PARTIAL frames
    /// with a wrong TCP checksum), which is harmless when OVS is not involved.
    pub fn attach(&self, ns: &Netns, ifname: &str) -> Result<()> {
        let port = format!("u{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.netns.veth_to(&port, ns, ifname)?;
        self.netns
            .exec(&["ip", "link", "set", &port, "master", "br-u", "up"])?;
        ns.exec(&["ethtool", "-K", ifname, "tx", "off"])?;
        Ok(())
    }
}
