//! `ovs-egress render`: the command line of the offline renderer. It reads the cluster file
//! (at most `validate::MAX_INPUT_BYTES`), runs the webhook's rules, and prints what the pure
//! core (`ovs_egress_core::render`) says one Node would program and report.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use ovs_egress_core::pipeline::IpNetwork;
use ovs_egress_core::pipeline::egress::{EgressOptions, MarkCarrier};
use ovs_egress_core::render::{node_names, parse_cluster, render_with, text, validate};
use ovs_egress_inputs::parse_cidr;

/// Command line of `ovs-egress render`.
#[derive(Clone, Debug, clap::Args)]
pub struct RenderArgs {
    /// The Node whose plan to print.
    #[arg(long, required_unless_present = "list_nodes")]
    pub node: Option<String>,
    /// The cluster: multi-document YAML (or JSON) with Node, Namespace, Pod, Egress and
    /// ExternalIPPool objects.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the Node names of the file, one per line, and nothing else.
    #[arg(long, conflicts_with_all = ["node", "json"])]
    pub list_nodes: bool,
    /// The OVS datapath type: `system` carries the SNAT mark as pkt_mark, `netdev` (userspace)
    /// in the source MAC towards the gateway.
    #[arg(long, value_enum, default_value = "system")]
    pub datapath_type: DatapathTypeArg,
    /// The Service CIDR(s), IPv4 or IPv6, which bypass Egress (repeatable).
    #[arg(long = "service-cidr", default_value = "10.96.0.0/12", value_parser = parse_cidr)]
    pub service_cidrs: Vec<IpNetwork>,
    /// `egress.exceptCIDRs` (IPv4 or IPv6): destinations that bypass Egress (repeatable).
    #[arg(long = "except-cidr", value_parser = parse_cidr)]
    pub except_cidrs: Vec<IpNetwork>,
    /// Render even when objects break the webhook's rules (a cluster would have refused them):
    /// print the problems as warnings and render what the controller and agents would do if
    /// such objects were stored (e.g. with the webhook bypassed).
    #[arg(long)]
    pub allow_invalid: bool,
}

/// `--datapath-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathTypeArg {
    System,
    Netdev,
}

impl RenderArgs {
    /// The Egress flow options these flags describe.
    pub fn datapath_options(&self) -> EgressOptions {
        EgressOptions {
            carrier: match self.datapath_type {
                DatapathTypeArg::System => MarkCarrier::PktMark,
                DatapathTypeArg::Netdev => MarkCarrier::SourceMac,
            },
            service_cidrs: self.service_cidrs.clone(),
            except_cidrs: self.except_cidrs.clone(),
        }
    }
}

/// The `render` subcommand: read the file, print warnings to stderr and the result to stdout.
pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    let path = args.file.display();
    let text = read_capped(&args.file).with_context(|| format!("reading {path}"))?;
    let parsed = parse_cluster(&text).with_context(|| format!("parsing {path}"))?;
    for warning in &parsed.warnings {
        eprintln!("warning: {path}: {warning}");
    }
    let invalid = validate::admission_errors(&parsed);
    let level = if args.allow_invalid {
        "warning"
    } else {
        "error"
    };
    for error in &invalid {
        eprintln!("{level}: {path}: {error}");
    }
    if !invalid.is_empty() && !args.allow_invalid {
        anyhow::bail!(
            "{path}: {} problem(s) the validating webhook would refuse; fix them, or pass \
             --allow-invalid to render what the cluster would do with such objects stored",
            invalid.len()
        );
    }
    let output = if args.list_nodes {
        node_names(&parsed.view)
            .into_iter()
            .map(|name| name + "\n")
            .collect()
    } else {
        let node = args
            .node
            .as_deref()
            .context("--node is required unless --list-nodes is given")?;
        let rendered = render_with(parsed.view, node, &args.datapath_options())
            .with_context(|| format!("rendering {path}"))?;
        if args.json {
            serde_json::to_string_pretty(&rendered)? + "\n"
        } else {
            text::to_text(&rendered)
        }
    };
    match std::io::stdout().lock().write_all(output.as_bytes()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The file's text, refusing files larger than [`validate::MAX_INPUT_BYTES`] before parsing.
fn read_capped(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = validate::MAX_INPUT_BYTES;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        anyhow::bail!(
            "the input is larger than {} MiB, the most render reads",
            limit >> 20
        );
    }
    Ok(text)
}
