//! The `ovs-egress` binary: one executable, one subcommand per process role.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ovs-egress",
    version,
    about = "Stable egress IPs for Kubernetes Pods on Open vSwitch"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
