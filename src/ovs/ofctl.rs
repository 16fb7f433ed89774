//! The flow programmer: makes the flows on a bridge equal a desired set, through `ovs-ofctl`.
//! It owns the flows it installed (keyed by table, priority and match), sends only the
//! difference, and sends every change as ONE atomic OpenFlow bundle (`--bundle add-flows` with
//! `add`/`delete_strict` lines on stdin): if the switch rejects any flow, nothing is applied and
//! the owned state stays as it was. Flows carry the current round in their cookie so that a
//! restarted agent can install a full new round and then retire the previous one without the
//! switch ever holding an empty table. It must never touch flows of rounds it was not told to
//! retire, and never invokes a shell (argv only, flows on stdin, always `--no-names`). Each
//! committed bundle's duration and size, and the flows owned per table, go to the agent's
//! metrics (atomics, after the bundle returned).
//!
//! Agent start-up, with the round kept in `Bridge.external_ids` by the caller:
//! `round = next_round(stored)`; `p = FlowProgrammer::new(Ofctl::new("br-int"), round)`;
//! `p.sync(&all_flows)`; `p.retire_round(stored)` (if there was one); store `round`. Then
//! `p.sync(..)` on every change and `p.verify()` periodically (also repairs an OVS restart).

use std::collections::BTreeMap;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use ovs_egress_core::pipeline::flow::render_actions;
use ovs_egress_core::pipeline::{Flow, FlowKey, Style, round_cookie};

/// Why programming failed; every variant names the bridge target and the flow or command.
#[derive(Debug, thiserror::Error)]
pub enum OfctlError {
    #[error("ovs-ofctl {command} {target}: {source}")]
    Io {
        command: &'static str,
        target: String,
        source: std::io::Error,
    },
    #[error("ovs-ofctl {command} {target} failed: {stderr}")]
    Failed {
        command: &'static str,
        target: String,
        stderr: String,
    },
    #[error(
        "bridge {target}: bundle of {changes} flow changes rejected, nothing applied; \
         offending flow: {flow}; ovs-ofctl said: {stderr}"
    )]
    Rejected {
        target: String,
        changes: usize,
        /// The rejected flow as we sent it (`add ...`/`delete_strict ...`), or `unknown` when the
        /// error could not be traced to one line.
        flow: String,
        stderr: String,
    },
    #[error("desired flows for {target} contain two flows with key {key}: {first} and {second}")]
    DuplicateFlow {
        target: String,
        key: FlowKey,
        first: String,
        second: String,
    },
    #[error("ovs-ofctl dump-flows {target}: cannot parse line {line:?}")]
    UnparsableDump { target: String, line: String },
    #[error("bridge {target}: refusing to retire round {round}, it is the current round")]
    RetireCurrentRound { target: String, round: u16 },
}

/// How to run `ovs-ofctl` (from `PATH`) against one bridge.
#[derive(Clone, Debug)]
pub struct Ofctl {
    /// The switch argument: a bridge name or `unix:<rundir>/<bridge>.mgmt`.
    target: String,
}

