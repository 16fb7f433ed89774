//! `ovs::bridge` against a real OVS (private instance, userspace datapath, own namespace): the
//! rows it creates, what `ovs-ofctl --names` shows, idempotence, drift repair, the
//! flow-restore-wait handshake and `external_ids`. Needs root and Open vSwitch; fails (never
//! skips) without them.

use std::time::Duration;

use ovs_egress_integration::{Netns, OvsInstance};
use ovs_egress_ovsdb::bridge::{
    BridgeConfig, BridgeError, DatapathType, add_port, bridge_external_ids,
    clear_flow_restore_wait, delete_port, ensure_bridge, flow_restore_wait,
    update_bridge_external_ids, wait_until_applied,
};
use ovs_egress_ovsdb::{Client, ClientOptions};

fn config() -> BridgeConfig {
    let mut cfg = BridgeConfig {
        datapath_type: DatapathType::Netdev,
        table_names: vec![
            (0, "Classifier".into()),
            (10, "SpoofGuard".into()),
            (70, "L3Forwarding".into()),
        ],
        ..BridgeConfig::default()
    };
    cfg.gateway.mac = Some("02:44:01:00:00:01".into());
    cfg.gateway.mtu = Some(1450);
    cfg.tunnel.dst_port = Some(6081);
    cfg.tunnel.csum = true;
    cfg
}

async fn setup(role: &str) -> (OvsInstance, Client) {
    let ovs = OvsInstance::start(&Netns::new(role).unwrap()).unwrap();
    let c = Client::connect(&ovs.db_socket(), ClientOptions::default())
        .await
        .unwrap();
    (ovs, c)
}

fn get(ovs: &OvsInstance, table: &str, record: &str, column: &str) -> String {
    ovs.vsctl(&["get", table, record, column])
        .unwrap()
        .trim()
        .to_owned()
}

