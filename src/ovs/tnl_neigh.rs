//! Keeps OVS's tunnel neighbour cache (`tnl/neigh`) right for the egress IPs this Node tunnels
//! to, on the userspace datapath (`netdev`) only. There OVS resolves the outer destination MAC
//! of a tunnel packet from its own cache, not the kernel's neighbour table: it learns by snooping
//! ARP only when the ARP packet misses the datapath flow cache, and every use refreshes an entry,
//! so after an egress IP moves the old owner's MAC stays forever (a black hole, seen on
//! OVS 3.1 when an egress IP moved while a client kept connecting).
//! (On `system` the kernel's neighbour table is used and the new owner's GARP updates it.)
//!
//! The fix, after the Egress flows of a plan are installed, for every egress IP whose owner is new
//! or changed: point the IP at the MAC OVS has learnt for the owner Node's transport IP
//! (`tnl/neigh/set`). On netdev the egress IP lives on the owner's transport bridge (only there
//! does OVS terminate tunnels addressed to it),
//! so both have that bridge's MAC. When that MAC is not known and a (maybe stale) entry for the
//! IP exists: `tnl/neigh/flush` and `revalidator/purge` (flush alone can leave a cached `drop`
//! datapath flow that never heals). With no entry at all OVS resolves the IP by ARP itself.
//! The periodic check sets entries that differ from the owner's known MAC; it never flushes.
//!
//! The decisions are pure functions; [`TunnelNeighbours`] only runs `ovs-appctl` (argv, never a
//! shell). It never decides where an IP is (the plan does), and its failures are reported, never
//! fatal to the plan.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use ovs_egress_core::pipeline::Mac;
use ovs_egress_core::plan::{IpLocality, NodePlan};

/// How long one `ovs-appctl` may take (`--timeout`): a hung vswitchd must not stall the agent.
const APPCTL_TIMEOUT_SECS: u32 = 5;
/// How many `tnl/neigh/set` run at once.
const APPCTL_PARALLEL: usize = 8;

/// One line of `ovs-appctl tnl/neigh/show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    pub ip: IpAddr,
    pub mac: Mac,
    pub bridge: String,
}

/// The entries of `tnl/neigh/show` output (`IP  MAC  Bridge [STALE]` lines); the header, the
/// rule and anything else that does not start with an IP and a MAC are skipped.
pub fn parse_show(text: &str) -> Vec<NeighEntry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let ip = words.next()?.parse().ok()?;
            let mac = words.next()?.parse().ok()?;
            let bridge = words.next()?.to_string();
            Some(NeighEntry { ip, mac, bridge })
        })
        .collect()
}

/// Every egress IP this Node tunnels to (`IpLocality::Remote`), with the Node holding it when
/// the plan knows it (pool IPs; a static IP configured elsewhere has no known owner).
pub fn remote_owners(plan: &NodePlan) -> BTreeMap<IpAddr, Option<String>> {
    plan.egress_ips
        .iter()
        .filter_map(|(ip, locality)| match locality {
            IpLocality::Remote { holder } => Some((*ip, holder.clone())),
            IpLocality::Local { .. } => None,
        })
        .collect()
}

/// Egress IP → transport IP of the Node holding it (`None` when unknown).
pub type Targets = BTreeMap<IpAddr, Option<IpAddr>>;

/// The owners of `owners` resolved to transport IPs (`transport_ips`: Node name → IP). An IP
/// without a known owner that is itself a Node's transport IP (a static egress IP on a Node's
/// own address, as in the user guide) is owned by that Node: its entry is the Node's, right
/// already, and flushing it would drop the next tunnelled packet while OVS ARPs again.
pub fn targets(
    owners: &BTreeMap<IpAddr, Option<String>>,
    transport_ips: &BTreeMap<String, IpAddr>,
) -> Targets {
    owners
        .iter()
        .map(|(ip, owner)| {
            let owner_ip = match owner {
                Some(node) => transport_ips.get(node).copied(),
                None => transport_ips.values().find(|t| *t == ip).copied(),
            };
            (*ip, owner_ip)
        })
        .collect()
}

/// The targets that need a refresh: new egress IPs and those whose owner changed since `done`.
pub fn due(done: &Targets, wanted: &Targets) -> Targets {
    wanted
        .iter()
        .filter(|(ip, owner)| done.get(ip) != Some(owner))
        .map(|(ip, owner)| (*ip, *owner))
        .collect()
}

