//! The agent's configuration: the config file (like Antrea's `antrea-agent.conf`) and the
//! command-line flags of `ovs-egress agent`.
//!
//! Everything that cannot work is refused at start-up with an error naming the file and the
//! key (unknown keys, unsupported tunnel types, a traffic mode Egress cannot use, invalid
//! except CIDRs, an out-of-range IP limit), so a typo never silently changes behaviour. Nothing
//! here talks to the cluster or the host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ApiRetryArgs, FeatureGates};
use ovs_egress_core::pipeline::IpNetwork;
use ovs_egress_inputs::parse_cidr;

/// `egress.maxEgressIPsPerNode` when unset or 0, and its upper bound (one mark per IP).
pub const MAX_EGRESS_IPS_PER_NODE: u32 = 255;

/// Datapath of the OVS bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathType {
    /// The kernel datapath.
    #[default]
    System,
    /// The userspace datapath.
    Netdev,
}

/// The agent config file as written (before the checks of [`AgentConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    #[serde(default)]
    pub feature_gates: FeatureGates,
    #[serde(default = "default_bridge")]
    pub ovs_bridge: String,
    #[serde(default)]
    pub ovs_datapath_type: DatapathType,
    #[serde(default = "default_gateway")]
    pub host_gateway: String,
    #[serde(default = "default_tunnel_type")]
    pub tunnel_type: String,
    /// UDP port of the tunnel; 0 means the tunnel type's default (6081 for Geneve).
    #[serde(default)]
    pub tunnel_port: u16,
    #[serde(default)]
    pub tunnel_csum: bool,
    #[serde(default = "default_encap_mode")]
    pub traffic_encap_mode: String,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default, rename = "serviceCIDR", deserialize_with = "optional_cidr")]
    pub service_cidr: Option<IpNetwork>,
    #[serde(default)]
    pub transport_interface: Option<String>,
    #[serde(default)]
    pub egress_device: Option<String>,
    /// UDP port of the agents' membership on every Node's transport IP (Antrea's `clusterPort`).
    #[serde(default = "default_cluster_port")]
    pub cluster_port: u16,
    #[serde(default)]
    pub membership: MembershipConfig,
}

/// The `membership` section: SWIM timing and where the keys are.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MembershipConfig {
    /// Each agent probes one member per period.
    #[serde(default = "default_probe_period")]
    pub probe_period: ConfigDuration,
    /// How long to wait for a direct ack before asking others to probe; below the period.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout: ConfigDuration,
    /// How long a member stays suspect before it is declared down.
    #[serde(default = "default_suspicion_timeout")]
    pub suspicion_timeout: ConfigDuration,
    /// The Secret holding the keys (data key `keys`, one base64 32-byte key per line).
    #[serde(default)]
    pub key_secret: SecretRef,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_period: default_probe_period(),
            probe_timeout: default_probe_timeout(),
            suspicion_timeout: default_suspicion_timeout(),
            key_secret: SecretRef::default(),
        }
    }
}

/// A Secret by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    #[serde(default = "default_secret_namespace")]
    pub namespace: String,
    #[serde(default = "default_secret_name")]
    pub name: String,
}

impl Default for SecretRef {
    fn default() -> Self {
        Self {
            namespace: default_secret_namespace(),
            name: default_secret_name(),
        }
    }
}

/// A duration written as `<number>ms` or `<number>s` (decimals allowed), e.g. `100ms`, `1.5s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl std::str::FromStr for ConfigDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1.0)
        } else {
            return Err(format!(
                "{text:?} is not a duration (write e.g. 100ms or 1.5s)"
            ));
        };
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (write e.g. 100ms or 1.5s)"))?;
        if !value.is_finite() || value < 0.0 || value * scale > 3600.0 {
            return Err(format!("{text:?} is out of range (0 to 1h)"));
        }
        Ok(ConfigDuration(Duration::from_secs_f64(value * scale)))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The `egress` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressConfig {
    #[serde(default, rename = "exceptCIDRs", deserialize_with = "cidrs")]
    pub except_cidrs: Vec<IpNetwork>,
    /// 0 (or unset) means [`MAX_EGRESS_IPS_PER_NODE`].
    #[serde(default, rename = "maxEgressIPsPerNode")]
    pub max_egress_ips_per_node: u32,
    #[serde(default)]
    pub snat_fully_random_ports: bool,
    /// Valid lifetime (seconds) of the egress IP addresses this Node holds, renewed every
    /// quarter of it: a frozen or killed agent's addresses disappear by themselves. 0 turns the
    /// lease (and the wait for it on failover) off.
    #[serde(default = "default_ip_lease_seconds", rename = "ipLeaseSeconds")]
    pub ip_lease_seconds: u32,
    /// On SIGTERM, how long the agent keeps its egress IPs waiting for their next holders to
    /// announce them before it removes them anyway (0: at once).
    #[serde(default = "default_hand_over_timeout")]
    pub hand_over_timeout: ConfigDuration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            except_cidrs: Vec::new(),
            max_egress_ips_per_node: MAX_EGRESS_IPS_PER_NODE,
            snat_fully_random_ports: false,
            ip_lease_seconds: default_ip_lease_seconds(),
            hand_over_timeout: default_hand_over_timeout(),
        }
    }
}

