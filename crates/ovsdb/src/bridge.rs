//! Idempotent set-up of the integration bridge through OVSDB: `br-int` (fail-mode secure,
//! OpenFlow 1.0/1.3/1.5), the gateway `antrea-gw0` (internal) and the flow-based Geneve tunnel
//! `antrea-tun0`, both on fixed OpenFlow ports, and `Flow_Table` names so that
//! `ovs-ofctl --names dump-flows` shows table names. It reads the current rows first and writes
//! only what differs, so a second run issues no write at all. Also: the
//! `other_config:flow-restore-wait` handshake and the bridge's `external_ids` (where the flow
//! programmer keeps its cookie round). It never touches flows, and never touches ports or
//! `external_ids` keys it does not own.

use std::collections::BTreeMap;

use std::time::Duration;

use crate::{Atom, Client, Mutation, Mutator, Operation, OvsdbError, Row, Uuid, Value, WaitUntil};

/// OpenFlow port of the tunnel (as in Antrea v1.5 and the test-bed recipe).
pub const TUNNEL_OFPORT: i64 = 1;
/// OpenFlow port of the gateway.
pub const GATEWAY_OFPORT: i64 = 2;
/// `Bridge.protocols` we require (OpenFlow 1.5 for bundles, 1.0/1.3 for tools).
pub const PROTOCOLS: [&str; 3] = ["OpenFlow10", "OpenFlow13", "OpenFlow15"];
/// `Open_vSwitch.other_config` key ovs-vswitchd honours to keep its flows until we are done.
pub const FLOW_RESTORE_WAIT: &str = "flow-restore-wait";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathType {
    /// The kernel datapath (production).
    System,
    /// The userspace datapath (test beds without the OVS kernel module).
    Netdev,
}

impl DatapathType {
    pub fn as_str(self) -> &'static str {
        match self {
            DatapathType::System => "system",
            DatapathType::Netdev => "netdev",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub name: String,
    /// `xx:xx:xx:xx:xx:xx`; `None` lets OVS choose.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    pub name: String,
    /// UDP port; `None` = Geneve's default 6081.
    pub dst_port: Option<u16>,
    /// `options:csum=true` when set.
    pub csum: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    pub datapath_type: DatapathType,
    pub gateway: GatewayConfig,
    pub tunnel: TunnelConfig,
    /// OpenFlow table number → name, written to `Flow_Table` rows. Tables not listed lose
    /// their name.
    pub table_names: Vec<(u8, String)>,
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            name: "br-int".into(),
            datapath_type: DatapathType::System,
            gateway: GatewayConfig {
                name: "antrea-gw0".into(),
                mac: None,
                mtu: None,
            },
            tunnel: TunnelConfig {
                name: "antrea-tun0".into(),
                dst_port: None,
                csum: false,
            },
            table_names: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {bridge}: {action}: {source}")]
    Ovsdb {
        bridge: String,
        action: &'static str,
        source: Box<OvsdbError>,
    },
    #[error("bridge config {field}: {detail}")]
    Config { field: &'static str, detail: String },
    #[error("bridge {bridge} does not exist in OVSDB")]
    NoSuchBridge { bridge: String },
    #[error("OVSDB has no Open_vSwitch row (database not initialised?)")]
    NoRootRow,
}

/// What [`ensure_bridge`] did: one line per write operation, empty when everything matched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetupReport {
    pub writes: Vec<String>,
}

impl SetupReport {
    pub fn changed(&self) -> bool {
        !self.writes.is_empty()
    }
}

/// The desired state of one interface (and its one-interface port).
struct IfaceSpec {
    name: String,
    kind: &'static str,
    options: BTreeMap<String, String>,
    ofport_request: Option<i64>,
    mac: Option<String>,
    mtu: Option<i64>,
}

impl IfaceSpec {
    /// The row to insert: the managed columns plus the (immutable) name.
    fn row(&self) -> Row {
        self.managed().with("name", self.name.as_str())
    }

    /// The columns we manage (and update on drift).
    fn managed(&self) -> Row {
        let opt = |v: Option<Atom>| Value::Set(v.into_iter().collect());
        Row::new()
            .with("type", self.kind)
            .with("options", Value::map(self.options.clone()))
            .with(
                "ofport_request",
                opt(self.ofport_request.map(Atom::Integer)),
            )
            .with("mac", opt(self.mac.clone().map(Atom::String)))
            .with("mtu_request", opt(self.mtu.map(Atom::Integer)))
    }

