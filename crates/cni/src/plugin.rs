//! The three CNI commands that touch the host. ADD either wires the Pod completely or rolls back
//! everything it created (IP reservation, veth, iptables rule, OVS port) before reporting the
//! error, and returns once the agent has acknowledged the Pod's flows (or the wait timed out,
//! which is logged, not an error); DEL removes whatever is left and succeeds when nothing is;
//! CHECK only reads.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::config::{Datapath, Env, NetConf};
use super::error::{CniError, Code};
use super::hygiene;
use super::link::{self, Link};
use super::netns::{self, Netlink};
use super::port;
use super::result::{CniResult, Interface, IpConfig, Route};
use super::store::{Owner, Store};

/// The host end's name: `oe` + 13 hex digits of a hash of container id and interface name
/// (15 bytes, the kernel's limit), so DEL finds it from the same two inputs.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{container_id}/{ifname}").as_bytes());
    format!("oe{:013x}", hash & ((1u64 << 52) - 1))
}

fn owner(env: &Env) -> Owner<'_> {
    Owner {
        container_id: &env.container_id,
        ifname: &env.ifname,
    }
}

fn required_netns(env: &Env) -> Result<&Path, CniError> {
    env.netns
        .as_deref()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS is not set"))
}

/// What ADD has created so far, to undo on failure.
#[derive(Default)]
struct Created {
    veth: bool,
    raw_drop: bool,
    port: bool,
}

pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
    let netns_path = required_netns(env)?;
    let ns = netns::open(netns_path)?;
    let nl = Netlink::open()?;
    let store = Store::new(&conf.state_dir);
    let ip = store.allocate(&conf.pod_cidr, &owner(env))?;
    let host = host_ifname(&env.container_id, &env.ifname);
    let mut created = Created::default();
    match wire(env, conf, &ns, &nl, &host, ip, &mut created) {
        Ok((host_link, pod_link)) => Ok(result(
            env, conf, netns_path, &host, &host_link, &pod_link, ip,
        )),
        Err(mut err) => {
            let mut failed = vec![];
            let mut undo = |result: Result<(), CniError>| {
                if let Err(e) = result {
                    failed.push(e.to_string());
                }
            };
            if created.port {
                undo(nl.run(|_| port::detach(&conf.ovs_db_socket, &conf.ovs_bridge, &host)));
            }
            if created.raw_drop {
                undo(hygiene::remove_raw_drop(&host));
            }
            if created.veth {
                undo(nl.run(|h| link::delete(h, &host)).map(drop));
            }
            undo(store.release(&owner(env)).map(drop));
            if !failed.is_empty() {
                let prior = err
                    .details
                    .take()
                    .map(|d| format!("{d}; "))
                    .unwrap_or_default();
                err.details = Some(format!(
                    "{prior}rolling back also failed: {}",
                    failed.join("; ")
                ));
            }
            Err(err)
        }
    }
}

fn wire(
    env: &Env,
    conf: &NetConf,
    ns: &std::fs::File,
    nl: &Netlink,
    host: &str,
    ip: IpAddr,
    created: &mut Created,
) -> Result<(Link, Link), CniError> {
    let netdev = conf.datapath == Datapath::Netdev;
    nl.run(|h| link::create_veth(h, host, &env.ifname, ns.as_raw_fd(), conf.mtu, !netdev))?;
    created.veth = true;
    let rule = if netdev {
        hygiene::disable_forwarding(host)?;
        link::disable_tx_checksum(host)?;
        created.raw_drop = true;
        Some(hygiene::start_raw_drop(host)?)
    } else {
        None
    };
    // Always wait for iptables, also when the rest failed, before anything is rolled back.
    let links = configure(env, conf, ns, nl, host, ip, created);
    let rule = rule.map(hygiene::PendingRule::wait).transpose();
    let links = links?;
    rule?;
    Ok(links)
}

/// Host end up, Pod end configured, host end on the bridge.
fn configure(
    env: &Env,
    conf: &NetConf,
    ns: &std::fs::File,
    nl: &Netlink,
    host: &str,
    ip: IpAddr,
    created: &mut Created,
) -> Result<(Link, Link), CniError> {
    let netdev = conf.datapath == Datapath::Netdev;
    let host_link = nl.run(|h| async move {
        let link = link::get(h, host).await?.ok_or_else(|| {
            CniError::host(format!("finding veth {host} after creating it"), "missing")
        })?;
        link::set_up(h, &link, host).await?;
        Ok(link)
    })?;
    let cidr = conf.pod_cidr;
    let ifname = env.ifname.as_str();
    let pod_link = netns::run_in(ns, "configure the Pod interface", |pod_nl| {
        let link = pod_nl.run(|h| async move {
            let link = link::get(h, ifname).await?.ok_or_else(|| {
                CniError::host(
                    format!("finding {ifname} in the container netns"),
                    "missing",
                )
            })?;
            link::set_up(h, &link, ifname).await?;
            link::add_address(h, &link, ifname, ip, cidr.network.prefix()).await?;
            link::add_default_route(h, cidr.gateway).await?;
            Ok(link)
        })?;
        if netdev {
            link::disable_tx_checksum(ifname)?;
        }
        Ok(link)
    })?;
    let ip_text = ip.to_string();
    let ids = [
        (port::keys::CONTAINER_ID, env.container_id.as_str()),
        (port::keys::POD_NAME, env.pod_name()),
        (port::keys::POD_NAMESPACE, env.pod_namespace()),
        (port::keys::IP, ip_text.as_str()),
        (port::keys::MAC, pod_link.mac.as_str()),
    ];
    created.port = true; // set before the call: a timed-out add may still have landed
    let timeout = conf.flows_ready_timeout;
    let ready =
        nl.run(|_| port::attach(&conf.ovs_db_socket, &conf.ovs_bridge, host, &ids, timeout))?;
    if ready == port::FlowsReady::TimedOut {
        // Not an error: a Node without a running agent must still start Pods. The runtime logs
        // the plugin's stderr.
        eprintln!(
            "ovs-egress cni: WARNING: the agent did not acknowledge the flows of Pod {}/{} \
             (port {host}, container {}) within {timeout:?}; the Pod starts before its \
             datapath, its first connections may be dropped or leave without its Egress IP",
            env.pod_namespace(),
            env.pod_name(),
            env.container_id
        );
    }
    Ok((host_link, pod_link))
}

