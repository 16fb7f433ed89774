//! The one Egress apply path of a Node: [`EgressApplier::apply`] takes a `NodePlan` to the host
//! and the switch in make-before-break order. 1. the SNAT rules of the plan's local IPs beside
//! the old ones; 2. the Egress flows, handed to the datapath runtime as a new input generation;
//! 3. wait until the runtime reports that generation installed (a rejected bundle fails the
//! apply at once); 4. (userspace datapath only) OVS's tunnel neighbour cache for egress IPs
//! with a new owner; 5. the egress IPs the Node now holds, one GARP/NA per newly added IP, and
//! the removal of those it gave up; 6. only last, the SNAT rules of IPs it gave up. A Node
//! taking an IP is ready to SNAT before traffic arrives; a Node giving one up switches its
//! flows before its rules go. The agent and the packet tests run this same code.
//!
//! It is thin on purpose: flows come from `pipeline::egress`, rules from `host::iptables`,
//! addresses from `host::addresses`, tunnel neighbours from `ovs::tnl_neigh`. A failure of the
//! whole Node is an [`ApplyError`] naming the step; a failure concerning one egress IP (no such
//! device, netlink error) is reported for the Egresses using that IP and never stops the
//! others. It never decides which IP is local or which mark it has: that is the plan's.
//!
//! [`EgressHost`] holds the host half (steps 1, 4–6) for callers that program flows themselves
//! (the step-by-step benchmark).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{DatapathHandle, InstallError, PortAcks};
use crate::ovs::tnl_neigh::TunnelNeighbours;
use ovs_egress_core::pipeline::Flow;
use ovs_egress_core::pipeline::egress::{EgressContext, EgressFlows, Unprogrammed, egress_flows};
use ovs_egress_core::plan::{Condition, EgressStatus, NodePlan};
use ovs_egress_core::snat::snat_entries;
use ovs_egress_host::addresses::{Added, AddressError, Addresses, Link};
use ovs_egress_host::advertise::advertise;
use ovs_egress_host::iptables::{Applier, IptablesError, SnatConfig, SnatEntry};

/// How long a plan's Egress flows may take to be installed before the apply fails (the
/// runtime waits while OVS is away; a rejected bundle fails at once).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Node's Egress plan was not applied, by step. Steps after the failed one did not run,
/// so nothing was broken before its replacement was in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("Node {node}, step 1 (SNAT rules before the flows): {source}")]
    Snat {
        node: String,
        #[source]
        source: IptablesError,
    },
    #[error("Node {node}, step 2-3 (Egress flows): {source}")]
    Flows {
        node: String,
        #[source]
        source: InstallError,
    },
    #[error("Node {node}, step 5 (egress IPs): {source}")]
    Addresses {
        node: String,
        #[source]
        source: AddressError,
    },
    #[error("Node {node}, step 6 (removing the SNAT rules of given-up IPs): {source}")]
    FinalSnat {
        node: String,
        #[source]
        source: IptablesError,
    },
}

/// Where egress IPs go: the configured device, else `host::addresses`' default choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceChoice {
    pub configured: Option<String>,
    /// The transport interface (fallback when the kernel has no dummy driver).
    pub transport: String,
}

/// What one apply did, and what it did not achieve for single egress IPs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Problems with one egress IP (no mark, address, advertisement), by IP.
    pub ip_errors: BTreeMap<IpAddr, String>,
    /// IPs added to the device by this apply (each was advertised once).
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

impl ApplyReport {
    /// `plan.statuses` with every Egress whose IP failed here turned into `IPAssigned=False`
    /// (reason `AssignmentError`, the error as message); the others are unchanged.
    pub fn statuses(&self, plan: &NodePlan) -> BTreeMap<String, EgressStatus> {
        let mut statuses = plan.statuses.clone();
        for status in statuses.values_mut() {
            let error = status
                .egress_ip
                .parse::<IpAddr>()
                .ok()
                .and_then(|ip| self.ip_errors.get(&ip));
            if let Some(error) = error {
                status.ip_assigned = Some(Condition::assignment_error(error));
            }
        }
        statuses
    }
}

/// The host side of one Node's Egress, between applies. Plain data: it may move between
/// threads, but each phase must run on a thread in the Node's network namespace, inside a tokio
/// runtime.
#[derive(Debug)]
pub struct EgressHost {
    iptables: Applier,
    device: DeviceChoice,
    /// The SNAT entries of the last apply.
    entries: Vec<SnatEntry>,
    /// OVS's tunnel neighbour cache, kept right on the userspace datapath only.
    tunnels: Option<TunnelNeighbours>,
    /// Valid lifetime (seconds) of the egress IPs this Node adds; `None`: forever.
    lease: Option<u32>,
    /// The IPs the last apply held, whose leases the renewal task extends.
    held: tokio::sync::watch::Sender<BTreeSet<IpAddr>>,
}

