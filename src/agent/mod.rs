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
pub mod inspect;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::api::v1beta1;
use crate::host::local_ips;
use crate::kube::passes::Passes;
use crate::kube::{events, health, reflect, status};
use crate::membership;
use crate::plan::{self, EgressStatus, NodePlan};
use config::{AgentArgs, AgentConfig};
use view::Stores;

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
    };
    run_inner(args, config, datapath, outputs).await
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
    };
    run_inner(args, config, datapath, outputs).await
}

/// What the agent loop tells the datapath besides plans, and the datapath's readiness.
struct Outputs {
    /// The view's Nodes, published before each plan is handed over.
    nodes: watch::Sender<Vec<crate::model::Node>>,
    /// The local Pods the applied plan has decided, published after it is applied.
    decided: watch::Sender<BTreeSet<String>>,
    datapath_ready: watch::Receiver<bool>,
    /// What the datapath programmed for the last plan (for `/plan`).
    programmed: watch::Receiver<Option<Arc<datapath::Programmed>>>,
    /// Whether to run the membership (else every Node counts alive).
    membership: bool,
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
    let client = crate::kube::client(args.kubeconfig.as_deref(), false).await?;
    let local_ips = local_ips::watch_local_ips()
        .await
        .context("watching this Node's IP addresses")?;

    let changed = Arc::new(Notify::new());
    let membership = membership.then(|| {
        let secret = &config.membership.key_secret;
        let keys = membership::secret::watch_keys(client.clone(), &secret.namespace, &secret.name);
        let settings = config.membership_settings(&args.node_name);
        tracing::info!(?settings, secret = %format!("{}/{}", secret.namespace, secret.name), "membership");
        membership::start(settings, nodes.subscribe(), keys, changed.clone())
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
        result = looper.run(&stores, local_ips, Passes::new(changed)) => result,
    }
}

struct Loop {
    node: String,
    config: AgentConfig,
    egresses: Api<v1beta1::Egress>,
    events: events::Events,
    datapath: Datapath,
    /// The view's Nodes, for the datapath (remote Nodes, this Node's Pod CIDR).
    nodes: watch::Sender<Vec<crate::model::Node>>,
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
        mut local_ips: watch::Receiver<std::collections::BTreeSet<std::net::IpAddr>>,
        mut passes: Passes,
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
        let metrics = crate::metrics::agent::metrics();
        let mut views = view::Views::new();
        loop {
            if let Some(result) = passes.next(local_ips.changed()).await {
                result.context("the local IP watch stopped")?;
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
            let plan = plan::compute(&snapshot.view, &self.node, previous.as_deref());
            if previous.as_deref() != Some(&plan) || applied.is_none() {
                let seen = *unrealized_since.get_or_insert(passes.woken_at());
                let plan = Arc::new(plan);
                applied = self.apply(plan.clone()).await?;
                if let Some(statuses) = &applied {
                    metrics.observe_realization(seen.elapsed().as_secs_f64());
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
            if let Some(alive) = &snapshot.view.alive {
                taken = events::taken_over(&self.node, &changes, &snapshot.statuses, alive);
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
            for change in changes {
                let exists = snapshot
                    .view
                    .egresses
                    .iter()
                    .any(|e| e.name == change.egress);
                let taken_over = taken.contains_key(&change.egress);
                let reason =
                    crate::metrics::agent::change_reason(change.assigned, exists, taken_over);
                metrics.count_change(change.assigned, reason);
                self.events.publish(&change).await;
            }
            held = Some(now_held);
            passes.done(failures == 0);
        }
    }

    /// Publishes the applied `plan` for `/plan` and the derived metrics (clones of the view's
    /// Nodes and Egresses, once per applied plan).
    fn publish(
        &self,
        plan: &Arc<NodePlan>,
        statuses: &BTreeMap<String, EgressStatus>,
        view: &crate::model::ClusterView,
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
        cached: &BTreeMap<String, crate::api::EgressStatus>,
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
