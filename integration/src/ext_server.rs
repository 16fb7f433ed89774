//! The external host of the test bed: a namespace on the underlay running a TCP server that
//! records the source address of every connection it accepts (its "log") and tells the client
//! which source it saw, followed by as many bytes as the client asked for. This is how tests
//! and the demo see the address a Pod's traffic leaves the cluster with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::underlay::Underlay;

/// The port the server listens on.
pub const PORT: u16 = 8080;

/// One accepted connection: when, and from which source address.
pub type Seen = (Instant, IpAddr);

/// The running server. Dropping it stops the accept loop and removes its namespace.
pub struct ExtServer {
    pub netns: Netns,
    pub ip: Ipv4Addr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ExtServer {
    /// Creates namespace `ext` with `ip/24` on the underlay and starts the server on `ip:PORT`.
    pub fn start(underlay: &Underlay, ip: Ipv4Addr) -> Result<ExtServer> {
        let netns = Netns::new("ext")?;
        underlay.attach(&netns, "eth0")?;
        netns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        netns.exec(&["ip", "link", "set", "eth0", "up"])?;
        let listener = netns
            .run_in(move || TcpListener::bind((ip, PORT)))?
            .with_context(|| format!("binding the external server to {ip}:{PORT}"))?;
        listener.set_nonblocking(true)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        record(&seen2, peer.ip());
                        std::thread::spawn(move || serve(stream, peer));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(e).context("external server accept"),
                }
            }
            Ok(())
        });
        Ok(ExtServer {
            netns,
            ip,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Every connection accepted at or after `since`, in order.
    pub fn seen_since(&self, since: Instant) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().filter(|(t, _)| *t >= since).copied().collect()
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PORT))
    }
}

fn record(seen: &Mutex<Vec<Seen>>, source: IpAddr) {
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((Instant::now(), source));
}

fn serve(stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let size: usize = line.trim().parse().unwrap_or(0);
    let mut out = &stream;
    let _ = writeln!(out, "{}", peer.ip());
    let _ = out.write_all(&vec![b'x'; size]);
}

impl Drop for ExtServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection from namespace `client` to `server` asking for `size` bytes: the source the
/// server saw and the number of payload bytes received.
pub fn fetch(
    client: &Netns,
    server: SocketAddr,
    size: usize,
    timeout: Duration,
) -> Result<(IpAddr, usize)> {
    client.run_in(move || -> Result<(IpAddr, usize)> {
        let mut stream = TcpStream::connect_timeout(&server, timeout)
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_read_timeout(Some(timeout))?;
        writeln!(stream, "{size}")?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        let newline = reply
            .iter()
            .position(|b| *b == b'\n')
            .context("no source line in the server's reply")?;
        let source = std::str::from_utf8(&reply[..newline])?.parse()?;
        Ok((source, reply.len() - newline - 1))
    })?
}
