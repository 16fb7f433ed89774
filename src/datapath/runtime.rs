//! The event loop of [`NodeDatapath`](super::NodeDatapath): one task that owns every piece of
//! state (OVSDB replica, flow programmer, host handles), fed by the OVSDB monitor, the switch
//! watcher, the caller's inputs and a verification timer; changes are coalesced for
//! `debounce` and then reconciled level-triggered. Failures are retried with backoff and
//! reported through the status; nothing here panics or gives up while the runtime lives.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::desired::{desired_flows, node_routes};
use super::switch::{self, SwitchEvent};
use super::{
    DatapathConfig, DatapathInputs, DatapathStatus, INTERFACE_COLUMNS, PodPort, ROUND_KEY,
    Rejected, Wanted, pod_ports,
};
use crate::ovs::ofctl::{FlowProgrammer, Ofctl, OfctlError, next_round};
use ovs_egress_core::pipeline::{Flow, first_host};
use ovs_egress_host::routes::{NodeRoutes, RouteError};
use ovs_egress_ovsdb::bridge::pod_port_keys as keys;
use ovs_egress_ovsdb::bridge::{
    self, BridgeError, bridge_external_ids, update_bridge_external_ids,
};
use ovs_egress_ovsdb::{
    Client, ClientOptions, ConnState, MonitorEvent, MonitorSpec, MonitorStream, Mutation,
    Operation, OvsdbError, TableCache, Value,
};

/// Upper bound of the retry delay after a failed reconcile.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Flows(#[from] OfctlError),
    #[error("host side: {0}")]
    Host(#[from] RouteError),
    #[error("acknowledging the flows of Pod ports {ports}: {source}")]
    Ack { ports: String, source: OvsdbError },
}

/// Aborts a helper task when the runtime ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Runtime {
    cfg: DatapathConfig,
    client: Client,
    cache: TableCache,
    status: watch::Sender<DatapathStatus>,
    /// The Pod ports of the Interface replica, for the caller (`None` until the first snapshot).
    ports: watch::Sender<Option<Vec<PodPort>>>,
    /// A snapshot arrived since the last disconnect.
    ovsdb_up: bool,
    /// `ensure_bridge` succeeded in the current OVSDB session.
    bridge_ok: bool,
    switch_up: bool,
    /// The switch (or OVSDB) came back: compare everything with the switch and repair.
    reinstall: bool,
    verify_due: bool,
    /// The host side (gateway address, routes) needs a check: inputs changed, OVS came back,
    /// periodic verification, or the last attempt failed.
    host_due: bool,
    programmer: Option<FlowProgrammer>,
    /// The round found in `Bridge.external_ids` when this runtime started.
    previous_round: Option<u16>,
    /// The first full install is done and our round stored.
    round_stored: bool,
    routes: Option<NodeRoutes>,
    due: Option<Instant>,
    /// When flows last changed: a change within `debounce` of it waits for the window's end.
    last_change: Option<Instant>,
    failures: u32,
}

