//! The OVSDB client against a real ovsdb-server (private instance in our own namespace): every
//! transact operation, monitors, echo under an inactivity probe, reconnect with full resync, and
//! the errors a caller sees. Needs root and Open vSwitch; fails (never skips) without them.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ovs_egress_integration::{Netns, OvsInstance};
use ovs_egress_ovsdb::{
    Atom, Client, ClientOptions, Condition, ConnState, MonitorEvent, MonitorSpec, MonitorStream,
    Mutation, Operation, OvsdbError, Row, TableCache, Value, WaitUntil,
};

fn ovs(role: &str) -> OvsInstance {
    OvsInstance::start(&Netns::new(role).unwrap()).unwrap()
}

async fn client(ovs: &OvsInstance) -> Client {
    Client::connect(&ovs.db_socket(), ClientOptions::default())
        .await
        .unwrap()
}

async fn next(stream: &mut MonitorStream) -> MonitorEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .expect("no monitor event within 10 s")
        .expect("monitor stream ended")
}

fn qos_type(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.str("QoS", "type").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_insert_select_update_mutate_wait_delete_round_trip() {
    let ovs = ovs("ops");
    let c = client(&ovs).await;

    // insert (QoS is a root table, so it can be deleted directly later)
    let row = Row::new()
        .with("type", "linux-htb")
        .with("external_ids", Value::map([("owner", "test")]));
    let r = c.transact(&[Operation::insert("QoS", row)]).await.unwrap();
    let uuid = r[0].uuid.clone().expect("insert returns the row uuid");

    // select with a condition on a map column
    let sel = Operation::select("QoS")
        .filter(Condition::includes(
            "external_ids",
            Value::map([("owner", "test")]),
        ))
        .columns(&["_uuid", "type", "external_ids"]);
    let r = c.transact(std::slice::from_ref(&sel)).await.unwrap();
    assert_eq!(qos_type(r[0].rows()), ["linux-htb"]);
    assert_eq!(
        r[0].rows()[0].get("_uuid"),
        Some(&Value::from(uuid.clone()))
    );

    // update + mutate in one transaction
    let upd = Operation::update("QoS", Row::new().with("type", "linux-hfsc"))
        .where_eq("_uuid", uuid.clone());
    let mutate = Operation::mutate(
        "QoS",
        vec![Mutation::insert(
            "other_config",
            Value::map([("max-rate", "1000")]),
        )],
    )
    .where_eq("_uuid", uuid.clone());
    let r = c.transact(&[upd, mutate]).await.unwrap();
    assert_eq!((r[0].count, r[1].count), (Some(1), Some(1)));
    let r = c
        .transact(&[Operation::select("QoS").where_eq("_uuid", uuid.clone())])
        .await
        .unwrap();
    let row = &r[0].rows()[0];
    assert_eq!(row.str("QoS", "type").unwrap(), "linux-hfsc");
    assert_eq!(
        row.string_map("QoS", "other_config").unwrap()["max-rate"],
        "1000"
    );
    // ovs-vsctl sees the same row
    let listed = ovs.vsctl(&["get", "QoS", uuid.as_str(), "type"]).unwrap();
    assert_eq!(listed.trim(), "linux-hfsc");

    // wait: satisfied now; a wait that is not satisfied with timeout 0 fails naming wait + QoS
    let expect = vec![Row::new().with("type", "linux-hfsc")];
    let ok = Operation::wait("QoS", &["type"], WaitUntil::Equal, expect.clone(), Some(0))
        .where_eq("_uuid", uuid.clone());
    c.transact(&[ok]).await.unwrap();
    let stale = Operation::wait("QoS", &["type"], WaitUntil::NotEqual, expect, Some(0))
        .where_eq("_uuid", uuid.clone());
    let err = c.transact(&[stale]).await.unwrap_err().to_string();
    assert!(
        err.contains("operation 0 (wait on QoS)") && err.contains("timed out"),
        "{err}"
    );

    // delete
    let r = c
        .transact(&[Operation::delete("QoS").where_eq("_uuid", uuid.clone())])
        .await
        .unwrap();
    assert_eq!(r[0].count, Some(1));
    let r = c.transact(&[sel]).await.unwrap();
    assert!(r[0].rows().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_uuid_links_rows_inserted_in_one_transaction_and_errors_name_op_and_table() {
    let ovs = ovs("named");
    let c = client(&ovs).await;
    let ops = [
        Operation::insert(
            "Interface",
            Row::new().with("name", "p1").with("type", "internal"),
        )
        .named("iface"),
        Operation::insert(
            "Port",
            Row::new()
                .with("name", "p1")
                .with("interfaces", Value::set([Atom::named("iface")])),
        )
        .named("port"),
        Operation::insert(
            "Bridge",
            Row::new()
                .with("name", "br-named")
                .with("datapath_type", "netdev")
                .with("ports", Value::set([Atom::named("port")])),
        )
        .named("br"),
        Operation::mutate(
            "Open_vSwitch",
            vec![Mutation::insert("bridges", Value::set([Atom::named("br")]))],
        ),
    ];
    c.transact(&ops).await.unwrap();
    let ports = ovs.vsctl(&["list-ports", "br-named"]).unwrap();
    assert_eq!(ports.trim(), "p1");

    // a constraint violation: Port.name is required and unique -> duplicate name fails
    let dup = [
        Operation::insert("Interface", Row::new().with("name", "p1")).named("i2"),
        Operation::insert(
            "Port",
            Row::new()
                .with("name", "p1")
                .with("interfaces", Value::set([Atom::named("i2")])),
        )
        .named("p2"),
        Operation::mutate(
            "Bridge",
            vec![Mutation::insert("ports", Value::set([Atom::named("p2")]))],
        )
        .where_eq("name", "br-named"),
    ];
    let err = c.transact(&dup).await.unwrap_err();
    assert!(
        matches!(err, OvsdbError::CommitFailed { .. }),
        "duplicate index is a commit error: {err}"
    );
    assert!(err.to_string().contains("constraint violation"), "{err}");
    let err = c
        .transact(&[Operation::select("No_Such_Table")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("select on No_Such_Table"), "{err}");
    let spec = MonitorSpec::new().table("No_Such_Table", &[]);
    let err = c
        .monitor(&spec)
        .await
        .err()
        .expect("monitor of an unknown table");
    assert!(err.to_string().contains("OVSDB monitor failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_sees_interface_added_and_removed_by_ovs_vsctl() {
    let ovs = ovs("mon");
    ovs.vsctl(&[
        "add-br",
        "br-m",
        "--",
        "set",
        "bridge",
        "br-m",
        "datapath_type=netdev",
    ])
    .unwrap();
    let c = client(&ovs).await;
    let spec = MonitorSpec::new()
        .table("Interface", &["name", "ofport", "external_ids"])
        .table("Port", &["name"])
        .table("Bridge", &["name", "ports"]);
    let mut m = c.monitor(&spec).await.unwrap();
    let mut cache = TableCache::new();
    let first = next(&mut m).await;
    assert!(matches!(first, MonitorEvent::Snapshot(_)), "{first:?}");
    cache.apply(&first);
    let names = |c: &TableCache| -> Vec<String> {
        c.rows("Interface")
            .map(|(_, r)| r.str("Interface", "name").unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&cache), ["br-m"]);

    ovs.vsctl(&[
        "add-port",
        "br-m",
        "pod-a",
        "--",
        "set",
        "interface",
        "pod-a",
        "type=internal",
        "external_ids:pod=default/a",
    ])
    .unwrap();
    // Updates arrive as inserts, then modifications (e.g. ofport set by vswitchd).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = next(&mut m).await;
        assert!(matches!(ev, MonitorEvent::Update(_)), "{ev:?}");
        cache.apply(&ev);
        let pod = cache
            .rows("Interface")
            .find(|(_, r)| r.str("Interface", "name").unwrap() == "pod-a");
        if let Some((_, row)) = pod
            && row.optional("Interface", "ofport").unwrap().is_some()
        {
            assert_eq!(
                row.string_map("Interface", "external_ids").unwrap()["pod"],
                "default/a"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod-a with an ofport never appeared"
        );
    }
    ovs.vsctl(&["del-port", "br-m", "pod-a"]).unwrap();
    while names(&cache).contains(&"pod-a".to_owned()) {
        cache.apply(&next(&mut m).await);
    }
    assert_eq!(names(&cache), ["br-m"]);
}

/// Makes ovsdb-server listen on an extra socket with a 1 s inactivity probe (Manager row).
fn probed_socket(ovs: &OvsInstance) -> std::path::PathBuf {
    let sock = ovs.rundir().join("probe.sock");
    let target = format!("punix:{}", sock.display());
    ovs.vsctl_no_wait(&["set-manager", &target]).unwrap();
    ovs.vsctl_no_wait(&["set", "Manager", ".", "inactivity_probe=1000"])
        .unwrap();
    ovs.dbctl(&[
        "ovsdb-server/add-remote",
        "db:Open_vSwitch,Open_vSwitch,manager_options",
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_keep_an_idle_connection_past_the_inactivity_probe() {
    let ovs = ovs("echo");
    let sock = probed_socket(&ovs);

    // Control: a client that ignores the server's echo is dropped by the server.
    let silent = std::thread::spawn({
        let sock = sock.clone();
        move || {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return (start.elapsed(), String::from_utf8_lossy(&got).into_owned()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("silent client: {e}"),
                }
            }
        }
    });

    let c = Client::connect(&sock, ClientOptions::default())
        .await
        .unwrap();
    let mut state = c.state();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (silent_after, silent_saw) = silent.join().unwrap();
    assert!(
        silent_saw.contains("\"echo\""),
        "server never probed: {silent_saw}"
    );
    assert!(
        silent_after < Duration::from_secs(10),
        "silent client not dropped"
    );
    // Our client answered every probe: still the first connection, and it works.
    assert_eq!(
        *state.borrow_and_update(),
        ConnState::Connected { generation: 1 }
    );
    assert!(
        !state.has_changed().unwrap(),
        "the connection was lost and re-made"
    );
    c.echo().await.unwrap();
    c.transact(&[Operation::select("Open_vSwitch")])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_ovsdb_server_restart_resyncs_monitors_with_a_full_snapshot() {
    let mut ovs = ovs("recon");
    ovs.vsctl(&[
        "add-br",
        "br-r",
        "--",
        "set",
        "bridge",
        "br-r",
        "datapath_type=netdev",
    ])
    .unwrap();
    let c = client(&ovs).await;
    let mut m = c
        .monitor(&MonitorSpec::new().table("Bridge", &["name"]))
        .await
        .unwrap();
    assert!(matches!(next(&mut m).await, MonitorEvent::Snapshot(s) if s["Bridge"].len() == 1));

    ovs.stop_ovsdb_server().unwrap();
    let ev = next(&mut m).await;
    assert!(matches!(ev, MonitorEvent::Disconnected(_)), "{ev:?}");
    let err = c
        .transact(&[Operation::select("Bridge")])
        .await
        .unwrap_err();
    assert!(matches!(err, OvsdbError::NotConnected { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&ovs.db_socket().display().to_string()),
        "{err}"
    );

    ovs.start_ovsdb_server().unwrap();
    let generation = c.wait_connected(Duration::from_secs(10)).await.unwrap();
    assert_eq!(generation, 2);
    let mut cache = TableCache::new();
    let ev = next(&mut m).await;
    assert!(matches!(ev, MonitorEvent::Snapshot(_)), "{ev:?}");
    cache.apply(&ev);
    let names: Vec<_> = cache
        .rows("Bridge")
        .map(|(_, r)| r.str("Bridge", "name").unwrap())
        .collect();
    assert_eq!(
        names,
        ["br-r"],
        "snapshot after reconnect holds the full state"
    );

    // Live again: new changes flow, transactions work.
    ovs.vsctl_no_wait(&["add-br", "br-s"]).unwrap();
    while cache.rows("Bridge").count() < 2 {
        cache.apply(&next(&mut m).await);
    }
    c.transact(&[Operation::select("Bridge")]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_is_an_error_naming_the_path_and_start_keeps_retrying() {
    let missing =
        std::env::temp_dir().join(format!("oe{:x}-no-such-ovs/db.sock", std::process::id()));
    let err = Client::connect(&missing, ClientOptions::default())
        .await
        .err()
        .expect("connect must fail");
    let text = err.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("cannot connect"),
        "{text}"
    );

    // start(): not ready while the socket is missing, connected once OVS appears there.
    let ovs = ovs("late");
    let late = ovs.rundir().join("late.sock");
    let c = Client::start(&late, ClientOptions::default());
    let mut state = c.state();
    let failing = state
        .wait_for(|s| {
            matches!(
                s,
                ConnState::Connecting {
                    last_error: Some(_)
                }
            )
        })
        .await
        .unwrap()
        .clone();
    let ConnState::Connecting {
        last_error: Some(e),
    } = failing
    else {
        unreachable!()
    };
    assert!(e.contains(&late.display().to_string()), "{e}");
    assert!(c.transact(&[Operation::select("Bridge")]).await.is_err());
    // A monitor asked for while disconnected starts with a snapshot once connected.
    let mut m = c
        .monitor(&MonitorSpec::new().table("Open_vSwitch", &[]))
        .await
        .unwrap();
    ovs.dbctl(&[
        "ovsdb-server/add-remote",
        &format!("punix:{}", late.display()),
    ])
    .unwrap();
    c.wait_connected(Duration::from_secs(10)).await.unwrap();
    c.transact(&[Operation::select("Bridge")]).await.unwrap();
    let ev = next(&mut m).await;
    assert!(
        matches!(&ev, MonitorEvent::Snapshot(s) if s["Open_vSwitch"].len() == 1),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_client_handle_closes_the_connection_and_its_monitors() {
    let ovs = ovs("drop");
    let monitors = || {
        let mem = ovs.dbctl(&["memory/show"]).unwrap();
        mem.split_whitespace()
            .find_map(|kv| kv.strip_prefix("monitors:"))
            .map(|n| n.parse::<u32>().unwrap())
            .unwrap_or(0)
    };
    let base = monitors(); // ovs-vswitchd's own
    let c = client(&ovs).await;
    let clone = c.clone();
    let mut m = c
        .monitor(&MonitorSpec::new().table("Bridge", &[]))
        .await
        .unwrap();
    next(&mut m).await;
    assert_eq!(monitors(), base + 1);
    drop(c);
    clone.echo().await.unwrap(); // a clone keeps the connection
    assert_eq!(monitors(), base + 1);
    drop(clone);
    assert_eq!(m.recv().await, None, "stream ends with the client");
    let deadline = Instant::now() + Duration::from_secs(5);
    while monitors() != base {
        assert!(Instant::now() < deadline, "server still has our monitor");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