impl Ofctl {
    /// `ovs-ofctl` from `PATH` against `target` (`br-int`, or `unix:/run/x/br-int.mgmt` for a
    /// private OVS instance).
    pub fn new(target: impl Into<String>) -> Self {
        Ofctl {
            target: target.into(),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `ovs-ofctl --no-names -O OpenFlow15 <args> <target> [extra]`, feeding `stdin`.
    async fn run(
        &self,
        command: &'static str,
        args: &[&str],
        extra: Option<&str>,
        stdin: Option<&str>,
    ) -> Result<String, OfctlError> {
        let io = |source| OfctlError::Io {
            command,
            target: self.target.clone(),
            source,
        };
        let mut cmd = Command::new("ovs-ofctl");
        cmd.args(["--no-names", "-O", "OpenFlow15"])
            .args(args)
            .arg(&self.target)
            .args(extra)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io)?;
        // Feed stdin while collecting the output: ovs-ofctl stops reading at the first line it
        // rejects, and its verdict (stderr, exit status) matters more than our broken pipe.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_owned();
                Some(tokio::spawn(async move {
                    pipe.write_all(text.as_bytes()).await
                    // Dropping the pipe closes it: ovs-ofctl reads until EOF.
                }))
            }
            _ => None,
        };
        let out = child.wait_with_output().await.map_err(io)?;
        if !out.status.success() {
            return Err(OfctlError::Failed {
                command,
                target: self.target.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if let Some(feeder) = feeder {
            feeder
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
                .map_err(io)?;
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies flow-mod lines (`add ...`, `delete_strict ...`, `delete ...`) as one atomic bundle.
    /// On failure returns the raw `ovs-ofctl` error.
    pub async fn bundle(&self, lines: &str) -> Result<(), OfctlError> {
        self.run(
            "--bundle add-flows",
            &["--bundle", "add-flows"],
            Some("-"),
            Some(lines),
        )
        .await
        .map(|_| ())
    }

    /// Every flow on the bridge.
    pub async fn dump_flows(&self) -> Result<Vec<DumpedFlow>, OfctlError> {
        let text = self.run("dump-flows", &["dump-flows"], None, None).await?;
        parse_dump(&text).map_err(|line| OfctlError::UnparsableDump {
            target: self.target.clone(),
            line,
        })
    }
}

/// One flow as `dump-flows --no-names` printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedFlow {
    pub cookie: u64,
    pub key: FlowKey,
    pub actions: String,
}

/// Parses `ovs-ofctl --no-names dump-flows` output; `Err(line)` names the first line that is
/// not a flow (the `OFPST_FLOW reply` header is skipped).
pub fn parse_dump(text: &str) -> Result<Vec<DumpedFlow>, String> {
    let mut flows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("OFPST_FLOW") || line.starts_with("NXST_FLOW") {
            continue;
        }
        flows.push(parse_dump_line(line).ok_or_else(|| line.to_string())?);
    }
    Ok(flows)
}

fn parse_dump_line(line: &str) -> Option<DumpedFlow> {
    let (head, actions) = line.split_once(" actions=")?;
    let mut cookie = None;
    let mut table = 0u8;
    let mut rule = None;
    for field in head.split(", ") {
        if let Some(v) = field.strip_prefix("cookie=") {
            cookie = u64::from_str_radix(v.strip_prefix("0x")?, 16).ok();
        } else if let Some(v) = field.strip_prefix("table=") {
            table = v.parse().ok()?;
        } else if field.starts_with("priority=") {
            rule = Some(field);
        }
    }
    // OVS omits `priority=` only for the default priority 32768, which we never use; such a
    // flow is not ours and is reported with that priority and its full match.
    let (priority, matches) = match rule {
        Some(rule) => split_rule(rule)?,
        None => (
            32768,
            head.rsplit(", ").next().unwrap_or_default().to_string(),
        ),
    };
    Some(DumpedFlow {
        cookie: cookie?,
        key: FlowKey {
            table,
            priority,
            matches,
        },
        actions: actions.to_string(),
    })
}

/// `priority=200,ip,nw_dst=...` → (200, `ip,nw_dst=...`).
fn split_rule(rule: &str) -> Option<(u16, String)> {
    let rule = rule.strip_prefix("priority=")?;
    let (priority, matches) = rule.split_once(',').unwrap_or((rule, ""));
    Some((priority.parse().ok()?, matches.to_string()))
}

/// What a flow looks like once installed: cookie and canonical actions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Installed {
    cookie: u64,
    actions: String,
}

/// The `add` line that installs the flow `key` with `flow`'s cookie and actions.
fn add_line(key: &FlowKey, flow: &Installed) -> String {
    format!(
        "add cookie={:#x},{key} actions={}",
        flow.cookie, flow.actions
    )
}

/// Counts of one programming step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added + self.modified + self.deleted == 0
    }
}

/// What periodic verification found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Owned flows that were missing on the switch (re-added).
    pub missing: usize,
    /// Owned flows present with another cookie or other actions (rewritten).
    pub different: usize,
    /// Flows carrying the current round's cookie that we do not own (deleted): leftovers of an
    /// earlier run that crashed before persisting its round.
    pub unexpected: usize,
}

/// The round to use after `previous` (read from `Bridge.external_ids`); never 0, so that a
/// round's cookie range never contains cookie 0 (the cookie of hand-added flows).
pub fn next_round(previous: Option<u16>) -> u16 {
    match previous.map(|r| r.wrapping_add(1)) {
        None | Some(0) => 1,
        Some(r) => r,
    }
}

/// Programs one bridge. See the module documentation.
#[derive(Debug)]
pub struct FlowProgrammer {
    ofctl: Ofctl,
    round: u16,
    owned: BTreeMap<FlowKey, Installed>,
}

impl FlowProgrammer {
    /// A programmer owning nothing yet; every flow it installs carries `round` in its cookie.
    pub fn new(ofctl: Ofctl, round: u16) -> Self {
        FlowProgrammer {
            ofctl,
            round,
            owned: BTreeMap::new(),
        }
    }

    pub fn round(&self) -> u16 {
        self.round
    }

    /// Number of flows currently owned (installed by this programmer).
    pub fn owned_len(&self) -> usize {
        self.owned.len()
    }

