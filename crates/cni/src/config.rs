//! What the runtime hands the plugin: the `CNI_*` environment and the JSON network config on
//! stdin, parsed and validated into plain values. Pure: it never touches the host, so every
//! bad-input case is decided (and tested) here before anything is created.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{CniError, Code};
use super::result::CniResult;
use ipnetwork::IpNetwork;
use ovs_egress_inputs::{ip_to_u128, u128_to_ip};

/// The only result format we produce.
pub const CNI_VERSION: &str = "1.0.0";
/// Versions we accept in a network config (and report for VERSION).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];
/// Underlay MTU 1500 minus the Geneve overhead (50 bytes for IPv4 underlays):
/// larger tunnel frames are dropped silently by the userspace datapath.
pub const DEFAULT_MTU: u32 = 1450;
/// How long ADD waits for the agent to acknowledge the Pod's flows (`flowsReadyTimeoutMs`):
/// the agent answers within milliseconds; a Node without a running agent delays each Pod by
/// this much, never more.
pub const DEFAULT_FLOWS_READY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The `CNI_*` variables of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Path of the container's network namespace; optional for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs (`K8S_POD_NAME`, `K8S_POD_NAMESPACE`, …).
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Read the environment through `var` (the process environment in production).
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(invalid_env(format!(
                    "CNI_COMMAND {other:?} is not ADD, DEL, CHECK or VERSION"
                )));
            }
            None => return Err(invalid_env("CNI_COMMAND is not set")),
        };
        if command == Command::Version {
            return Ok(Env {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: BTreeMap::new(),
            });
        }
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid_env(format!("{name} is not set")))
        };
        let container_id = required("CNI_CONTAINERID")?;
        if !container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(invalid_env(format!(
                "CNI_CONTAINERID {container_id:?} may only hold letters, digits, '_', '.', '-'"
            )));
        }
        let ifname = required("CNI_IFNAME")?;
        validate_ifname(&ifname)?;
        let netns = match command {
            Command::Del => var("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            _ => Some(PathBuf::from(required("CNI_NETNS")?)),
        };
        let args = parse_args(var("CNI_ARGS").as_deref().unwrap_or(""))?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    pub fn pod_name(&self) -> &str {
        self.args.get("K8S_POD_NAME").map_or("", String::as_str)
    }

    pub fn pod_namespace(&self) -> &str {
        self.args
            .get("K8S_POD_NAMESPACE")
            .map_or("", String::as_str)
    }
}

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidEnv, msg)
}

fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(invalid_env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name (at most 15 bytes, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| invalid_env(format!("CNI_ARGS entry {pair:?} is not KEY=VALUE")))
        })
        .collect()
}

/// Which OVS datapath the bridge uses; `netdev` needs interface hygiene: OVS
/// reads veth ports through AF_PACKET while the kernel still sees their frames (ARP off, no
/// forwarding), and veth TX checksum offload breaks TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    System,
    Netdev,
}

/// The Node's Pod subnet and the gateway address in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSubnet {
    pub network: IpNetwork,
    pub gateway: IpAddr,
}

impl PodSubnet {
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    fn host_bits(&self) -> u32 {
        let bits = if self.is_ipv4() { 32 } else { 128 };
        bits - u32::from(self.network.prefix())
    }

    /// First and last address a Pod may get (the network address, and for IPv4 the broadcast
    /// address, are excluded; the gateway is skipped by the allocator).
    pub fn usable(&self) -> (u128, u128) {
        let net = ip_to_u128(self.network.network());
        let size_minus_one = if self.host_bits() == 128 {
            u128::MAX
        } else {
            (1u128 << self.host_bits()) - 1
        };
        let last = net + size_minus_one - u128::from(self.is_ipv4());
        (net + 1, last)
    }

    pub fn to_ip(&self, value: u128) -> IpAddr {
        u128_to_ip(value, self.is_ipv4())
    }
}

impl std::fmt::Display for PodSubnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.network.fmt(f)
    }
}

