//! The agent's reflector stores → one `ClusterView` (plus what the status writer compares
//! against: each Egress's current status and uid).
//!
//! [`Views`] keeps that view between passes and re-parses only the stored objects that changed
//! since the last pass: the reflector replaces an object's `Arc` in its store on every event,
//! so an object whose `Arc` is the one seen last pass is unchanged (a relist brings new `Arc`s;
//! those with the `resourceVersion` already parsed are not parsed again). Each changed object's
//! contribution replaces its old one in place; every list of the view is kept sorted by
//! (namespace, name). [`Stores::snapshot`] is the full rebuild it must always equal (tested
//! with random event sequences); the benchmark `benches/view.rs` compares the two.
//!
//! Objects that do not deserialize are logged by name (once per version) and skipped; the
//! rest of the view is unaffected. It decides nothing: `plan::compute` reads the view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;

use super::config::AgentConfig;
use ovs_egress_core::api::{EgressStatus, v1beta1};
use ovs_egress_core::model::{self, ClusterView, PlanConfig};
use ovs_egress_kube::convert;
use ovs_egress_kube::reflect::{typed_object, typed_objects};

/// The agent's caches, all untyped.
pub struct Stores {
    pub egresses: Store<DynamicObject>,
    pub pools: Store<DynamicObject>,
    pub nodes: Store<DynamicObject>,
    pub namespaces: Store<DynamicObject>,
    /// Only this Node's Pods.
    pub pods: Store<DynamicObject>,
}

/// One consistent read of the caches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub view: ClusterView,
    /// Egress name → its status as last seen.
    pub statuses: BTreeMap<String, EgressStatus>,
    /// Egress name → uid (for events).
    pub uids: BTreeMap<String, String>,
}

impl Stores {
    /// Wait until every cache has its first full list.
    pub async fn wait_until_ready(&self) -> anyhow::Result<()> {
        for (kind, store) in [
            ("Egress", &self.egresses),
            ("ExternalIPPool", &self.pools),
            ("Node", &self.nodes),
            ("Namespace", &self.namespaces),
            ("Pod", &self.pods),
        ] {
            store
                .wait_until_ready()
                .await
                .map_err(|error| anyhow::anyhow!("{kind} cache: {error}"))?;
        }
        Ok(())
    }

    /// The view as of now, with `local_ips` and the plan knobs of `config`, rebuilt from every
    /// stored object (the reference [`Views::refresh`] must equal).
    pub fn snapshot(&self, local_ips: BTreeSet<IpAddr>, config: &AgentConfig) -> Snapshot {
        let egresses = typed_objects::<v1beta1::Egress>(&self.egresses.state(), "Egress");
        let pools = typed_objects::<v1beta1::ExternalIPPool>(&self.pools.state(), "ExternalIPPool");
        let nodes = typed_objects::<Node>(&self.nodes.state(), "Node");
        let namespaces = typed_objects::<Namespace>(&self.namespaces.state(), "Namespace");
        let pods = typed_objects::<Pod>(&self.pods.state(), "Pod");
        let name = |e: &v1beta1::Egress| e.metadata.name.clone().unwrap_or_default();
        Snapshot {
            statuses: egresses
                .iter()
                .map(|e| (name(e), e.status.clone().unwrap_or_default()))
                .collect(),
            uids: egresses
                .iter()
                .filter_map(|e| Some((name(e), e.metadata.uid.clone()?)))
                .collect(),
            view: ClusterView {
                egresses: sorted(egresses.iter().map(Into::into).collect()),
                pools: sorted(pools.iter().map(Into::into).collect()),
                nodes: sorted(nodes.iter().map(convert::node).collect()),
                namespaces: sorted(namespaces.iter().map(convert::namespace).collect()),
                pods: sorted(pods.iter().map(convert::pod).collect()),
                local_ips,
                alive: None,
                config: plan_config(config),
            },
        }
    }
}

fn plan_config(config: &AgentConfig) -> PlanConfig {
    PlanConfig {
        max_egress_ips_per_node: config.egress.max_egress_ips_per_node,
    }
}

/// The view kept between passes (see the module's documentation).
#[derive(Default)]
pub struct Views {
    egresses: Tracked,
    pools: Tracked,
    nodes: Tracked,
    namespaces: Tracked,
    pods: Tracked,
    snapshot: Snapshot,
}

/// What one Egress object contributes.
struct EgressParts {
    model: model::Egress,
    status: EgressStatus,
    uid: Option<String>,
}

