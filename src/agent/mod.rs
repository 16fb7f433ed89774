//! `ovs-egress agent`: the per-Node process. Reflectors on Egresses, ExternalIPPools, Nodes,
//! Namespaces and this Node's Pods, plus the netlink watch of the Node's IPs, feed one
//! `ClusterView`; a debounced loop runs `plan::compute`, hands each new `NodePlan` to the
//! datapath ([`Datapath`], a channel: the datapath answers with the statuses it realized; the
//! real one is [`datapath::start`], `--no-datapath` selects [`datapath::status_only`]), then
//! writes the status of the Egresses this Node is the writer of and emits
//! `IPAssigned`/`IPUnassigned` events from those statuses. Once a plan is applied it tells the
//! datapath which local Pods that plan has decided (`plan::membership::decided_pods`; [`acks`]
//! turns them into ports), so the datapath acknowledges their ports to the CNI plugin only when
//! their Egress flows are in place.
//!
//! The health server also serves `/metrics` (`metrics::agent`: the loop counts assignments and
//! releases and times each realization, input change seen → plan applied) and `/plan`
//! ([`inspect`]: the applied plan as `render --json` prints it).
//!
//! With the real datapath the agent runs the Node membership ([`crate::membership`], keys from
//! the Secret of `membership.keySecret`): its alive set is the view's `alive`, so placement moves
//! IPs away from Nodes that are gone, and its changes wake the loop. When a Node takes an IP from
//! one that is gone it also emits the `IPUnassigned` event for that Node.
//!
//! With the membership running, a pool IP that placement moves from this Node to another alive
//! one (selector, labels, capacity, drain) stays here until that Node's status announces it
//! (`handover::Keeping`, `plan::compute_keeping`), at most `egress.handOverTimeout`.
//!
//! On SIGTERM (or SIGINT) with the membership running, the agent hands its egress IPs over
//! ([`handover`]): it leaves the membership (a goodbye, so the others take it out of placement
//! at once), keeps its IPs until their next holders have announced them or
//! `egress.handOverTimeout` has passed, then applies the plan without them, says
//! `IPUnassigned` itself, and exits. Without the membership it exits at once.
//!
//! `/readyz` is true while the last plan handed over was applied and the datapath reports
//! ready (OVS up, flows installed): it goes false while OVS is away or an apply failed, and
//! true again once repaired.
//!
//! It must never decide anything itself (the plan does) and never fail because the API server
//! is away: watches retry with back-off, and no plan is handed over before every cache has
//! synced, so the datapath keeps what it has until then.

pub mod acks;
pub mod config;
pub mod datapath;
pub mod handover;
pub mod inspect;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::membership;
use config::{AgentArgs, AgentConfig};
use ovs_egress_core::api::v1beta1;
use ovs_egress_core::plan::{self, EgressStatus, NodePlan};
use ovs_egress_host::local_ips;
use ovs_egress_kube::passes::Passes;
use ovs_egress_kube::{events, health, reflect, status};
use view::Stores;

/// How long a stopping agent waits for the plan without its IPs to be applied.
const FINAL_APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One new plan for the datapath. The datapath applies it and answers on `applied` with the
/// statuses to report (the plan's, with `IPAssigned=False` for what it could not realize);
/// dropping `applied` means "not applied, try again later".
pub struct PlanRequest {
    pub plan: Arc<NodePlan>,
    pub applied: oneshot::Sender<BTreeMap<String, EgressStatus>>,
}

/// Where the agent sends plans: the datapath's input.
pub type Datapath = mpsc::Sender<PlanRequest>;

/// Run the agent with its command-line flags until the process is killed: with the real
/// datapath, or status-only with `--no-datapath`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let (nodes, nodes_rx) = watch::channel(Vec::new());
    let (decided, decided_rx) = watch::channel(BTreeSet::new());
    let started = if args.no_datapath {
        datapath::Started {
            plans: datapath::status_only(),
            ready: watch::channel(true).1,
            programmed: watch::channel(None).1,
        }
    } else {
        let rundir = args.ovs_rundir.clone();
        let node = args.node_name.clone();
        datapath::start(node, config.clone(), rundir, nodes_rx, decided_rx)
    };
    let datapath = started.plans;
    let outputs = Outputs {
        nodes,
        decided,
        datapath_ready: started.ready,
        programmed: started.programmed,
        // Status-only mode claims no IP, so it needs no membership: every Node counts alive.
        membership: !args.no_datapath,
        terminate: terminate_on_signal(),
    };
    run_inner(args, config, datapath, outputs).await
}

