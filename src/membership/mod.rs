//! Node liveness among agents: SWIM (the `foca` crate, with suspicion and indirect probes) over
//! UDP on each Node's transport IP and the cluster port, every datagram sealed with a key from
//! a Kubernetes Secret ([`seal`]). This module drives foca's I/O and timers with tokio and
//! publishes which Nodes are alive for placement ([`liveness`]): the agent puts that set into
//! the `ClusterView`, and the pure core decides from it.
//!
//! Members are the Nodes of the cluster: the agent announces itself to every Node it learns
//! from the Node objects (InternalIP) and again, every [`REJOIN_INTERVAL`], to those not up; a
//! Node deleted from the API leaves the set at once. A datagram that is malformed, fails
//! authentication, replays, or whose sender claims a Node whose InternalIP is not the source
//! address is dropped and counted, and changes nothing.
//!
//! Without a valid key the agent sends nothing, opens nothing, and counts itself out of the
//! alive set (it claims no IP), and says so in its log.
//!
//! When the agent is told to leave (SIGTERM), it sends every other Node a [`goodbye`] (so they
//! take it out of placement at once, without waiting for its lease), leaves foca's cluster, and
//! from then on counts itself out and takes part in nothing; the agent keeps its IPs until their
//! next holders have them.
//!
//! It never decides where an IP goes (placement does) and never touches the datapath.

pub mod goodbye;
pub mod identity;
pub mod liveness;
pub mod seal;
pub mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::{Codec, Foca, NoCustomBroadcast, Notification, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use goodbye::Goodbye;
pub use identity::Member;
use liveness::Liveness;
pub use liveness::MemberCounts;
use seal::{DropCounts, Keys, Opener, Sealer};

/// How often Nodes that are not up are announced to again.
pub const REJOIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often dropped datagrams are summed up in the log (when there were any).
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The largest datagram foca may build (sealing adds [`seal::OVERHEAD`]).
const MAX_PLAINTEXT: usize = 1300;

/// How the membership runs; from the agent config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This Node's name.
    pub node: String,
    /// UDP port on every Node's transport IP (`clusterPort`).
    pub port: u16,
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe indirectly (< `probe_period`).
    pub probe_timeout: Duration,
    /// How long a suspect stays suspect before it is declared down.
    pub suspicion_timeout: Duration,
    /// How long a Node declared down keeps its IPs for placement: its lease bound.
    pub lease_bound: Duration,
    /// How long a Node never heard from since this agent started counts as alive.
    pub join_grace: Duration,
}

/// What the membership tells the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The Nodes alive for placement (this Node included only while it may hold IPs).
    pub alive: BTreeSet<String>,
    /// Why this Node may not hold IPs (no valid key, no socket), if so.
    pub problem: Option<String>,
    /// Whether the alive set can be acted on: this Node has heard from another one, or has no
    /// one to hear from, or the join grace since it started is over. Until then the agent keeps
    /// what its datapath holds (a restarted agent does not drop its IPs while it rejoins).
    pub settled: bool,
    /// Datagrams dropped so far, by reason.
    pub drops: DropCounts,
    /// The Nodes that left on purpose (said goodbye): out of `alive`, but they release their IPs
    /// and say so themselves.
    pub left: BTreeSet<String>,
    /// This Node has said goodbye: it is out of `alive` and takes part in nothing any more.
    pub leaving: bool,
    /// The other Nodes by state (for the metrics).
    pub members: MemberCounts,
    /// When each Node declared down or gone was last heard from (for the failover metrics).
    pub silent_since: BTreeMap<String, Instant>,
}

/// The keys as last read from the Secret, or why there are none.
pub type KeyInput = Result<Keys, String>;

type Swim = Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// What foca asked for during one call.
#[derive(Default)]
struct Io {
    sends: Vec<(Member, Vec<u8>)>,
    timers: Vec<(Timer<Member>, Duration)>,
    notes: Vec<OwnedNotification<Member>>,
}

