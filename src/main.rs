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
enum Command {
    /// Print what one Node would program and report for a cluster given as YAML (offline).
    Render(ovs_egress::render::RenderArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Render(args) => ovs_egress::render::run(&args),
    }
}