/// Turns true on SIGTERM (the kubelet stopping the Pod) or SIGINT. When the handlers cannot be
/// installed the signals keep their default action (the process ends at once), as before.
fn terminate_on_signal() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "stopping");
                tx.send_replace(true);
                // Keep the handlers (and the channel) for the rest of the process.
                std::future::pending::<()>().await;
            });
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "cannot handle SIGTERM: stopping will not hand egress IPs over");
        }
    }
    rx
}

/// Run the agent, handing every new plan to `datapath` and reporting what it applied.
pub async fn run_with(
    args: AgentArgs,
    config: AgentConfig,
    datapath: Datapath,
) -> anyhow::Result<()> {
    let outputs = Outputs {
        nodes: watch::channel(Vec::new()).0,
        decided: watch::channel(BTreeSet::new()).0,
        datapath_ready: watch::channel(true).1,
        programmed: watch::channel(None).1,
        membership: false,
        terminate: watch::channel(false).1,
    };
    run_inner(args, config, datapath, outputs).await
}

/// What the agent loop tells the datapath besides plans, and the datapath's readiness.
struct Outputs {
    /// The view's Nodes, published before each plan is handed over.
    nodes: watch::Sender<Vec<ovs_egress_core::model::Node>>,
    /// The local Pods the applied plan has decided, published after it is applied.
    decided: watch::Sender<BTreeSet<String>>,
    datapath_ready: watch::Receiver<bool>,
    /// What the datapath programmed for the last plan (for `/plan`).
    programmed: watch::Receiver<Option<Arc<datapath::Programmed>>>,
    /// Whether to run the membership (else every Node counts alive).
    membership: bool,
    /// Turns true when the agent is to stop (SIGTERM).
    terminate: watch::Receiver<bool>,
}

/// [`run_with`] with the datapath's side channels.
async fn run_inner(
    args: AgentArgs,
    config: AgentConfig,
    datapath: Datapath,
    outputs: Outputs,
) -> anyhow::Result<()> {
    let metrics = crate::metrics::route(Arc::new(crate::metrics::agent::registry()));
    if !config.feature_gates.egress {
        return health::serve_disabled(args.health_listen, "agent", metrics).await;
    }
    let Outputs {
        nodes,
        decided,
        datapath_ready,
        programmed,
        membership,
        terminate,
    } = outputs;
    let (ready_tx, ready_rx) = watch::channel(false);
    let (applied_tx, applied_rx) = watch::channel(false);
    let (published_tx, published_rx) = watch::channel(None);
    let routes = metrics.merge(inspect::route(inspect::PlanState {
        applied: published_rx,
        programmed,
        options: datapath::egress_options(&config),
    }));
    tokio::spawn(health::all_of(vec![applied_rx, datapath_ready], ready_tx));
    let health = tokio::spawn(health::serve(args.health_listen, ready_rx, routes));
    let client = ovs_egress_kube::client(args.kubeconfig.as_deref(), false).await?;
    let local_ips = local_ips::watch_local_ips()
        .await
        .context("watching this Node's IP addresses")?;

    let changed = Arc::new(Notify::new());
    let membership = membership.then(|| {
        let secret = &config.membership.key_secret;
        let keys = membership::secret::watch_keys(client.clone(), &secret.namespace, &secret.name);
        let settings = config.membership_settings(&args.node_name);
        tracing::info!(?settings, secret = %format!("{}/{}", secret.namespace, secret.name), "membership");
        let state = membership::start(
            settings,
            nodes.subscribe(),
            keys,
            terminate.clone(),
            changed.clone(),
        );
        crate::metrics::agent::metrics().set_membership(state.clone());
        state
    });
    let all = watcher::Config::default;
    let reflectors = reflect::Reflectors {
        client: client.clone(),
        changed: changed.clone(),
        retry_max: args.api_retry.max_delay(),
    };
    let stores = Stores {
        egresses: reflectors.spawn::<v1beta1::Egress>(all()),
        pools: reflectors.spawn::<v1beta1::ExternalIPPool>(all()),
        nodes: reflectors.spawn::<Node>(all()),
        namespaces: reflectors.spawn::<Namespace>(all()),
        pods: reflectors.spawn::<Pod>(all().fields(&format!("spec.nodeName={}", args.node_name))),
    };
    let looper = Loop {
        node: args.node_name.clone(),
        config,
        egresses: Api::all(client.clone()),
        events: events::Events::new(client, &args.node_name),
        datapath,
        nodes,
        decided,
        applied: applied_tx,
        published: published_tx,
        membership,
    };
    tokio::select! {
        result = health => result.context("health server task")?
            .with_context(|| format!("serving health on {}", args.health_listen)),
        result = looper.run(&stores, local_ips, Passes::new(changed), terminate) => result,
    }
}

