//! `ovs-egress agent`: the per-Node process. Reflectors on Egresses, ExternalIPPools, Nodes,
//! Namespaces and this Node's Pods, plus the netlink watch of the Node's IPs, feed one
//! `ClusterView`; a debounced loop runs `plan::compute` and hands each new `NodePlan` to the
//! datapath, writes the status of the Egresses this Node is the writer of, and emits
//! `IPAssigned`/`IPUnassigned` events.
//!
//! It must never decide anything itself (the plan does) and never fail because the API server
//! is away: watches retry with back-off, and no plan is handed over before every cache has
//! synced, so the datapath keeps what it has until then.

pub mod config;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::{Notify, watch};

use crate::api::v1beta1;
use crate::host::local_ips;
use crate::kube::{events, health, reflect, status};
use crate::plan::{self, NodePlan};
use config::{AgentArgs, AgentConfig};
use view::Stores;

/// Quiet time after a change before computing, to coalesce bursts.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Retry after a failed status write.
const RETRY: Duration = Duration::from_secs(1);
/// Recompute and re-check statuses even without changes.
const RESYNC: Duration = Duration::from_secs(60);

/// The latest plan for the datapath; `None` until the caches have synced.
pub type Plans = watch::Receiver<Option<Arc<NodePlan>>>;

/// Run the agent with its command-line flags until the process is killed. No datapath is
/// connected yet: plans are published on a channel nobody programs from (see [`run_with`]).
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let (plans_tx, _plans) = watch::channel(None);
    tracing::warn!("no datapath is connected to the agent yet: plans are computed, not programmed");
    run_with(args, config, plans_tx).await
}

/// Run the agent, publishing every new plan on `plans` (the datapath's input).
pub async fn run_with(
    args: AgentArgs,
    config: AgentConfig,
    plans: watch::Sender<Option<Arc<NodePlan>>>,
) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = watch::channel(false);
    let health = tokio::spawn(health::serve(args.health_listen, ready_rx));
    if !config.feature_gates.egress {
        tracing::warn!("feature gate Egress is disabled: the agent does nothing for Egress");
        ready_tx.send_replace(true);
        return health
            .await
            .context("health server task")?
            .with_context(|| format!("serving health on {}", args.health_listen));
    }
    let client = client(&args).await?;
    let local_ips = local_ips::watch_local_ips()
        .await
        .context("watching this Node's IP addresses")?;

    let changed = Arc::new(Notify::new());
    let all = watcher::Config::default;
    let stores = Stores {
        egresses: reflect::spawn::<v1beta1::Egress>(client.clone(), all(), changed.clone()),
        pools: reflect::spawn::<v1beta1::ExternalIPPool>(client.clone(), all(), changed.clone()),
        nodes: reflect::spawn::<Node>(client.clone(), all(), changed.clone()),
        namespaces: reflect::spawn::<Namespace>(client.clone(), all(), changed.clone()),
        pods: reflect::spawn::<Pod>(
            client.clone(),
            all().fields(&format!("spec.nodeName={}", args.node_name)),
            changed.clone(),
        ),
    };
    let looper = Loop {
        node: args.node_name.clone(),
        config,
        egresses: Api::all(client.clone()),
        events: events::Events::new(client, &args.node_name),
        plans,
        ready: ready_tx,
    };
    tokio::select! {
        result = health => result.context("health server task")?
            .with_context(|| format!("serving health on {}", args.health_listen)),
        result = looper.run(&stores, &changed, local_ips) => result,
    }
}

async fn client(args: &AgentArgs) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("inferring the Kubernetes client configuration")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

struct Loop {
    node: String,
    config: AgentConfig,
    egresses: Api<v1beta1::Egress>,
    events: events::Events,
    plans: watch::Sender<Option<Arc<NodePlan>>>,
    ready: watch::Sender<bool>,
}

impl Loop {
    async fn run(
        self,
        stores: &Stores,
        changed: &Notify,
        mut local_ips: watch::Receiver<std::collections::BTreeSet<std::net::IpAddr>>,
    ) -> anyhow::Result<()> {
        stores.wait_until_ready().await?;
        tracing::info!(node = %self.node, "caches synced");
        let mut previous: Option<Arc<NodePlan>> = None;
        let mut held = BTreeMap::new();
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = changed.notified() => {}
                result = local_ips.changed() => result.context("the local IP watch stopped")?,
                () = tokio::time::sleep(wait) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            let ips = local_ips.borrow_and_update().clone();
            let snapshot = stores.snapshot(ips, &self.config);
            let plan = plan::compute(&snapshot.view, &self.node, previous.as_deref());
            if previous.as_deref() != Some(&plan) {
                let plan = Arc::new(plan);
                self.plans.send_replace(Some(plan.clone()));
                previous = Some(plan);
            }
            let Some(plan) = previous.clone() else {
                continue;
            };
            let failures = self.write_statuses(&plan, &snapshot.statuses).await;
            let now_held = events::held(&plan, &snapshot.uids);
            for change in events::changes(&held, &now_held) {
                self.events.publish(&change).await;
            }
            held = now_held;
            if !*self.ready.borrow() {
                tracing::info!(node = %self.node, "first plan handed to the datapath: ready");
                self.ready.send_replace(true);
            }
            wait = if failures == 0 { RESYNC } else { RETRY };
        }
    }

    /// Write the statuses this Node is the writer of that differ from the cached ones; returns
    /// how many writes failed.
    async fn write_statuses(
        &self,
        plan: &NodePlan,
        cached: &BTreeMap<String, crate::api::EgressStatus>,
    ) -> usize {
        let mut failures = 0;
        for (name, wanted) in plan.statuses.iter().filter(|(_, s)| s.writer) {
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