/// The validated network config.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub pod_cidr: PodSubnet,
    pub mtu: u32,
    pub ovs_bridge: String,
    pub ovs_db_socket: PathBuf,
    pub datapath: Datapath,
    /// Directory of the IP reservations (one file per reserved IP).
    pub state_dir: PathBuf,
    /// How long ADD waits for the agent's acknowledgement of the Pod's flows; zero: not at all.
    pub flows_ready_timeout: Duration,
    pub prev_result: Option<CniResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(rename = "podCIDR")]
    pod_cidr: String,
    gateway: Option<IpAddr>,
    mtu: Option<u32>,
    ovs_bridge: Option<String>,
    ovs_db_socket: Option<PathBuf>,
    datapath_type: Option<String>,
    state_dir: Option<PathBuf>,
    flows_ready_timeout_ms: Option<u64>,
    prev_result: Option<serde_json::Value>,
}

/// The `cniVersion` of a config, read leniently (used to answer VERSION and to label errors).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::with_cause(
                Code::DecodingFailure,
                "network config on stdin is not JSON",
                e,
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                Code::DecodingFailure,
                "network config on stdin is not a JSON object",
            ));
        }
        let raw: RawNetConf = serde_json::from_value(value).map_err(|e| {
            CniError::with_cause(Code::InvalidNetworkConfig, "invalid network config", e)
        })?;
        if !SUPPORTED_VERSIONS.contains(&raw.cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "network config cniVersion {:?} is not supported (supported: {})",
                    raw.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        // The name becomes a directory under /var/lib/cni/networks: never a path.
        if let Err(rule) = ovs_egress_inputs::check_cni_network_name(&raw.name) {
            return Err(invalid_conf(format!("network config field name {rule}")));
        }
        if raw.plugin_type.is_empty() {
            return Err(invalid_conf("network config field type is empty"));
        }
        let pod_cidr = parse_pod_cidr(&raw.pod_cidr, raw.gateway)?;
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        let min_mtu = if pod_cidr.is_ipv4() { 68 } else { 1280 };
        if !(min_mtu..=65535).contains(&mtu) {
            return Err(invalid_conf(format!(
                "network config field mtu {mtu} is outside {min_mtu}..=65535"
            )));
        }
        let datapath = match raw.datapath_type.as_deref() {
            None | Some("system") => Datapath::System,
            Some("netdev") => Datapath::Netdev,
            Some(other) => {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!("network config field datapathType {other:?} is not system or netdev"),
                ));
            }
        };
        let ovs_bridge = raw.ovs_bridge.unwrap_or_else(|| "br-int".to_string());
        if let Err(rule) = ovs_egress_inputs::check_interface_name(&ovs_bridge) {
            return Err(invalid_conf(format!(
                "network config field ovsBridge {rule}"
            )));
        }
        let prev_result = raw
            .prev_result
            .map(serde_json::from_value::<CniResult>)
            .transpose()
            .map_err(|e| {
                CniError::with_cause(Code::InvalidNetworkConfig, "invalid prevResult", e)
            })?;
        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/cni/networks").join(&raw.name));
        Ok(NetConf {
            cni_version: raw.cni_version,
            name: raw.name,
            pod_cidr,
            mtu,
            ovs_bridge,
            ovs_db_socket: raw
                .ovs_db_socket
                .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch/db.sock")),
            datapath,
            state_dir,
            flows_ready_timeout: raw
                .flows_ready_timeout_ms
                .map_or(DEFAULT_FLOWS_READY_TIMEOUT, Duration::from_millis),
            prev_result,
        })
    }
}

fn invalid_conf(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidNetworkConfig, msg)
}

