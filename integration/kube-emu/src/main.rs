//! kube-emu: an in-memory Kubernetes API server, faithful enough for kube-rs and kubectl 1.32,
//! for the end-to-end tests and the demo (no kube-apiserver can be installed on these machines).
//!
//! ```text
//! kube-emu --listen 127.0.0.1:0 --kubeconfig /tmp/emu.kubeconfig [--snapshot objs.yaml]
//! KUBECONFIG=/tmp/emu.kubeconfig kubectl apply -f charts/ovs-egress/crds/
//! ```
//!
//! On start it binds the address, writes the kubeconfig (plain http, no auth, context
//! `kube-emu`), then prints one line `kube-emu listening on http://127.0.0.1:PORT` on stdout
//! (and writes the URL to `--url-file` if given). Plain HTTP only; bind loopback.
//!
//! Served: discovery (legacy JSON format; kubectl falls back from aggregated discovery),
//! namespaces (label `kubernetes.io/metadata.name` set automatically; default namespaces exist),
//! nodes, pods (created Pods get `status: {phase: Pending}`; set status through `/status`),
//! events (core/v1 and events.k8s.io/v1), leases, configmaps, secrets (stringData folded into
//! data), services (ClusterIPs from `--service-cidr`; `default/kubernetes` holds the first
//! address), serviceaccounts, customresourcedefinitions, and every CRD once created: all served
//! versions, pruning + `default`s + validation against `openAPIV3Schema` (422 Invalid naming the
//! field), status subresource, printer columns, selectable fields. Verbs: list/get/create/update/
//! patch (JSON patch, merge, strategic as merge, apply as create-or-merge)/delete (finalizers,
//! deletionTimestamp)/deletecollection/watch (resourceVersion, bookmarks, timeoutSeconds,
//! selectors with ADDED/DELETED on selector transitions, 410 Expired as an ERROR event once the
//! version left the `--history` window, `sendInitialEvents` streaming lists). Also: Table output,
//! `fieldValidation=Strict` (unknown fields are a 400), `dryRun=All`, `limit`/`continue`, a
//! minimal `/openapi/v3` (enough for kubectl's server-side validation and `kubectl explain`),
//! protobuf request bodies for Namespace/ConfigMap/Secret (`kubectl create namespace|configmap|
//! secret`); answers are always JSON. Validating admission webhooks: writes matching a stored
//! `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration are sent to its
//! `clientConfig.url` (HTTPS) before they are stored (see `admission`).
//!
//! kubectl 1.32 without extra flags: `apply -f` (client-side), `apply --server-side`, `create -f`,
//! `create namespace|configmap|secret`, `get` (Table columns, `-o wide|yaml|json|jsonpath|name`,
//! `-l`, `--field-selector`, `-A`, `-w`), `describe`, `explain`, `diff`, `patch` (merge, json,
//! strategic, `--subresource=status`), `label`, `annotate`, `delete` (`-f`, by name, namespace
//! cascade), `wait --for condition=established`, `api-resources`, `events`. `--validate=false`
//! is only needed to make the server prune unknown fields silently instead of rejecting them.
//! `create` of other built-in kinds by subcommand (e.g. `kubectl create deployment`) is not
//! supported (protobuf for unsupported kinds → 415 naming the kind).
//!
//! Deliberate simplifications: no auth/RBAC, no mutating webhooks, webhooks by URL only, no
//! version conversion (only `apiVersion` changes), apply does not remove fields dropped from the
//! applied configuration and keeps no managedFields, deleting a namespace removes its objects at
//! once, lists are always served from the latest state (resourceVersion parameters on lists are
//! ignored).
//!
//! Failure injection (admin endpoints, never affected by faults themselves):
//! - `POST /emu/fail {"closeWatches":true}` ends every open watch stream now;
//! - `POST /emu/fail {"error500ForSeconds":N}` answers every API request with 500 for N s;
//! - `POST /emu/fail {"stallForSeconds":N}` holds every API request until N s have passed;
//! - the three may be combined in one body; `N = 0` ends that fault;
//! - `POST /emu/compact` forgets the event history: watches from older versions get 410.

use anyhow::Context;
use clap::Parser;
use kube_emu::server::{self, App, Config};
use kube_emu::snapshot;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "kube-emu", about = "In-memory Kubernetes API server for tests (kubectl and kube-rs compatible)", long_about = None,
    after_help = "On start: writes --kubeconfig, then prints `kube-emu listening on http://IP:PORT`.\n\
Failure injection (admin endpoints, never faulted themselves):\n  \
POST /emu/fail {\"closeWatches\":true}      end every open watch now\n  \
POST /emu/fail {\"error500ForSeconds\":N}   answer API requests with 500 for N s (0 ends it)\n  \
POST /emu/fail {\"stallForSeconds\":N}      hold API requests until N s have passed (0 ends it)\n  \
POST /emu/compact                        forget the event history (older watches get 410)")]
struct Args {
    /// Address to listen on (port 0 picks a free port). Use a loopback address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at this server to PATH.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write the server URL (http://IP:PORT) to PATH.
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// Start from the objects in FILE (YAML stream, JSON, or a List).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Change events kept for watches; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 100_000)]
    history: usize,
    /// Service ClusterIP range (IPv4 CIDR); Services get addresses from it.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Seconds between BOOKMARK events on watches with allowWatchBookmarks=true.
    #[arg(long, default_value_t = 10.0)]
    bookmark_interval: f64,
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-emu\n  cluster:\n    server: {url}\nusers:\n- name: kube-emu\n  user: {{}}\ncontexts:\n- name: kube-emu\n  context:\n    cluster: kube-emu\n    user: kube-emu\n    namespace: default\ncurrent-context: kube-emu\n"
    )
}

fn parse_cidr(s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let err = || {
        format!(
            "--service-cidr {s:?} must be an IPv4 CIDR like 10.96.0.0/12 with a prefix of 8..=30"
        )
    };
    let (ip, len) = s.split_once('/').with_context(err)?;
    let (ip, len): (std::net::Ipv4Addr, u8) = (
        ip.parse().with_context(err)?,
        len.parse().with_context(err)?,
    );
    anyhow::ensure!((8..=30).contains(&len), err());
    let mask = u32::MAX << (32 - len);
    Ok((std::net::Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// Returns the heap freed after loading a snapshot (the parsed text and temporary copies) to the
/// OS, so RSS reflects the stored objects.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bookmark_interval = Duration::try_from_secs_f64(args.bookmark_interval)
        .context("--bookmark-interval must be a positive number of seconds")?;
    let app = App::new(Config {
        history: args.history,
        bookmark_interval,
    });
    {
        let mut st = app.store.lock();
        st.service_cidr = parse_cidr(&args.service_cidr)?;
        snapshot::cluster_defaults(&mut st)?;
        if let Some(path) = &args.snapshot {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading snapshot {}", path.display()))?;
            let objs = snapshot::parse(&text)
                .with_context(|| format!("parsing snapshot {}", path.display()))?;
            snapshot::load(&mut st, objs)
                .with_context(|| format!("loading snapshot {}", path.display()))?;
        }
    }
    release_freed_memory();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let url = format!("http://{addr}");
    let _ = app.url.set(url.clone());
    if let Some(p) = &args.kubeconfig {
        std::fs::write(p, kubeconfig(&url))
            .with_context(|| format!("writing kubeconfig {}", p.display()))?;
    }
    if let Some(p) = &args.url_file {
        std::fs::write(p, &url).with_context(|| format!("writing url file {}", p.display()))?;
    }
    println!("kube-emu listening on {url}");
    tokio::select! {
        _ = server::serve(listener, app) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
