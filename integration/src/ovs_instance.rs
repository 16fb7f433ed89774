//! A private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) running inside one
//! of our network namespaces, with its own directory for the database, sockets, pid files and
//! logs. It must never talk to or disturb the system OVS: every client call gets `OVS_RUNDIR`
//! and explicit sockets (without `OVS_RUNDIR`, `ovs-ofctl br-int` talks to the system's
//! `/var/run/openvswitch`), and the daemons are stopped by PID on drop (a second start in the
//! same directory while old daemons run deletes their pid files and socket, then hangs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{run, run_with_stdin};
use crate::netns::{Netns, unique_token};
use crate::process::{is_alive, stop_all};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const OVSDB_SERVER: &str = "ovsdb-server";
const VSWITCHD: &str = "ovs-vswitchd";

/// One running OVS. Dropping it stops both daemons (SIGTERM, SIGKILL after 2 s) and removes its
/// directory, except while panicking: then the directory (logs!) is kept and its path printed.
#[derive(Debug)]
pub struct OvsInstance {
    netns: Netns,
    dir: PathBuf,
    ovsdb_pid: Option<i32>,
    vswitchd_pid: Option<i32>,
}

impl OvsInstance {
    /// Creates the database and starts ovsdb-server and ovs-vswitchd inside `netns`.
    pub fn start(netns: &Netns) -> Result<OvsInstance> {
        let dir = std::env::temp_dir().join(format!("{}-ovs", unique_token()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on Drop cleans up, also when a step below fails.
        let mut ovs = OvsInstance {
            netns: netns.clone(),
            dir,
            ovsdb_pid: None,
            vswitchd_pid: None,
        };
        let db = ovs.dir.join("conf.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(SCHEMA))?;
        ovs.start_ovsdb_server()?;
        ovs.vsctl_no_wait(&["init"])?;
        ovs.start_vswitchd()?;
        Ok(ovs)
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The private run/db/log directory (`OVS_RUNDIR`; bridges' `<br>.mgmt` sockets live here).
    pub fn rundir(&self) -> &Path {
        &self.dir
    }

    /// The OVSDB unix socket (`--remote=punix:` of ovsdb-server).
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// `unix:<db socket>`, the form OVS tools take for `--db`.
    pub fn db_target(&self) -> String {
        format!("unix:{}", self.db_socket().display())
    }

    pub fn ovsdb_server_pid(&self) -> Option<i32> {
        self.ovsdb_pid
    }

    pub fn vswitchd_pid(&self) -> Option<i32> {
        self.vswitchd_pid
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn daemon(&self, program: &str) -> Command {
        let mut c = self.netns.command(program);
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(var, &self.dir);
        }
        c.args([
            format!("--pidfile={}", self.file(&format!("{program}.pid"))),
            format!("--unixctl={}", self.file(&format!("{program}.ctl"))),
            format!("--log-file={}", self.file(&format!("{program}.log"))),
            "-vconsole:off".into(),
            "--no-chdir".into(),
            "--detach".into(),
        ]);
        c
    }

    fn read_pid(&self, program: &str) -> Result<i32> {
        let path = self.dir.join(format!("{program}.pid"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{program} pid file {}", path.display()))?;
        let pid = text
            .trim()
            .parse()
            .with_context(|| format!("{program} pid file {} holds {text:?}", path.display()))?;
        if !is_alive(pid) {
            bail!(
                "{program} (pid {pid}) exited right after start; see {}",
                self.file(&format!("{program}.log"))
            );
        }
        Ok(pid)
    }

    /// Starts ovsdb-server on the existing database (first start, or after [`Self::stop_ovsdb_server`]).
    pub fn start_ovsdb_server(&mut self) -> Result<()> {
        if self.ovsdb_pid.is_some_and(is_alive) {
            bail!("ovsdb-server in {} already runs", self.dir.display());
        }
        let mut c = self.daemon(OVSDB_SERVER);
        c.arg(self.dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.db_socket().display()));
        run(&mut c)?;
        self.ovsdb_pid = Some(self.read_pid(OVSDB_SERVER)?);
        Ok(())
    }

    /// Starts ovs-vswitchd (first start, or after [`Self::kill_vswitchd`]). `--detach` returns
    /// once vswitchd has applied the database, so existing bridges are up afterwards.
    pub fn start_vswitchd(&mut self) -> Result<()> {
        if self.vswitchd_pid.is_some_and(is_alive) {
            bail!("ovs-vswitchd in {} already runs", self.dir.display());
        }
        let mut c = self.daemon(VSWITCHD);
        c.arg(self.db_target());
        run(&mut c)?;
        self.vswitchd_pid = Some(self.read_pid(VSWITCHD)?);
        Ok(())
    }

    /// Kills ovs-vswitchd with SIGKILL (a crash, as far as OVSDB clients and flows are
    /// concerned) and waits until it is gone. ovsdb-server keeps running.
    pub fn kill_vswitchd(&mut self) -> Result<()> {
        let pid = self
            .vswitchd_pid
            .take()
            .context("ovs-vswitchd is not running")?;
        if !stop_all(&[(pid, Some(VSWITCHD))], Duration::ZERO) {
            bail!("ovs-vswitchd (pid {pid}) survived SIGKILL");
        }
        Ok(())
    }

    /// Stops ovsdb-server (SIGTERM, SIGKILL after 2 s); clients see their connection drop.
    pub fn stop_ovsdb_server(&mut self) -> Result<()> {
        let pid = self
            .ovsdb_pid
            .take()
            .context("ovsdb-server is not running")?;
        if !stop_all(&[(pid, Some(OVSDB_SERVER))], Duration::from_secs(2)) {
            bail!("ovsdb-server (pid {pid}) did not exit");
        }
        Ok(())
    }

    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("OVS_RUNDIR", &self.dir);
        c
    }

    /// `ovs-vsctl --db=<ours> --timeout=20 <args>` (waits for vswitchd to apply changes).
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.client("ovs-vsctl");
        c.arg(format!("--db={}", self.db_target()))
            .arg("--timeout=20")
            .args(args);
        run(&mut c)
    }

    /// `ovs-vsctl --no-wait` (does not wait for vswitchd, e.g. while it is down).
    pub fn vsctl_no_wait(&self, args: &[&str]) -> Result<String> {
        let mut c = self.client("ovs-vsctl");
        c.arg(format!("--db={}", self.db_target()))
            .args(["--timeout=20", "--no-wait"])
            .args(args);
        run(&mut c)
    }

    /// `ovs-ofctl <args>` against our vswitchd (bridge names resolve to `<rundir>/<br>.mgmt`).
    pub fn ofctl(&self, args: &[&str]) -> Result<String> {
        run(self.client("ovs-ofctl").args(args))
    }

    /// `ovs-ofctl <args>` with `stdin` as input (e.g. `--bundle add-flows br -`).
    pub fn ofctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<String> {
        run_with_stdin(self.client("ovs-ofctl").args(args), Some(stdin))
    }

    /// `ovs-appctl -t <ovs-vswitchd.ctl> <args>`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.client("ovs-appctl");
        c.arg("-t").arg(self.file("ovs-vswitchd.ctl")).args(args);
        run(&mut c)
    }

    /// `ovs-appctl -t <ovsdb-server.ctl> <args>`.
    pub fn dbctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.client("ovs-appctl");
        c.arg("-t").arg(self.file("ovsdb-server.ctl")).args(args);
        run(&mut c)
    }
}

impl Drop for OvsInstance {
    fn drop(&mut self) {
        let pids = [
            (self.vswitchd_pid.unwrap_or(0), Some(VSWITCHD)),
            (self.ovsdb_pid.unwrap_or(0), Some(OVSDB_SERVER)),
        ];
        if !stop_all(&pids, Duration::from_secs(2)) {
            crate::process::note(format_args!(
                "warning: OVS daemons {pids:?} of {} did not exit",
                self.dir.display()
            ));
        }
        if std::thread::panicking() {
            crate::process::note(format_args!("OVS logs kept in {}", self.dir.display()));
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            crate::process::note(format_args!(
                "warning: removing {}: {e}",
                self.dir.display()
            ));
        }
    }
}