impl Views {
    pub fn new() -> Views {
        Views::default()
    }

    /// The view as of now, equal to [`Stores::snapshot`]'s: only the objects that changed
    /// since the last call are parsed again. `alive` is reset to `None`.
    pub fn refresh(
        &mut self,
        stores: &Stores,
        local_ips: BTreeSet<IpAddr>,
        config: &AgentConfig,
    ) -> &mut Snapshot {
        let snapshot = &mut self.snapshot;
        let changes = self.egresses.update(stores.egresses.state(), |object| {
            let egress: v1beta1::Egress = typed_object(object, "Egress")?;
            Some(EgressParts {
                model: (&egress).into(),
                status: egress.status.unwrap_or_default(),
                uid: egress.metadata.uid,
            })
        });
        let mut models = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Now(key, parts) => {
                    snapshot.statuses.insert(key.1.clone(), parts.status);
                    match parts.uid {
                        Some(uid) => snapshot.uids.insert(key.1.clone(), uid),
                        None => snapshot.uids.remove(&key.1),
                    };
                    models.push(Change::Now(key, parts.model));
                }
                Change::Gone(key) => {
                    snapshot.statuses.remove(&key.1);
                    snapshot.uids.remove(&key.1);
                    models.push(Change::Gone(key));
                }
            }
        }
        let view = &mut snapshot.view;
        apply(&mut view.egresses, models);
        let changes = self.pools.update(stores.pools.state(), |object| {
            let pool: v1beta1::ExternalIPPool = typed_object(object, "ExternalIPPool")?;
            Some((&pool).into())
        });
        apply(&mut view.pools, changes);
        let changes = self.nodes.update(stores.nodes.state(), |object| {
            typed_object(object, "Node").map(|n| convert::node(&n))
        });
        apply(&mut view.nodes, changes);
        let changes = self.namespaces.update(stores.namespaces.state(), |object| {
            typed_object(object, "Namespace").map(|n| convert::namespace(&n))
        });
        apply(&mut view.namespaces, changes);
        let changes = self.pods.update(stores.pods.state(), |object| {
            typed_object(object, "Pod").map(|p| convert::pod(&p))
        });
        apply(&mut view.pods, changes);
        view.local_ips = local_ips;
        view.alive = None;
        view.config = plan_config(config);
        snapshot
    }
}

/// Where a stored object sits, as the store keys it: (namespace or "", name).
type Key = (String, String);

