//! Knows, within a few tens of milliseconds, whether ovs-vswitchd is running the bridge: it
//! holds an idle OpenFlow connection on the bridge's management socket (`<rundir>/<br>.mgmt`),
//! answering only HELLO and ECHO, and reports `Up` when a connection is established and `Down`
//! when it ends (vswitchd killed or restarted: its OpenFlow tables are then empty). OVSDB alone
//! cannot tell: ovsdb-server keeps running and the rows do not change when vswitchd restarts.
//! It never sends a flow-mod or anything else that changes the switch (programming is
//! `ovs::ofctl`'s job).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// OpenFlow message types we handle.
const OFPT_HELLO: u8 = 0;
const OFPT_ECHO_REQUEST: u8 = 2;
const OFPT_ECHO_REPLY: u8 = 3;
/// OpenFlow 1.3: one of the versions `br-int` accepts (`ovs::bridge::PROTOCOLS`).
const OFP_VERSION: u8 = 0x04;
/// Retry delay while the socket is absent; bounds how late a restarted vswitchd is noticed.
const RETRY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchEvent {
    /// Connected to the bridge; `generation` counts connections (1 for the first).
    Up { generation: u64 },
    /// The connection ended or could not be made; the reason is logged by the caller.
    Down,
}

/// The management socket of `bridge` under an OVS run directory.
pub fn mgmt_socket(rundir: &Path, bridge: &str) -> PathBuf {
    rundir.join(format!("{bridge}.mgmt"))
}

/// Watches `socket` until `events` is closed. Sends `Down` once per lost (or first failed)
/// connection and `Up` once per established one.
pub async fn watch(socket: PathBuf, events: mpsc::UnboundedSender<SwitchEvent>) {
    let mut generation = 0;
    let mut up = None;
    loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => {
                generation += 1;
                if events.send(SwitchEvent::Up { generation }).is_err() {
                    return;
                }
                up = Some(true);
                let why = serve(stream).await;
                tracing::debug!(socket = %socket.display(), "OpenFlow connection ended: {why}");
            }
            Err(e) => {
                if up != Some(false) {
                    tracing::debug!(socket = %socket.display(), "cannot connect: {e}");
                }
            }
        }
        if up != Some(false) {
            up = Some(false);
            if events.send(SwitchEvent::Down).is_err() {
                return;
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Keeps the connection alive (HELLO, ECHO replies) until it ends; returns why it ended.
async fn serve(mut stream: UnixStream) -> String {
    let hello = [OFP_VERSION, OFPT_HELLO, 0, 8, 0, 0, 0, 1];
    if let Err(e) = stream.write_all(&hello).await {
        return e.to_string();
    }
    let mut header = [0u8; 8];
    loop {
        if let Err(e) = stream.read_exact(&mut header).await {
            return e.to_string();
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut body = vec![0u8; len.saturating_sub(8)];
        if let Err(e) = stream.read_exact(&mut body).await {
            return e.to_string();
        }
        if header[1] == OFPT_ECHO_REQUEST {
            let mut reply = header.to_vec();
            reply[1] = OFPT_ECHO_REPLY;
            reply.extend_from_slice(&body);
            if let Err(e) = stream.write_all(&reply).await {
                return e.to_string();
            }
        }
    }
}
