//! A member of the SWIM membership: one agent process on one Node. Plain data.
//!
//! The Node name is the member's address for foca: two identities with the same name are the
//! same Node, and the one with the higher boot id (a restarted agent, or one that rejoined after
//! being declared down) wins. The socket address is where its datagrams go; a receiver checks it
//! against the Node's InternalIP, so a member cannot speak for another Node.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The Kubernetes Node name.
    pub node: String,
    /// The Node's transport IP and the cluster port.
    pub addr: SocketAddr,
    /// Distinguishes the agent processes of one Node: the start time in nanoseconds since the
    /// Unix epoch, incremented on every rejoin. 0 is "any", used to reach a Node whose current
    /// boot id is not known yet (an announce is accepted by name).
    pub boot: u64,
}

impl foca::Identity for Member {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            boot: self.boot.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.node.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_newer_boot_of_the_same_node_wins_and_a_renewal_is_newer() {
        let old = Member {
            node: "n1".into(),
            addr: "10.0.0.1:10351".parse().unwrap(),
            boot: 10,
        };
        let renewed = old.renew().unwrap();
        assert_eq!(renewed.addr(), old.addr());
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
    }
}