fn key_of(object: &DynamicObject) -> Key {
    let metadata = &object.metadata;
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// The key of a view entry; the same (namespace, name) as its object's [`Key`], since every
/// conversion takes them from the object's metadata.
trait Keyed {
    fn key(&self) -> (&str, &str);
}

impl Keyed for model::Egress {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

impl Keyed for model::ExternalIpPool {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

impl Keyed for model::Node {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

impl Keyed for model::Namespace {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

impl Keyed for model::Pod {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

fn sorted<M: Keyed>(mut items: Vec<M>) -> Vec<M> {
    items.sort_by(|a, b| a.key().cmp(&b.key()));
    items
}

/// A change of one object's contribution to the view.
enum Change<M> {
    /// It is now `M` (new, or replacing what it contributed before).
    Now(Key, M),
    /// It contributes nothing any more (deleted, or its new version does not parse).
    Gone(Key),
}

/// Applies `changes` to `items`, kept sorted by key: in place when they are few, by one
/// rebuild when they are many (the first list, a relist).
fn apply<M: Keyed>(items: &mut Vec<M>, changes: Vec<Change<M>>) {
    const IN_PLACE: usize = 32;
    if changes.len() <= IN_PLACE {
        for change in changes {
            let (Change::Now(key, _) | Change::Gone(key)) = &change;
            let wanted = (key.0.as_str(), key.1.as_str());
            let at = items.binary_search_by(|item| item.key().cmp(&wanted));
            match (change, at) {
                (Change::Now(_, item), Ok(at)) => items[at] = item,
                (Change::Now(_, item), Err(at)) => items.insert(at, item),
                (Change::Gone(_), Ok(at)) => {
                    items.remove(at);
                }
                (Change::Gone(_), Err(_)) => {}
            }
        }
        return;
    }
    let mut all: BTreeMap<Key, M> = items
        .drain(..)
        .map(|item| {
            let (namespace, name) = item.key();
            ((namespace.to_string(), name.to_string()), item)
        })
        .collect();
    for change in changes {
        match change {
            Change::Now(key, item) => all.insert(key, item),
            Change::Gone(key) => all.remove(&key),
        };
    }
    items.extend(all.into_values());
}

/// One kind's stored objects as seen by the last [`Tracked::update`].
#[derive(Default)]
struct Tracked {
    /// By the address of the store's `Arc`, which `Entry::object` holds: no other object can
    /// have that address while it is tracked.
    entries: HashMap<usize, Entry>,
    /// Counts the updates; an entry not seen by the current one was replaced or deleted.
    update: u64,
}

struct Entry {
    object: Arc<DynamicObject>,
    key: Key,
    /// Whether it parsed (and so contributes to the view).
    parsed: bool,
    /// The last update that saw it in the store.
    seen: u64,
}

fn address(object: &Arc<DynamicObject>) -> usize {
    Arc::as_ptr(object) as usize
}

/// The same version of the same object: both carry the same `resourceVersion`.
fn same_version(a: &DynamicObject, b: &DynamicObject) -> bool {
    let (a, b) = (&a.metadata, &b.metadata);
    a.resource_version.is_some() && a.resource_version == b.resource_version && a.uid == b.uid
}

impl Tracked {
    /// Compares `objects` (a store's current content) with the last call's and returns the
    /// changed contributions, parsing with `parse` only the objects that changed.
    fn update<M>(
        &mut self,
        objects: Vec<Arc<DynamicObject>>,
        parse: impl Fn(&DynamicObject) -> Option<M>,
    ) -> Vec<Change<M>> {
        self.update += 1;
        let update = self.update;
        let mut fresh = Vec::new();
        let mut kept = 0;
        for object in objects {
            match self.entries.get_mut(&address(&object)) {
                Some(entry) => {
                    entry.seen = update;
                    kept += 1;
                }
                None => fresh.push(object),
            }
        }
        if fresh.is_empty() && kept == self.entries.len() {
            return Vec::new();
        }
        // The entries not seen were replaced or deleted since the last call.
        let gone: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.seen != update)
            .map(|(at, _)| *at)
            .collect();
        let mut left: HashMap<Key, Entry> = gone
            .iter()
            .filter_map(|at| self.entries.remove(at))
            .map(|entry| (entry.key.clone(), entry))
            .collect();
        let mut changes = Vec::new();
        for object in fresh {
            let key = key_of(&object);
            let previous = left.remove(&key);
            let parsed = match previous {
                Some(previous) if same_version(&previous.object, &object) => previous.parsed,
                previous => match parse(&object) {
                    Some(item) => {
                        changes.push(Change::Now(key.clone(), item));
                        true
                    }
                    None => {
                        if previous.is_some_and(|p| p.parsed) {
                            changes.push(Change::Gone(key.clone()));
                        }
                        false
                    }
                },
            };
            let entry = Entry {
                object,
                key,
                parsed,
                seen: update,
            };
            self.entries.insert(address(&entry.object), entry);
        }
        changes.extend(
            left.into_values()
                .filter(|entry| entry.parsed)
                .map(|entry| Change::Gone(entry.key)),
        );
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ApiResource;
    use kube::runtime::{reflector, watcher};
    use serde_json::{Value, json};

    fn store<K: kube::Resource<DynamicType = ()>>(objects: Vec<Value>) -> Store<DynamicObject> {
        let mut writer = reflector::store::Writer::new(ApiResource::erase::<K>(&()));
        for object in objects {
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        writer.as_reader()
    }

    #[test]
    fn snapshot_converts_every_kind_and_skips_what_does_not_parse() {
        let stores = Stores {
            egresses: store::<v1beta1::Egress>(vec![json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "e1", "uid": "u-1"},
                "spec": {"appliedTo": {}, "egressIP": "10.0.0.9"},
                "status": {"egressNode": "n1"}
            })]),
            pools: store::<v1beta1::ExternalIPPool>(vec![json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "ExternalIPPool",
                "metadata": {"name": "p1"},
                "spec": {"ipRanges": [{"cidr": "10.0.0.0/30"}], "nodeSelector": {}}
            })]),
            nodes: store::<Node>(vec![json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
            })]),
            namespaces: store::<Namespace>(vec![json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}
            })]),
            pods: store::<Pod>(vec![
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"namespace": "prod", "name": "good"},
                       "spec": {"nodeName": "n1", "containers": []}}),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"namespace": "prod", "name": "bad"},
                       "spec": {"nodeName": "n1", "hostNetwork": "yes", "containers": []}}),
            ]),
        };
        let local: BTreeSet<IpAddr> = ["10.0.0.9".parse().unwrap()].into();
        let mut config = AgentConfig::default();
        config.egress.max_egress_ips_per_node = 7;
        let snapshot = stores.snapshot(local.clone(), &config);
        let view = &snapshot.view;
        assert_eq!(view.egresses[0].egress_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(view.pools[0].name, "p1");
        assert_eq!(
            view.nodes[0].transport_ip,
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(view.namespaces[0].name, "prod");
        let pods: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["good"]);
        assert_eq!(view.local_ips, local);
        assert_eq!(view.config.max_egress_ips_per_node, 7);
        assert_eq!(snapshot.statuses["e1"].egress_node.as_deref(), Some("n1"));
        assert_eq!(snapshot.uids["e1"], "u-1");
        let mut views = Views::new();
        assert_eq!(*views.refresh(&stores, local, &config), snapshot);
    }

    fn pod_object(name: &str, rv: u32) -> Arc<DynamicObject> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": "prod", "name": name, "resourceVersion": rv.to_string()},
                "spec": {"nodeName": "n1", "containers": []}
            }))
            .unwrap(),
        )
    }

    /// Runs `update` over `objects` and returns the names it parsed and the changes' keys.
    fn parsed_by(tracked: &mut Tracked, objects: &[Arc<DynamicObject>]) -> (Vec<String>, usize) {
        let parsed = std::cell::RefCell::new(Vec::new());
        let changes = tracked.update(objects.to_vec(), |object| {
            parsed.borrow_mut().push(key_of(object).1);
            Some(())
        });
        (parsed.into_inner(), changes.len())
    }

    #[test]
    fn an_update_parses_only_the_objects_that_changed() {
        let mut tracked = Tracked::default();
        let mut objects: Vec<_> = (0..4).map(|i| pod_object(&format!("p{i}"), i)).collect();
        let (parsed, changes) = parsed_by(&mut tracked, &objects);
        assert_eq!((parsed.len(), changes), (4, 4));
        assert_eq!(
            parsed_by(&mut tracked, &objects),
            (vec![], 0),
            "nothing changed"
        );
        objects[2] = pod_object("p2", 10);
        assert_eq!(parsed_by(&mut tracked, &objects), (vec!["p2".into()], 1));
        // A relist: new objects with the versions already parsed.
        let relisted: Vec<_> = objects
            .iter()
            .map(|o| Arc::new(o.as_ref().clone()))
            .collect();
        assert_eq!(parsed_by(&mut tracked, &relisted), (vec![], 0));
        // A deletion parses nothing and removes the contribution.
        let changes = tracked.update(relisted[1..].to_vec(), |_| Some(()));
        assert!(matches!(&changes[..], [Change::Gone(key)] if key.1 == "p0"));
    }

    #[test]
    fn a_malformed_version_removes_the_contribution_until_a_good_one_comes() {
        let mut tracked = Tracked::default();
        let good = vec![pod_object("p", 1)];
        let parse = |o: &DynamicObject| typed_object::<Pod>(o, "Pod").map(|p| convert::pod(&p));
        let mut items = Vec::new();
        apply(&mut items, tracked.update(good.clone(), parse));
        assert_eq!(items.len(), 1);
        let mut bad = pod_object("p", 2).as_ref().clone();
        bad.data["spec"]["hostNetwork"] = json!("yes");
        apply(&mut items, tracked.update(vec![Arc::new(bad)], parse));
        assert!(items.is_empty());
        apply(&mut items, tracked.update(vec![pod_object("p", 3)], parse));
        assert_eq!(items.len(), 1);
    }

    /// One step of a random history of the five caches.
    #[derive(Clone, Debug)]
    enum Step {
        /// Create or change object `index` of `kind` (0..5) into `variant`, malformed or not.
        Apply {
            kind: usize,
            index: u8,
            variant: u8,
            malformed: bool,
        },
        Delete {
            kind: usize,
            index: u8,
        },
        /// The watch lists again: every object anew (with a new version when `bump`), except
        /// the first (deleted meanwhile) when `drop_first`.
        Relist {
            kind: usize,
            bump: bool,
            drop_first: bool,
        },
        /// A pass: the incremental view must equal the full rebuild.
        Pass,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..5usize, 0..6u8, 0..3u8, proptest::bool::weighted(0.2)).prop_map(
                |(kind, index, variant, malformed)| Step::Apply { kind, index, variant, malformed }
            ),
            1 => (0..5usize, 0..6u8).prop_map(|(kind, index)| Step::Delete { kind, index }),
            1 => (0..5usize, any::<bool>(), any::<bool>()).prop_map(
                |(kind, bump, drop_first)| Step::Relist { kind, bump, drop_first }
            ),
            2 => Just(Step::Pass),
        ]
    }

    /// Object `index` of `kind` in `variant` at version `rv`.
    fn object(kind: usize, index: u8, variant: u8, malformed: bool, rv: u32) -> DynamicObject {
        let rv = rv.to_string();
        let mut object = match kind {
            0 => json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": format!("e{index}"), "uid": format!("u{index}-{variant}")},
                "spec": {"appliedTo": {}, "egressIP": format!("10.0.0.{variant}")},
                "status": {"egressNode": format!("n{variant}")}
            }),
            1 => json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "ExternalIPPool",
                "metadata": {"name": format!("p{index}")},
                "spec": {"ipRanges": [{"cidr": format!("10.{variant}.0.0/30")}],
                         "nodeSelector": {}}
            }),
            2 => json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": format!("n{index}"), "labels": {"zone": format!("z{variant}")}},
                "status": {"addresses": [{"type": "InternalIP",
                                          "address": format!("192.0.2.{variant}")}]}
            }),
            3 => json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("ns{index}"), "labels": {"v": format!("{variant}")}}
            }),
            _ => json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": format!("ns{}", index % 2), "name": format!("pod{index}"),
                             "labels": {"v": format!("{variant}")}},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"podIP": format!("10.244.0.{variant}")}
            }),
        };
        object["metadata"]["resourceVersion"] = json!(rv);
        if malformed {
            // A field of the wrong type outside the metadata: stored, but not parsable.
            object["spec"] = json!({"hostNetwork": "yes", "appliedTo": "all", "ipRanges": 1,
                                    "finalizers": 7, "podCIDR": 3});
        }
        serde_json::from_value(object).unwrap()
    }

    type Writer = reflector::store::Writer<DynamicObject>;

    fn writers() -> Vec<Writer> {
        let resources = [
            ApiResource::erase::<v1beta1::Egress>(&()),
            ApiResource::erase::<v1beta1::ExternalIPPool>(&()),
            ApiResource::erase::<Node>(&()),
            ApiResource::erase::<Namespace>(&()),
            ApiResource::erase::<Pod>(&()),
        ];
        resources.into_iter().map(Writer::new).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn the_incremental_view_equals_the_full_rebuild(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let mut writers = writers();
            let readers: Vec<_> = writers.iter().map(Writer::as_reader).collect();
            let stores = Stores {
                egresses: readers[0].clone(),
                pools: readers[1].clone(),
                nodes: readers[2].clone(),
                namespaces: readers[3].clone(),
                pods: readers[4].clone(),
            };
            let config = AgentConfig::default();
            let local: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
            let mut views = Views::new();
            let mut rv = 0;
            for step in steps.into_iter().chain([Step::Pass]) {
                rv += 1;
                match step {
                    Step::Apply { kind, index, variant, malformed } => {
                        let object = object(kind, index, variant, malformed, rv);
                        writers[kind].apply_watcher_event(&watcher::Event::Apply(object));
                    }
                    Step::Delete { kind, index } => {
                        let object = object(kind, index, 0, false, rv);
                        writers[kind].apply_watcher_event(&watcher::Event::Delete(object));
                    }
                    Step::Relist { kind, bump, drop_first } => {
                        let mut objects = readers[kind].state();
                        objects.sort_by_key(|o| key_of(o));
                        let writer = &mut writers[kind];
                        writer.apply_watcher_event(&watcher::Event::Init);
                        for object in objects.iter().skip(usize::from(drop_first)) {
                            let mut object = object.as_ref().clone();
                            if bump {
                                object.metadata.resource_version = Some(rv.to_string());
                            }
                            writer.apply_watcher_event(&watcher::Event::InitApply(object));
                        }
                        writer.apply_watcher_event(&watcher::Event::InitDone);
                    }
                    Step::Pass => {
                        let full = stores.snapshot(local.clone(), &config);
                        let incremental = views.refresh(&stores, local.clone(), &config);
                        proptest::prop_assert_eq!(&*incremental, &full);
                    }
                }
            }
        }
    }
}