/// Proof that [`EgressHost::prepare`] ran: the caller installs the plan's flows, then hands
/// this to [`EgressHost::finish`].
#[must_use = "install the flows, then call EgressHost::finish"]
#[derive(Debug)]
pub struct FlowsDue {
    report: ApplyReport,
}

impl EgressHost {
    pub fn new(config: SnatConfig, device: DeviceChoice) -> EgressHost {
        EgressHost {
            iptables: Applier::new(config),
            device,
            entries: Vec::new(),
            tunnels: None,
            lease: None,
            held: tokio::sync::watch::channel(BTreeSet::new()).0,
        }
    }

    /// Adds egress IPs with a valid lifetime of `seconds` (0: forever), to be renewed with
    /// [`EgressHost::renew_leases`].
    pub fn with_lease(mut self, seconds: u32) -> EgressHost {
        self.lease = (seconds > 0).then_some(seconds);
        self
    }

    /// Starts the task that renews the lease of every egress IP the last apply held, every
    /// quarter of the lifetime, apart from applies (a long apply must not let leases run out).
    /// It reports the IPs found gone (their lease ran out while this agent could not renew it,
    /// e.g. frozen) on the returned channel; it never adds one. `None` without a lease. Must be
    /// called on a thread in the Node's network namespace, inside a tokio runtime.
    pub fn start_lease_renewal(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Vec<IpAddr>>>, AddressError> {
        let Some(lease) = self.lease else {
            return Ok(None);
        };
        let addresses = Addresses::connect()?;
        let device = self.device.clone();
        let mut held = self.held.subscribe();
        let (lost_tx, lost_rx) = tokio::sync::mpsc::channel(4);
        let every = std::time::Duration::from_millis(u64::from(lease) * 250);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ips = held.borrow_and_update().clone();
                if ips.is_empty() {
                    continue;
                }
                let renewed = async {
                    let link = addresses
                        .choose_device(device.configured.as_deref(), &device.transport)
                        .await?;
                    addresses.renew(&link, &ips, lease).await
                };
                match renewed.await {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(missing) => {
                        tracing::warn!(?missing, "egress IP lease ran out before it was renewed");
                        if lost_tx.send(missing).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "egress IP leases not renewed"),
                }
                if lost_tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Some(lost_rx))
    }

    /// Also keeps `tunnels` right after every apply and check (the userspace datapath, where OVS
    /// resolves tunnel destinations from its own cache).
    pub fn with_tunnel_neighbours(mut self, tunnels: TunnelNeighbours) -> EgressHost {
        self.tunnels = Some(tunnels);
        self
    }

    /// The other Nodes' transport IPs by Node name (where tunnelled egress traffic goes).
    pub fn set_remote_transport_ips(&mut self, transport_ips: BTreeMap<String, IpAddr>) {
        if let Some(tunnels) = &mut self.tunnels {
            tunnels.set_transport_ips(transport_ips);
        }
    }

