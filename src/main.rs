//! The `ovs-egress` binary: one executable, one subcommand per process role.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ovs-egress",
    version,
    about = "Stable egress IPs for Kubernetes Pods on Open vSwitch"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// CNI 1.0.0 plugin: reads CNI_* variables and the network config on stdin (as the kubelet
    /// calls it), prints the Result or a CNI error on stdout.
    Cni,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Cni) => std::process::exit(ovs_egress::cni::main()),
        None => Ok(()),
    }
}