/// `ovs-appctl tnl/neigh/set <bridge> <ip> <mac>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetNeigh {
    pub bridge: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

impl SetNeigh {
    fn args(&self) -> Vec<String> {
        vec![
            "tnl/neigh/set".into(),
            self.bridge.clone(),
            self.ip.to_string(),
            self.mac.to_string(),
        ]
    }
}

/// What to do to the cache for a set of targets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fixes {
    pub set: Vec<SetNeigh>,
    /// IPs with an entry that may be stale and no known owner MAC: one `tnl/neigh/flush` +
    /// `revalidator/purge` for all of them.
    pub flush: Vec<IpAddr>,
}

/// The fixes for `targets` given the cache `entries`. An IP whose owner's transport IP has an
/// entry gets that entry's MAC on that entry's bridge, unless every entry of the IP already says
/// so. Otherwise an IP with an entry is flushed when `may_flush`, and an IP without one is left
/// to OVS (it ARPs on first use).
pub fn fixes(targets: &Targets, entries: &[NeighEntry], may_flush: bool) -> Fixes {
    let mut out = Fixes::default();
    for (ip, owner) in targets {
        let current: Vec<&NeighEntry> = entries.iter().filter(|e| e.ip == *ip).collect();
        let owner_entry = owner.and_then(|o| entries.iter().find(|e| e.ip == o));
        match owner_entry {
            Some(o) => {
                let right = |e: &&NeighEntry| e.mac == o.mac && e.bridge == o.bridge;
                if current.is_empty() || !current.iter().all(right) {
                    out.set.push(SetNeigh {
                        bridge: o.bridge.clone(),
                        ip: *ip,
                        mac: o.mac,
                    });
                }
            }
            None if may_flush && !current.is_empty() => out.flush.push(*ip),
            None => {}
        }
    }
    out
}

/// The vswitchd control socket in `rundir`: `ovs-vswitchd.ctl` when it exists (a daemon started
/// with `--unixctl`, as in the test bed), else `ovs-vswitchd.<pid>.ctl` after the pid file (the
/// default, as `ovs-appctl -t ovs-vswitchd` finds it).
pub fn control_socket(rundir: &Path) -> Result<PathBuf, ControlSocketError> {
    let fixed = rundir.join("ovs-vswitchd.ctl");
    if fixed.exists() {
        return Ok(fixed);
    }
    let pidfile = rundir.join("ovs-vswitchd.pid");
    let text =
        std::fs::read_to_string(&pidfile).map_err(|source| ControlSocketError::NoSocket {
            fixed: fixed.clone(),
            pidfile: pidfile.clone(),
            source,
        })?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|source| ControlSocketError::BadPid {
            pidfile: pidfile.clone(),
            text: text.trim().to_string(),
            source,
        })?;
    Ok(rundir.join(format!("ovs-vswitchd.{pid}.ctl")))
}

/// Why the vswitchd control socket was not found.
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error("neither {} nor {}: {source}", .fixed.display(), .pidfile.display())]
    NoSocket {
        fixed: PathBuf,
        pidfile: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {text:?} is not a PID: {source}", .pidfile.display())]
    BadPid {
        pidfile: PathBuf,
        text: String,
        source: std::num::ParseIntError,
    },
}

/// A failed look-up or fix; names the egress IPs left unfixed and the command.
#[derive(Debug, thiserror::Error)]
pub enum TnlNeighError {
    #[error("tunnel neighbour of egress IP {}: no ovs-vswitchd control socket: {reason}", join_ips(.ips))]
    ControlSocket { ips: Vec<IpAddr>, reason: String },
    #[error("tunnel neighbour of egress IP {}: `{command}`: {reason}", join_ips(.ips))]
    Command {
        ips: Vec<IpAddr>,
        command: String,
        reason: String,
    },
}

impl TnlNeighError {
    /// The egress IPs left unfixed.
    fn ips(&self) -> &[IpAddr] {
        match self {
            TnlNeighError::ControlSocket { ips, .. } | TnlNeighError::Command { ips, .. } => ips,
        }
    }
}

/// The cache of one vswitchd: remembers which targets it already fixed.
#[derive(Debug)]
pub struct TunnelNeighbours {
    rundir: PathBuf,
    /// Node name → transport IP, for the other Nodes.
    transport_ips: BTreeMap<String, IpAddr>,
    /// The remote egress IPs of the last plan, with their owners.
    owners: BTreeMap<IpAddr, Option<String>>,
    /// Targets refreshed (or found right) since they last changed.
    done: Targets,
}