    /// Our iptables chains made to hold `entries`; a write is timed for the metrics.
    async fn apply_snat(&mut self, entries: &[SnatEntry]) -> Result<(), IptablesError> {
        let started = std::time::Instant::now();
        if !self.iptables.apply(entries).await?.is_empty() {
            crate::metrics::agent::metrics()
                .iptables_apply
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Step 1: the SNAT rules of `plan` beside the old ones (an old entry whose mark or IP is
    /// reused is replaced). On error nothing else may run: the flows must not send traffic to
    /// rules that do not exist.
    pub async fn prepare(&mut self, plan: &NodePlan) -> Result<FlowsDue, ApplyError> {
        let wanted = snat_entries(plan);
        let mut both = wanted.clone();
        both.extend(
            self.entries
                .iter()
                .filter(|old| !wanted.iter().any(|w| w.ip == old.ip || w.mark == old.mark)),
        );
        match self.apply_snat(&both).await {
            Ok(_) => Ok(FlowsDue {
                report: ApplyReport::default(),
            }),
            Err(source) => Err(ApplyError::Snat {
                node: plan.node.clone(),
                source,
            }),
        }
    }

    /// Steps 3–6, once the flows of `plan` are installed: point OVS's tunnel neighbours at the
    /// new owners of remote egress IPs (failures logged only), add and advertise the IPs the
    /// Node now holds, remove those it gave up, and only then the SNAT rules of IPs it gave up.
    pub async fn finish(
        &mut self,
        due: FlowsDue,
        plan: &NodePlan,
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = due.report;
        if let Some(tunnels) = &mut self.tunnels {
            for error in tunnels.refresh(plan).await {
                tracing::warn!(node = %plan.node, %error, "tunnel neighbour not refreshed");
            }
        }
        let node = || plan.node.clone();
        let addresses = Addresses::connect().map_err(|source| ApplyError::Addresses {
            node: node(),
            source,
        })?;
        self.sync_addresses(&addresses, plan, &mut report)
            .await
            .map_err(|source| ApplyError::Addresses {
                node: node(),
                source,
            })?;
        let wanted = snat_entries(plan);
        self.apply_snat(&wanted)
            .await
            .map_err(|source| ApplyError::FinalSnat {
                node: node(),
                source,
            })?;
        self.entries = wanted;
        let held: BTreeSet<IpAddr> = plan
            .hold_ips
            .iter()
            .filter(|ip| !report.ip_errors.contains_key(ip))
            .copied()
            .collect();
        self.held
            .send_if_modified(|old| std::mem::replace(old, held.clone()) != held);
        for (ip, error) in &report.ip_errors {
            tracing::warn!(node = %plan.node, %ip, %error, "egress IP not applied");
        }
        Ok(report)
    }

    /// Adds and advertises the held IPs and removes the others; a failure of one IP lands in
    /// `report`, a failure to list the device's IPs is returned.
    async fn sync_addresses(
        &self,
        addresses: &Addresses,
        plan: &NodePlan,
        report: &mut ApplyReport,
    ) -> Result<(), AddressError> {
        let link = match addresses
            .choose_device(self.device.configured.as_deref(), &self.device.transport)
            .await
        {
            Ok(link) => link,
            Err(e) => {
                for ip in &plan.hold_ips {
                    report.ip_errors.insert(*ip, e.to_string());
                }
                return Ok(());
            }
        };
        for ip in &plan.hold_ips {
            match addresses.add_leased(&link, *ip, self.lease).await {
                Ok(Added::New) => report.added.push(*ip),
                Ok(Added::AlreadyOwned | Added::AlreadyStatic) => {}
                Err(e) => {
                    report.ip_errors.insert(*ip, e.to_string());
                }
            }
        }
        for (ip, error) in advertise_all(&link, &report.added) {
            report.ip_errors.insert(ip, error);
        }
        remove_given_up(addresses, &link, &plan.hold_ips, report).await
    }
}

/// How many advertisements are sent at once.
const ADVERTISE_PARALLEL: usize = 32;

/// One advertisement per IP, several at a time: each opens and closes its own AF_PACKET socket,
/// and closing one waits for an RCU grace period (~17 ms measured), which one by one would
/// add seconds to a Node taking 200 IPs. The threads are scoped and inherit the calling
/// thread's network namespace. Returns the failures.
fn advertise_all(link: &Link, ips: &[IpAddr]) -> Vec<(IpAddr, String)> {
    let mut failures = Vec::new();
    for chunk in ips.chunks(ADVERTISE_PARALLEL) {
        std::thread::scope(|scope| {
            let sends: Vec<_> = chunk
                .iter()
                .map(|ip| (*ip, scope.spawn(move || advertise(link, *ip))))
                .collect();
            for (ip, send) in sends {
                match send.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push((ip, e.to_string())),
                    Err(_) => failures.push((ip, "advertisement thread panicked".to_string())),
                }
            }
        });
    }
    failures
}

async fn remove_given_up(
    addresses: &Addresses,
    link: &Link,
    held: &BTreeSet<IpAddr>,
    report: &mut ApplyReport,
) -> Result<(), AddressError> {
    let owned = addresses.owned(link).await?;
    for ip in owned.difference(held) {
        match addresses.remove(link, *ip).await {
            Ok(_) => report.removed.push(*ip),
            Err(e) => {
                report.ip_errors.insert(*ip, e.to_string());
            }
        }
    }
    Ok(())
}

impl EgressHost {
    /// Reads the SNAT rules back and repairs them (on start and periodically), and re-points
    /// tunnel neighbours that differ from their owner's known MAC (failures logged only).
    pub async fn verify(&mut self) -> Result<(), IptablesError> {
        if let Some(tunnels) = &mut self.tunnels {
            for error in tunnels.verify().await {
                tracing::warn!(%error, "tunnel neighbour not verified");
            }
        }
        self.iptables.verify().await.map(drop)
    }
}

/// Egress IPs the flows cannot carry, with why (they fail their Egresses' `IPAssigned`).
fn unprogrammed_ips(flows: &EgressFlows) -> impl Iterator<Item = (IpAddr, String)> + '_ {
    flows.unprogrammed.iter().filter_map(|u| match u {
        Unprogrammed::NoMark { ip } => Some((*ip, u.to_string())),
        Unprogrammed::PodNotAttached { .. } => None,
    })
}

/// Applies a Node's Egress plans: the host side ([`EgressHost`]) and the Egress flows through
/// the Node's datapath runtime ([`DatapathHandle`]). Each phase of the host side runs on the
/// calling thread, which must be in the Node's network namespace, inside a tokio runtime.
pub struct EgressApplier {
    host: EgressHost,
    datapath: DatapathHandle,
    /// The flows and acknowledgements last handed to the runtime.
    last: Option<(Vec<Flow>, PortAcks)>,
    /// The bound of step 3.
    pub install_timeout: Duration,
}

impl EgressApplier {
    pub fn new(host: EgressHost, datapath: DatapathHandle) -> EgressApplier {
        EgressApplier {
            host,
            datapath,
            last: None,
            install_timeout: INSTALL_TIMEOUT,
        }
    }

