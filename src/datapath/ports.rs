//! Which Pods are attached to this Node's `br-int`, read from a replica of the OVSDB Interface
//! table: a Pod port is an Interface carrying the `external_ids` the CNI plugin writes
//! (`cni::port::keys`) and an OpenFlow port number ovs-vswitchd has assigned. Pure: it only
//! reads the replica; rows that are not Pod ports (gateway, tunnel, foreign ports) are skipped.

use std::net::Ipv4Addr;

use ovs_egress_core::pipeline::{LocalPod, Mac};
use ovs_egress_ovsdb::bridge::pod_port_keys as keys;
use ovs_egress_ovsdb::{Atom, Row, TableCache};

/// The columns of the Interface table this module needs (monitor these).
pub const INTERFACE_COLUMNS: [&str; 3] = ["name", "ofport", "external_ids"];

/// A Pod port as far as its flows are concerned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodPort {
    /// The host-side interface name.
    pub name: String,
    /// `namespace/name` of the Pod.
    pub pod: String,
    pub ofport: u32,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// The agent's acknowledgement (`keys::FLOWS_READY`) is on the Interface already.
    pub acked: bool,
}

impl PodPort {
    pub fn local_pod(&self) -> LocalPod {
        LocalPod {
            ofport: self.ofport,
            mac: self.mac,
            ip: self.ip,
        }
    }
}

/// Why an Interface row that looks like a Pod port cannot be used (logged by the caller).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Interface {name}: external_ids:{key} = {value:?} is not valid")]
pub struct BadPort {
    pub name: String,
    pub key: &'static str,
    pub value: String,
}

/// The Pod ports in `cache`, sorted by OpenFlow port, and the rows that carry the Pod keys
/// but invalid values. Ports without an assigned ofport yet (empty or -1) are not listed.
pub fn pod_ports(cache: &TableCache) -> (Vec<PodPort>, Vec<BadPort>) {
    let mut ports = Vec::new();
    let mut bad = Vec::new();
    for (_, row) in cache.rows("Interface") {
        match pod_port(row) {
            Ok(Some(p)) => ports.push(p),
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    ports.sort_by_key(|p| p.ofport);
    (ports, bad)
}

fn pod_port(row: &Row) -> Result<Option<PodPort>, BadPort> {
    let Ok(name) = row.str("Interface", "name") else {
        return Ok(None);
    };
    let Ok(ids) = row.string_map("Interface", "external_ids") else {
        return Ok(None);
    };
    let (Some(ip), Some(mac), Some(_)) = (
        ids.get(keys::IP),
        ids.get(keys::MAC),
        ids.get(keys::CONTAINER_ID),
    ) else {
        return Ok(None);
    };
    let ofport = match row.optional("Interface", "ofport") {
        Ok(Some(Atom::Integer(n))) if *n > 0 => u32::try_from(*n).ok(),
        _ => None,
    };
    let Some(ofport) = ofport else {
        return Ok(None);
    };
    let bad = |key, value: &String| BadPort {
        name: name.to_string(),
        key,
        value: value.clone(),
    };
    let ip = ip.parse().map_err(|_| bad(keys::IP, ip))?;
    let mac = mac.parse().map_err(|_| bad(keys::MAC, mac))?;
    let ns = ids.get(keys::POD_NAMESPACE).map_or("", String::as_str);
    let pod = ids.get(keys::POD_NAME).map_or("", String::as_str);
    Ok(Some(PodPort {
        name: name.to_string(),
        pod: format!("{ns}/{pod}"),
        ofport,
        mac,
        ip,
        acked: ids.get(keys::FLOWS_READY).map(String::as_str) == Some(keys::FLOWS_READY_VALUE),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_ovsdb::{MonitorEvent, RowUpdate, TableUpdates, Uuid, Value};

    /// A replica holding one Interface row per `(name, ofport, ip, mac)`; `ofport` None = unset.
    /// Ports whose name starts with `acked` carry the agent's acknowledgement.
    fn cache(rows: &[(&str, Option<i64>, &str, &str)]) -> TableCache {
        let mut table = std::collections::BTreeMap::new();
        for (i, (name, ofport, ip, mac)) in rows.iter().enumerate() {
            let mut ids = vec![
                ("container-id", "c1"),
                ("k8s-pod-name", "web"),
                ("k8s-pod-namespace", "ns"),
                ("ip", *ip),
                ("mac", *mac),
            ];
            if name.starts_with("acked") {
                ids.push((keys::FLOWS_READY, keys::FLOWS_READY_VALUE));
            }
            let ids = Value::map(ids);
            let ofport = ofport.map_or_else(Value::empty_set, Value::from);
            let row = Row::new()
                .with("name", *name)
                .with("ofport", ofport)
                .with("external_ids", ids);
            let uuid = Uuid::parse(&format!("00000000-0000-0000-0000-{i:012}")).unwrap();
            let update = RowUpdate {
                old: None,
                new: Some(row),
            };
            table.insert(uuid, update);
        }
        let mut updates = TableUpdates::new();
        updates.insert("Interface".into(), table);
        let mut c = TableCache::new();
        c.apply(&MonitorEvent::Snapshot(updates));
        c
    }

    #[test]
    fn pod_ports_need_cni_keys_and_an_assigned_ofport_are_sorted_by_ofport_and_show_the_ack() {
        let mut c = cache(&[
            ("acked9", Some(9), "10.244.1.9", "02:00:00:00:00:09"),
            ("p3", Some(3), "10.244.1.3", "02:00:00:00:00:03"),
            ("pending", None, "10.244.1.4", "02:00:00:00:00:04"),
            ("failed", Some(-1), "10.244.1.5", "02:00:00:00:00:05"),
        ]);
        let gw = Row::new()
            .with("name", "antrea-gw0")
            .with("ofport", 2i64)
            .with("external_ids", Value::map(Vec::<(&str, &str)>::new()));
        let gw_uuid = Uuid::parse("00000000-0000-0000-0000-0000000000ff").unwrap();
        c.tables.get_mut("Interface").unwrap().insert(gw_uuid, gw);
        let (ports, bad) = pod_ports(&c);
        assert!(bad.is_empty(), "{bad:?}");
        let names: Vec<_> = ports.iter().map(|p| (p.name.as_str(), p.ofport)).collect();
        assert_eq!(names, [("p3", 3), ("acked9", 9)]);
        assert_eq!((ports[0].acked, ports[1].acked), (false, true));
        assert_eq!(ports[0].pod, "ns/web");
        assert_eq!(ports[0].ip, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(ports[0].mac.to_string(), "02:00:00:00:00:03");
    }

    #[test]
    fn invalid_ip_or_mac_is_reported_with_interface_and_key() {
        let c = cache(&[
            ("p1", Some(4), "10.244.1.300", "02:00:00:00:00:09"),
            ("p2", Some(5), "10.244.1.3", "zz"),
        ]);
        let (ports, bad) = pod_ports(&c);
        assert!(ports.is_empty());
        let text: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("p1") && t.contains("external_ids:ip"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("p2") && t.contains("external_ids:mac"))
        );
    }
}
