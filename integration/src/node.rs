//! A Node of the test bed: a namespace with its own OVS (userspace datapath) and an uplink to the
//! underlay, wired with the userspace tunnelling recipe of OVS ("Userspace Tunneling" in the OVS
//! documentation): the
//! uplink `eth0` is a port of a netdev bridge `br-phy` (standalone, NORMAL) and the Node IP lives
//! on br-phy's own tap interface, so OVS terminates Geneve addressed to it. `br-int` is not made
//! here: that is the agent's job (`ovs_egress_ovsdb::bridge`).
//!
//! Addressing for Node `i` (1..=99): IP `172.30.0.<10+i>/24` unless given
//! ([`Node::start_at`]), br-phy MAC `02:30:00:00:00:<last byte of the IP>`, Pod CIDR
//! `10.244.<i>.0/24` (gateway `.1`).

use std::net::Ipv4Addr;

use anyhow::{Result, ensure};

use crate::netns::Netns;
use crate::ovs_instance::OvsInstance;
use crate::underlay::Underlay;

/// Prefix length of the underlay segment.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;

#[derive(Debug)]
pub struct Node {
    pub index: u8,
    ip: Ipv4Addr,
    pub ovs: OvsInstance,
}

impl Node {
    /// Creates namespace `node<i>`, plugs it into `underlay` and starts OVS with br-phy.
    pub fn start(underlay: &Underlay, index: u8) -> Result<Node> {
        Node::start_at(underlay, index, Ipv4Addr::new(172, 30, 0, 10 + index))
    }

    /// [`Node::start`] with the underlay IP `ip` (a /24 of the underlay).
    pub fn start_at(underlay: &Underlay, index: u8, ip: Ipv4Addr) -> Result<Node> {
        ensure!(
            (1..=99).contains(&index),
            "node index {index} not in 1..=99"
        );
        let ns = Netns::new(&format!("node{index}"))?;
        underlay.attach(&ns, "eth0")?;
        quiet_ovs_port(&ns, "eth0")?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ])?;
        let ovs = OvsInstance::start(&ns)?;
        let node = Node { index, ip, ovs };
        let mac = format!("other-config:hwaddr=\"{}\"", node.phy_mac());
        node.ovs.vsctl(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            &mac,
            "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
            "--",
            "add-port",
            "br-phy",
            "eth0",
        ])?;
        let cidr = format!("{}/{UNDERLAY_PREFIX_LEN}", node.ip());
        ns.exec(&["ip", "addr", "add", &cidr, "dev", "br-phy"])?;
        ns.exec(&["ip", "link", "set", "br-phy", "up"])?;
        Ok(node)
    }

    pub fn netns(&self) -> &Netns {
        self.ovs.netns()
    }

    /// The Node's underlay (transport) IP, on br-phy.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn phy_mac(&self) -> String {
        format!("02:30:00:00:00:{:02x}", self.ip.octets()[3])
    }

    /// The Node's Pod CIDR `10.244.<i>.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// The gateway IP (first address of the Pod CIDR).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }
}

/// Makes a veth that OVS reads through AF_PACKET (userspace datapath) invisible to the
/// namespace's kernel: no ARP, no forwarding, every frame dropped in raw
/// PREROUTING (AF_PACKET taps run before netfilter, so OVS still receives them).
pub fn quiet_ovs_port(ns: &Netns, ifname: &str) -> Result<()> {
    ns.exec(&["ip", "link", "set", ifname, "arp", "off"])?;
    ns.sysctl(&[&format!("net.ipv4.conf.{ifname}.forwarding=0")])?;
    ns.exec(&[
        "iptables",
        "-t",
        "raw",
        "-A",
        "PREROUTING",
        "-i",
        ifname,
        "-j",
        "DROP",
    ])?;
    Ok(())
}
