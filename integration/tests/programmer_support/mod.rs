//! Shared by the programmer tests and the programmer benchmark: a private OVS with a `br-int`
//! laid out like the agent's (netdev, fail-mode secure, OpenFlow 1.5, Geneve tunnel at 32768,
//! internal gateway at 32769), a blocking runner for the async programmer, and a reader of the
//! bridge's flows.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;

use ovs_egress::ovs::ofctl::{Ofctl, parse_dump};
use ovs_egress_core::pipeline::flow::render_actions;
use ovs_egress_core::pipeline::{
    Flow, Gateway, Ipv4Network, LocalPod, PodNetwork, RemoteNode, Style, first_host,
};
use ovs_egress_integration::{Netns, OvsInstance};

pub const TUNNEL_OFPORT: u32 = 32768;
pub const GATEWAY_OFPORT: u32 = 32769;

/// A namespace with a private OVS serving `br-int`. Field order = drop order: OVS stops first.
pub struct Bridge {
    pub ovs: OvsInstance,
    _ns: Netns,
}

impl Bridge {
    pub fn start(role: &str) -> Bridge {
        let ns = Netns::new(role).expect("creating the test namespace (needs root)");
        let ovs =
            OvsInstance::start(&ns).expect("starting a private OVS (needs openvswitch-switch)");
        ovs.vsctl(&[
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail-mode=secure",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
            "--",
            "add-port",
            "br-int",
            "antrea-tun0",
            "--",
            "set",
            "interface",
            "antrea-tun0",
            "type=geneve",
            "ofport_request=32768",
            "options:remote_ip=flow",
            "options:key=flow",
            "--",
            "add-port",
            "br-int",
            "antrea-gw0",
            "--",
            "set",
            "interface",
            "antrea-gw0",
            "type=internal",
            "ofport_request=32769",
        ])
        .expect("creating br-int");
        Bridge { ovs, _ns: ns }
    }

    /// An `Ofctl` for the programmer, aimed at this instance's management socket.
    pub fn ofctl(&self) -> Ofctl {
        Ofctl::new(format!("unix:{}/br-int.mgmt", self.ovs.rundir().display()))
    }

    /// Every flow on br-int as `(cookie, "table=..,priority=..,match", actions)`.
    pub fn flows(&self) -> BTreeSet<(u64, String, String)> {
        let text = self
            .ovs
            .ofctl(&["--no-names", "-O", "OpenFlow15", "dump-flows", "br-int"])
            .expect("dump-flows");
        parse_dump(&text)
            .expect("parsable dump")
            .into_iter()
            .map(|f| (f.cookie, f.key.to_string(), f.actions))
            .collect()
    }
}

/// Runs one future to completion on a fresh current-thread runtime (tests stay synchronous so
/// they can poll the switch from a plain thread meanwhile).
pub fn block<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Node `i` of the fixed test cluster: Pods with the given last octets, and the other Nodes.
pub fn node(i: u8, pods: &[u8], others: &[u8]) -> PodNetwork {
    let pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 244, i, 0), 24).expect("valid prefix");
    PodNetwork {
        gateway: Gateway {
            ofport: GATEWAY_OFPORT,
            mac: format!("02:44:0{i}:00:00:01").parse().expect("mac"),
            ip: first_host(pod_cidr),
        },
        tunnel_ofport: TUNNEL_OFPORT,
        pod_cidr,
        pods: pods
            .iter()
            .map(|host| LocalPod {
                ofport: u32::from(*host),
                mac: format!("02:44:0{i}:00:00:{host:02x}").parse().expect("mac"),
                ip: Ipv4Addr::new(10, 244, i, *host),
            })
            .collect(),
        remote_nodes: others
            .iter()
            .map(|j| RemoteNode {
                pod_cidr: Ipv4Network::new(Ipv4Addr::new(10, 244, *j, 0), 24)
                    .expect("valid prefix"),
                transport_ip: Ipv4Addr::new(172, 30, 0, 10 + j),
            })
            .collect(),
    }
}

/// What `flows()` must return once exactly `desired` is installed in `round`.
pub fn expected(desired: &[Flow], round: u16) -> BTreeSet<(u64, String, String)> {
    desired
        .iter()
        .map(|f| {
            (
                f.cookie.value(round),
                f.key().to_string(),
                render_actions(&f.actions, Style::Numeric),
            )
        })
        .collect()
}