fn default_bridge() -> String {
    "br-int".to_string()
}
fn default_gateway() -> String {
    "antrea-gw0".to_string()
}
fn default_tunnel_type() -> String {
    "geneve".to_string()
}
fn default_encap_mode() -> String {
    "encap".to_string()
}
fn default_cluster_port() -> u16 {
    DEFAULT_CLUSTER_PORT
}
fn default_probe_period() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(100))
}
fn default_probe_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(40))
}
fn default_suspicion_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(200))
}
fn default_secret_namespace() -> String {
    "kube-system".to_string()
}
fn default_secret_name() -> String {
    DEFAULT_KEY_SECRET.to_string()
}
fn default_ip_lease_seconds() -> u32 {
    1
}
fn default_hand_over_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// The longest `egress.handOverTimeout`.
pub const MAX_HAND_OVER_TIMEOUT: Duration = Duration::from_secs(300);

/// `clusterPort` when unset (as Antrea's).
pub const DEFAULT_CLUSTER_PORT: u16 = 10351;
/// The membership key Secret's name when unset (the one the agent's RBAC rule names).
pub const DEFAULT_KEY_SECRET: &str = "ovs-egress-membership-keys";
/// How long after its last renewal the kernel may still keep an address whose valid lifetime
/// ran out: IPv4 and IPv6 lifetimes are whole seconds, checked by a timer that runs at least a
/// second apart (Linux `check_lifetime` / `addrconf_verify`).
pub const KERNEL_LIFETIME_SLACK: Duration = Duration::from_secs(1);

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            feature_gates: FeatureGates::default(),
            ovs_bridge: default_bridge(),
            ovs_datapath_type: DatapathType::default(),
            host_gateway: default_gateway(),
            tunnel_type: default_tunnel_type(),
            tunnel_port: 0,
            tunnel_csum: false,
            traffic_encap_mode: default_encap_mode(),
            egress: EgressConfig::default(),
            service_cidr: None,
            transport_interface: None,
            egress_device: None,
            cluster_port: DEFAULT_CLUSTER_PORT,
            membership: MembershipConfig::default(),
        }
    }
}

/// Why the config file cannot be used; names the file (and the key, when one is wrong).
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("reading agent config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("agent config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// `egress.exceptCIDRs`, each entry parsed where it enters (`ovs_egress_inputs::parse_cidr`).
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNetwork>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            parse_cidr(text).map_err(|e| serde::de::Error::custom(format!("exceptCIDRs: {e}")))
        })
        .collect()
}

/// `serviceCIDR`, parsed where it enters.
fn optional_cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpNetwork>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| {
            parse_cidr(&text).map_err(|e| serde::de::Error::custom(format!("serviceCIDR: {e}")))
        })
        .transpose()
}

