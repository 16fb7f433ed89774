//! iptables SNAT by mark on the egress Node: applies the rules `ovs_egress_core::snat` renders
//! for the local egress IPs with `iptables-restore --noflush` (one atomic transaction per
//! table), then keeps them there (periodic read-back and repair).
//!
//! Only our own chains are ever written (`OVS-EGRESS-POSTROUTING` in `nat`,
//! `OVS-EGRESS-PREROUTING` in `mangle`). Each chain is declared in the restore input, so it is
//! flushed and rewritten whole inside its table's COMMIT: there is never a moment with the chain
//! half-written (a Pod would be masqueraded to the Node IP). The only rules written outside our
//! chains are the two jumps, inserted at position 1 of `POSTROUTING` / `PREROUTING` when
//! missing, so they precede any masquerade rule of someone else. This module must never flush
//! or rewrite a chain it does not own.
//!
//! The rules are rendered exactly as `iptables -S` prints them, so verification is a plain
//! comparison of lines.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub use ovs_egress_core::snat::{
    ChainRules, Family, MANGLE_CHAIN, NAT_CHAIN, SnatConfig, SnatEntry, SnatError, Table,
    families_in_use, render_family,
};

/// How long iptables waits for the xtables lock before failing.
const LOCK_WAIT: &str = "--wait=10";

