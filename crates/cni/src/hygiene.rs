//! Host-side hygiene for a Pod port on the userspace (netdev) datapath: OVS
//! reads the port through AF_PACKET, so the Node kernel still sees every frame and would answer
//! ARP or IP-forward a second copy. The port is made deaf to the Node kernel: NOARP (set when the
//! veth is created), `forwarding=0`, and a raw-table DROP rule (AF_PACKET taps run before
//! netfilter, so OVS still gets the frames). Acts only in the current (Node) namespace.

use std::process::{Child, Command, Stdio};

use super::error::CniError;

/// `net.ipv4.conf.<port>.forwarding = 0` in the current namespace.
pub fn disable_forwarding(port: &str) -> Result<(), CniError> {
    let path = format!("/proc/sys/net/ipv4/conf/{port}/forwarding");
    std::fs::write(&path, b"0").map_err(|e| CniError::host(format!("writing 0 to {path}"), e))
}

fn raw_drop(op: &str, port: &str) -> Command {
    let mut cmd = Command::new("iptables");
    cmd.args([
        "-w",
        "5",
        "-t",
        "raw",
        op,
        "PREROUTING",
        "-i",
        port,
        "-j",
        "DROP",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn finish(child: Child, what: String) -> Result<(), CniError> {
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::host(what.clone(), e))?;
    if !out.status.success() {
        return Err(CniError::host(
            what,
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}

/// A running `iptables -t raw -A PREROUTING -i <port> -j DROP`, started early so that it
/// overlaps with the rest of ADD (it is the slowest step after OVS).
pub struct PendingRule {
    child: Child,
    what: String,
}

pub fn start_raw_drop(port: &str) -> Result<PendingRule, CniError> {
    let what = format!("adding the raw PREROUTING DROP rule for {port} (iptables)");
    let child = raw_drop("-A", port)
        .spawn()
        .map_err(|e| CniError::host(what.clone(), e))?;
    Ok(PendingRule { child, what })
}

impl PendingRule {
    /// Wait for iptables; its failure names the port and carries iptables' stderr.
    pub fn wait(self) -> Result<(), CniError> {
        finish(self.child, self.what)
    }
}

/// Remove the rule; a missing rule is not an error (DEL is idempotent).
pub fn remove_raw_drop(port: &str) -> Result<(), CniError> {
    let what = format!("removing the raw PREROUTING DROP rule for {port} (iptables)");
    let spawn = |op| {
        raw_drop(op, port)
            .spawn()
            .map_err(|e| CniError::host(what.clone(), e))
    };
    let Err(err) = finish(spawn("-D")?, what.clone()) else {
        return Ok(());
    };
    // -D failed: fine if the rule is absent (-C fails too), an error otherwise.
    match finish(spawn("-C")?, what.clone()) {
        Err(_) => Ok(()),
        Ok(()) => Err(err),
    }
}