pub(super) async fn run(
    cfg: DatapathConfig,
    mut inputs: watch::Receiver<Wanted>,
    status: watch::Sender<DatapathStatus>,
    ports: watch::Sender<Option<Vec<PodPort>>>,
) {
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(5),
        backoff_min: MIN_BACKOFF,
        backoff_max: MAX_BACKOFF,
        ..ClientOptions::default()
    };
    let client = Client::start(&cfg.ovsdb_socket, opts);
    let mut conn = client.state();
    let mut monitor = start_monitor(&client).await;
    let (sw_tx, mut sw_rx) = mpsc::unbounded_channel();
    let _watcher = AbortOnDrop(tokio::spawn(switch::watch(cfg.mgmt_socket.clone(), sw_tx)));
    let mut verify = tokio::time::interval(cfg.verify_interval);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    verify.tick().await;
    let mut rt = Runtime {
        cfg,
        client,
        cache: TableCache::new(),
        status,
        ports,
        ovsdb_up: false,
        bridge_ok: false,
        switch_up: false,
        reinstall: false,
        verify_due: false,
        host_due: true,
        programmer: None,
        previous_round: None,
        round_stored: false,
        routes: None,
        due: None,
        last_change: None,
        failures: 0,
    };
    rt.on_conn(&conn.borrow_and_update().clone());
    loop {
        let due = rt.due;
        tokio::select! {
            ev = monitor.recv() => match ev {
                Some(ev) => rt.on_monitor(ev),
                None => return,
            },
            Some(ev) = sw_rx.recv() => rt.on_switch(ev),
            Ok(()) = inputs.changed() => {
                rt.host_due = true;
                rt.schedule_debounced();
            }
            Ok(()) = conn.changed() => {
                let state = conn.borrow_and_update().clone();
                rt.on_conn(&state);
            }
            _ = verify.tick() => {
                rt.verify_due = true;
                rt.host_due = true;
                rt.schedule(Duration::ZERO);
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let wanted = inputs.borrow_and_update().clone();
                rt.reconcile(&wanted).await;
            }
        }
    }
}