    /// The host side (to update the other Nodes' transport IPs, or verify).
    pub fn host_mut(&mut self) -> &mut EgressHost {
        &mut self.host
    }

    /// Applies `plan` with the Egress flows `ctx` gives it, in make-before-break order (see the
    /// module doc); `acks` are the Pod ports the runtime may acknowledge once those flows are
    /// installed. On success the report lists per-IP failures (use [`ApplyReport::statuses`]).
    pub async fn apply(
        &mut self,
        plan: &NodePlan,
        ctx: &EgressContext,
        acks: PortAcks,
    ) -> Result<ApplyReport, ApplyError> {
        let flows = egress_flows(plan, ctx);
        let due = self.host.prepare(plan).await?;
        self.last = Some((flows.flows.clone(), acks.clone()));
        let generation = self
            .datapath
            .set_extra_flows_and_acks(flows.flows.clone(), acks);
        self.datapath
            .wait_installed(generation, self.install_timeout)
            .await
            .map_err(|source| ApplyError::Flows {
                node: plan.node.clone(),
                source,
            })?;
        let mut report = self.host.finish(due, plan).await?;
        for (ip, error) in unprogrammed_ips(&flows) {
            report.ip_errors.entry(ip).or_insert(error);
        }
        Ok(report)
    }

    /// Re-derives the Egress flows of the last applied `plan` after a change that does not
    /// touch the host side (a Pod port, a Node, the settled Pods): a new input generation
    /// for the runtime, not awaited; nothing when the flows and acknowledgements are unchanged.
    pub fn refresh_flows(&mut self, plan: &NodePlan, ctx: &EgressContext, acks: PortAcks) {
        let wanted = (egress_flows(plan, ctx).flows, acks);
        if self.last.as_ref() != Some(&wanted) {
            self.datapath
                .set_extra_flows_and_acks(wanted.0.clone(), wanted.1.clone());
            self.last = Some(wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_core::plan::{ConditionStatus, Reason, SnatRule};

    fn status(ip: &str) -> EgressStatus {
        EgressStatus {
            egress_node: "node-1".into(),
            egress_ip: ip.into(),
            ip_assigned: Some(Condition::assigned()),
            writer: true,
        }
    }

    #[test]
    fn an_ip_error_fails_only_the_egresses_using_that_ip() {
        let plan = NodePlan {
            statuses: BTreeMap::from([
                ("bad".to_string(), status("172.30.0.100")),
                ("good".to_string(), status("172.30.0.101")),
                ("none".to_string(), status("")),
            ]),
            ..NodePlan::default()
        };
        let report = ApplyReport {
            ip_errors: BTreeMap::from([(
                "172.30.0.100".parse().unwrap(),
                "egress device \"nope0\" does not exist".to_string(),
            )]),
            ..ApplyReport::default()
        };
        let statuses = report.statuses(&plan);
        let bad = statuses["bad"].ip_assigned.as_ref().unwrap();
        assert_eq!(bad.status, ConditionStatus::False);
        assert_eq!(bad.reason, Reason::AssignmentError);
        assert!(
            bad.message
                .ends_with("egress device \"nope0\" does not exist")
        );
        assert_eq!(statuses["good"], plan.statuses["good"]);
        assert_eq!(statuses["none"], plan.statuses["none"]);
    }

    #[test]
    fn snat_entries_carry_the_plan_marks_and_never_mark_zero() {
        let plan = NodePlan {
            snat_rules: vec![
                SnatRule {
                    ip: "172.30.0.99".parse().unwrap(),
                    mark: 0,
                },
                SnatRule {
                    ip: "172.30.0.100".parse().unwrap(),
                    mark: 7,
                },
            ],
            ..NodePlan::default()
        };
        let entries = snat_entries(&plan);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].mark.get(), 7);
        assert_eq!(entries[0].ip, "172.30.0.100".parse::<IpAddr>().unwrap());
    }
}