/// Everything ensure_bridge manages, as ovs-vsctl prints it.
fn db_state(ovs: &OvsInstance) -> String {
    let mut s = ovs.vsctl(&["show"]).unwrap();
    for (table, cols) in [
        (
            "Bridge",
            "_uuid,name,datapath_type,fail_mode,protocols,ports,flow_tables",
        ),
        (
            "Interface",
            "_uuid,name,type,options,ofport_request,mac,mtu_request",
        ),
        ("Flow_Table", "_uuid,name"),
    ] {
        s += &ovs.vsctl(&["--columns", cols, "list", table]).unwrap();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_bridge_creates_secure_bridge_gateway_tunnel_and_named_tables() {
    let (ovs, c) = setup("br").await;
    let report = ensure_bridge(&c, &config()).await.unwrap();
    assert!(
        report.writes.iter().any(|w| w == "insert Bridge br-int"),
        "{report:?}"
    );
    wait_until_applied(&c, Duration::from_secs(10))
        .await
        .unwrap();

    assert_eq!(get(&ovs, "Bridge", "br-int", "fail_mode"), "secure");
    assert_eq!(get(&ovs, "Bridge", "br-int", "datapath_type"), "netdev");
    assert_eq!(
        get(&ovs, "Bridge", "br-int", "protocols"),
        "[OpenFlow10, OpenFlow13, OpenFlow15]"
    );
    let ports = ovs.vsctl(&["list-ports", "br-int"]).unwrap();
    assert_eq!(
        ports.split_whitespace().collect::<Vec<_>>(),
        ["antrea-gw0", "antrea-tun0"]
    );
    assert_eq!(get(&ovs, "Interface", "antrea-gw0", "ofport"), "2");
    assert_eq!(get(&ovs, "Interface", "antrea-gw0", "type"), "internal");
    assert_eq!(get(&ovs, "Interface", "antrea-tun0", "ofport"), "1");
    assert_eq!(get(&ovs, "Interface", "antrea-tun0", "type"), "geneve");
    assert_eq!(
        get(&ovs, "Interface", "antrea-tun0", "options"),
        r#"{csum="true", dst_port="6081", key=flow, remote_ip=flow}"#,
        "no local_ip"
    );
    // The gateway is a real device in the node namespace with our MAC and MTU.
    let link = ovs
        .netns()
        .exec(&["ip", "-o", "link", "show", "antrea-gw0"])
        .unwrap();
    assert!(
        link.contains("mtu 1450") && link.contains("02:44:01:00:00:01"),
        "{link}"
    );

    let tables = ovs
        .vsctl(&["--columns=name", "list", "Flow_Table"])
        .unwrap();
    for name in ["Classifier", "SpoofGuard", "L3Forwarding"] {
        assert!(tables.contains(name), "{tables}");
    }
    ovs.ofctl(&[
        "-O",
        "OpenFlow15",
        "add-flow",
        "br-int",
        "table=10,priority=7,actions=drop",
    ])
    .unwrap();
    let flows = ovs
        .ofctl(&["-O", "OpenFlow15", "--names", "dump-flows", "br-int"])
        .unwrap();
    assert!(
        flows
            .lines()
            .any(|l| l.contains("table=SpoofGuard,") && l.contains("priority=7 actions=drop")),
        "{flows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_ensure_bridge_writes_nothing_and_leaves_the_database_identical() {
    let (ovs, c) = setup("idem").await;
    ensure_bridge(&c, &config()).await.unwrap();
    let before = db_state(&ovs);
    let report = ensure_bridge(&c, &config()).await.unwrap();
    assert!(!report.changed(), "second run wrote: {:?}", report.writes);
    assert_eq!(db_state(&ovs), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_bridge_repairs_drift_and_completes_a_bridge_made_by_ovs_vsctl() {
    let (ovs, c) = setup("drift").await;
    // A bare bridge as `ovs-vsctl add-br` makes it, plus a foreign port that must survive.
    ovs.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
    ])
    .unwrap();
    ovs.vsctl(&[
        "add-port",
        "br-int",
        "other0",
        "--",
        "set",
        "interface",
        "other0",
        "type=internal",
    ])
    .unwrap();
    let report = ensure_bridge(&c, &config()).await.unwrap();
    for w in [
        "update Bridge br-int fail_mode,protocols",
        "add antrea-gw0 to Bridge br-int.ports",
    ] {
        assert!(
            report.writes.iter().any(|x| x == w),
            "missing {w}: {report:?}"
        );
    }
    let fresh = db_state(&ovs);

    // Drift: someone changes fail mode, gateway MTU, tunnel options and a table name.
    ovs.vsctl(&["set", "Bridge", "br-int", "fail_mode=standalone"])
        .unwrap();
    ovs.vsctl(&["set", "Interface", "antrea-gw0", "mtu_request=1500"])
        .unwrap();
    ovs.vsctl(&[
        "set",
        "Interface",
        "antrea-tun0",
        "options:local_ip=10.0.0.1",
    ])
    .unwrap();
    let tables = ovs
        .vsctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Flow_Table",
            "name=SpoofGuard",
        ])
        .unwrap();
    ovs.vsctl(&["set", "Flow_Table", tables.trim(), "name=Wrong"])
        .unwrap();
    let report = ensure_bridge(&c, &config()).await.unwrap();
    assert_eq!(
        report.writes,
        [
            "update Bridge br-int fail_mode",
            "update Interface antrea-gw0",
            "update Interface antrea-tun0",
            "update Flow_Table 10 name SpoofGuard",
        ]
    );
    assert_eq!(db_state(&ovs), fresh);
    assert!(
        ovs.vsctl(&["list-ports", "br-int"])
            .unwrap()
            .contains("other0")
    );

    // Tables dropped from the config lose their names.
    let mut cfg = config();
    cfg.table_names.retain(|(n, _)| *n != 70);
    let report = ensure_bridge(&c, &cfg).await.unwrap();
    assert_eq!(report.writes, ["mutate Bridge br-int.flow_tables"]);
    let flow_tables = get(&ovs, "Bridge", "br-int", "flow_tables");
    assert!(
        flow_tables.starts_with("{0=") && !flow_tables.contains("70="),
        "{flow_tables}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_restore_wait_is_read_and_cleared_without_touching_other_keys() {
    let (ovs, c) = setup("frw").await;
    assert!(!flow_restore_wait(&c).await.unwrap());
    ovs.vsctl_no_wait(&[
        "set",
        "Open_vSwitch",
        ".",
        "other_config:flow-restore-wait=true",
        "other_config:keep=me",
    ])
    .unwrap();
    assert!(flow_restore_wait(&c).await.unwrap());
    clear_flow_restore_wait(&c).await.unwrap();
    assert!(!flow_restore_wait(&c).await.unwrap());
    assert_eq!(get(&ovs, "Open_vSwitch", ".", "other_config"), "{keep=me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_external_ids_are_set_replaced_and_removed_per_key() {
    let (ovs, c) = setup("extids").await;
    ensure_bridge(&c, &config()).await.unwrap();
    ovs.vsctl(&["set", "Bridge", "br-int", "external_ids:owner=someone"])
        .unwrap();
    update_bridge_external_ids(&c, "br-int", &[("roundNum", "1")], &[])
        .await
        .unwrap();
    update_bridge_external_ids(&c, "br-int", &[("roundNum", "2")], &[])
        .await
        .unwrap();
    let ids = bridge_external_ids(&c, "br-int").await.unwrap();
    assert_eq!(ids.get("roundNum").map(String::as_str), Some("2"));
    assert_eq!(ids.get("owner").map(String::as_str), Some("someone"));
    update_bridge_external_ids(&c, "br-int", &[], &["roundNum"])
        .await
        .unwrap();
    assert_eq!(
        get(&ovs, "Bridge", "br-int", "external_ids"),
        "{owner=someone}"
    );

    let err = update_bridge_external_ids(&c, "br-none", &[("a", "b")], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BridgeError::NoSuchBridge { .. }) && err.to_string().contains("br-none"),
        "{err}"
    );
    let err = bridge_external_ids(&c, "br-none").await.unwrap_err();
    assert!(err.to_string().contains("br-none"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_port_attaches_a_device_with_external_ids_idempotently_and_delete_port_removes_it() {
    let (ovs, c) = setup("ports").await;
    ensure_bridge(&c, &config()).await.unwrap();
    let ns = ovs.netns();
    ns.exec(&[
        "ip", "link", "add", "vpod0", "type", "veth", "peer", "name", "vpod0p",
    ])
    .unwrap();
    let ids = std::collections::BTreeMap::from([
        ("k8s-pod-name".to_owned(), "a".to_owned()),
        ("ip".to_owned(), "10.244.1.10".to_owned()),
    ]);
    let first = add_port(&c, "br-int", "vpod0", Some(10), &ids)
        .await
        .unwrap();
    assert_eq!(
        add_port(&c, "br-int", "vpod0", Some(10), &ids)
            .await
            .unwrap(),
        first
    );
    wait_until_applied(&c, Duration::from_secs(10))
        .await
        .unwrap();
    // On a loaded machine ovs-vswitchd may publish the ofport a moment after cur_cfg.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&ovs, "Interface", "vpod0", "ofport") == "[]" && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&ovs, "Interface", "vpod0", "ofport"), "10");
    assert_eq!(
        get(&ovs, "Interface", "vpod0", "external_ids"),
        r#"{ip="10.244.1.10", k8s-pod-name=a}"#
    );
    let mut moved = ids.clone();
    moved.insert("ip".into(), "10.244.1.11".into());
    add_port(&c, "br-int", "vpod0", Some(10), &moved)
        .await
        .unwrap();
    assert!(get(&ovs, "Interface", "vpod0", "external_ids").contains("10.244.1.11"));

    assert!(delete_port(&c, "br-int", "vpod0").await.unwrap());
    assert!(!delete_port(&c, "br-int", "vpod0").await.unwrap());
    assert!(
        !ovs.vsctl(&["list-ports", "br-int"])
            .unwrap()
            .contains("vpod0")
    );
    assert!(
        ovs.vsctl(&["list", "Interface", "vpod0"]).is_err(),
        "Interface row left behind"
    );
    let err = add_port(&c, "br-none", "vpod0", None, &ids)
        .await
        .unwrap_err();
    assert!(matches!(err, BridgeError::NoSuchBridge { .. }), "{err}");
}
