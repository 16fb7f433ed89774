//! Network namespaces owned by one test run. Every namespace is named
//! `oe<pid hex>x<counter hex>-<role>`, so concurrent runs and leftovers are told apart, and is
//! deleted when the last handle is dropped (also while unwinding from a panic), after killing
//! whatever still runs inside it. Nothing here ever touches the default namespace: veth pairs
//! are created inside one of our namespaces and the peer is moved straight into another.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{describe, run};
use crate::process::stop_all;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The prefix shared by every namespace (and OVS directory) this process creates.
pub fn run_prefix() -> String {
    format!("oe{:x}", std::process::id())
}

/// A fresh per-run unique token `oe<pid>x<n>`, used for namespace and directory names.
pub fn unique_token() -> String {
    format!(
        "{}x{:x}",
        run_prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace created by this run. Cheap to clone; the namespace is removed when the
/// last clone is dropped.
#[derive(Clone, Debug)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
}

impl Netns {
    /// Creates `oe<pid>x<n>-<role>` with `lo` up and IPv6 disabled (no ND/MLD noise in OVS).
    pub fn new(role: &str) -> Result<Netns> {
        let name = format!("{}-{role}", unique_token());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop deletes the namespace, also if the set-up below fails.
        let ns = Netns {
            inner: Arc::new(Inner { name }),
        };
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A `Command` for `ip netns exec <name> <program>`; add args, env, stdio and run or spawn it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name(), program]);
        c
    }

    /// Runs `argv` inside the namespace; returns stdout, fails with the command line and stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().context("exec: empty argv")?;
        let mut c = self.command(program);
        c.args(args);
        run(&mut c).with_context(|| format!("in netns {}", self.name()))
    }

    /// Sets `key=value` sysctls inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut argv = vec!["sysctl", "-qw"];
        argv.extend_from_slice(settings);
        self.exec(&argv).map(drop)
    }

    /// Creates veth `local` in `self` with its peer `remote` moved into `other`, both left down.
    pub fn veth_to(&self, local: &str, other: &Netns, remote: &str) -> Result<()> {
        if self.name() == other.name() {
            bail!("veth {local}/{remote}: both ends in {}", self.name());
        }
        self.exec(&[
            "ip",
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            other.name(),
        ])
        .map(drop)
    }

    /// Runs `f` on a fresh thread that entered this namespace (setns(2) on that thread only):
    /// sockets it creates belong to the namespace for their whole life, whichever thread uses
    /// them later.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = format!("/run/netns/{}", self.name());
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: setns on a valid namespace fd only changes this thread's network
            // namespace; the thread ends with `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
    }

    /// [`Netns::spawn_in`], waiting for the result; a panic in `f` propagates.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        match self.spawn_in(f).join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// PIDs of the processes whose network namespace is this one.
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids_in(self.name())
    }
}

fn pids_in(name: &str) -> Result<Vec<i32>> {
    let out = run(Command::new("ip").args(["netns", "pids", name]))?;
    out.split_whitespace()
        .map(|p| {
            p.parse()
                .with_context(|| format!("`ip netns pids {name}` printed {p:?}"))
        })
        .collect()
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Processes still inside were started by this run (only we use the namespace).
        let own = std::process::id() as i32;
        if let Ok(pids) = pids_in(&self.name) {
            let pids: Vec<_> = pids
                .into_iter()
                .filter(|p| *p != own)
                .map(|p| (p, None))
                .collect();
            stop_all(&pids, Duration::from_secs(2));
        }
        let mut del = Command::new("ip");
        del.args(["netns", "del", &self.name]);
        if let Err(e) = run(&mut del) {
            crate::process::note(format_args!("warning: `{}`: {e:#}", describe(&del)));
        }
    }
}
