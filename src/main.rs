//! The `ovs-egress` binary: one executable, one subcommand per process role.

use std::path::PathBuf;

use anyhow::Context;
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
    /// Print the Egress and ExternalIPPool CRDs as multi-document YAML.
    Crds {
        /// Write one file per CRD into this directory instead (e.g. charts/ovs-egress/crds).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print what one Node would program and report for a cluster given as YAML (offline).
    Render(ovs_egress::render_cmd::RenderArgs),
    /// Print what a running agent holds and programs (its `/plan`), in `render`'s text form.
    Inspect(ovs_egress::agent::inspect::InspectArgs),
    /// Allocate egress IPs from ExternalIPPools, keep Egress and pool status current, and serve
    /// the validating webhook (one replica reconciles, elected with a Lease).
    Controller(Box<ovs_egress::config::ControllerArgs>),
    /// The per-Node agent: computes this Node's plan from the cluster, writes the status of the
    /// Egresses it holds (or must report), emits IPAssigned/IPUnassigned events.
    Agent(Box<ovs_egress::agent::config::AgentArgs>),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { dir } => crds(dir),
        Command::Render(args) => ovs_egress::render_cmd::run(&args),
        Command::Inspect(args) => ovs_egress::agent::inspect::run(&args),
        Command::Controller(args) => {
            init_logging();
            tokio::runtime::Runtime::new()
                .context("starting the tokio runtime")?
                .block_on(ovs_egress::controller::run(*args))
        }
        Command::Agent(args) => {
            init_logging();
            tokio::runtime::Runtime::new()
                .context("starting the tokio runtime")?
                .block_on(ovs_egress::agent::run(*args))
        }
    }
}

/// Text logs on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn crds(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let files = ovs_egress_core::api::crd_yaml().context("serializing the CRDs to YAML")?;
    for (name, yaml) in files {
        match &dir {
            Some(dir) => {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