impl TunnelNeighbours {
    /// The cache of the vswitchd whose control socket is in `ovs_rundir`.
    pub fn new(ovs_rundir: impl Into<PathBuf>) -> Self {
        TunnelNeighbours {
            rundir: ovs_rundir.into(),
            transport_ips: BTreeMap::new(),
            owners: BTreeMap::new(),
            done: Targets::new(),
        }
    }

    /// The other Nodes' transport IPs, by Node name.
    pub fn set_transport_ips(&mut self, transport_ips: BTreeMap<String, IpAddr>) {
        self.transport_ips = transport_ips;
    }

    /// After `plan`'s flows are installed: fixes the IPs whose owner is new or changed. Returns
    /// the failures; a failed IP is tried again by the next refresh.
    pub async fn refresh(&mut self, plan: &NodePlan) -> Vec<TnlNeighError> {
        self.owners = remote_owners(plan);
        let wanted = targets(&self.owners, &self.transport_ips);
        let due = due(&self.done, &wanted);
        self.done = wanted;
        if due.is_empty() {
            return Vec::new();
        }
        let errors = self.fix(&due, true).await;
        // Forget what failed so the next refresh retries it.
        for ip in errors.iter().flat_map(TnlNeighError::ips) {
            self.done.remove(ip);
        }
        errors
    }

    /// Periodic check: every remote egress IP whose entry differs from its owner's known MAC is
    /// set again (never flushed).
    pub async fn verify(&mut self) -> Vec<TnlNeighError> {
        let wanted = targets(&self.owners, &self.transport_ips);
        if wanted.values().all(Option::is_none) {
            return Vec::new();
        }
        self.fix(&wanted, false).await
    }

