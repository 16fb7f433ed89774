//! Shared by the `host_*` tests: runs the host adapters inside a namespace the test created, on
//! a dedicated thread that entered it with setns(2) and drives its own current-thread runtime,
//! so nothing (netlink sockets, iptables processes, raw sockets) ever acts on the default
//! namespace; and captures frames with tcpdump.

#![allow(dead_code)] // each test crate uses a different part

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Lines, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ovs_egress_integration::Netns;

/// Runs `f` to completion on a fresh thread inside `ns`; panics in `f` propagate.
pub fn in_netns<F, Fut, T>(ns: &Netns, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{}", ns.name());
    let thread = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace;
        // the thread ends with the closure, so it never runs anything else.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("current-thread runtime")
            .block_on(f())
    });
    match thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Enables IPv6 in a namespace (the harness creates them with IPv6 disabled).
pub fn enable_ipv6(ns: &Netns) -> Result<()> {
    ns.sysctl(&[
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
    ])
}

/// Two namespaces joined by a veth pair `va` (in `a`) / `vb` (in `b`), both up.
pub fn veth_pair(role: &str) -> Result<(Netns, Netns)> {
    let a = Netns::new(&format!("{role}a"))?;
    let b = Netns::new(&format!("{role}b"))?;
    a.veth_to("va", &b, "vb")?;
    a.exec(&["ip", "link", "set", "va", "up"])?;
    b.exec(&["ip", "link", "set", "vb", "up"])?;
    Ok((a, b))
}

/// The MAC of `dev` in `ns`, as `ip` prints it.
pub fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.exec(&["ip", "-o", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no link/ether in {out:?}"))
}

/// A tcpdump inside a namespace, ready (listening) when [`Capture::start`] returns.
pub struct Capture {
    child: Child,
    /// Kept open so tcpdump's closing statistics do not hit a closed pipe.
    _stderr: Lines<BufReader<ChildStderr>>,
}

impl Capture {
    /// `tcpdump -i dev -n -e -l -c count <filter>` in `ns`.
    pub fn start(ns: &Netns, dev: &str, count: u32, filter: &[&str]) -> Result<Capture> {
        let count = count.to_string();
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", dev, "-n", "-e", "-l", "-vv", "-c", &count])
            .args(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        // tcpdump prints "listening on <dev>" once the capture is open.
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("tcpdump on {dev} in {} did not start", ns.name());
                }
            }
        }
        Ok(Capture {
            child,
            _stderr: lines,
        })
    }

    /// Waits (at most `timeout`) for the capture to finish and returns what it printed.
    pub fn finish(mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("tcpdump captured nothing within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("tcpdump stdout")?
            .read_to_string(&mut out)?;
        Ok(out)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Our own child, stopped by its handle (never by name).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
