//! The TCP relay between a Node's network namespace and the API server: it listens inside the
//! Node (where agents find the API) and forwards every connection to the server on the box's
//! loopback, so no address of the machine is exposed to the underlay. It is also where the box
//! injects connection faults for one Node without touching the server: a broken link (every
//! connection closed, new ones closed at once), a slow one (each chunk held back), or a cut of
//! the current connections (watch streams end; the clients reconnect at once).
//! It only ever listens inside the given namespace and connects to the given target.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::netns::Netns;

/// How the relay treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward at once.
    Pass,
    /// Hold every chunk back this long, in both directions.
    Slow(Duration),
    /// Close every open connection and every new one at once.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: LinkMode,
    /// Bumped by [`Relay::cut`]: connections opened before end.
    cuts: u64,
}

/// A running relay; dropping it stops listening and closes its connections.
pub struct Relay {
    task: JoinHandle<()>,
    state: watch::Sender<State>,
}

impl Relay {
    /// Listens on `listen` inside `ns` and relays every connection to `target` (reached from
    /// the box's own namespace).
    pub fn start(ns: &Netns, listen: &'static str, target: String) -> Result<Relay> {
        let listener = ns
            .run_in(move || std::net::TcpListener::bind(listen))?
            .with_context(|| format!("listening on {listen} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (state, watching) = watch::channel(State {
            mode: LinkMode::Pass,
            cuts: 0,
        });
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target.clone(), watching.clone()));
            }
        });
        Ok(Relay { task, state })
    }

    /// Sets how traffic is treated from now on (open connections included).
    pub fn set_mode(&self, mode: LinkMode) {
        self.state.send_modify(|s| s.mode = mode);
    }

    /// Closes every open connection (watch streams end); new ones pass as the mode says.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.set_mode(LinkMode::Broken);
    }
}

async fn relay(inbound: TcpStream, target: String, mut state: watch::Receiver<State>) {
    let opened = *state.borrow_and_update();
    if opened.mode == LinkMode::Broken {
        return;
    }
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pipe(in_read, out_write, state.clone());
    let down = pipe(out_read, in_write, state.clone());
    let ended = state.wait_for(|s| s.mode == LinkMode::Broken || s.cuts != opened.cuts);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = ended => {}
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: watch::Receiver<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mode = state.borrow().mode;
        if let LinkMode::Slow(delay) = mode {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The other direction: listens on the box's loopback and forwards every connection to
/// `target` inside a Node's namespace (where an agent's health port listens on the Node's own
/// loopback), so a process of the box (a Prometheus server) can reach it. Connections into the
/// namespace are made by a thread that entered it; dropping this stops listening.
pub struct Exposed {
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Exposed {
    /// Exposes `target` of namespace `ns` on a free port of 127.0.0.1.
    pub async fn start(ns: &Netns, target: std::net::SocketAddr) -> Result<Exposed> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Only the namespace's path is kept: holding a `Netns` would keep the namespace alive.
        let path = format!("/run/netns/{}", ns.name());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let path = path.clone();
                tokio::spawn(async move {
                    let connect = tokio::task::spawn_blocking(move || connect_in(&path, target));
                    let Ok(Ok(outbound)) = connect.await else {
                        return;
                    };
                    let Ok(mut outbound) = TcpStream::from_std(outbound) else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(Exposed { addr, task })
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A non-blocking TCP connection to `target` made from inside the namespace at `path`.
fn connect_in(path: &str, target: std::net::SocketAddr) -> Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let path = path.to_string();
    let thread = std::thread::spawn(move || -> Result<std::net::TcpStream> {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace;
        // the thread ends right after connecting.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    });
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}
