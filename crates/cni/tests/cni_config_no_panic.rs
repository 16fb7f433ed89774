//! Property: the CNI plugin's network-config parser never panics, whatever the kubelet (or
//! anyone who can write the config) hands it on stdin: arbitrary bytes, and JSON objects made
//! of the fields it reads with good, bad and hostile values (10,000 cases each). Whatever it
//! accepts has a network name that is not a path, a bridge name Linux accepts and a Pod subnet
//! with room for a Pod.

use ovs_egress_cni::config::NetConf;
use ovs_egress_inputs::{check_cni_network_name, check_interface_name};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(values).prop_map(Value::from)
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        one_of(&[
            "1.0.0",
            "0.4.0",
            "pods",
            "/etc",
            "..",
            "a/b",
            "br-int",
            "br\nint",
            "ovs-egress",
            "10.244.1.0/24",
            "::/0",
            "0.0.0.0/0",
            "fd00::/64",
            "fd00::/127",
            "10.244.1.0/31",
            "10.244.1.1",
            "10.244.1.255",
            "::1",
            "system",
            "netdev",
            "dpdk",
        ]),
        prop::collection::vec(any::<u8>().prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

fn config_object() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "cniVersion",
        "name",
        "type",
        "podCIDR",
        "gateway",
        "mtu",
        "ovsBridge",
        "ovsDbSocket",
        "datapathType",
        "stateDir",
        "flowsReadyTimeoutMs",
        "prevResult",
        "unknown",
    ];
    (
        one_of(&["1.0.0", "0.4.0", "2.0.0"]),
        prop_oneof![
            3 => one_of(&["pods", "k8s-pod-network", "a.b_c"]),
            1 => field_value(),
        ],
        prop_oneof![
            3 => one_of(&["10.244.1.0/24", "fd00:10::/64", "::/0", "0.0.0.0/0", "10.244.1.0/30"]),
            1 => field_value(),
        ],
        prop::collection::vec((prop::sample::select(KEYS), field_value()), 0..6),
    )
        .prop_map(|(version, name, pod_cidr, extra)| {
            let mut map = Map::new();
            map.insert("cniVersion".into(), version);
            map.insert("name".into(), name);
            map.insert("type".into(), "ovs-egress".into());
            map.insert("podCIDR".into(), pod_cidr);
            for (key, value) in extra {
                map.insert(key.to_string(), value);
            }
            Value::Object(map)
        })
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(conf) = NetConf::parse(input) {
        prop_assert!(
            check_cni_network_name(&conf.name).is_ok(),
            "{:?}",
            conf.name
        );
        prop_assert!(
            check_interface_name(&conf.ovs_bridge).is_ok(),
            "{:?}",
            conf.ovs_bridge
        );
        let (first, last) = conf.pod_cidr.usable();
        prop_assert!(first < last, "{}", conf.pod_cidr);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&input)?;
    }

    #[test]
    fn config_objects_never_panic_and_what_is_accepted_is_sound(object in config_object()) {
        check(object.to_string().as_bytes())?;
    }
}