struct Loop {
    node: String,
    config: AgentConfig,
    egresses: Api<v1beta1::Egress>,
    events: events::Events,
    datapath: Datapath,
    /// The view's Nodes, for the datapath (remote Nodes, this Node's Pod CIDR).
    nodes: watch::Sender<Vec<ovs_egress_core::model::Node>>,
    /// The local Pods whose Egress the applied plan has decided (`plan::membership::decided_pods`),
    /// published only once that plan is applied.
    decided: watch::Sender<BTreeSet<String>>,
    /// Whether the last plan handed over was applied (half of `/readyz`).
    applied: watch::Sender<bool>,
    /// The last applied plan with its view, for `/plan`.
    published: watch::Sender<Option<Arc<inspect::AppliedPlan>>>,
    /// The Nodes alive for placement; `None`: every Node.
    membership: Option<watch::Receiver<membership::State>>,
}

impl Loop {
    async fn run(
        self,
        stores: &Stores,
        mut local_ips: watch::Receiver<BTreeSet<IpAddr>>,
        mut passes: Passes,
        mut terminate: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        stores.wait_until_ready().await?;
        tracing::info!(node = %self.node, "caches synced");
        let mut previous: Option<Arc<NodePlan>> = None;
        // The statuses the datapath reported for `previous`, once it applied it.
        let mut applied: Option<BTreeMap<String, EgressStatus>> = None;
        // What this Node held when last announced; at start, what the API says it holds.
        let mut held = None;
        // When the input change behind the plan not yet applied was seen.
        let mut unrealized_since: Option<std::time::Instant> = None;
        // Pool IPs moving to another Node, kept here until it has announced them.
        let mut keeping = handover::Keeping::new(self.config.egress.hand_over_timeout.0);
        let metrics = crate::metrics::agent::metrics();
        let mut views = view::Views::new();
        loop {
            let woken = passes.next(async {
                tokio::select! {
                    changed = local_ips.changed() => changed.is_ok(),
                    _ = terminate.wait_for(|stop| *stop) => true,
                }
            });
            if woken.await == Some(false) {
                anyhow::bail!("the local IP watch stopped");
            }
            if *terminate.borrow() {
                let mine = applied
                    .as_ref()
                    .map(|statuses| {
                        let uids = stores.snapshot(BTreeSet::new(), &self.config).uids;
                        events::held(&self.node, statuses, &uids)
                    })
                    .unwrap_or_default();
                return self
                    .hand_over(stores, &local_ips, passes, previous, mine)
                    .await;
            }
            let ips = local_ips.borrow_and_update().clone();
            let snapshot = views.refresh(stores, ips, &self.config);
            self.nodes.send_if_modified(|nodes| {
                let changed = *nodes != snapshot.view.nodes;
                if changed {
                    nodes.clone_from(&snapshot.view.nodes);
                }
                changed
            });
            if let Some(membership) = &self.membership {
                let state = membership.borrow().clone();
                if !state.settled {
                    // Keep what the datapath holds until the membership has heard from the
                    // other Nodes (or the join grace is over); its change wakes this loop.
                    passes.done(false);
                    continue;
                }
                snapshot.view.alive = Some(state.alive);
            }
            let mut plan = plan::compute(&snapshot.view, &self.node, previous.as_deref());
            let kept = match (&snapshot.view.alive, &previous) {
                (Some(alive), Some(before)) => keeping.keep(
                    &self.node,
                    &before.hold_ips,
                    &plan,
                    alive,
                    &snapshot.statuses,
                    Instant::now(),
                ),
                _ => BTreeSet::new(),
            };
            if !kept.is_empty() {
                tracing::info!(
                    ?kept,
                    "keeping egress IPs until their next holders announce them"
                );
                plan =
                    plan::compute_keeping(&snapshot.view, &self.node, previous.as_deref(), &kept);
            }
            // How long the plan applied in this pass took from its input change seen.
            let mut realized = None;
            if previous.as_deref() != Some(&plan) || applied.is_none() {
                let seen = *unrealized_since.get_or_insert(passes.woken_at());
                let plan = Arc::new(plan);
                applied = self.apply(plan.clone()).await?;
                if let Some(statuses) = &applied {
                    let took = seen.elapsed().as_secs_f64();
                    realized = Some((took, Instant::now()));
                    metrics.observe_realization(took);
                    unrealized_since = None;
                    self.publish(&plan, statuses, &snapshot.view);
                }
                previous = Some(plan);
            }
            self.applied.send_if_modified(|ok| {
                let now = applied.is_some();
                std::mem::replace(ok, now) != now
            });
            let Some(statuses) = &applied else {
                passes.done(false);
                continue;
            };
            // The applied plan equals the one computed from this snapshot.
            let decided = plan::membership::decided_pods(&snapshot.view, &self.node);
            self.decided.send_if_modified(|old| {
                let changed = *old != decided;
                *old = decided;
                changed
            });
            let failures = self.write_statuses(statuses, &snapshot.statuses).await;
            let now_held = events::held(&self.node, statuses, &snapshot.uids);
            let before = held.get_or_insert_with(|| {
                events::held_in_api(&self.node, &snapshot.statuses, &snapshot.uids)
            });
            let changes = events::changes(before, &now_held);
            let mut taken = BTreeMap::new();
            let mut handed = BTreeMap::new();
            if let Some(alive) = &snapshot.view.alive {
                // A Node that said goodbye says IPUnassigned itself: only the others are taken
                // over (failover); IPs from the leavers were handed over (drain).
                let left = self
                    .membership
                    .as_ref()
                    .map(|m| m.borrow().left.clone())
                    .unwrap_or_default();
                let speaking: BTreeSet<String> = alive.union(&left).cloned().collect();
                taken = events::taken_over(&self.node, &changes, &snapshot.statuses, &speaking);
                handed = events::taken_over(&self.node, &changes, &snapshot.statuses, alive);
                handed.retain(|egress, _| !taken.contains_key(egress));
                for change in changes.iter().filter(|c| taken.contains_key(&c.egress)) {
                    let old = &taken[&change.egress];
                    let unassigned = events::Change {
                        assigned: false,
                        ..change.clone()
                    };
                    tracing::info!(egress = %change.egress, from = %old, "taking over an egress IP");
                    self.events.publish_for(&unassigned, old).await;
                }
            }
            let drained = |name: &str| {
                snapshot
                    .view
                    .nodes
                    .iter()
                    .any(|n| n.name == name && ovs_egress_core::placement::drained(n))
            };
            for change in changes {
                let exists = snapshot
                    .view
                    .egresses
                    .iter()
                    .any(|e| e.name == change.egress);
                let taken_over = taken.contains_key(&change.egress);
                // Released by a drained Node, or taken from one (its status still names it).
                let drained = if change.assigned {
                    snapshot
                        .statuses
                        .get(&change.egress)
                        .and_then(|s| s.egress_node.as_deref())
                        .is_some_and(|old| old != self.node && drained(old))
                } else {
                    exists && drained(&self.node)
                };
                let reason = crate::metrics::agent::change_reason(
                    change.assigned,
                    exists,
                    taken_over,
                    drained || handed.contains_key(&change.egress),
                );
                metrics.count_change(change.assigned, reason);
                if let (true, "failover", Some((took, at))) = (change.assigned, reason, realized) {
                    metrics.observe_failover(took);
                    let silent = self.membership.as_ref().and_then(|m| {
                        let old = taken.get(&change.egress)?;
                        m.borrow().silent_since.get(old).copied()
                    });
                    if let Some(silent) = silent {
                        metrics.observe_failover_since_contact(
                            at.saturating_duration_since(silent).as_secs_f64(),
                        );
                    }
                }
                self.events.publish(&change).await;
            }
            held = Some(now_held);
            // While IPs are kept, pass again soon: their time-out is not an input change.
            passes.done(failures == 0 && kept.is_empty());
        }
    }