/// Registers the Interface monitor (it starts on the first connection if OVS is down).
async fn start_monitor(client: &Client) -> MonitorStream {
    let spec = MonitorSpec::new().table("Interface", &INTERFACE_COLUMNS);
    loop {
        match client.monitor(&spec).await {
            Ok(m) => return m,
            Err(e) => {
                tracing::error!(socket = %client.socket().display(), "OVSDB refused the Interface monitor: {e}; retrying");
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    }
}

impl Runtime {
    fn schedule(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Debounce with a leading edge: a change after a quiet period is applied at once; changes
    /// within `debounce` of the last flow change are coalesced until the window ends.
    fn schedule_debounced(&mut self) {
        let now = Instant::now();
        let at = self
            .last_change
            .map_or(now, |l| (l + self.cfg.debounce).max(now));
        self.schedule(at - now);
    }

    fn not_ready(&self, error: String) {
        self.status.send_if_modified(|s| {
            let changed = s.ready || s.error.as_ref() != Some(&error);
            s.ready = false;
            s.error = Some(error);
            changed
        });
    }

    fn on_conn(&mut self, state: &ConnState) {
        if let ConnState::Connecting { last_error } = state {
            let socket = self.client.socket().display().to_string();
            let why = last_error.as_deref().unwrap_or("not connected yet");
            let error = format!("OVSDB at {socket} is unreachable ({why}); retrying");
            if self.status.borrow().error.as_ref() != Some(&error) && last_error.is_some() {
                tracing::error!("{error}");
            }
            self.not_ready(error);
        }
    }

    fn on_monitor(&mut self, ev: MonitorEvent) {
        self.cache.apply(&ev);
        if !matches!(ev, MonitorEvent::Disconnected(_)) {
            let (ports, _) = pod_ports(&self.cache);
            self.ports.send_if_modified(|old| {
                let changed = old.as_ref() != Some(&ports);
                *old = Some(ports);
                changed
            });
        }
        match ev {
            MonitorEvent::Snapshot(_) => {
                self.ovsdb_up = true;
                self.bridge_ok = false;
                self.host_due = true;
                self.reinstall = self.programmer.is_some();
                self.schedule(Duration::ZERO);
            }
            MonitorEvent::Update(_) => self.schedule_debounced(),
            MonitorEvent::Disconnected(why) => {
                self.ovsdb_up = false;
                let socket = self.client.socket().display().to_string();
                tracing::error!("lost OVSDB at {socket}: {why}; reconnecting");
                self.not_ready(format!("lost OVSDB at {socket}: {why}"));
            }
        }
    }

    fn on_switch(&mut self, ev: SwitchEvent) {
        match ev {
            SwitchEvent::Up { generation } => {
                tracing::info!(bridge = %self.cfg.bridge.name, generation, "ovs-vswitchd serves the bridge");
                self.switch_up = true;
                self.host_due = true;
                self.reinstall = self.programmer.is_some();
                self.schedule(Duration::ZERO);
            }
            SwitchEvent::Down => {
                self.switch_up = false;
                let error = self.switch_down();
                tracing::error!("{error}");
                self.not_ready(error);
            }
        }
    }

    fn switch_down(&self) -> String {
        format!(
            "ovs-vswitchd does not serve bridge {} ({} unreachable); waiting for it",
            self.cfg.bridge.name,
            self.cfg.mgmt_socket.display()
        )
    }

    async fn reconcile(&mut self, wanted: &Wanted) {
        self.due = None;
        match self.step(wanted).await {
            Ok(()) => self.failures = 0,
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = MIN_BACKOFF
                    .saturating_mul(1 << self.failures.min(5))
                    .min(MAX_BACKOFF);
                tracing::error!(bridge = %self.cfg.bridge.name, "datapath reconcile failed: {e}; retrying in {backoff:?}");
                self.not_ready(e.to_string());
                self.schedule(backoff);
            }
        }
    }

    /// One reconcile: bridge, then flows, then host routes, then the acknowledgement of the Pod
    /// ports now complete. (Host state that must exist before flows point at it, such as Egress
    /// SNAT rules, belongs before the flow step.)
    async fn step(&mut self, wanted: &Wanted) -> Result<(), StepError> {
        let inputs = &wanted.inputs;
        if !self.ovsdb_up {
            return Ok(()); // on_conn / on_monitor reported why
        }
        if !self.bridge_ok {
            let report = bridge::ensure_bridge(&self.client, &self.cfg.bridge).await?;
            if report.changed() {
                tracing::info!(bridge = %self.cfg.bridge.name, writes = ?report.writes, "bridge set up");
            }
            self.bridge_ok = true;
        }
        if !self.switch_up {
            self.not_ready(self.switch_down());
            return Ok(());
        }
        if wanted.held {
            return Ok(()); // the caller's first inputs are not there yet
        }
        let (ports, bad) = pod_ports(&self.cache);
        for b in bad {
            tracing::warn!("skipping Pod port: {b}");
        }
        let (flows, pods) = desired_flows(&self.cfg, ports, inputs);
        if let Err(e) = self.program(&flows).await {
            let rejected = Rejected {
                generation: wanted.generation,
                error: e.to_string(),
            };
            self.status.send_modify(|s| s.rejected = Some(rejected));
            return Err(e);
        }
        self.status.send_if_modified(|s| {
            let changed = s.installed_generation != wanted.generation;
            s.installed_generation = wanted.generation;
            if s.rejected
                .as_ref()
                .is_some_and(|r| r.generation <= wanted.generation)
            {
                s.rejected = None;
            }
            changed
        });
        if self.host_due {
            self.host(inputs).await?;
            self.host_due = false;
        }
        let due: Vec<&PodPort> = pods
            .iter()
            .filter(|p| !p.acked && wanted.acks.covers(p))
            .collect();
        self.acknowledge(&due).await?;
        let flows = self
            .programmer
            .as_ref()
            .map_or(0, FlowProgrammer::owned_len);
        self.status.send_if_modified(|s| {
            let next = DatapathStatus {
                ready: true,
                error: None,
                round: self.programmer.as_ref().map(FlowProgrammer::round),
                flows,
                pods: pods.iter().map(|p| p.name.clone()).collect(),
                full_installs: s.full_installs,
                installed_generation: s.installed_generation,
                rejected: s.rejected.clone(),
            };
            let changed = *s != next;
            *s = next;
            changed
        });
        Ok(())
    }

    /// Installs `flows`. The first time: full install of a new round, then retire the previous
    /// round, store ours, clear `flow-restore-wait`. After a switch/OVSDB comeback: repair first.
    async fn program(&mut self, flows: &[Flow]) -> Result<(), StepError> {
        let p = match &mut self.programmer {
            Some(p) => p,
            slot @ None => {
                let ids = bridge_external_ids(&self.client, &self.cfg.bridge.name).await?;
                self.previous_round = ids.get(ROUND_KEY).and_then(|r| r.parse().ok());
                let round = next_round(self.previous_round);
                let ofctl = Ofctl::new(self.cfg.ofctl_target.clone());
                self.reinstall = false;
                slot.insert(FlowProgrammer::new(ofctl, round))
            }
        };
        if self.reinstall || self.verify_due {
            let repair = p.verify().await?;
            if repair != Default::default() {
                tracing::warn!(bridge = %self.cfg.bridge.name, ?repair, "repaired flows");
            }
            if self.reinstall {
                self.status.send_modify(|s| s.full_installs += 1);
            }
            self.reinstall = false;
            self.verify_due = false;
        }
        let change = p.sync(flows).await?;
        if !change.is_empty() {
            self.last_change = Some(Instant::now());
            tracing::debug!(bridge = %self.cfg.bridge.name, ?change, "flows synced");
        }
        if !self.round_stored {
            // Leftovers of a runtime that died before storing this same round: delete them.
            p.verify().await?;
            let round = p.round();
            if let Some(prev) = self.previous_round {
                p.retire_round(prev).await?;
            }
            let text = round.to_string();
            let br = &self.cfg.bridge.name;
            update_bridge_external_ids(&self.client, br, &[(ROUND_KEY, &text)], &[]).await?;
            if bridge::flow_restore_wait(&self.client).await? {
                bridge::clear_flow_restore_wait(&self.client).await?;
            }
            tracing::info!(bridge = %br, round, previous = ?self.previous_round, "flows installed");
            self.round_stored = true;
            self.status.send_modify(|s| s.full_installs += 1);
        }
        Ok(())
    }

    /// Marks `ports` as complete in their Interfaces' `external_ids` (what CNI ADD waits for),
    /// each only while it still has the ofport its flows were installed for.
    async fn acknowledge(&self, ports: &[&PodPort]) -> Result<(), StepError> {
        let Some(round) = self.programmer.as_ref().map(FlowProgrammer::round) else {
            return Ok(());
        };
        if ports.is_empty() {
            return Ok(());
        }
        let round = round.to_string();
        let ids = Value::map([
            (keys::FLOWS_READY, keys::FLOWS_READY_VALUE),
            (keys::FLOWS_ROUND, round.as_str()),
        ]);
        let ops: Vec<Operation> = ports
            .iter()
            .map(|p| {
                Operation::mutate(
                    "Interface",
                    vec![Mutation::insert("external_ids", ids.clone())],
                )
                .where_eq("name", p.name.as_str())
                .where_eq("ofport", i64::from(p.ofport))
            })
            .collect();
        let names = || ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>();
        self.client
            .transact(&ops)
            .await
            .map_err(|source| StepError::Ack {
                ports: names().join(", "),
                source,
            })?;
        crate::metrics::agent::metrics()
            .port_acks
            .inc_by(ports.len() as u64);
        tracing::debug!(bridge = %self.cfg.bridge.name, ports = ?names(), "Pod ports acknowledged");
        Ok(())
    }

    /// The gateway address and the routes to remote Pod CIDRs.
    async fn host(&mut self, inputs: &DatapathInputs) -> Result<(), StepError> {
        let routes = match &self.routes {
            Some(r) => r.clone(),
            None => {
                let r = NodeRoutes::connect()?;
                self.routes = Some(r.clone());
                r
            }
        };
        let gw = &self.cfg.bridge.gateway.name;
        let cidr = self.cfg.pod_cidr;
        routes
            .configure_gateway(gw, first_host(cidr), cidr.prefix())
            .await?;
        let (added, removed) = routes.sync(gw, &node_routes(&self.cfg, inputs)).await?;
        if added + removed > 0 {
            tracing::info!(device = %gw, added, removed, "Node routes updated");
        }
        Ok(())
    }
}