fn default_dst(gateway: IpAddr) -> &'static str {
    if gateway.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    }
}

fn result(
    env: &Env,
    conf: &NetConf,
    netns_path: &Path,
    host: &str,
    host_link: &Link,
    pod_link: &Link,
    ip: IpAddr,
) -> CniResult {
    let gw = conf.pod_cidr.gateway;
    CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: host.to_string(),
                mac: host_link.mac.clone(),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: pod_link.mac.clone(),
                sandbox: Some(netns_path.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: format!("{ip}/{}", conf.pod_cidr.network.prefix()),
            gateway: Some(gw),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: default_dst(gw).to_string(),
            gw: Some(gw),
        }],
        dns: Default::default(),
    }
}

/// Remove the OVS port, the iptables rule, the veth and the IP reservation; each step succeeds
/// when there is nothing to remove, and the reservation goes last so a failed DEL can be retried.
pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let host = host_ifname(&env.container_id, &env.ifname);
    let nl = Netlink::open()?;
    nl.run(|_| port::detach(&conf.ovs_db_socket, &conf.ovs_bridge, &host))?;
    if conf.datapath == Datapath::Netdev {
        hygiene::remove_raw_drop(&host)?;
    }
    nl.run(|h| link::delete(h, &host))?;
    Store::new(&conf.state_dir).release(&owner(env))?;
    Ok(())
}

fn mismatch(msg: impl Into<String>) -> CniError {
    CniError::new(Code::CheckMismatch, msg)
}

/// Verify that the container interface, its address, its MTU and its default route are as ADD
/// (described by `prevResult`) left them, and that the IP is still reserved for it.
pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidNetworkConfig,
            "CHECK needs prevResult in the network config",
        )
    })?;
    let ifname = env.ifname.as_str();
    let (index, iface) = prev
        .container_interface(ifname)
        .ok_or_else(|| mismatch(format!("prevResult has no container interface {ifname}")))?;
    let ip_conf = prev
        .ips
        .iter()
        .find(|c| c.interface == Some(index))
        .ok_or_else(|| mismatch(format!("prevResult has no IP for interface {ifname}")))?;
    let (ip, prefix) = parse_cidr(&ip_conf.address)?;
    let reserved = Store::new(&conf.state_dir).find(&owner(env))?;
    if reserved != Some(ip) {
        return Err(mismatch(format!(
            "IP {ip} of {ifname} is not reserved for container {} (reserved: {reserved:?})",
            env.container_id
        )));
    }
    let host = host_ifname(&env.container_id, ifname);
    if Netlink::open()?.run(|h| link::get(h, &host))?.is_none() {
        return Err(mismatch(format!("host veth {host} does not exist")));
    }
    let ns = netns::open(required_netns(env)?)?;
    let gateway = conf.pod_cidr.gateway;
    netns::run_in(&ns, "check the Pod interface", |nl| {
        nl.run(|h| async move {
            let link = link::get(h, ifname).await?.ok_or_else(|| {
                mismatch(format!(
                    "interface {ifname} does not exist in the container"
                ))
            })?;
            if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&link.mac) {
                return Err(mismatch(format!(
                    "{ifname} has MAC {} instead of {}",
                    link.mac, iface.mac
                )));
            }
            if link.mtu != conf.mtu {
                return Err(mismatch(format!(
                    "{ifname} has MTU {} instead of {}",
                    link.mtu, conf.mtu
                )));
            }
            if !link::addresses(h, &link).await?.contains(&(ip, prefix)) {
                return Err(mismatch(format!("{ifname} lacks address {ip}/{prefix}")));
            }
            if !link::default_gateways(h, gateway).await?.contains(&gateway) {
                return Err(mismatch(format!(
                    "the container has no default route via {gateway}"
                )));
            }
            Ok(())
        })
    })
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), CniError> {
    let bad = || mismatch(format!("prevResult address {text:?} is not ADDRESS/PREFIX"));
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    Ok((
        ip.parse().map_err(|_| bad())?,
        prefix.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_deterministic_short_and_distinct_per_container_interface() {
        let a = host_ifname("0123456789abcdef", "eth0");
        assert_eq!(a, host_ifname("0123456789abcdef", "eth0"));
        assert!(a.len() <= 15 && a.starts_with("oe"), "{a}");
        assert_ne!(a, host_ifname("0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("0123456789abcdee", "eth0"));
    }
}