    /// Makes the bridge hold exactly `desired` (as far as flows we own go): one bundle with the
    /// additions, changes and deletions; nothing is sent when nothing changed. On error the
    /// switch and the owned state are unchanged.
    pub async fn sync(&mut self, desired: &[Flow]) -> Result<Change, OfctlError> {
        let wanted = self.index(desired)?;
        let mut change = Change::default();
        let mut ops: Vec<(String, Option<FlowKey>)> = Vec::new();
        for (key, flow) in &wanted {
            match self.owned.get(key) {
                None => change.added += 1,
                Some(have) if have != flow => change.modified += 1,
                Some(_) => continue,
            }
            // `add` replaces a flow with the same table, priority and match (cookie included).
            ops.push((add_line(key, flow), Some(key.clone())));
        }
        for key in self.owned.keys().filter(|k| !wanted.contains_key(*k)) {
            change.deleted += 1;
            ops.push((format!("delete_strict {key}"), Some(key.clone())));
        }
        if ops.is_empty() {
            return Ok(change);
        }
        self.apply(&ops).await?;
        self.owned = wanted;
        crate::metrics::agent::metrics().set_flows(crate::metrics::agent::flows_per_table(
            self.owned.keys().map(|k| k.table),
        ));
        Ok(change)
    }

    /// Deletes every flow whose cookie carries `previous` (one bundle). Call after the first
    /// [`sync`](Self::sync) of a new round, so the new round's flows are in place first.
    pub async fn retire_round(&self, previous: u16) -> Result<(), OfctlError> {
        if previous == self.round {
            return Err(OfctlError::RetireCurrentRound {
                target: self.ofctl.target.clone(),
                round: previous,
            });
        }
        let (cookie, mask) = round_cookie(previous);
        let line = format!("delete cookie={cookie:#x}/{mask:#x}");
        self.apply(&[(line, None)]).await
    }

    /// Dumps the bridge and repairs what differs from the owned flows: re-adds missing ones,
    /// rewrites changed ones, deletes unowned flows of the current round. One bundle, only if
    /// something needs repair.
    pub async fn verify(&mut self) -> Result<Repair, OfctlError> {
        let (round_value, round_mask) = round_cookie(self.round);
        let dumped: BTreeMap<FlowKey, DumpedFlow> = self
            .ofctl
            .dump_flows()
            .await?
            .into_iter()
            .map(|f| (f.key.clone(), f))
            .collect();
        let mut repair = Repair::default();
        let mut ops = Vec::new();
        for (key, have) in &self.owned {
            match dumped.get(key) {
                None => repair.missing += 1,
                Some(d) if d.cookie != have.cookie || d.actions != have.actions => {
                    repair.different += 1
                }
                Some(_) => continue,
            }
            ops.push((add_line(key, have), Some(key.clone())));
        }
        for (key, d) in &dumped {
            if d.cookie & round_mask == round_value && !self.owned.contains_key(key) {
                repair.unexpected += 1;
                ops.push((format!("delete_strict {key}"), Some(key.clone())));
            }
        }
        if !ops.is_empty() {
            self.apply(&ops).await?;
        }
        Ok(repair)
    }

    /// Renders and indexes `desired` by key; two flows with one key are an error (one would
    /// silently replace the other on the switch).
    fn index(&self, desired: &[Flow]) -> Result<BTreeMap<FlowKey, Installed>, OfctlError> {
        let mut wanted: BTreeMap<FlowKey, Installed> = BTreeMap::new();
        for flow in desired {
            let installed = Installed {
                cookie: flow.cookie.value(self.round),
                actions: render_actions(&flow.actions, Style::Numeric),
            };
            match wanted.entry(flow.key()) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(installed);
                }
                std::collections::btree_map::Entry::Occupied(slot) => {
                    return Err(OfctlError::DuplicateFlow {
                        target: self.ofctl.target.clone(),
                        key: slot.key().clone(),
                        first: add_line(slot.key(), slot.get()),
                        second: add_line(slot.key(), &installed),
                    });
                }
            }
        }
        Ok(wanted)
    }

    /// Sends `ops` (flow-mod lines with the key each concerns) as one bundle; a rejection is
    /// traced back to the line that caused it.
    async fn apply(&self, ops: &[(String, Option<FlowKey>)]) -> Result<(), OfctlError> {
        let mut text = String::with_capacity(ops.iter().map(|(l, _)| l.len() + 1).sum());
        for (line, _) in ops {
            text.push_str(line);
            text.push('\n');
        }
        let started = std::time::Instant::now();
        let result = self.ofctl.bundle(&text).await;
        if result.is_ok() {
            let metrics = crate::metrics::agent::metrics();
            metrics
                .bundle_duration
                .observe(started.elapsed().as_secs_f64());
            metrics.bundle_flows.observe(ops.len() as f64);
        }
        match result {
            Err(OfctlError::Failed { stderr, .. }) => Err(OfctlError::Rejected {
                target: self.ofctl.target.clone(),
                changes: ops.len(),
                flow: offending_line(&stderr, ops).unwrap_or_else(|| "unknown".to_string()),
                stderr,
            }),
            other => other,
        }
    }
}