impl AgentConfig {
    /// Parse and check the YAML text of `path` (an empty file means all defaults).
    pub fn parse(path: &Path, text: &str) -> Result<Self, AgentConfigError> {
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| AgentConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?
        };
        config
            .validate()
            .map_err(|(key, message)| AgentConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })?;
        if config.egress.max_egress_ips_per_node == 0 {
            config.egress.max_egress_ips_per_node = MAX_EGRESS_IPS_PER_NODE;
        }
        Ok(config)
    }

    /// Read, parse and check the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The first rule the config breaks, as (key, message).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        // These names reach OVSDB, netlink and iptables-restore input.
        let names = [
            ("ovsBridge", Some(&self.ovs_bridge)),
            ("hostGateway", Some(&self.host_gateway)),
            ("transportInterface", self.transport_interface.as_ref()),
            ("egressDevice", self.egress_device.as_ref()),
        ];
        for (key, name) in names {
            if let Some(name) = name
                && let Err(rule) = ovs_egress_inputs::check_interface_name(name)
            {
                return Err((key, rule));
            }
        }
        if self.tunnel_type != "geneve" {
            return Err((
                "tunnelType",
                format!("{:?} is not supported (only geneve)", self.tunnel_type),
            ));
        }
        if self.feature_gates.egress && self.traffic_encap_mode != "encap" {
            return Err((
                "trafficEncapMode",
                format!(
                    "{:?} cannot be used with the Egress feature (only encap)",
                    self.traffic_encap_mode
                ),
            ));
        }
        if self.egress.max_egress_ips_per_node > MAX_EGRESS_IPS_PER_NODE {
            return Err((
                "egress.maxEgressIPsPerNode",
                format!(
                    "{} is more than {MAX_EGRESS_IPS_PER_NODE}",
                    self.egress.max_egress_ips_per_node
                ),
            ));
        }
        if self.cluster_port == 0 {
            return Err(("clusterPort", "0 is not a port".into()));
        }
        let m = &self.membership;
        for (key, value) in [
            ("membership.probePeriod", m.probe_period),
            ("membership.probeTimeout", m.probe_timeout),
            ("membership.suspicionTimeout", m.suspicion_timeout),
        ] {
            if value.0.is_zero() {
                return Err((key, "must be more than 0".into()));
            }
        }
        if m.probe_timeout.0 >= m.probe_period.0 {
            return Err((
                "membership.probeTimeout",
                format!(
                    "{:?} is not shorter than membership.probePeriod ({:?})",
                    m.probe_timeout.0, m.probe_period.0
                ),
            ));
        }
        if m.key_secret.name.is_empty() || m.key_secret.namespace.is_empty() {
            return Err((
                "membership.keySecret",
                "needs a namespace and a name".into(),
            ));
        }
        if self.egress.hand_over_timeout.0 > MAX_HAND_OVER_TIMEOUT {
            return Err((
                "egress.handOverTimeout",
                format!(
                    "{:?} is more than {MAX_HAND_OVER_TIMEOUT:?} (a Pod's default grace period is 30 s)",
                    self.egress.hand_over_timeout.0
                ),
            ));
        }
        if self.egress.ip_lease_seconds > 3600 {
            return Err((
                "egress.ipLeaseSeconds",
                format!("{} is more than 3600", self.egress.ip_lease_seconds),
            ));
        }
        Ok(())
    }

    /// How long after it was declared down a Node may still hold its egress IPs: the address
    /// lifetime plus the kernel's check interval (zero without a lease).
    pub fn lease_bound(&self) -> Duration {
        match self.egress.ip_lease_seconds {
            0 => Duration::ZERO,
            secs => Duration::from_secs(u64::from(secs)) + KERNEL_LIFETIME_SLACK,
        }
    }

    /// The membership settings of Node `node`.
    pub fn membership_settings(&self, node: &str) -> crate::membership::Settings {
        let lease_bound = self.lease_bound();
        crate::membership::Settings {
            node: node.to_string(),
            port: self.cluster_port,
            probe_period: self.membership.probe_period.0,
            probe_timeout: self.membership.probe_timeout.0,
            suspicion_timeout: self.membership.suspicion_timeout.0,
            lease_bound,
            join_grace: lease_bound.max(Duration::from_secs(1)) + Duration::from_secs(1),
        }
    }
}

