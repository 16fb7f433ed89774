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
//! Served: discovery (legacy JSON format), namespaces (auto label `kubernetes.io/metadata.name`),
//! nodes, pods, events (core/v1 and events.k8s.io/v1), leases, configmaps, secrets (stringData
//! folded into data), services (ClusterIPs allocated from `--service-cidr`; `default/kubernetes`
//! holds the first address), serviceaccounts, customresourcedefinitions and every CRD once created (all served versions,
//! schema pruning + validation, status subresource, printer columns), list/get/create/update/
//! patch (json, merge, strategic-as-merge, apply as create-or-merge)/delete/deletecollection/
//! watch (resourceVersion, bookmarks, timeoutSeconds, selectors, 410 Expired as an ERROR event
//! once the requested version left the `--history` window, `sendInitialEvents` streaming lists),
//! Table output, a minimal `/openapi/v3`.
//!
//! Deliberate simplifications: no auth/RBAC/admission webhooks, no version conversion (only
//! `apiVersion` changes), apply does not remove fields dropped from the applied configuration
//! and keeps no managedFields, deleting a namespace removes its objects at once, lists are always
//! served from the latest state, `fieldValidation=Strict` is accepted but unknown fields are
//! pruned silently.
//!
//! Failure injection (admin endpoints, never affected by faults themselves):
//! - `POST /emu/fail {"closeWatches":true}` ends every open watch stream now;
//! - `POST /emu/fail {"error500ForSeconds":N}` answers every API request with 500 for N s;
//! - `POST /emu/fail {"stallForSeconds":N}` holds every API request until N s have passed;
//! - `POST /emu/compact` forgets the event history: watches from older versions get 410.

use anyhow::Context;
use clap::Parser;
use kube_emu::server::{self, App, Config};
use kube_emu::snapshot;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "kube-emu", about = "In-memory Kubernetes API server for tests (kubectl and kube-rs compatible)", long_about = None)]
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