    /// Compares the columns we manage with a row read from the server.
    fn matches(&self, row: &Row) -> Result<bool, OvsdbError> {
        const T: &str = "Interface";
        let int = |c| -> Result<Option<i64>, OvsdbError> {
            Ok(match row.optional(T, c)? {
                Some(Atom::Integer(i)) => Some(*i),
                _ => None,
            })
        };
        let mac = row.optional(T, "mac")?.and_then(Atom::as_str);
        Ok(row.str(T, "type")? == self.kind
            && row.string_map(T, "options")? == self.options
            && int("ofport_request")? == self.ofport_request
            && int("mtu_request")? == self.mtu
            && mac.map(str::to_ascii_lowercase) == self.mac)
    }
}

fn validate(cfg: &BridgeConfig) -> Result<(), BridgeError> {
    let bad = |field, detail: String| Err(BridgeError::Config { field, detail });
    for (field, name) in [
        ("name", &cfg.name),
        ("gateway.name", &cfg.gateway.name),
        ("tunnel.name", &cfg.tunnel.name),
    ] {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return bad(field, format!("{name:?} is not a valid interface name"));
        }
    }
    if let Some(mac) = &cfg.gateway.mac {
        let parts: Vec<_> = mac.split(':').collect();
        let ok = parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return bad("gateway.mac", format!("{mac:?} is not xx:xx:xx:xx:xx:xx"));
        }
    }
    if cfg.gateway.mtu == Some(0) {
        return bad("gateway.mtu", "must be positive".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (n, name) in &cfg.table_names {
        if *n == 255 || !seen.insert(*n) {
            return bad(
                "table_names",
                format!("table {n} ({name}) is out of range or repeated"),
            );
        }
    }
    Ok(())
}

fn specs(cfg: &BridgeConfig) -> [IfaceSpec; 2] {
    let mut options = BTreeMap::from([
        ("remote_ip".to_owned(), "flow".to_owned()),
        ("key".to_owned(), "flow".to_owned()),
    ]);
    if let Some(p) = cfg.tunnel.dst_port {
        options.insert("dst_port".into(), p.to_string());
    }
    if cfg.tunnel.csum {
        options.insert("csum".into(), "true".into());
    }
    [
        IfaceSpec {
            name: cfg.gateway.name.clone(),
            kind: "internal",
            options: BTreeMap::new(),
            ofport_request: Some(GATEWAY_OFPORT),
            mac: cfg.gateway.mac.as_deref().map(str::to_ascii_lowercase),
            mtu: cfg.gateway.mtu.map(i64::from),
        },
        IfaceSpec {
            name: cfg.tunnel.name.clone(),
            kind: "geneve",
            options,
            ofport_request: Some(TUNNEL_OFPORT),
            mac: None,
            mtu: None,
        },
    ]
}

/// Collects the operations of one transaction with a human-readable line per write.
struct Plan {
    ops: Vec<Operation>,
    report: SetupReport,
}

impl Plan {
    fn push(&mut self, what: String, op: Operation) {
        self.report.writes.push(what);
        self.ops.push(op);
    }

    /// Inserts interface + port (named `<prefix>i` / `<prefix>p`); returns the port's name.
    fn insert_port(&mut self, spec: &IfaceSpec, prefix: &str) -> Atom {
        let (iface, port) = (format!("{prefix}i"), format!("{prefix}p"));
        self.push(
            format!("insert Interface {}", spec.name),
            Operation::insert("Interface", spec.row()).named(&iface),
        );
        let row = Row::new()
            .with("name", spec.name.as_str())
            .with("interfaces", Value::set([Atom::named(&iface)]));
        self.push(
            format!("insert Port {}", spec.name),
            Operation::insert("Port", row).named(&port),
        );
        Atom::named(&port)
    }

    /// Inserts a `Flow_Table` row naming table `n`; returns its name for `Bridge.flow_tables`.
    fn insert_table(&mut self, n: u8, name: &str) -> Atom {
        let tag = format!("table{n}");
        self.push(
            format!("insert Flow_Table {n} name {name}"),
            Operation::insert("Flow_Table", Row::new().with("name", name)).named(&tag),
        );
        Atom::named(&tag)
    }
}

fn ovsdb_err(bridge: &str, action: &'static str) -> impl FnOnce(OvsdbError) -> BridgeError {
    let bridge = bridge.to_owned();
    move |source| BridgeError::Ovsdb {
        bridge,
        action,
        source: Box::new(source),
    }
}

/// Decodes a value read from OVSDB, naming the bridge in the error.
fn decoded<T>(br: &str, r: Result<T, OvsdbError>) -> Result<T, BridgeError> {
    r.map_err(ovsdb_err(br, "decoding current state"))
}

fn row_uuid(br: &str, row: &Row, table: &str) -> Result<Uuid, BridgeError> {
    let uuids = decoded(br, row.uuids(table, "_uuid"))?;
    decoded(
        br,
        uuids
            .into_iter()
            .next()
            .ok_or_else(|| OvsdbError::MissingColumn {
                table: table.to_owned(),
                column: "_uuid".into(),
            }),
    )
}

/// The rows ensure_bridge compares against, read in one transaction.
struct Current {
    root: Uuid,
    bridge: Option<Row>,
    /// Per interface spec: its Port and Interface rows, found by name.
    ports: Vec<(Option<Row>, Option<Row>)>,
    /// Flow_Table uuid → name.
    table_names: BTreeMap<Uuid, Option<String>>,
}

async fn read_current(
    client: &Client,
    cfg: &BridgeConfig,
    specs: &[IfaceSpec],
) -> Result<Current, BridgeError> {
    let br = cfg.name.as_str();
    let mut ops = vec![
        Operation::select("Open_vSwitch").columns(&["_uuid"]),
        Operation::select("Bridge").where_eq("name", br).columns(&[
            "_uuid",
            "datapath_type",
            "fail_mode",
            "protocols",
            "ports",
            "flow_tables",
        ]),
        Operation::select("Flow_Table").columns(&["_uuid", "name"]),
    ];
    for spec in specs {
        let name = spec.name.as_str();
        ops.push(
            Operation::select("Port")
                .where_eq("name", name)
                .columns(&["_uuid"]),
        );
        ops.push(
            Operation::select("Interface")
                .where_eq("name", name)
                .columns(&[
                    "_uuid",
                    "type",
                    "options",
                    "ofport_request",
                    "mac",
                    "mtu_request",
                ]),
        );
    }
    let results = client
        .transact(&ops)
        .await
        .map_err(ovsdb_err(br, "reading current state"))?;
    let one = |i: usize| results[i].rows().first().cloned();
    let root = one(0).ok_or(BridgeError::NoRootRow)?;
    let mut table_names = BTreeMap::new();
    for row in results[2].rows() {
        let name = decoded(br, row.optional("Flow_Table", "name"))?
            .and_then(Atom::as_str)
            .map(str::to_owned);
        table_names.insert(row_uuid(br, row, "Flow_Table")?, name);
    }
    Ok(Current {
        root: row_uuid(br, &root, "Open_vSwitch")?,
        bridge: one(1),
        ports: (0..specs.len())
            .map(|i| (one(3 + 2 * i), one(4 + 2 * i)))
            .collect(),
        table_names,
    })
}

/// Makes OVSDB hold the bridge, gateway, tunnel and table names of `cfg`. Reads the current
/// rows in one transaction, then writes only what differs, in one transaction (none at all
/// when everything matches). Leaves other ports, other columns and `external_ids` alone.
/// Does not wait for ovs-vswitchd (it may be down); see [`wait_until_applied`].
pub async fn ensure_bridge(
    client: &Client,
    cfg: &BridgeConfig,
) -> Result<SetupReport, BridgeError> {
    validate(cfg)?;
    let br = cfg.name.as_str();
    let specs = specs(cfg);
    let cur = read_current(client, cfg, &specs).await?;
    let mut plan = Plan {
        ops: Vec::new(),
        report: SetupReport::default(),
    };
    match &cur.bridge {
        None => plan_new_bridge(&mut plan, cfg, &specs, &cur.root),
        Some(row) => {
            let uuid = row_uuid(br, row, "Bridge")?;
            diff_bridge_columns(&mut plan, cfg, row, &uuid)?;
            let ports = decoded(br, row.uuids("Bridge", "ports"))?;
            for (i, (spec, current)) in specs.iter().zip(&cur.ports).enumerate() {
                diff_port(&mut plan, br, &uuid, &ports, spec, current, i)?;
            }
            let current = decoded(br, flow_tables(row))?;
            diff_table_names(&mut plan, cfg, &uuid, &current, &cur.table_names);
        }
    }
    if !plan.ops.is_empty() {
        // Like ovs-vsctl: ask ovs-vswitchd to report when it has applied this (cur_cfg).
        let bump = Mutation::new("next_cfg", Mutator::Add, 1i64);
        plan.ops.push(
            Operation::mutate("Open_vSwitch", vec![bump]).where_eq("_uuid", cur.root.clone()),
        );
        client
            .transact(&plan.ops)
            .await
            .map_err(ovsdb_err(br, "applying set-up"))?;
    }
    Ok(plan.report)
}

fn plan_new_bridge(plan: &mut Plan, cfg: &BridgeConfig, specs: &[IfaceSpec], root: &Uuid) {
    let br = cfg.name.as_str();
    // Like `ovs-vsctl add-br`: the bridge's own internal port (OpenFlow LOCAL).
    let local = IfaceSpec {
        name: br.to_owned(),
        kind: "internal",
        options: BTreeMap::new(),
        ofport_request: None,
        mac: None,
        mtu: None,
    };
    let mut ports = vec![plan.insert_port(&local, "local")];
    for (i, spec) in specs.iter().enumerate() {
        ports.push(plan.insert_port(spec, &format!("port{i}")));
    }
    let tables = cfg
        .table_names
        .iter()
        .map(|(n, name)| (Atom::Integer(i64::from(*n)), plan.insert_table(*n, name)))
        .collect();
    let row = Row::new()
        .with("name", br)
        .with("datapath_type", cfg.datapath_type.as_str())
        .with("fail_mode", "secure")
        .with("protocols", Value::set(PROTOCOLS))
        .with("ports", Value::Set(ports))
        .with("flow_tables", Value::Map(tables));
    plan.push(
        format!("insert Bridge {br}"),
        Operation::insert("Bridge", row).named("br"),
    );
    let link = Mutation::insert("bridges", Value::set([Atom::named("br")]));
    plan.push(
        format!("add {br} to Open_vSwitch.bridges"),
        Operation::mutate("Open_vSwitch", vec![link]).where_eq("_uuid", root.clone()),
    );
}

fn diff_bridge_columns(
    plan: &mut Plan,
    cfg: &BridgeConfig,
    row: &Row,
    uuid: &Uuid,
) -> Result<(), BridgeError> {
    let br = cfg.name.as_str();
    let dp = decoded(br, row.str("Bridge", "datapath_type"))?;
    let fail = decoded(br, row.optional("Bridge", "fail_mode"))?.and_then(Atom::as_str);
    let protos = row
        .get("protocols")
        .and_then(Value::as_set)
        .unwrap_or_default();
    let mut protos: Vec<&str> = protos.iter().filter_map(Atom::as_str).collect();
    protos.sort_unstable();
    let mut update = Row::new();
    if dp != cfg.datapath_type.as_str() {
        update = update.with("datapath_type", cfg.datapath_type.as_str());
    }
    if fail != Some("secure") {
        update = update.with("fail_mode", "secure");
    }
    if protos != PROTOCOLS {
        update = update.with("protocols", Value::set(PROTOCOLS));
    }
    if !update.0.is_empty() {
        let cols: Vec<_> = update.0.keys().cloned().collect();
        plan.push(
            format!("update Bridge {br} {}", cols.join(",")),
            Operation::update("Bridge", update).where_eq("_uuid", uuid.clone()),
        );
    }
    Ok(())
}

fn diff_port(
    plan: &mut Plan,
    br: &str,
    bridge: &Uuid,
    bridge_ports: &[Uuid],
    spec: &IfaceSpec,
    current: &(Option<Row>, Option<Row>),
    index: usize,
) -> Result<(), BridgeError> {
    match current {
        (Some(p), Some(i)) => {
            if !bridge_ports.contains(&row_uuid(br, p, "Port")?) {
                return Err(BridgeError::Config {
                    field: "port name",
                    detail: format!("port {} exists on another bridge", spec.name),
                });
            }
            if !decoded(br, spec.matches(i))? {
                plan.push(
                    format!("update Interface {}", spec.name),
                    Operation::update("Interface", spec.managed())
                        .where_eq("_uuid", row_uuid(br, i, "Interface")?),
                );
            }
        }
        (None, None) => {
            let port = plan.insert_port(spec, &format!("port{index}"));
            let add = Mutation::insert("ports", Value::set([port]));
            plan.push(
                format!("add {} to Bridge {br}.ports", spec.name),
                Operation::mutate("Bridge", vec![add]).where_eq("_uuid", bridge.clone()),
            );
        }
        _ => {
            return Err(BridgeError::Config {
                field: "port name",
                detail: format!("{} has a Port or an Interface row but not both", spec.name),
            });
        }
    }
    Ok(())
}

fn flow_tables(row: &Row) -> Result<BTreeMap<i64, Uuid>, OvsdbError> {
    let v = row
        .get("flow_tables")
        .ok_or_else(|| OvsdbError::MissingColumn {
            table: "Bridge".into(),
            column: "flow_tables".into(),
        })?;
    let bad = || OvsdbError::decode("Bridge", "flow_tables", &v.to_json());
    v.as_map()
        .ok_or_else(bad)?
        .iter()
        .map(|(k, u)| match (k, u.as_uuid()) {
            (Atom::Integer(n), Some(u)) => Ok((*n, u.clone())),
            _ => Err(bad()),
        })
        .collect()
}

fn diff_table_names(
    plan: &mut Plan,
    cfg: &BridgeConfig,
    bridge: &Uuid,
    current: &BTreeMap<i64, Uuid>,
    names: &BTreeMap<Uuid, Option<String>>,
) {
    let br = cfg.name.as_str();
    let mut add = Vec::new();
    for (n, name) in &cfg.table_names {
        match current.get(&i64::from(*n)) {
            Some(uuid) if names.get(uuid).cloned().flatten().as_deref() == Some(name.as_str()) => {}
            Some(uuid) => plan.push(
                format!("update Flow_Table {n} name {name}"),
                Operation::update("Flow_Table", Row::new().with("name", name.as_str()))
                    .where_eq("_uuid", uuid.clone()),
            ),
            None => add.push((Atom::Integer(i64::from(*n)), plan.insert_table(*n, name))),
        }
    }
    let stale: Vec<Atom> = current
        .keys()
        .filter(|n| !cfg.table_names.iter().any(|(w, _)| i64::from(*w) == **n))
        .map(|n| Atom::Integer(*n))
        .collect();
    let mut mutations = Vec::new();
    if !stale.is_empty() {
        mutations.push(Mutation::delete("flow_tables", Value::Set(stale)));
    }
    if !add.is_empty() {
        mutations.push(Mutation::insert("flow_tables", Value::Map(add)));
    }
    if !mutations.is_empty() {
        plan.push(
            format!("mutate Bridge {br}.flow_tables"),
            Operation::mutate("Bridge", mutations).where_eq("_uuid", bridge.clone()),
        );
    }
}

/// Waits until ovs-vswitchd has applied every configuration change committed so far
/// (`cur_cfg` reaches `next_cfg`), using a server-side `wait` of at most `timeout`.
pub async fn wait_until_applied(client: &Client, timeout: Duration) -> Result<(), BridgeError> {
    let root = "Open_vSwitch";
    let r = client
        .transact(&[Operation::select(root).columns(&["next_cfg"])])
        .await
        .map_err(ovsdb_err(root, "reading next_cfg"))?;
    let row = r[0].rows().first().ok_or(BridgeError::NoRootRow)?;
    let next = decoded(
        root,
        row.get("next_cfg")
            .and_then(Value::as_atom)
            .cloned()
            .ok_or_else(|| OvsdbError::MissingColumn {
                table: root.into(),
                column: "next_cfg".into(),
            }),
    )?;
    let want = vec![Row::new().with("cur_cfg", next)];
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let wait = Operation::wait(root, &["cur_cfg"], WaitUntil::Equal, want, Some(ms));
    client.transact(&[wait]).await.map_err(ovsdb_err(
        root,
        "waiting for ovs-vswitchd to apply the configuration",
    ))?;
    Ok(())
}

/// Whether `Open_vSwitch.other_config:flow-restore-wait` is `true`: ovs-vswitchd then keeps
/// the flows it had and does not talk to controllers until the key is removed.
pub async fn flow_restore_wait(client: &Client) -> Result<bool, BridgeError> {
    let root = "Open_vSwitch";
    let r = client
        .transact(&[Operation::select(root).columns(&["other_config"])])
        .await
        .map_err(ovsdb_err(root, "reading other_config"))?;
    let row = r[0].rows().first().ok_or(BridgeError::NoRootRow)?;
    let cfg = decoded(root, row.string_map(root, "other_config"))?;
    Ok(cfg.get(FLOW_RESTORE_WAIT).is_some_and(|v| v == "true"))
}

/// Removes `flow-restore-wait`; call it once the first full flow install has completed.
pub async fn clear_flow_restore_wait(client: &Client) -> Result<(), BridgeError> {
    let root = "Open_vSwitch";
    let del = Mutation::delete("other_config", Value::set([FLOW_RESTORE_WAIT]));
    client
        .transact(&[Operation::mutate(root, vec![del])])
        .await
        .map_err(ovsdb_err(root, "removing other_config:flow-restore-wait"))?;
    Ok(())
}

/// The bridge's `external_ids`.
pub async fn bridge_external_ids(
    client: &Client,
    bridge: &str,
) -> Result<BTreeMap<String, String>, BridgeError> {
    let sel = Operation::select("Bridge")
        .where_eq("name", bridge)
        .columns(&["external_ids"]);
    let r = client
        .transact(&[sel])
        .await
        .map_err(ovsdb_err(bridge, "reading external_ids"))?;
    let row = r[0]
        .rows()
        .first()
        .ok_or_else(|| BridgeError::NoSuchBridge {
            bridge: bridge.to_owned(),
        })?;
    decoded(bridge, row.string_map("Bridge", "external_ids"))
}

/// Sets the given `external_ids` keys (others are kept) and removes `remove` keys, atomically.
pub async fn update_bridge_external_ids(
    client: &Client,
    bridge: &str,
    set: &[(&str, &str)],
    remove: &[&str],
) -> Result<(), BridgeError> {
    let keys = set.iter().map(|(k, _)| *k).chain(remove.iter().copied());
    let mut mutations = vec![Mutation::delete("external_ids", Value::set(keys))];
    if !set.is_empty() {
        mutations.push(Mutation::insert(
            "external_ids",
            Value::map(set.iter().copied()),
        ));
    }
    let op = Operation::mutate("Bridge", mutations).where_eq("name", bridge);
    let r = client
        .transact(&[op])
        .await
        .map_err(ovsdb_err(bridge, "writing external_ids"))?;
    if r[0].count == Some(0) {
        return Err(BridgeError::NoSuchBridge {
            bridge: bridge.to_owned(),
        });
    }
    Ok(())
}

/// Attaches an existing network device `name` to `bridge` as a port with `external_ids`
/// (e.g. the Pod identity written by the CNI plugin) and an optional fixed OpenFlow port.
/// Idempotent: if an Interface of that name already exists (it is not checked which bridge
/// holds it), only differing `external_ids` are replaced. Returns the Interface row's UUID.
pub async fn add_port(
    client: &Client,
    bridge: &str,
    name: &str,
    ofport_request: Option<i64>,
    external_ids: &BTreeMap<String, String>,
) -> Result<Uuid, BridgeError> {
    let ids = Value::map(external_ids.clone());
    let sel = Operation::select("Interface")
        .where_eq("name", name)
        .columns(&["_uuid", "external_ids"]);
    let r = client
        .transact(&[
            sel,
            Operation::select("Bridge")
                .where_eq("name", bridge)
                .columns(&["ports"]),
        ])
        .await
        .map_err(ovsdb_err(bridge, "reading port"))?;
    if r[1].rows().is_empty() {
        return Err(BridgeError::NoSuchBridge {
            bridge: bridge.to_owned(),
        });
    }
    if let Some(row) = r[0].rows().first() {
        let uuid = row_uuid(bridge, row, "Interface")?;
        if &decoded(bridge, row.string_map("Interface", "external_ids"))? != external_ids {
            let upd = Operation::update("Interface", Row::new().with("external_ids", ids))
                .where_eq("_uuid", uuid.clone());
            client
                .transact(&[upd])
                .await
                .map_err(ovsdb_err(bridge, "updating port external_ids"))?;
        }
        return Ok(uuid);
    }
    let ofport = Value::Set(ofport_request.map(Atom::Integer).into_iter().collect());
    let iface = Row::new()
        .with("name", name)
        .with("ofport_request", ofport)
        .with("external_ids", ids);
    let port = Row::new()
        .with("name", name)
        .with("interfaces", Value::set([Atom::named("i")]));
    let link = Mutation::insert("ports", Value::set([Atom::named("p")]));
    let ops = [
        Operation::insert("Interface", iface).named("i"),
        Operation::insert("Port", port).named("p"),
        Operation::mutate("Bridge", vec![link]).where_eq("name", bridge),
    ];
    let r = client
        .transact(&ops)
        .await
        .map_err(ovsdb_err(bridge, "adding port"))?;
    decoded(
        bridge,
        r[0].uuid.clone().ok_or_else(|| OvsdbError::MissingColumn {
            table: "Interface".into(),
            column: "_uuid".into(),
        }),
    )
}

/// Removes port `name` from `bridge` (its Port and Interface rows go with it). Returns false if
/// there was no such port, so repeating it is harmless.
pub async fn delete_port(client: &Client, bridge: &str, name: &str) -> Result<bool, BridgeError> {
    let sel = Operation::select("Port")
        .where_eq("name", name)
        .columns(&["_uuid"]);
    let r = client
        .transact(&[sel])
        .await
        .map_err(ovsdb_err(bridge, "reading port"))?;
    let Some(row) = r[0].rows().first() else {
        return Ok(false);
    };
    let uuid = row_uuid(bridge, row, "Port")?;
    let unlink = Mutation::delete("ports", Value::set([uuid]));
    let op = Operation::mutate("Bridge", vec![unlink]).where_eq("name", bridge);
    client
        .transact(&[op])
        .await
        .map_err(ovsdb_err(bridge, "deleting port"))?;
    Ok(true)
}

/// The `external_ids` keys of a Pod's Interface row: the contract between the CNI plugin, which
/// writes them when it attaches the Pod, and the agent, which reads them (and acknowledges).
pub mod pod_port_keys {
    pub const CONTAINER_ID: &str = "container-id";
    pub const POD_NAME: &str = "k8s-pod-name";
    pub const POD_NAMESPACE: &str = "k8s-pod-namespace";
    pub const IP: &str = "ip";
    pub const MAC: &str = "mac";
    /// Written by the agent once every flow of the Pod is installed; value [`FLOWS_READY_VALUE`].
    pub const FLOWS_READY: &str = "ovs-egress-flows-ready";
    pub const FLOWS_READY_VALUE: &str = "true";
    /// Written with [`FLOWS_READY`]: the cookie round of the agent that installed the flows.
    pub const FLOWS_ROUND: &str = "ovs-egress-flows-round";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_is_rejected_naming_the_field() {
        let mut cfg = BridgeConfig::default();
        cfg.gateway.mac = Some("02:44:01:00:00".into());
        assert!(
            validate(&cfg)
                .unwrap_err()
                .to_string()
                .contains("gateway.mac")
        );
        let mut cfg = BridgeConfig::default();
        cfg.tunnel.name = "a-much-too-long-name".into();
        assert!(
            validate(&cfg)
                .unwrap_err()
                .to_string()
                .contains("tunnel.name")
        );
        let cfg = BridgeConfig {
            table_names: vec![(3, "A".into()), (3, "B".into())],
            ..BridgeConfig::default()
        };
        assert!(validate(&cfg).unwrap_err().to_string().contains("table 3"));
        assert!(validate(&BridgeConfig::default()).is_ok());
    }

    #[test]
    fn tunnel_options_are_flow_based_without_local_ip_and_optional_port_and_csum() {
        let mut cfg = BridgeConfig::default();
        let [gw, tun] = specs(&cfg);
        assert_eq!(
            (gw.kind, gw.ofport_request),
            ("internal", Some(GATEWAY_OFPORT))
        );
        assert_eq!(
            (tun.kind, tun.ofport_request),
            ("geneve", Some(TUNNEL_OFPORT))
        );
        let keys: Vec<_> = tun.options.keys().map(String::as_str).collect();
        assert_eq!(keys, ["key", "remote_ip"]);
        cfg.tunnel.dst_port = Some(7000);
        cfg.tunnel.csum = true;
        let [_, tun] = specs(&cfg);
        assert_eq!(tun.options["dst_port"], "7000");
        assert_eq!(tun.options["csum"], "true");
        assert!(!tun.options.contains_key("local_ip"));
    }
}