/// Flags of `ovs-egress agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// The name of the Node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Agent config file (antrea-agent.conf style); defaults apply without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig to use; without it the client is inferred as kubectl does: $KUBECONFIG,
    /// ~/.kube/config, then the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the plain-HTTP health endpoints `/livez` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:10350")]
    pub health_listen: SocketAddr,
    #[command(flatten)]
    pub api_retry: ApiRetryArgs,
    /// Directory of OVS's sockets (`db.sock`, `<bridge>.mgmt`).
    #[arg(long, default_value = "/var/run/openvswitch")]
    pub ovs_rundir: PathBuf,
    /// Status-only mode (tests without OVS): program nothing and report every IP the plan
    /// would assign as `IPAssigned=False` ("datapath disabled").
    #[arg(long)]
    pub no_datapath: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(Path::new("/etc/ovs-egress/agent.conf"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_antrea_defaults() {
        let config = parse("").unwrap();
        assert!(config.feature_gates.egress);
        assert_eq!(config.ovs_bridge, "br-int");
        assert_eq!(config.ovs_datapath_type, DatapathType::System);
        assert_eq!(config.host_gateway, "antrea-gw0");
        assert_eq!(config.tunnel_type, "geneve");
        assert_eq!(config.traffic_encap_mode, "encap");
        assert_eq!(config.egress.max_egress_ips_per_node, 255);
        assert!(!config.egress.snat_fully_random_ports);
        assert_eq!(
            config,
            AgentConfig::default(),
            "no config file means the same"
        );
        let config = parse("egress: {snatFullyRandomPorts: true}\n").unwrap();
        assert_eq!(config.egress.max_egress_ips_per_node, 255);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            "featureGates: {Egress: true}\novsBridge: br-x\novsDatapathType: netdev\n\
             hostGateway: gw1\ntunnelType: geneve\ntunnelPort: 6090\ntunnelCsum: true\n\
             trafficEncapMode: encap\nserviceCIDR: 10.96.0.0/12\ntransportInterface: eth1\n\
             egressDevice: egress0\negress:\n  exceptCIDRs: [192.168.0.0/16, 'fd00::/8']\n  \
             maxEgressIPsPerNode: 7\n  snatFullyRandomPorts: true\n",
        )
        .unwrap();
        assert_eq!(config.ovs_bridge, "br-x");
        assert_eq!(config.ovs_datapath_type, DatapathType::Netdev);
        assert_eq!(config.host_gateway, "gw1");
        assert_eq!(config.tunnel_port, 6090);
        assert!(config.tunnel_csum);
        assert_eq!(config.service_cidr, Some("10.96.0.0/12".parse().unwrap()));
        assert_eq!(config.transport_interface.as_deref(), Some("eth1"));
        assert_eq!(config.egress_device.as_deref(), Some("egress0"));
        assert_eq!(config.egress.except_cidrs.len(), 2);
        assert_eq!(config.egress.max_egress_ips_per_node, 7);
        assert!(config.egress.snat_fully_random_ports);
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let error = parse("ovsBrigde: br-int\n").unwrap_err();
        assert!(error.contains("unknown field `ovsBrigde`"), "{error}");
        let error = parse("egress: {maxEgressIPs: 3}\n").unwrap_err();
        assert!(error.contains("unknown field `maxEgressIPs`"), "{error}");
    }

    #[test]
    fn tunnel_types_other_than_geneve_are_refused() {
        let error = parse("tunnelType: vxlan\n").unwrap_err();
        assert_eq!(
            error,
            "agent config /etc/ovs-egress/agent.conf: tunnelType: \"vxlan\" is not supported (only geneve)"
        );
    }

    #[test]
    fn non_encap_mode_is_refused_with_egress_and_allowed_without() {
        let error = parse("trafficEncapMode: noEncap\n").unwrap_err();
        assert!(error.contains("trafficEncapMode: \"noEncap\""), "{error}");
        assert!(error.contains("Egress"), "{error}");
        let config = parse("featureGates: {Egress: false}\ntrafficEncapMode: hybrid\n").unwrap();
        assert_eq!(config.traffic_encap_mode, "hybrid");
    }

    #[test]
    fn invalid_except_cidr_is_refused_naming_it() {
        let error = parse("egress: {exceptCIDRs: [10.0.0.0/8, 10.1.0.0/33]}\n").unwrap_err();
        assert!(
            error.contains("exceptCIDRs: \"10.1.0.0/33\" needs a prefix length"),
            "{error}"
        );
        let error = parse("egress: {exceptCIDRs: [nonsense]}\n").unwrap_err();
        assert!(
            error.contains("exceptCIDRs: \"nonsense\" is not ADDRESS/PREFIX"),
            "{error}"
        );
    }

    #[test]
    fn max_egress_ips_zero_means_255_and_above_255_is_refused() {
        let config = parse("egress: {maxEgressIPsPerNode: 0}\n").unwrap();
        assert_eq!(config.egress.max_egress_ips_per_node, 255);
        assert_eq!(
            parse("egress: {maxEgressIPsPerNode: 255}\n")
                .unwrap()
                .egress
                .max_egress_ips_per_node,
            255
        );
        let error = parse("egress: {maxEgressIPsPerNode: 256}\n").unwrap_err();
        assert!(
            error.contains("egress.maxEgressIPsPerNode: 256 is more than 255"),
            "{error}"
        );
    }

    #[test]
    fn datapath_type_must_be_system_or_netdev() {
        let error = parse("ovsDatapathType: dpdk\n").unwrap_err();
        assert!(error.contains("ovsDatapathType"), "{error}");
    }

    #[test]
    fn interface_names_linux_refuses_are_refused_naming_the_key() {
        // Before: a newline in a name reached iptables-restore input.
        for (yaml, key) in [
            ("ovsBridge: \"br\\nint\"\n", "ovsBridge"),
            ("hostGateway: \"gw 0\"\n", "hostGateway"),
            ("transportInterface: eth0/1\n", "transportInterface"),
            ("egressDevice: a-very-long-device-name\n", "egressDevice"),
            ("hostGateway: \"\"\n", "hostGateway"),
        ] {
            let error = parse(yaml).unwrap_err();
            assert!(error.contains(&format!(": {key}: ")), "{yaml:?}: {error}");
        }
    }

    #[test]
    fn membership_defaults_detect_a_dead_node_in_about_half_a_second() {
        let config = parse("").unwrap();
        assert_eq!(config.cluster_port, 10351);
        let m = &config.membership;
        assert_eq!(m.probe_period.0, Duration::from_millis(100));
        assert_eq!(m.probe_timeout.0, Duration::from_millis(40));
        assert_eq!(m.suspicion_timeout.0, Duration::from_millis(200));
        assert_eq!(m.key_secret.namespace, "kube-system");
        assert_eq!(m.key_secret.name, DEFAULT_KEY_SECRET);
        assert_eq!(config.egress.ip_lease_seconds, 1);
        assert_eq!(config.lease_bound(), Duration::from_secs(2));
        assert_eq!(config.egress.hand_over_timeout.0, Duration::from_secs(5));
        // Worst case on 3 Nodes: probed within two periods, one period to fail the probe, then
        // the suspicion.
        let detect = m.probe_period.0 * 3 + m.suspicion_timeout.0;
        assert!(detect <= Duration::from_millis(500), "{detect:?}");
    }

    #[test]
    fn membership_keys_are_read() {
        let config = parse(
            "clusterPort: 10400\nmembership:\n  probePeriod: 1s\n  probeTimeout: 250ms\n  \
             suspicionTimeout: 1.5s\n  keySecret: {namespace: ovs, name: keys}\n\
             egress: {ipLeaseSeconds: 0}\n",
        )
        .unwrap();
        let settings = config.membership_settings("n1");
        assert_eq!(settings.port, 10400);
        assert_eq!(settings.probe_period, Duration::from_secs(1));
        assert_eq!(settings.probe_timeout, Duration::from_millis(250));
        assert_eq!(settings.suspicion_timeout, Duration::from_millis(1500));
        assert_eq!(settings.lease_bound, Duration::ZERO);
        assert_eq!(config.membership.key_secret.name, "keys");
    }

    #[test]
    fn a_probe_timeout_not_below_the_period_is_refused_naming_both_keys() {
        let error = parse("membership: {probePeriod: 100ms, probeTimeout: 100ms}\n").unwrap_err();
        assert!(
            error.contains(
                "membership.probeTimeout: 100ms is not shorter than membership.probePeriod (100ms)"
            ),
            "{error}"
        );
        let error = parse("membership: {probePeriod: 100}\n").unwrap_err();
        assert!(error.contains("not a duration"), "{error}");
        let error = parse("membership: {suspicionTimeout: 0ms}\n").unwrap_err();
        assert!(
            error.contains("membership.suspicionTimeout: must be more than 0"),
            "{error}"
        );
        let error = parse("membership: {probePeriod: 1s, probeTimout: 2s}\n").unwrap_err();
        assert!(error.contains("unknown field `probeTimout`"), "{error}");
    }

    #[test]
    fn the_hand_over_timeout_is_read_and_bounded() {
        let config = parse("egress: {handOverTimeout: 1500ms}\n").unwrap();
        assert_eq!(
            config.egress.hand_over_timeout.0,
            Duration::from_millis(1500)
        );
        let config = parse("egress: {handOverTimeout: 0s}\n").unwrap();
        assert!(config.egress.hand_over_timeout.0.is_zero());
        let error = parse("egress: {handOverTimeout: 301s}\n").unwrap_err();
        assert!(
            error.contains("egress.handOverTimeout: 301s is more than"),
            "{error}"
        );
    }

    #[test]
    fn invalid_service_cidr_is_refused() {
        let error = parse("serviceCIDR: 10.96.0.0\n").unwrap_err();
        assert!(
            error.contains("serviceCIDR: \"10.96.0.0\" is not ADDRESS/PREFIX"),
            "{error}"
        );
    }
}