    /// The hand-over on SIGTERM (see [`handover`]): keeps this Node's IPs (`mine`, as
    /// `events::held` gives them) until the Nodes that take them have announced them or the
    /// hand-over timeout has passed, then applies the plan without them, writes what this Node
    /// still writes, and says `IPUnassigned` for each. Without the membership it returns at once.
    async fn hand_over(
        &self,
        stores: &Stores,
        local_ips: &watch::Receiver<BTreeSet<IpAddr>>,
        mut passes: Passes,
        previous: Option<Arc<NodePlan>>,
        mine: BTreeMap<String, (String, Option<String>)>,
    ) -> anyhow::Result<()> {
        let Some(membership) = &self.membership else {
            return Ok(());
        };
        if mine.is_empty() {
            tracing::info!(node = %self.node, "stopping: this Node holds no egress IP");
            return Ok(());
        }
        let timeout = self.config.egress.hand_over_timeout.0;
        let began = Instant::now();
        let deadline = began + timeout;
        tracing::info!(node = %self.node, ips = ?mine.values().map(|(ip, _)| ip).collect::<Vec<_>>(), ?timeout,
            "stopping: handing egress IPs over to their next holders");
        loop {
            let ips = local_ips.borrow().clone();
            let mut snapshot = stores.snapshot(ips, &self.config);
            let mut alive = membership.borrow().alive.clone();
            alive.remove(&self.node);
            snapshot.view.alive = Some(alive);
            let plan = plan::compute(&snapshot.view, &self.node, previous.as_deref());
            let pending = handover::pending(&self.node, &mine, &plan, &snapshot.statuses);
            if !pending.is_empty() && Instant::now() < deadline {
                tokio::select! {
                    _ = passes.next(std::future::pending::<()>()) => {}
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
                continue;
            }
            if pending.is_empty() {
                tracing::info!(node = %self.node, after = ?began.elapsed(), "every egress IP handed over; removing them here");
            } else {
                tracing::warn!(node = %self.node, ?pending, ?timeout,
                    "hand-over timed out; removing the egress IPs anyway");
            }
            // OVS may be stopping beside the agent (a Pod deletion stops every container): the
            // flows would wait for it while the addresses, renewed meanwhile, stay beside the
            // next holders'. Exiting instead stops the renewals, and the leases remove them.
            let applied = tokio::time::timeout(FINAL_APPLY_TIMEOUT, self.apply(Arc::new(plan)));
            let Ok(Some(statuses)) = applied.await.unwrap_or(Ok(None)) else {
                tracing::warn!(node = %self.node, timeout = ?FINAL_APPLY_TIMEOUT,
                    "the plan without this Node's IPs was not applied; exiting, their leases run out");
                return Ok(());
            };
            self.write_statuses(&statuses, &snapshot.statuses).await;
            let now_held = events::held(&self.node, &statuses, &snapshot.uids);
            let metrics = crate::metrics::agent::metrics();
            for change in events::changes(&mine, &now_held) {
                metrics.count_change(change.assigned, "drain");
                self.events.publish(&change).await;
            }
            tracing::info!(node = %self.node, after = ?began.elapsed(), "hand-over done; exiting");
            return Ok(());
        }
    }

    /// Publishes the applied `plan` for `/plan` and the derived metrics (clones of the view's
    /// Nodes and Egresses, once per applied plan).
    fn publish(
        &self,
        plan: &Arc<NodePlan>,
        statuses: &BTreeMap<String, EgressStatus>,
        view: &ovs_egress_core::model::ClusterView,
    ) {
        let pools = view
            .egresses
            .iter()
            .filter_map(|e| {
                let pool = e.external_ip_pool.clone().filter(|p| !p.is_empty())?;
                Some((e.name.clone(), pool))
            })
            .collect();
        crate::metrics::agent::metrics().set_snapshot(Arc::new(
            crate::metrics::agent::PlanSnapshot {
                node: self.node.clone(),
                plan: plan.clone(),
                statuses: statuses.clone(),
                pools,
            },
        ));
        self.published
            .send_replace(Some(Arc::new(inspect::AppliedPlan {
                node: self.node.clone(),
                nodes: view.nodes.clone(),
                alive: view.alive.clone(),
                egresses: view.egresses.clone(),
                plan: plan.clone(),
            })));
    }

    /// Hand `plan` to the datapath and wait for its statuses; `None` when it did not apply it.
    async fn apply(
        &self,
        plan: Arc<NodePlan>,
    ) -> anyhow::Result<Option<BTreeMap<String, EgressStatus>>> {
        let (applied, answer) = oneshot::channel();
        self.datapath
            .send(PlanRequest { plan, applied })
            .await
            .map_err(|_| anyhow::anyhow!("the datapath stopped"))?;
        match answer.await {
            Ok(statuses) => Ok(Some(statuses)),
            Err(_) => {
                tracing::warn!(node = %self.node, "the datapath did not apply the plan, will retry");
                Ok(None)
            }
        }
    }

    /// Write the statuses this Node is the writer of that differ from the cached ones; returns
    /// how many writes failed.
    async fn write_statuses(
        &self,
        statuses: &BTreeMap<String, EgressStatus>,
        cached: &BTreeMap<String, ovs_egress_core::api::EgressStatus>,
    ) -> usize {
        let mut failures = 0;
        for (name, wanted) in statuses.iter().filter(|(_, s)| s.writer) {
            let current = cached.get(name).cloned().unwrap_or_default();
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            if status::updated(&current, wanted, now).is_none() {
                continue;
            }
            if let Err(error) = status::write(&self.egresses, name, wanted).await {
                tracing::warn!(egress = name, %error, "status write failed, will retry");
                failures += 1;
            }
        }
        failures
    }
}
