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
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