fn parse_pod_cidr(text: &str, gateway: Option<IpAddr>) -> Result<PodSubnet, CniError> {
    let invalid = |why: &str| invalid_conf(format!("network config field podCIDR {why}"));
    let network = ovs_egress_inputs::parse_pod_cidr(text).map_err(|rule| invalid(&rule))?;
    let address = text
        .split('/')
        .next()
        .and_then(|a| a.parse::<IpAddr>().ok());
    if address != Some(network.network()) {
        return Err(invalid(&format!(
            "{text:?} has host bits set (the network is {network})"
        )));
    }
    // A Pod needs an address besides the network, gateway and (IPv4) broadcast addresses.
    let max_prefix = if network.is_ipv4() { 30 } else { 126 };
    if network.prefix() > max_prefix {
        return Err(invalid(&format!(
            "{text:?} has no room for a gateway and a Pod (prefix must be at most /{max_prefix})"
        )));
    }
    let mut cidr = PodSubnet {
        network,
        gateway: network.network(),
    };
    let (first, last) = cidr.usable();
    cidr.gateway = match gateway {
        None => cidr.to_ip(first),
        Some(gw) => {
            let value = ip_to_u128(gw);
            if gw.is_ipv4() != cidr.is_ipv4() || value < first || value > last {
                return Err(invalid_conf(format!(
                    "network config field gateway {gw} is not a usable address of podCIDR {text}"
                )));
            }
            gw
        }
    };
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::parse(|k| map.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/p"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn env_of_an_add_yields_pod_identity_from_cni_args() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.pod_name(), "web-0");
        assert_eq!(e.pod_namespace(), "default");
        assert_eq!(
            e.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/p"))
        );
    }

    #[test]
    fn env_errors_name_the_missing_or_invalid_variable() {
        let without = |skip: &str| {
            let pairs: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != skip).collect();
            env(&pairs).unwrap_err()
        };
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let err = without(var);
            assert_eq!(err.code, Code::InvalidEnv);
            assert!(err.msg.contains(var), "{var}: {}", err.msg);
        }
        let mut bad = ADD.to_vec();
        bad[3] = ("CNI_IFNAME", "a-name-longer-than-15");
        assert!(env(&bad).unwrap_err().msg.contains("CNI_IFNAME"));
        bad[3] = ("CNI_IFNAME", "eth0");
        bad[4] = ("CNI_ARGS", "K8S_POD_NAME");
        assert!(env(&bad).unwrap_err().msg.contains("CNI_ARGS"));
        bad[0] = ("CNI_COMMAND", "UPDATE");
        assert!(env(&bad).unwrap_err().msg.contains("UPDATE"));
    }

    #[test]
    fn del_does_not_need_a_netns() {
        let mut pairs: Vec<_> = ADD
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        pairs[0] = ("CNI_COMMAND", "DEL");
        assert_eq!(env(&pairs).unwrap().netns, None);
    }

    fn conf(extra: &str) -> Result<NetConf, CniError> {
        let text = format!(
            r#"{{"cniVersion":"1.0.0","name":"pods","type":"ovs-egress","podCIDR":"10.244.1.0/24"{extra}}}"#
        );
        NetConf::parse(text.as_bytes())
    }

    #[test]
    fn config_defaults_gateway_to_first_address_mtu_to_geneve_overhead_and_waits_for_flows() {
        let c = conf("").unwrap();
        assert_eq!(c.pod_cidr.gateway, "10.244.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.mtu, 1450);
        assert_eq!(c.ovs_bridge, "br-int");
        assert_eq!(c.datapath, Datapath::System);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/cni/networks/pods"));
        assert_eq!(c.flows_ready_timeout, DEFAULT_FLOWS_READY_TIMEOUT);
        let off = conf(r#","flowsReadyTimeoutMs":0"#).unwrap();
        assert_eq!(off.flows_ready_timeout, Duration::ZERO);
        let (first, last) = c.pod_cidr.usable();
        assert_eq!(c.pod_cidr.to_ip(first).to_string(), "10.244.1.1");
        assert_eq!(c.pod_cidr.to_ip(last).to_string(), "10.244.1.254");
    }

    #[test]
    fn config_errors_carry_the_spec_code_and_name_the_field() {
        let cases: &[(&[u8], Code, &str)] = &[
            (b"{not json", Code::DecodingFailure, "not JSON"),
            (b"[1]", Code::DecodingFailure, "object"),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
                Code::InvalidNetworkConfig,
                "podCIDR",
            ),
            (
                br#"{"cniVersion":"0.1.0","name":"n","type":"t","podCIDR":"10.0.0.0/24"}"#,
                Code::IncompatibleVersion,
                "0.1.0",
            ),
        ];
        for (input, code, needle) in cases {
            let err = NetConf::parse(input).unwrap_err();
            assert_eq!(err.code, *code, "{}", String::from_utf8_lossy(input));
            let text = format!("{} {:?}", err.msg, err.details);
            assert!(text.contains(needle), "{text}");
        }
        let field_cases = [
            (
                r#","datapathType":"dpdk""#,
                Code::UnsupportedField,
                "datapathType",
            ),
            (r#","mtu":10"#, Code::InvalidNetworkConfig, "mtu"),
            (
                r#","gateway":"10.9.9.9""#,
                Code::InvalidNetworkConfig,
                "gateway",
            ),
            (
                r#","gateway":"10.244.1.255""#,
                Code::InvalidNetworkConfig,
                "gateway",
            ),
            (
                r#","prevResult":{"ips":"x"}"#,
                Code::InvalidNetworkConfig,
                "prevResult",
            ),
        ];
        for (extra, code, needle) in field_cases {
            let err = conf(extra).unwrap_err();
            assert_eq!(err.code, code, "{extra}");
            assert!(err.msg.contains(needle), "{}", err.msg);
        }
    }

    #[test]
    fn network_names_that_are_paths_or_break_the_spec_pattern_are_refused() {
        // Before: the name was joined to /var/lib/cni/networks, so "/etc" or ".." escaped it.
        for name in ["/etc", "..", "../../etc", "a/b", "-x", "a b", "a\n"] {
            let text = serde_json::json!({"cniVersion": "1.0.0", "name": name,
                "type": "ovs-egress", "podCIDR": "10.244.1.0/24"})
            .to_string();
            let err = NetConf::parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.code, Code::InvalidNetworkConfig, "{name:?}");
            assert!(err.msg.contains("network config field name"), "{}", err.msg);
        }
        let ok = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod.net_1",
            "type": "ovs-egress", "podCIDR": "10.244.1.0/24"})
        .to_string();
        assert!(NetConf::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn bridge_names_that_linux_refuses_are_refused() {
        for bridge in ["br\nint", "br int", "1234567890123456", "a/b", ""] {
            let err = conf(&format!(",\"ovsBridge\":{}", serde_json::json!(bridge))).unwrap_err();
            assert_eq!(err.code, Code::InvalidNetworkConfig, "{bridge:?}");
            assert!(err.msg.contains("ovsBridge"), "{}", err.msg);
        }
    }

    #[test]
    fn prefix_zero_and_special_pod_cidrs_are_refused_without_panicking() {
        // Before: "::/0" overflowed a shift (a panic in debug builds).
        for (text, why) in [
            ("::/0", "prefix length from 1"),
            ("0.0.0.0/0", "prefix length from 1"),
            ("127.0.0.0/24", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/24", "multicast"),
            ("0.0.0.0/24", "this network"),
            ("fe80::/64", "link-local"),
            ("ff00::/64", "multicast"),
            ("::/64", "unspecified"),
        ] {
            let err = parse_pod_cidr(text, None).unwrap_err();
            assert!(err.msg.contains(why), "{text}: {}", err.msg);
        }
    }

    #[test]
    fn pod_cidr_must_be_a_network_with_room_for_a_pod() {
        assert!(
            parse_pod_cidr("10.244.1.5/24", None)
                .unwrap_err()
                .msg
                .contains("host bits")
        );
        assert!(
            parse_pod_cidr("10.244.1.0/31", None)
                .unwrap_err()
                .msg
                .contains("/30")
        );
        assert!(parse_pod_cidr("10.244.1.0", None).is_err());
        let v6 = parse_pod_cidr("fd00:10::/64", None).unwrap();
        assert_eq!(v6.gateway.to_string(), "fd00:10::1");
        let small = parse_pod_cidr("10.0.0.0/30", None).unwrap();
        let (first, last) = small.usable();
        assert_eq!((last - first) + 1, 2); // .1 (gateway) and .2
    }
}