    async fn fix(&self, targets: &Targets, may_flush: bool) -> Vec<TnlNeighError> {
        let all_ips: Vec<IpAddr> = targets.keys().copied().collect();
        let ctl = match control_socket(&self.rundir) {
            Ok(ctl) => ctl,
            Err(e) => {
                return vec![TnlNeighError::ControlSocket {
                    ips: all_ips,
                    reason: e.to_string(),
                }];
            }
        };
        let show = match appctl(&ctl, &["tnl/neigh/show".to_string()], &all_ips).await {
            Ok(text) => text,
            Err(e) => return vec![e],
        };
        let fixes = fixes(targets, &parse_show(&show), may_flush);
        // Several at a time: a Node that died can leave many IPs to move at once.
        let mut errors = Vec::new();
        for chunk in fixes.set.chunks(APPCTL_PARALLEL) {
            let runs = chunk.iter().map(|set| {
                let (ctl, args, ip) = (ctl.clone(), set.args(), set.ip);
                async move { appctl(&ctl, &args, &[ip]).await }
            });
            for (set, result) in chunk.iter().zip(futures::future::join_all(runs).await) {
                match result {
                    Ok(_) => {
                        tracing::info!(ip = %set.ip, mac = %set.mac, bridge = set.bridge, "tunnel neighbour set")
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if !fixes.flush.is_empty() {
            let mut flushed = true;
            for command in ["tnl/neigh/flush", "revalidator/purge"] {
                if let Err(e) = appctl(&ctl, &[command.to_string()], &fixes.flush).await {
                    errors.push(e);
                    flushed = false;
                    break;
                }
            }
            if flushed {
                let ips = join_ips(&fixes.flush);
                tracing::info!(ips, "tunnel neighbours flushed (owner MAC unknown)");
            }
        }
        errors
    }
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `ovs-appctl --timeout=N -t <ctl> <args>`; errors name `ips` and the command.
async fn appctl(ctl: &Path, args: &[String], ips: &[IpAddr]) -> Result<String, TnlNeighError> {
    let command = format!(
        "ovs-appctl --timeout={APPCTL_TIMEOUT_SECS} -t {} {}",
        ctl.display(),
        args.join(" ")
    );
    let error = |reason: String| TnlNeighError::Command {
        ips: ips.to_vec(),
        command: command.clone(),
        reason,
    };
    let output = Command::new("ovs-appctl")
        .arg(format!("--timeout={APPCTL_TIMEOUT_SECS}"))
        .arg("-t")
        .arg(ctl)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_core::plan::{Condition, EgressStatus};

    /// Real `tnl/neigh/show` output of OVS 3.1 (test bed), plus a STALE entry.
    const SHOW: &str = "\
IP                                            MAC                 Bridge
==========================================================================
172.30.0.100                                  02:30:00:00:00:12   br-phy
172.30.0.12                                   02:30:00:00:00:12   br-phy
172.30.0.13                                   02:30:00:00:00:13   br-phy STALE
fd00::12                                      02:30:00:00:00:12   br-phy
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(ip_text: &str, mac: &str) -> NeighEntry {
        NeighEntry {
            ip: ip(ip_text),
            mac: mac.parse().unwrap(),
            bridge: "br-phy".into(),
        }
    }

    fn status(node: &str, egress_ip: &str) -> EgressStatus {
        EgressStatus {
            egress_node: node.into(),
            egress_ip: egress_ip.into(),
            ip_assigned: Some(Condition::assigned()),
            writer: false,
        }
    }

    #[test]
    fn show_output_yields_every_entry_and_skips_header_and_rule() {
        let entries = parse_show(SHOW);
        assert_eq!(
            entries,
            [
                entry("172.30.0.100", "02:30:00:00:00:12"),
                entry("172.30.0.12", "02:30:00:00:00:12"),
                entry("172.30.0.13", "02:30:00:00:00:13"),
                entry("fd00::12", "02:30:00:00:00:12"),
            ]
        );
        assert!(parse_show("IP MAC Bridge\n=====\n").is_empty());
    }

    fn remote(holder: Option<&str>) -> IpLocality {
        IpLocality::Remote {
            holder: holder.map(str::to_string),
        }
    }

    #[test]
    fn remote_owners_are_the_tunnelled_ips_with_their_holder_when_the_plan_knows_it() {
        let plan = NodePlan {
            node: "node1".into(),
            egress_ips: BTreeMap::from([
                (ip("172.30.0.100"), remote(Some("node2"))),
                (ip("172.30.0.101"), remote(None)),
                (ip("172.30.0.102"), IpLocality::Local { mark: 1 }),
            ]),
            statuses: BTreeMap::from([
                ("pool".into(), status("node2", "172.30.0.100")),
                ("static".into(), status("", "172.30.0.101")),
                ("local".into(), status("node1", "172.30.0.102")),
            ]),
            ..NodePlan::default()
        };
        assert_eq!(
            remote_owners(&plan),
            BTreeMap::from([
                (ip("172.30.0.100"), Some("node2".to_string())),
                (ip("172.30.0.101"), None),
            ])
        );
    }

    #[test]
    fn a_refresh_is_due_for_new_ips_and_changed_owners_only() {
        let nodes = BTreeMap::from([
            ("node2".to_string(), ip("172.30.0.12")),
            ("node3".to_string(), ip("172.30.0.13")),
        ]);
        let owners = |list: &[(&str, Option<&str>)]| -> BTreeMap<IpAddr, Option<String>> {
            list.iter()
                .map(|(i, o)| (ip(i), o.map(str::to_string)))
                .collect()
        };
        let old = targets(
            &owners(&[("10.0.0.1", Some("node2")), ("10.0.0.2", Some("node2"))]),
            &nodes,
        );
        let new = targets(
            &owners(&[
                ("10.0.0.1", Some("node2")), // unchanged
                ("10.0.0.2", Some("node3")), // moved
                ("10.0.0.3", Some("node9")), // new, owner's transport IP unknown
                ("10.0.0.4", None),          // new static IP, owner unknown
                ("172.30.0.13", None),       // new static IP on node3's own address
            ]),
            &nodes,
        );
        assert_eq!(
            due(&old, &new),
            BTreeMap::from([
                (ip("10.0.0.2"), Some(ip("172.30.0.13"))),
                (ip("10.0.0.3"), None),
                (ip("10.0.0.4"), None),
                (ip("172.30.0.13"), Some(ip("172.30.0.13"))),
            ])
        );
        assert!(due(&new, &new).is_empty());
    }

    #[test]
    fn a_stale_entry_is_set_to_the_mac_learnt_for_the_owner_transport_ip() {
        let entries = parse_show(SHOW);
        // 172.30.0.100 moved to node3: its entry still says node2's MAC.
        let targets = Targets::from([(ip("172.30.0.100"), Some(ip("172.30.0.13")))]);
        let fixes = fixes(&targets, &entries, true);
        assert_eq!(
            fixes,
            Fixes {
                set: vec![SetNeigh {
                    bridge: "br-phy".into(),
                    ip: ip("172.30.0.100"),
                    mac: "02:30:00:00:00:13".parse().unwrap(),
                }],
                flush: vec![],
            }
        );
        assert_eq!(
            fixes.set[0].args(),
            [
                "tnl/neigh/set",
                "br-phy",
                "172.30.0.100",
                "02:30:00:00:00:13"
            ]
        );
    }

    #[test]
    fn a_missing_entry_is_set_when_the_owner_mac_is_known_and_a_right_one_is_left_alone() {
        let entries = parse_show(SHOW);
        let targets = Targets::from([
            (ip("172.30.0.50"), Some(ip("172.30.0.12"))),
            (ip("172.30.0.100"), Some(ip("172.30.0.12"))),
        ]);
        let fixes = fixes(&targets, &entries, true);
        let set: Vec<IpAddr> = fixes.set.iter().map(|s| s.ip).collect();
        assert_eq!(set, [ip("172.30.0.50")]);
        assert!(fixes.flush.is_empty());
    }

    #[test]
    fn an_unknown_owner_mac_flushes_only_ips_with_an_entry_and_only_when_allowed() {
        let entries = parse_show(SHOW);
        let targets = Targets::from([
            (ip("172.30.0.100"), Some(ip("172.30.0.14"))), // owner MAC not learnt
            (ip("172.30.0.101"), None),                    // no entry: OVS will ARP
        ]);
        assert_eq!(
            fixes(&targets, &entries, true),
            Fixes {
                set: vec![],
                flush: vec![ip("172.30.0.100")],
            }
        );
        assert_eq!(fixes(&targets, &entries, false), Fixes::default());
    }

    #[test]
    fn a_static_ip_on_a_node_address_keeps_its_entry_instead_of_being_flushed() {
        let entries = parse_show(SHOW);
        let nodes = BTreeMap::from([("node2".to_string(), ip("172.30.0.12"))]);
        let owners = BTreeMap::from([(ip("172.30.0.12"), None)]);
        let targets = targets(&owners, &nodes);
        assert_eq!(fixes(&targets, &entries, true), Fixes::default());
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oe-tnl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn control_socket_prefers_a_fixed_ctl_then_follows_the_pid_file() {
        let dir = scratch_dir("ctl");
        std::fs::write(dir.join("ovs-vswitchd.pid"), "4242\n").unwrap();
        assert_eq!(
            control_socket(&dir).unwrap(),
            dir.join("ovs-vswitchd.4242.ctl")
        );
        std::fs::write(dir.join("ovs-vswitchd.ctl"), "").unwrap();
        assert_eq!(control_socket(&dir).unwrap(), dir.join("ovs-vswitchd.ctl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn control_socket_without_ctl_or_pid_file_names_the_rundir() {
        let dir = scratch_dir("none");
        let error = control_socket(&dir).unwrap_err().to_string();
        assert!(error.contains(&dir.display().to_string()), "{error}");
        assert!(error.contains("ovs-vswitchd.pid"), "{error}");
        std::fs::write(dir.join("ovs-vswitchd.pid"), "garbage").unwrap();
        let error = control_socket(&dir).unwrap_err().to_string();
        assert!(error.contains("garbage"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_refresh_names_the_ip_and_is_retried_by_the_next_one() {
        let dir = scratch_dir("retry");
        let mut tunnels = TunnelNeighbours::new(&dir);
        tunnels.set_transport_ips(BTreeMap::from([("node2".into(), ip("172.30.0.12"))]));
        let plan = NodePlan {
            node: "node1".into(),
            egress_ips: BTreeMap::from([(ip("172.30.0.100"), remote(Some("node2")))]),
            statuses: BTreeMap::from([("web".into(), status("node2", "172.30.0.100"))]),
            ..NodePlan::default()
        };
        for _ in 0..2 {
            let errors = tunnels.refresh(&plan).await;
            assert_eq!(errors.len(), 1, "{errors:?}");
            let message = errors[0].to_string();
            assert!(message.contains("172.30.0.100"), "{message}");
            assert!(message.contains("ovs-vswitchd.pid"), "{message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