/// What an apply or a verification changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Our chain in this table was (re)written.
    ChainWritten(Family, Table),
    /// The jump to our chain was missing and was inserted at position 1.
    JumpInserted(Family, Table),
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(transparent)]
    Rules(#[from] SnatError),
    #[error("cannot run `{command}` (table {table}, chain {chain}): {source}")]
    Spawn {
        command: String,
        table: &'static str,
        chain: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` (table {table}, chain {chain}) failed ({status}): {stderr}")]
    Command {
        command: String,
        table: &'static str,
        chain: &'static str,
        status: std::process::ExitStatus,
        /// iptables's stderr, followed by the offending input line when it names one.
        stderr: String,
    },
}

/// Keeps our chains equal to the last desired state. Level-triggered: [`Applier::apply`] writes
/// only tables whose rendered text changed; [`Applier::verify`] (on start and periodically)
/// reads them back and repairs whatever was changed behind its back.
#[derive(Debug)]
pub struct Applier {
    config: SnatConfig,
    /// The chains last written successfully; an unchanged chain is not rewritten.
    applied: BTreeMap<(Family, Table), ChainRules>,
    /// Tables whose jump rule is known to exist (checked by apply once, by verify always).
    jumps_present: BTreeSet<(Family, Table)>,
}

impl Applier {
    pub fn new(config: SnatConfig) -> Applier {
        Applier {
            config,
            applied: BTreeMap::new(),
            jumps_present: BTreeSet::new(),
        }
    }

    /// Makes our chains hold exactly the rules for `entries`. Families with nothing to program
    /// are left alone unless we wrote them before (then they are emptied). Stops at the first
    /// failing table; every table is all-or-nothing, so earlier rules stay intact.
    pub async fn apply(&mut self, entries: &[SnatEntry]) -> Result<Vec<Change>, IptablesError> {
        let mut families = families_in_use(entries, &self.config);
        families.extend(self.applied.keys().map(|(f, _)| *f));
        let mut changes = Vec::new();
        for family in families {
            for chain in render_family(entries, &self.config, family)? {
                let key = (family, chain.table);
                if self.applied.get(&key) != Some(&chain) {
                    restore(&chain).await?;
                    changes.push(Change::ChainWritten(family, chain.table));
                    self.applied.insert(key, chain);
                }
                if !self.jumps_present.contains(&key) {
                    if ensure_jump(family, key.1).await? {
                        changes.push(Change::JumpInserted(family, key.1));
                    }
                    self.jumps_present.insert(key);
                }
            }
        }
        Ok(changes)
    }

    /// Reads our chains and jumps back and rewrites whatever differs from the last applied
    /// state (someone flushed the table, deleted a rule, or removed the jump).
    pub async fn verify(&mut self) -> Result<Vec<Change>, IptablesError> {
        let mut changes = Vec::new();
        for (&(family, table), chain) in &self.applied {
            if read_chain(family, table).await.as_deref() != Some(chain.rules.as_slice()) {
                restore(chain).await?;
                changes.push(Change::ChainWritten(family, table));
            }
            if ensure_jump(family, table).await? {
                changes.push(Change::JumpInserted(family, table));
            }
            self.jumps_present.insert((family, table));
        }
        Ok(changes)
    }
}

/// The `-A` lines of our chain in `table`, or `None` when it cannot be listed (missing chain).
async fn read_chain(family: Family, table: Table) -> Option<Vec<String>> {
    let args = [LOCK_WAIT, "-t", table.name(), "-S", table.chain()];
    let out = run(family.program(), &args, None, table).await.ok()?;
    Some(
        out.lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_string)
            .collect(),
    )
}

async fn restore(chain: &ChainRules) -> Result<(), IptablesError> {
    let args = ["--noflush", LOCK_WAIT];
    let text = chain.restore_text();
    run(
        chain.family.restore_program(),
        &args,
        Some(&text),
        chain.table,
    )
    .await
    .map(drop)
}

/// Inserts the jump to our chain at position 1 of the hook chain unless it is there; returns
/// whether it inserted it.
async fn ensure_jump(family: Family, table: Table) -> Result<bool, IptablesError> {
    let spec = [
        "-m",
        "comment",
        "--comment",
        table.jump_comment(),
        "-j",
        table.chain(),
    ];
    let mut check = vec![LOCK_WAIT, "-t", table.name(), "-C", table.hook()];
    check.extend(spec);
    match run(family.program(), &check, None, table).await {
        Ok(_) => return Ok(false),
        // `-C` exits 1 exactly when the rule does not exist; anything else is a real error.
        Err(IptablesError::Command { status, .. }) if status.code() == Some(1) => {}
        Err(e) => return Err(e),
    }
    let mut insert = vec![LOCK_WAIT, "-t", table.name(), "-I", table.hook(), "1"];
    insert.extend(spec);
    run(family.program(), &insert, None, table).await?;
    Ok(true)
}

/// Runs `program args` (argv, no shell) with `input` on stdin; returns stdout.
async fn run(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    table: Table,
) -> Result<String, IptablesError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_err = |source| IptablesError::Spawn {
        command: command.clone(),
        table: table.name(),
        chain: table.chain(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.map_err(spawn_err)?;
        // Dropping stdin closes it, so the program sees end of input.
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(IptablesError::Command {
        command,
        table: table.name(),
        chain: table.chain(),
        status: out.status,
        stderr: describe_failure(&stderr, input),
    })
}

/// iptables's first stderr line plus, when it names an input line ("Error occurred at line:
/// N"), that line of the input, so the error shows the offending rule.
fn describe_failure(stderr: &str, input: Option<&str>) -> String {
    let first = stderr.lines().next().unwrap_or("").trim().to_string();
    let line_no = stderr.lines().find_map(|l| {
        l.strip_prefix("Error occurred at line: ")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    match (line_no, input) {
        (Some(n), Some(text)) => match text.lines().nth(n.saturating_sub(1)) {
            Some(line) => format!("{first} (input line {n}: {line})"),
            None => first,
        },
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_description_quotes_the_input_line_iptables_names() {
        let stderr = "ip6tables-restore v1.8.9 (nf_tables): interface name `x' must be shorter\n\
                      Error occurred at line: 3\nTry `ip6tables-restore -h' for more information.\n";
        let d = describe_failure(
            stderr,
            Some("*nat\n:C - [0:0]\n-A C ! -o x -j SNAT\nCOMMIT\n"),
        );
        assert_eq!(
            d,
            "ip6tables-restore v1.8.9 (nf_tables): interface name `x' must be shorter \
             (input line 3: -A C ! -o x -j SNAT)"
        );
        assert_eq!(describe_failure("plain failure\n", None), "plain failure");
    }
}