/// Finds the line `ovs-ofctl` complained about: either by line number (`-:N: ...`, a flow it
/// could not parse or check) or by the decoded flow_mod the switch rejected
/// (`... ADD table:5 priority=5,ip,in_port=3 cookie:0x.. actions=...`).
fn offending_line(stderr: &str, ops: &[(String, Option<FlowKey>)]) -> Option<String> {
    for err in stderr.lines() {
        if let Some(rest) = err.strip_prefix("ovs-ofctl: -:") {
            let n: usize = rest.split(':').next()?.parse().ok()?;
            return ops.get(n.checked_sub(1)?).map(|(line, _)| line.clone());
        }
        if err.starts_with("Error ") && err.contains("OFPT_FLOW_MOD") {
            let mut tokens = err.split_whitespace();
            let table: u8 = tokens
                .find_map(|t| t.strip_prefix("table:"))?
                .parse()
                .ok()?;
            let (priority, matches) = split_rule(tokens.find(|t| t.starts_with("priority="))?)?;
            let key = FlowKey {
                table,
                priority,
                matches,
            };
            return ops
                .iter()
                .find(|(_, k)| k.as_ref() == Some(&key))
                .map(|(line, _)| line.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_lines_parse_into_key_cookie_and_actions() {
        let text = "OFPST_FLOW reply (OF1.5) (xid=0x2):\n \
            cookie=0x1010000000000, duration=0.006s, table=7, n_packets=0, n_bytes=0, idle_age=0, \
            priority=200,ip,nw_dst=10.244.2.0/24 actions=set_field:172.30.0.12->tun_dst,goto_table:9\n \
            cookie=0x1000000000000, duration=1.5s, table=12, n_packets=3, n_bytes=180, idle_age=0, \
            priority=0 actions=drop\n";
        let flows = parse_dump(text).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].cookie, 0x1010000000000);
        assert_eq!(
            flows[0].key.to_string(),
            "table=7,priority=200,ip,nw_dst=10.244.2.0/24"
        );
        assert_eq!(
            flows[0].actions,
            "set_field:172.30.0.12->tun_dst,goto_table:9"
        );
        assert_eq!(flows[1].key.to_string(), "table=12,priority=0");
        assert_eq!(parse_dump("garbage\n"), Err("garbage".to_string()));
    }

    fn ops() -> Vec<(String, Option<FlowKey>)> {
        [
            "table=3,priority=5,ip",
            "table=5,priority=5,ip,in_port=3",
            "table=5,priority=0",
        ]
        .iter()
        .map(|k| {
            let (t, rest) = k.strip_prefix("table=").unwrap().split_once(',').unwrap();
            let (priority, matches) = split_rule(rest).unwrap();
            let key = FlowKey {
                table: t.parse().unwrap(),
                priority,
                matches,
            };
            (format!("add {k} actions=drop"), Some(key))
        })
        .collect()
    }

    #[test]
    fn parse_error_is_traced_to_its_line() {
        let stderr =
            "ovs-ofctl: -:2: actions are invalid with specified match (OFPBIC_BAD_TABLE_ID)";
        assert_eq!(
            offending_line(stderr, &ops()).as_deref(),
            Some("add table=5,priority=5,ip,in_port=3 actions=drop")
        );
    }

    #[test]
    fn switch_rejection_is_traced_to_its_flow() {
        let stderr = "Error OFPBAC_BAD_OUT_GROUP for: OFPT_FLOW_MOD (OF1.5) (xid=0x2): ADD table:5 \
            priority=0 cookie:0x1010000000000 actions=group:99\n\
            Error OFPBFC_MSG_FAILED for: OFPT_BUNDLE_CONTROL (OF1.5) (xid=0x5):\n \
            bundle_id=0 type=COMMIT_REQUEST flags=atomic ordered";
        assert_eq!(
            offending_line(stderr, &ops()).as_deref(),
            Some("add table=5,priority=0 actions=drop")
        );
        assert_eq!(offending_line("something else", &ops()), None);
    }

    #[test]
    fn next_round_skips_zero() {
        assert_eq!(next_round(None), 1);
        assert_eq!(next_round(Some(1)), 2);
        assert_eq!(next_round(Some(u16::MAX)), 1);
    }
}
