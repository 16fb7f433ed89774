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
    let (datapath, datapath_ready) = if args.no_datapath {
        (datapath::status_only(), watch::channel(true).1)
    } else {
        let rundir = args.ovs_rundir.clone();
        let node = args.node_name.clone();
        datapath::start(node, config.clone(), rundir, nodes_rx, decided_rx)
    };
    let outputs = Outputs {
        nodes,
        decided,
        datapath_ready,
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
}

/// [`run_with`] with the datapath's side channels.
async fn run_inner(
    args: AgentArgs,
    config: AgentConfig,
    datapath: Datapath,
    outputs: Outputs,
) -> anyhow::Result<()> {
    if !config.feature_gates.egress {
        return health::serve_disabled(args.health_listen, "agent").await;
    }
    let Outputs {
        nodes,
        decided,
        datapath_ready,
    } = outputs;
    let (ready_tx, ready_rx) = watch::channel(false);
    let (applied_tx, applied_rx) = watch::channel(false);
    tokio::spawn(health::all_of(vec![applied_rx, datapath_ready], ready_tx));
    let health = tokio::spawn(health::serve(args.health_listen, ready_rx));
    let client = crate::kube::client(args.kubeconfig.as_deref(), false).await?;
    let local_ips = local_ips::watch_local_ips()
        .await
        .context("watching this Node's IP addresses")?;

    let changed = Arc::new(Notify::new());
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
        loop {
            if let Some(result) = passes.next(local_ips.changed()).await {
                result.context("the local IP watch stopped")?;
            }
            let ips = local_ips.borrow_and_update().clone();
            let snapshot = stores.snapshot(ips, &self.config);
            self.nodes.send_if_modified(|nodes| {
                let changed = *nodes != snapshot.view.nodes;
                if changed {
                    nodes.clone_from(&snapshot.view.nodes);
                }
                changed
            });
            let plan = plan::compute(&snapshot.view, &self.node, previous.as_deref());
            if previous.as_deref() != Some(&plan) || applied.is_none() {
                let plan = Arc::new(plan);
                applied = self.apply(plan.clone()).await?;
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
            for change in events::changes(before, &now_held) {
                self.events.publish(&change).await;
            }
            held = Some(now_held);
            passes.done(failures == 0);
        }
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
