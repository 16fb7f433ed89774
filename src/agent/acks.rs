//! Which Pod ports the agent lets the datapath acknowledge to the CNI plugin (the ports whose
//! ADD may return): those whose Egress decision the applied plan has made
//! (`plan::membership::decided_pods`: the Pod object and its Namespace are in the view the
//! applied plan was computed from); until then the agent waits for its
//! reflectors (the kubelet creates the Pod object before the sandbox and the Namespace before
//! the Pod, so this is a matter of milliseconds; CNI ADD bounds the wait). A port that names no
//! Pod has nothing to decide and is settled at once. Pure; it never looks at Egresses (the plan
//! does).

use std::collections::{BTreeMap, BTreeSet};

use crate::datapath::{PodPort, PortAcks};

/// The ports of `ports` the datapath may acknowledge once installed, given the Pods `known`
/// to the applied plan.
pub fn settled_ports(ports: &[PodPort], known: &BTreeSet<String>) -> PortAcks {
    let settled: BTreeMap<String, u32> = ports
        .iter()
        .filter(|p| names_no_pod(&p.pod) || known.contains(&p.pod))
        .map(|p| (p.name.clone(), p.ofport))
        .collect();
    PortAcks::Settled(settled)
}

/// A port key `namespace/name` with an empty part: the CNI call carried no Pod identity.
fn names_no_pod(key: &str) -> bool {
    key.split_once('/')
        .is_none_or(|(ns, name)| ns.is_empty() || name.is_empty())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use ovs_egress_core::pipeline::Mac;

    fn port(name: &str, pod: &str, ofport: u32) -> PodPort {
        PodPort {
            name: name.into(),
            pod: pod.into(),
            ofport,
            mac: Mac([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            acked: false,
        }
    }

    #[test]
    fn ports_of_known_pods_and_ports_naming_no_pod_are_settled_with_their_ofport() {
        let ports = [
            port("p1", "prod/web", 3),
            port("p2", "prod/unknown", 4),
            port("p3", "/", 5),
            port("p4", "prod/", 6),
        ];
        let known = BTreeSet::from(["prod/web".to_string()]);
        let want = BTreeMap::from([
            ("p1".to_string(), 3),
            ("p3".to_string(), 5),
            ("p4".to_string(), 6),
        ]);
        assert_eq!(settled_ports(&ports, &known), PortAcks::Settled(want));
        let none = settled_ports(&ports[..2], &BTreeSet::new());
        assert_eq!(none, PortAcks::Settled(BTreeMap::new()));
    }
}