impl foca::Runtime<Member> for Io {
    fn notify(&mut self, notification: Notification<'_, Member>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: Member, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Member>, after: Duration) {
        self.timers.push((event, after));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// foca's configuration for `settings` and a cluster of `size` Nodes.
pub fn foca_config(settings: &Settings, size: usize) -> foca::Config {
    let size = NonZeroU32::new(size.clamp(3, u32::MAX as usize) as u32).unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    config.probe_period = settings.probe_period;
    config.probe_rtt = settings.probe_timeout;
    config.suspect_to_down_after = settings.suspicion_timeout;
    config.max_packet_size = NonZeroUsize::new(MAX_PLAINTEXT).unwrap_or(NonZeroUsize::MIN);
    config.notify_down_members = true;
    config
}

/// Starts the membership of `settings.node`: `nodes` is the agent's list of Nodes, `keys` the
/// Secret's keys, `leave` turns true when the agent is to leave (SIGTERM); `changed` is notified
/// whenever the published state changes.
pub fn start(
    settings: Settings,
    nodes: watch::Receiver<Vec<ovs_egress_core::model::Node>>,
    keys: watch::Receiver<KeyInput>,
    leave: watch::Receiver<bool>,
    changed: Arc<Notify>,
) -> watch::Receiver<State> {
    let now = Instant::now();
    let liveness = Liveness::new(&settings.node, settings.join_grace, settings.lease_bound);
    let initial = State {
        alive: liveness.alive(now, false),
        problem: Some("membership not started yet".into()),
        settled: false,
        drops: DropCounts::default(),
        left: BTreeSet::new(),
        leaving: false,
        members: MemberCounts::default(),
        silent_since: BTreeMap::new(),
    };
    let (tx, rx) = watch::channel(initial);
    let task = Task::new(settings, liveness, tx, changed);
    tokio::spawn(task.run(nodes, keys, leave));
    rx
}

struct Task {
    settings: Settings,
    liveness: Liveness,
    /// Node name → transport IP, from the API.
    nodes: BTreeMap<String, IpAddr>,
    swim: Option<Swim>,
    socket: Option<UdpSocket>,
    crypto: Option<(Sealer, Opener)>,
    key_problem: Option<String>,
    socket_problem: Option<String>,
    timers: BTreeMap<(Instant, u64), Timer<Member>>,
    timer_seq: u64,
    drops: DropCounts,
    logged_drops: u64,
    out: watch::Sender<State>,
    changed: Arc<Notify>,
    /// Sealed datagrams to send: (destination, bytes).
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    /// Whether this Node was isolated at the last publish (for the log).
    isolated: bool,
    /// Whether this Node has seen another one up since it started.
    joined: bool,
    /// When this membership started (for the join grace).
    started: Instant,
    /// Whether the Node list has been received.
    have_nodes: bool,
    /// This Node has said goodbye and left foca's cluster.
    leaving: bool,
    /// This Node's boot id (its foca identity's), once foca runs.
    boot: Option<u64>,
}

impl Task {
    fn new(
        settings: Settings,
        liveness: Liveness,
        out: watch::Sender<State>,
        changed: Arc<Notify>,
    ) -> Task {
        Task {
            settings,
            liveness,
            nodes: BTreeMap::new(),
            swim: None,
            socket: None,
            crypto: None,
            key_problem: Some("the membership key Secret has not been read yet".into()),
            socket_problem: None,
            timers: BTreeMap::new(),
            timer_seq: 0,
            drops: DropCounts::default(),
            logged_drops: 0,
            out,
            changed,
            outbox: Vec::new(),
            isolated: false,
            joined: false,
            started: Instant::now(),
            have_nodes: false,
            leaving: false,
            boot: None,
        }
    }

    /// Starts foca as this Node at `addr`.
    fn start_swim(&mut self, addr: SocketAddr) {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let me = Member {
            node: self.settings.node.clone(),
            addr,
            boot,
        };
        let config = foca_config(&self.settings, self.nodes.len());
        tracing::info!(%addr, boot, "membership listening");
        self.boot = Some(boot);
        self.swim = Some(Foca::new(
            me,
            config,
            SmallRng::from_os_rng(),
            PostcardCodec,
        ));
        self.announce_absent();
    }

    /// Sends what is in the outbox (dropped without a socket).
    fn flush(&mut self) {
        let outbox = std::mem::take(&mut self.outbox);
        if let Some(socket) = &self.socket {
            for (to, sealed) in outbox {
                if let Err(error) = socket.try_send_to(&sealed, to) {
                    tracing::debug!(%to, %error, "membership send failed");
                }
            }
        }
    }

    async fn run(
        mut self,
        mut nodes: watch::Receiver<Vec<ovs_egress_core::model::Node>>,
        mut keys: watch::Receiver<KeyInput>,
        mut leave: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut rejoin = tokio::time::interval(REJOIN_INTERVAL);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drop_log = tokio::time::interval(DROP_LOG_INTERVAL);
        let mut nodes_open = true;
        let mut keys_open = true;
        let mut leave_open = true;
        self.set_nodes(&nodes.borrow_and_update().clone());
        self.set_keys(keys.borrow_and_update().clone());
        loop {
            self.ensure_socket().await;
            self.flush();
            self.publish();
            let now = Instant::now();
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let next_change = self.liveness.next_change(now);
            let grace_over = self.started + self.settings.join_grace;
            let settle = (now < grace_over).then_some(grace_over);
            let wake = [next_timer, next_change, settle]
                .into_iter()
                .flatten()
                .min();
            let far = now + Duration::from_secs(3600);
            tokio::select! {
                received = async {
                    match &self.socket {
                        Some(socket) => socket.recv_from(&mut buf).await,
                        None => std::future::pending().await,
                    }
                } => match received {
                    Ok((len, from)) => {
                        let datagram = buf[..len].to_vec();
                        self.receive(&datagram, from);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "membership socket receive failed");
                    }
                },
                () = tokio::time::sleep_until(wake.unwrap_or(far).into()) => self.fire_timers(),
                _ = rejoin.tick() => self.announce_absent(),
                _ = drop_log.tick() => self.log_drops(),
                changed = nodes.changed(), if nodes_open => match changed {
                    Ok(()) => {
                        let list = nodes.borrow_and_update().clone();
                        self.set_nodes(&list);
                        self.announce_absent();
                    }
                    Err(_) => nodes_open = false,
                },
                changed = keys.changed(), if keys_open => match changed {
                    Ok(()) => {
                        let input = keys.borrow_and_update().clone();
                        self.set_keys(input);
                        self.announce_absent();
                    }
                    Err(_) => keys_open = false,
                },
                changed = leave.changed(), if leave_open && !self.leaving => match changed {
                    Ok(()) => {
                        if *leave.borrow_and_update() {
                            self.leave();
                        }
                    }
                    Err(_) => leave_open = false,
                },
            }
        }
    }

    fn set_nodes(&mut self, list: &[ovs_egress_core::model::Node]) {
        let now = Instant::now();
        self.have_nodes |= !list.is_empty();
        let nodes: BTreeMap<String, IpAddr> = list
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.transport_ip?)))
            .collect();
        for node in list.iter().filter(|n| n.transport_ip.is_none()) {
            if self.nodes.contains_key(&node.name) || !self.liveness.knows(&node.name) {
                tracing::warn!(
                    node = %node.name,
                    "Node has no InternalIP: it cannot join the membership and holds no egress IP"
                );
            }
        }
        self.nodes = nodes;
        self.liveness
            .set_nodes(list.iter().map(|n| n.name.as_str()), now);
    }

    fn set_keys(&mut self, input: KeyInput) {
        match input {
            Ok(keys) => {
                let Some(sealer) = Sealer::new(&keys) else {
                    self.fail_keys("the system random number generator failed".into());
                    return;
                };
                if self.key_problem.is_some() {
                    tracing::info!(keys = keys.len(), "membership key(s) loaded");
                }
                self.crypto = Some((sealer, Opener::new(keys)));
                self.key_problem = None;
            }
            Err(problem) => self.fail_keys(problem),
        }
    }

    fn fail_keys(&mut self, problem: String) {
        if self.key_problem.as_deref() != Some(problem.as_str()) {
            tracing::error!(
                node = %self.settings.node,
                %problem,
                "no valid membership key: this Node claims no egress IP"
            );
        }
        self.crypto = None;
        self.key_problem = Some(problem);
    }

    /// Binds the socket and starts foca once this Node's transport IP is known.
    async fn ensure_socket(&mut self) {
        if self.socket.is_some() {
            return;
        }
        let Some(ip) = self.nodes.get(&self.settings.node).copied() else {
            self.socket_problem = Some(format!(
                "Node {} has no InternalIP (yet): no membership",
                self.settings.node
            ));
            return;
        };
        let addr = SocketAddr::new(ip, self.settings.port);
        match UdpSocket::bind(addr).await {
            Ok(socket) => {
                self.socket = Some(socket);
                self.socket_problem = None;
                self.start_swim(addr);
            }
            Err(error) => {
                let problem = format!("cannot bind membership socket {addr}: {error}");
                if self.socket_problem.as_deref() != Some(problem.as_str()) {
                    tracing::error!(%problem, "this Node claims no egress IP until it can");
                }
                self.socket_problem = Some(problem);
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some((_, opener)) = &mut self.crypto else {
            self.drops.unauthenticated += 1;
            return;
        };
        let plain = match opener.open(datagram, now_ms()) {
            Ok(plain) => plain,
            Err(reason) => {
                if self.drops.total() == 0 {
                    tracing::warn!(%from, %reason, "first membership datagram dropped");
                } else {
                    tracing::debug!(%from, %reason, "membership datagram dropped");
                }
                self.drops.count(reason);
                return;
            }
        };
        if let Some(goodbye) = Goodbye::decode(&plain) {
            self.goodbye(goodbye, from);
            return;
        }
        let header = match PostcardCodec.decode_header(&plain[..]) {
            Ok(header) => header,
            Err(error) => {
                tracing::debug!(%from, %error, "membership datagram does not decode");
                self.drops.undecodable += 1;
                return;
            }
        };
        let sender: &Member = &header.src;
        let expected = self.nodes.get(&sender.node);
        if expected != Some(&from.ip()) || sender.addr.ip() != from.ip() {
            tracing::warn!(
                %from, claimed = %sender.node, ?expected,
                "membership datagram from an address that is not the claimed Node's InternalIP"
            );
            self.drops.spoofed += 1;
            return;
        }
        let name = sender.node.clone();
        let Some(swim) = &mut self.swim else { return };
        let mut io = Io::default();
        match swim.handle_data(&plain, &mut io) {
            Ok(()) => self.liveness.heard(&name, Instant::now()),
            Err(error) => {
                tracing::debug!(%from, %error, "membership message refused");
                self.drops.undecodable += 1;
            }
        }
        self.drain(io);
    }

    /// A goodbye arrived (authenticated): the sender leaves placement at once.
    fn goodbye(&mut self, goodbye: Result<Goodbye, &'static str>, from: SocketAddr) {
        let goodbye = match goodbye {
            Ok(goodbye) => goodbye,
            Err(error) => {
                tracing::debug!(%from, error, "membership goodbye does not decode");
                self.drops.undecodable += 1;
                return;
            }
        };
        if self.nodes.get(&goodbye.node) != Some(&from.ip()) {
            tracing::warn!(
                %from, claimed = %goodbye.node,
                "membership goodbye from an address that is not the claimed Node's InternalIP"
            );
            self.drops.spoofed += 1;
            return;
        }
        tracing::info!(
            node = %goodbye.node, boot = goodbye.boot,
            "member left (goodbye): its IPs move now, handed over by it"
        );
        self.liveness.heard(&goodbye.node, Instant::now());
        self.liveness.left(&goodbye.node, goodbye.boot);
    }

    /// Says goodbye to every other Node (twice, against a lost datagram), leaves foca's cluster
    /// and stops taking part: this Node counts itself out from now on.
    fn leave(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let (Some(boot), Some((sealer, _))) = (self.boot, &mut self.crypto) else {
            tracing::info!("leaving the membership (it had not started)");
            return;
        };
        let plain = Goodbye {
            node: self.settings.node.clone(),
            boot,
        }
        .encode();
        let mut told = 0;
        for (name, ip) in &self.nodes {
            if *name == self.settings.node {
                continue;
            }
            let to = SocketAddr::new(*ip, self.settings.port);
            for _ in 0..2 {
                self.outbox.push((to, sealer.seal(&plain, now_ms())));
            }
            told += 1;
        }
        if let Some(mut swim) = self.swim.take() {
            let mut io = Io::default();
            if let Err(error) = swim.leave_cluster(&mut io) {
                tracing::debug!(%error, "foca leave failed");
            }
            io.notes.clear();
            io.timers.clear();
            self.drain(io);
        }
        self.timers.clear();
        tracing::info!(
            told,
            "left the membership (goodbye sent): this Node claims no egress IP"
        );
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let Some(swim) = &mut self.swim else { return };
            let mut io = Io::default();
            if let Err(error) = swim.handle_timer(timer, &mut io) {
                tracing::debug!(%error, "membership timer failed");
            }
            self.drain(io);
        }
    }

    /// Announces this Node to every Node with an InternalIP that is not up.
    fn announce_absent(&mut self) {
        let Some(swim) = &mut self.swim else { return };
        let mut io = Io::default();
        for (name, ip) in &self.nodes {
            if *name == self.settings.node || self.liveness.is_up(name) {
                continue;
            }
            let dst = Member {
                node: name.clone(),
                addr: SocketAddr::new(*ip, self.settings.port),
                boot: 0,
            };
            if let Err(error) = swim.announce(dst, &mut io) {
                tracing::debug!(node = %name, %error, "announce failed");
            }
        }
        self.drain(io);
    }

    /// Carries out what foca asked for: sends, timers, notifications.
    fn drain(&mut self, io: Io) {
        let now = Instant::now();
        for (timer, after) in io.timers {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        if let Some((sealer, _)) = &mut self.crypto {
            for (to, data) in io.sends {
                self.outbox.push((to.addr, sealer.seal(&data, now_ms())));
            }
        }
        for note in io.notes {
            match note {
                OwnedNotification::MemberUp(m) => {
                    tracing::info!(node = %m.node, boot = m.boot, "member up");
                    self.liveness.up(&m.node, m.boot, now);
                }
                OwnedNotification::MemberDown(m) => {
                    let silent = self
                        .liveness
                        .last_heard(&m.node)
                        .map(|at| now.saturating_duration_since(at));
                    tracing::info!(
                        node = %m.node, boot = m.boot, ?silent,
                        lease_bound = ?self.settings.lease_bound,
                        "member down; its IPs move once its lease bound has passed"
                    );
                    self.liveness.down(&m.node, m.boot, now);
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(node = %new.node, old = old.boot, new = new.boot, "member rejoined");
                    self.liveness.up(&new.node, new.boot, now);
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("the membership declared this Node down; rejoining");
                }
                OwnedNotification::Rejoin(me) => {
                    tracing::info!(boot = me.boot, "rejoined the membership");
                }
                OwnedNotification::Active | OwnedNotification::Idle => {}
            }
        }
    }

    fn log_drops(&mut self) {
        let total = self.drops.total();
        if total != self.logged_drops {
            tracing::warn!(drops = ?self.drops, "membership datagrams dropped so far");
            self.logged_drops = total;
        }
    }

    /// The other Nodes by state: SWIM's suspicion for those up, the liveness for the rest.
    fn member_counts(&self) -> MemberCounts {
        let mut alive = BTreeSet::new();
        let mut suspect = BTreeSet::new();
        for member in self.swim.iter().flat_map(|swim| swim.iter_members()) {
            let node = member.id().node.as_str();
            match member.state() {
                foca::State::Suspect => suspect.insert(node),
                _ => alive.insert(node),
            };
        }
        self.liveness
            .counts(|name| suspect.contains(name) && !alive.contains(name))
    }

    fn publish(&mut self) {
        let isolated = self.liveness.isolated();
        if isolated != self.isolated {
            if isolated && self.joined {
                tracing::warn!(
                    "no other Node is up: this Node is cut off and releases its egress IPs"
                );
            } else if isolated {
                tracing::info!(
                    "no other Node is up yet: this Node claims no egress IP until one is"
                );
            } else {
                tracing::info!("another Node is up: this Node may hold egress IPs");
                self.joined = true;
            }
            self.isolated = isolated;
        }
        let problem = self.key_problem.clone().or(self.socket_problem.clone());
        let settled = self.have_nodes
            && (!isolated
                || self.joined
                || Instant::now() >= self.started + self.settings.join_grace);
        let state = State {
            settled,
            alive: self
                .liveness
                .alive(Instant::now(), problem.is_none() && !self.leaving),
            problem,
            drops: self.drops,
            left: self.liveness.gone(),
            leaving: self.leaving,
            members: self.member_counts(),
            silent_since: self.liveness.silent_since(),
        };
        let mut alive_changed = false;
        self.out.send_if_modified(|old| {
            if *old == state {
                return false;
            }
            alive_changed = old.alive != state.alive
                || old.problem != state.problem
                || old.settled != state.settled
                || old.left != state.left
                || old.leaving != state.leaving;
            *old = state;
            true
        });
        if alive_changed {
            self.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 10351;

    fn settings(node: &str) -> Settings {
        Settings {
            node: node.into(),
            port: PORT,
            probe_period: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            suspicion_timeout: Duration::from_millis(200),
            lease_bound: Duration::from_secs(2),
            join_grace: Duration::from_secs(3),
        }
    }

    fn addr(index: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, index]), PORT)
    }

    /// Nodes n1..=n3 at 10.0.0.1..=3.
    fn cluster() -> Vec<ovs_egress_core::model::Node> {
        (1..=3)
            .map(|i| ovs_egress_core::model::Node {
                name: format!("n{i}"),
                transport_ip: Some(addr(i).ip()),
                ..ovs_egress_core::model::Node::default()
            })
            .collect()
    }

    fn keys(byte: u8) -> Keys {
        Keys::from_raw(vec![[byte; 32]]).unwrap()
    }

    /// A membership of `node` at `at`, with `key`, not started on any socket.
    fn member(node: &str, at: SocketAddr, key: u8) -> Task {
        let s = settings(node);
        let liveness = Liveness::new(node, s.join_grace, s.lease_bound);
        let mut task = Task::new(
            s,
            liveness,
            watch::channel(State::default()).0,
            Arc::new(Notify::new()),
        );
        task.set_nodes(&cluster());
        task.set_keys(Ok(keys(key)));
        task.start_swim(at);
        task
    }

    /// Delivers every datagram in the outboxes (sender's address as the source) until none is
    /// left; returns them all as (from, to, bytes).
    fn exchange(tasks: &mut [(SocketAddr, Task)]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut delivered = Vec::new();
        for _ in 0..50 {
            let mut pending = Vec::new();
            for (from, task) in tasks.iter_mut() {
                for (to, bytes) in std::mem::take(&mut task.outbox) {
                    pending.push((*from, to, bytes));
                }
            }
            if pending.is_empty() {
                break;
            }
            for (from, to, bytes) in pending {
                if let Some((_, task)) = tasks.iter_mut().find(|(a, _)| *a == to) {
                    task.receive(&bytes, from);
                }
                delivered.push((from, to, bytes));
            }
        }
        delivered
    }

    #[test]
    fn members_with_the_same_key_join_and_see_each_other_up() {
        let mut tasks = vec![
            (addr(1), member("n1", addr(1), 9)),
            (addr(2), member("n2", addr(2), 9)),
        ];
        exchange(&mut tasks);
        assert!(tasks[0].1.liveness.is_up("n2"));
        assert!(tasks[1].1.liveness.is_up("n1"));
        assert!(!tasks[0].1.liveness.is_up("n3"), "n3 never answered");
        assert_eq!(tasks[0].1.drops, DropCounts::default());
    }

    #[test]
    fn forged_truncated_replayed_spoofed_and_wrong_key_datagrams_are_dropped_counted_and_change_nothing()
     {
        let mut tasks = vec![
            (addr(1), member("n1", addr(1), 9)),
            (addr(2), member("n2", addr(2), 9)),
        ];
        let delivered = exchange(&mut tasks);
        let (_, mut n1) = tasks.remove(0);
        let (_, mut n2) = tasks.remove(0);
        let now = Instant::now();
        let alive_before = n1.liveness.alive(now, true);
        let up = |t: &Task| (t.liveness.is_up("n2"), t.liveness.is_up("n3"));
        assert_eq!(up(&n1), (true, false));

        // Replayed: a datagram n2 sent n1 during the join.
        let (_, _, old) = delivered
            .iter()
            .find(|(from, to, _)| *from == addr(2) && *to == addr(1))
            .unwrap();
        n1.receive(old, addr(2));
        assert_eq!(n1.drops.replayed, 1);

        // Forged: made-up bytes, and a well-formed header with a made-up tag.
        n1.receive(
            b"\x01not a membership datagram at all, but long enough",
            addr(2),
        );
        n1.receive(&[0u8; 10], addr(2));
        assert_eq!((n1.drops.unauthenticated, n1.drops.malformed), (1, 1));

        // Fresh genuine datagrams from n2: one truncated, one from another source address.
        let mut io = Io::default();
        n2.swim.as_mut().unwrap().gossip(&mut io).unwrap();
        n2.drain(io);
        let fresh: Vec<Vec<u8>> = n2.outbox.drain(..).map(|(_, b)| b).collect();
        assert!(!fresh.is_empty());
        n1.receive(&fresh[0][..fresh[0].len() - 1], addr(2));
        assert_eq!(n1.drops.unauthenticated, 2);
        n1.receive(&fresh[0], addr(3));
        assert_eq!(n1.drops.spoofed, 1, "n2's datagram from n3's address");

        // A member with the wrong key (n3), and one with the right key claiming n2's name from
        // n3's address.
        let mut wrong_key = member("n3", addr(3), 1);
        let mut impostor = member("n2", addr(3), 9);
        for task in [&mut wrong_key, &mut impostor] {
            for (to, bytes) in std::mem::take(&mut task.outbox) {
                if to == addr(1) {
                    n1.receive(&bytes, addr(3));
                }
            }
        }
        assert_eq!(n1.drops.unauthenticated, 3);
        assert_eq!(n1.drops.spoofed, 2);

        assert_eq!(n1.drops.total(), 7);
        assert_eq!(n1.liveness.alive(now, true), alive_before);
        assert_eq!(up(&n1), (true, false));
        // n2's next genuine datagram still goes through.
        let mut io = Io::default();
        n2.swim.as_mut().unwrap().gossip(&mut io).unwrap();
        n2.drain(io);
        for (_, bytes) in std::mem::take(&mut n2.outbox) {
            n1.receive(&bytes, addr(2));
        }
        assert_eq!(n1.drops.total(), 7);
        assert!(n1.liveness.last_heard("n2").unwrap() >= now);
    }

    #[test]
    fn a_member_that_leaves_says_goodbye_and_the_others_drop_it_at_once_without_its_lease() {
        let mut tasks = vec![
            (addr(1), member("n1", addr(1), 9)),
            (addr(2), member("n2", addr(2), 9)),
            (addr(3), member("n3", addr(3), 9)),
        ];
        exchange(&mut tasks);
        let now = Instant::now();
        assert!(tasks[0].1.liveness.alive(now, true).contains("n2"));
        tasks[1].1.leave();
        let sent: Vec<(SocketAddr, Vec<u8>)> = tasks[1].1.outbox.clone();
        assert!(
            sent.iter().filter(|(to, _)| *to == addr(1)).count() >= 2,
            "the goodbye goes to every other Node, twice"
        );
        // A goodbye of n2 replayed from n3's address is spoofed and changes nothing.
        let (_, first) = sent.iter().find(|(to, _)| *to == addr(3)).unwrap();
        tasks[0].1.receive(first, addr(3));
        assert_eq!(tasks[0].1.drops.spoofed, 1);
        assert!(tasks[0].1.liveness.alive(now, true).contains("n2"));
        exchange(&mut tasks);
        for i in [0, 2] {
            let task = &mut tasks[i].1;
            let alive = task.liveness.alive(Instant::now(), true);
            assert!(!alive.contains("n2"), "{}: {alive:?}", task.settings.node);
            task.publish();
            let state = task.out.borrow().clone();
            assert_eq!(state.left, BTreeSet::from(["n2".to_string()]));
            assert!(state.alive.contains(&task.settings.node), "not cut off");
        }
        // The leaver counts itself out, and takes part in nothing any more.
        let leaver = &mut tasks[1].1;
        leaver.publish();
        let state = leaver.out.borrow().clone();
        assert!(state.leaving && !state.alive.contains("n2"));
        leaver.announce_absent();
        assert!(leaver.outbox.is_empty());
    }

    #[test]
    fn without_a_key_a_member_sends_nothing_and_is_not_alive() {
        let mut task = member("n1", addr(1), 9);
        task.outbox.clear();
        task.set_keys(Err("Secret kube-system/k does not exist".into()));
        task.announce_absent();
        assert!(task.outbox.is_empty());
        task.publish();
        let state = task.out.borrow().clone();
        assert!(!state.alive.contains("n1"));
        assert_eq!(
            state.problem.as_deref(),
            Some("Secret kube-system/k does not exist")
        );
    }
}
