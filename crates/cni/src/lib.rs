//! The ovs-egress CNI 1.0.0 plugin (binary `ovs-egress-cni`) the kubelet (container runtime) calls to wire a Pod:
//! a veth pair, an IP from the Node's podCIDR, a default route via the gateway, and the host end
//! as a port of the OVS bridge with the `external_ids` the agent reads (see [`port::keys`]).
//! It prints exactly one JSON document on stdout (the Result, VERSION info, or a CNI error) and
//! must never leave half a Pod behind when ADD fails.
//!
//! Network config (stdin), our fields with their defaults:
//!
//! ```json
//! {
//!   "cniVersion": "1.0.0", "name": "ovs-egress", "type": "ovs-egress",
//!   "podCIDR": "10.244.1.0/24",        // required: the Node's Pod subnet
//!   "gateway": "10.244.1.1",           // default: first address of podCIDR
//!   "mtu": 1450,                       // default: 1500 underlay - 50 Geneve overhead
//!   "ovsBridge": "br-int",
//!   "ovsDbSocket": "/var/run/openvswitch/db.sock",
//!   "datapathType": "system",          // or "netdev": adds the userspace-datapath interface hygiene
//!   "stateDir": "/var/lib/cni/networks/<name>",  // IP reservations, one file per IP
//!   "flowsReadyTimeoutMs": 5000        // 0: do not wait for the agent (see below)
//! }
//! ```
//!
//! ADD returns once the Pod's datapath is in place, not merely its port: after attaching the
//! port it waits until the agent acknowledges, in the Interface's `external_ids`
//! ([`port::keys::FLOWS_READY`]), that every flow of the Pod is installed, its Egress decision
//! included, so the Pod's very first packet is treated as it will be for its lifetime. A missing
//! or stuck agent must not block Pod creation: after `flowsReadyTimeoutMs` ADD succeeds anyway
//! and says so on stderr (the runtime's log).
//!
//! Error codes: 1, 2, 3, 4, 6, 7, 11 as in the spec; 100 a host operation failed, 101 podCIDR
//! exhausted, 102 CHECK found a difference (see [`error::Code`]).

pub mod config;
pub mod error;
mod hygiene;
mod link;
mod netns;
pub mod plugin;
pub mod port;
pub mod result;
pub mod store;

use std::io::Read;

use config::{CNI_VERSION, Command, Env, NetConf, SUPPORTED_VERSIONS, peek_version};
use error::{CniError, Code};
use result::VersionInfo;

/// What the process prints and its exit status.
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
}

/// Run one CNI command given the environment (through `var`) and stdin.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = peek_version(stdin).unwrap_or_else(|| CNI_VERSION.to_string());
    match execute(var, stdin, &version) {
        Ok(stdout) => Outcome { stdout, status: 0 },
        Err(err) => Outcome {
            stdout: err.to_json(&version),
            status: 1,
        },
    }
}

fn execute(
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    version: &str,
) -> Result<String, CniError> {
    let env = Env::parse(var)?;
    match env.command {
        Command::Version => to_json(&VersionInfo {
            cni_version: version.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }),
        Command::Add => to_json(&plugin::add(&env, &NetConf::parse(stdin)?)?),
        Command::Del => plugin::del(&env, &NetConf::parse(stdin)?).map(|()| String::new()),
        Command::Check => plugin::check(&env, &NetConf::parse(stdin)?).map(|()| String::new()),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CniError> {
    serde_json::to_string(value)
        .map_err(|e| CniError::with_cause(Code::HostOperation, "encoding the result", e))
}

/// The process edge: real environment, real stdin, print, return the exit status.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::with_cause(
            Code::DecodingFailure,
            "reading the network config from stdin",
            e,
        );
        println!("{}", err.to_json(CNI_VERSION));
        return 1;
    }
    let outcome = run(|k| std::env::var(k).ok(), &stdin);
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    outcome.status
}
