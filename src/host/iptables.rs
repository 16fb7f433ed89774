//! iptables SNAT by mark on the egress Node: renders the rules for the local egress IPs and
//! applies them with `iptables-restore --noflush` (one atomic transaction per table), then keeps
//! them there (periodic read-back and repair).
//!
//! Only our own chains are ever written: `OVS-EGRESS-POSTROUTING` in `nat` (SNAT per local egress
//! IP, then the Pod masquerade rule) and `OVS-EGRESS-PREROUTING` in `mangle` (restores the mark
//! from the source MAC on the userspace datapath). Each chain is declared in the restore input,
//! so it is flushed and rewritten whole inside its table's COMMIT: there is never a moment with
//! the chain half-written (a Pod would be masqueraded to the Node IP). The only rules written
//! outside our chains are the two jumps, inserted at position 1 of `POSTROUTING` / `PREROUTING`
//! when missing, so they precede any masquerade rule of someone else. This module must never
//! flush or rewrite a chain it does not own.
//!
//! The rules are rendered exactly as `iptables -S` prints them, so verification is a plain
//! comparison of lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU8;
use std::process::Stdio;
use std::str::FromStr;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::format_mac;
use crate::pipeline::egress::{MARK_MASK, MarkCarrier, mark_mac};

/// Our chain in `nat`, jumped to from `POSTROUTING`.
pub const NAT_CHAIN: &str = "OVS-EGRESS-POSTROUTING";
/// Our chain in `mangle`, jumped to from `PREROUTING`.
pub const MANGLE_CHAIN: &str = "OVS-EGRESS-PREROUTING";
/// How long iptables waits for the xtables lock before failing.
const LOCK_WAIT: &str = "--wait=10";

/// One local egress IP and the mark its packets carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatEntry {
    pub ip: IpAddr,
    pub mark: NonZeroU8,
}

/// An IP prefix such as `10.244.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = IptablesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| IptablesError::InvalidCidr {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, len) = s.split_once('/').ok_or_else(|| invalid("no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid("bad address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| invalid("bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(invalid("prefix length too long"));
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Node-wide knobs of the SNAT rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatConfig {
    /// The OVS gateway interface, e.g. `antrea-gw0`.
    pub gateway: String,
    /// `--random-fully` on SNAT and MASQUERADE.
    pub random_fully: bool,
    pub carrier: MarkCarrier,
    /// This Node's Pod CIDRs (one per family); Pods without an egress IP are masqueraded to the
    /// Node IP. Empty means no masquerade rule (noSNAT).
    pub pod_cidrs: Vec<Cidr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Mangle,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Mangle => "mangle",
        }
    }

    /// Our chain in this table.
    pub fn chain(self) -> &'static str {
        match self {
            Table::Nat => NAT_CHAIN,
            Table::Mangle => MANGLE_CHAIN,
        }
    }

    /// The built-in chain that jumps to ours.
    pub fn hook(self) -> &'static str {
        match self {
            Table::Nat => "POSTROUTING",
            Table::Mangle => "PREROUTING",
        }
    }

    fn jump_comment(self) -> &'static str {
        match self {
            Table::Nat => "ovs-egress: jump to egress SNAT rules",
            Table::Mangle => "ovs-egress: jump to egress mark restore rules",
        }
    }
}

/// The full contents of one of our chains, as `-A` lines in `iptables -S` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRules {
    pub family: Family,
    pub table: Table,
    pub rules: Vec<String>,
}

impl ChainRules {
    /// The `iptables-restore --noflush` input replacing the chain whole.
    pub fn restore_text(&self) -> String {
        let chain = self.table.chain();
        let mut s = format!("*{}\n:{chain} - [0:0]\n", self.table.name());
        for r in &self.rules {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

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
    #[error("egress IP {ip}: mark {mark} is already used by egress IP {other}")]
    DuplicateMark {
        ip: IpAddr,
        mark: NonZeroU8,
        other: IpAddr,
    },
    #[error("egress IP {ip} is given two marks, {mark} and {other}")]
    DuplicateIp {
        ip: IpAddr,
        mark: NonZeroU8,
        other: NonZeroU8,
    },
    #[error("invalid Pod CIDR {input:?}: {reason}")]
    InvalidCidr { input: String, reason: String },
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

/// Checks that marks and IPs are one-to-one, and returns the entries deduplicated and sorted
/// (IPv4 before IPv6, numerically), the order the rules are written in.
fn normalize(entries: &[SnatEntry]) -> Result<Vec<SnatEntry>, IptablesError> {
    let mut by_ip: BTreeMap<IpAddr, NonZeroU8> = BTreeMap::new();
    let mut by_mark: BTreeMap<NonZeroU8, IpAddr> = BTreeMap::new();
    for e in entries {
        if let Some(&other) = by_ip.get(&e.ip).filter(|m| **m != e.mark) {
            return Err(IptablesError::DuplicateIp {
                ip: e.ip,
                mark: e.mark,
                other,
            });
        }
        if let Some(&other) = by_mark.get(&e.mark).filter(|ip| **ip != e.ip) {
            return Err(IptablesError::DuplicateMark {
                ip: e.ip,
                mark: e.mark,
                other,
            });
        }
        by_ip.insert(e.ip, e.mark);
        by_mark.insert(e.mark, e.ip);
    }
    Ok(by_ip
        .into_iter()
        .map(|(ip, mark)| SnatEntry { ip, mark })
        .collect())
}

fn render_nat(entries: &[SnatEntry], cfg: &SnatConfig, family: Family) -> ChainRules {
    let gw = &cfg.gateway;
    let random = if cfg.random_fully {
        " --random-fully"
    } else {
        ""
    };
    let mut rules: Vec<String> = entries
        .iter()
        .filter(|e| Family::of(e.ip) == family)
        .map(|e| {
            format!(
                "-A {NAT_CHAIN} ! -o {gw} -m mark --mark {:#x}/{MARK_MASK:#x} \
                 -m comment --comment \"ovs-egress: SNAT to {ip}\" -j SNAT --to-source {ip}{random}",
                e.mark.get(),
                ip = e.ip,
            )
        })
        .collect();
    rules.extend(
        cfg.pod_cidrs
            .iter()
            .filter(|c| Family::of(c.addr) == family)
            .map(|c| {
                format!(
                    "-A {NAT_CHAIN} -s {c} ! -o {gw} \
                     -m comment --comment \"ovs-egress: masquerade Pod to external packets\" \
                     -j MASQUERADE{random}"
                )
            }),
    );
    ChainRules {
        family,
        table: Table::Nat,
        rules,
    }
}

fn render_mangle(entries: &[SnatEntry], cfg: &SnatConfig, family: Family) -> ChainRules {
    let rules = match cfg.carrier {
        MarkCarrier::PktMark => Vec::new(),
        MarkCarrier::SourceMac => entries
            .iter()
            .filter(|e| Family::of(e.ip) == family)
            .map(|e| {
                let m = e.mark.get();
                format!(
                    "-A {MANGLE_CHAIN} -i {gw} -m mac --mac-source {mac} \
                     -m comment --comment \"ovs-egress: mark {m} from source MAC\" \
                     -j MARK --set-xmark {m:#x}/{MARK_MASK:#x}",
                    gw = cfg.gateway,
                    mac = format_mac(mark_mac(e.mark)),
                )
            })
            .collect(),
    };
    ChainRules {
        family,
        table: Table::Mangle,
        rules,
    }
}

/// Both of our chains for one family (an empty chain is still rendered: it flushes leftovers).
pub fn render_family(
    entries: &[SnatEntry],
    cfg: &SnatConfig,
    family: Family,
) -> Result<[ChainRules; 2], IptablesError> {
    let entries = normalize(entries)?;
    Ok([
        render_nat(&entries, cfg, family),
        render_mangle(&entries, cfg, family),
    ])
}

/// The families that have something to program: an egress IP or a Pod CIDR.
pub fn families_in_use(entries: &[SnatEntry], cfg: &SnatConfig) -> BTreeSet<Family> {
    entries
        .iter()
        .map(|e| Family::of(e.ip))
        .chain(cfg.pod_cidrs.iter().map(|c| Family::of(c.addr)))
        .collect()
}

/// The `iptables-restore` (IPv4) and `ip6tables-restore` (IPv6) input for a Node, for
/// `ovs-egress render`: each family's section starts with a `# <program>` line.
pub fn render_restore_text(
    entries: &[SnatEntry],
    cfg: &SnatConfig,
) -> Result<String, IptablesError> {
    let mut out = String::new();
    for family in families_in_use(entries, cfg) {
        out.push_str(&format!("# {} --noflush\n", family.restore_program()));
        for chain in render_family(entries, cfg, family)? {
            out.push_str(&chain.restore_text());
        }
    }
    Ok(out)
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
        let started = std::time::Instant::now();
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
        if !changes.is_empty() {
            crate::metrics::agent::metrics()
                .iptables_apply
                .observe(started.elapsed().as_secs_f64());
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

    fn mark(m: u8) -> NonZeroU8 {
        NonZeroU8::new(m).unwrap()
    }

    fn entry(ip: &str, m: u8) -> SnatEntry {
        SnatEntry {
            ip: ip.parse().unwrap(),
            mark: mark(m),
        }
    }

    fn config(carrier: MarkCarrier, random_fully: bool) -> SnatConfig {
        SnatConfig {
            gateway: "antrea-gw0".into(),
            random_fully,
            carrier,
            pod_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn mark_mac_is_locally_administered_unicast_and_ends_with_the_mark() {
        for m in 1..=255u8 {
            let mac = mark_mac(mark(m));
            assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
            assert_eq!(mac[5], m);
        }
        assert_eq!(format_mac(mark_mac(mark(0x1f))), "02:ee:00:00:00:1f");
    }

    #[test]
    fn nat_chain_has_one_snat_rule_per_ip_in_numeric_order_then_masquerade() {
        let entries = [entry("10.0.0.10", 2), entry("10.0.0.9", 7)];
        let [nat, _] =
            render_family(&entries, &config(MarkCarrier::PktMark, false), Family::V4).unwrap();
        assert_eq!(
            nat.rules,
            [
                "-A OVS-EGRESS-POSTROUTING ! -o antrea-gw0 -m mark --mark 0x7/0xff -m comment \
                 --comment \"ovs-egress: SNAT to 10.0.0.9\" -j SNAT --to-source 10.0.0.9",
                "-A OVS-EGRESS-POSTROUTING ! -o antrea-gw0 -m mark --mark 0x2/0xff -m comment \
                 --comment \"ovs-egress: SNAT to 10.0.0.10\" -j SNAT --to-source 10.0.0.10",
                "-A OVS-EGRESS-POSTROUTING -s 10.244.1.0/24 ! -o antrea-gw0 -m comment \
                 --comment \"ovs-egress: masquerade Pod to external packets\" -j MASQUERADE",
            ]
        );
    }

    #[test]
    fn random_fully_is_appended_to_snat_and_masquerade() {
        let [nat, _] = render_family(
            &[entry("10.0.0.9", 255)],
            &config(MarkCarrier::PktMark, true),
            Family::V4,
        )
        .unwrap();
        assert!(nat.rules.iter().all(|r| r.ends_with(" --random-fully")));
        assert!(nat.rules[0].contains("--mark 0xff/0xff"));
    }

    #[test]
    fn families_are_split_and_ipv6_rules_name_the_ipv6_address() {
        let entries = [entry("fd00::5", 3), entry("10.0.0.9", 4)];
        let cfg = config(MarkCarrier::SourceMac, false);
        let [nat6, mangle6] = render_family(&entries, &cfg, Family::V6).unwrap();
        assert_eq!(nat6.rules.len(), 2);
        assert!(nat6.rules[0].ends_with("-j SNAT --to-source fd00::5"));
        assert!(nat6.rules[1].contains("-s fd00:10:244:1::/64"));
        assert_eq!(mangle6.rules.len(), 1);
        assert!(mangle6.rules[0].contains("--mac-source 02:ee:00:00:00:03"));
        let [nat4, _] = render_family(&entries, &cfg, Family::V4).unwrap();
        assert!(nat4.rules.iter().all(|r| !r.contains("fd00")));
    }

    #[test]
    fn mangle_restores_the_mark_from_the_source_mac_only_on_the_userspace_datapath() {
        let entries = [entry("10.0.0.9", 12)];
        let [_, mac] =
            render_family(&entries, &config(MarkCarrier::SourceMac, false), Family::V4).unwrap();
        assert_eq!(
            mac.rules,
            [
                "-A OVS-EGRESS-PREROUTING -i antrea-gw0 -m mac --mac-source 02:ee:00:00:00:0c \
              -m comment --comment \"ovs-egress: mark 12 from source MAC\" \
              -j MARK --set-xmark 0xc/0xff"
            ]
        );
        let [_, pkt] =
            render_family(&entries, &config(MarkCarrier::PktMark, false), Family::V4).unwrap();
        assert!(pkt.rules.is_empty());
    }

    #[test]
    fn restore_text_declares_the_chain_so_it_is_replaced_whole() {
        let [nat, _] = render_family(
            &[entry("10.0.0.9", 1)],
            &config(MarkCarrier::PktMark, false),
            Family::V4,
        )
        .unwrap();
        let text = nat.restore_text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":OVS-EGRESS-POSTROUTING - [0:0]");
        assert_eq!(lines.last(), Some(&"COMMIT"));
        assert_eq!(lines.len(), 2 + nat.rules.len() + 1);
    }

    #[test]
    fn a_mark_shared_by_two_ips_or_an_ip_with_two_marks_is_rejected() {
        let cfg = config(MarkCarrier::PktMark, false);
        let err = render_family(
            &[entry("10.0.0.1", 5), entry("10.0.0.2", 5)],
            &cfg,
            Family::V4,
        )
        .unwrap_err();
        assert!(matches!(err, IptablesError::DuplicateMark { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.1"));
        let err = render_family(
            &[entry("10.0.0.1", 5), entry("10.0.0.1", 6)],
            &cfg,
            Family::V4,
        )
        .unwrap_err();
        assert!(matches!(err, IptablesError::DuplicateIp { .. }), "{err}");
    }

    #[test]
    fn duplicate_identical_entries_render_one_rule() {
        let cfg = config(MarkCarrier::PktMark, false);
        let [nat, _] = render_family(
            &[entry("10.0.0.1", 5), entry("10.0.0.1", 5)],
            &cfg,
            Family::V4,
        )
        .unwrap();
        assert_eq!(nat.rules.iter().filter(|r| r.contains("SNAT")).count(), 1);
    }

    #[test]
    fn render_restore_text_covers_only_families_in_use() {
        let mut cfg = config(MarkCarrier::PktMark, false);
        cfg.pod_cidrs.retain(|c| c.addr.is_ipv4());
        let text = render_restore_text(&[entry("10.0.0.9", 1)], &cfg).unwrap();
        assert!(text.starts_with("# iptables-restore --noflush\n*nat\n"));
        assert!(!text.contains("ip6tables"));
        let text = render_restore_text(&[entry("fd00::9", 1)], &cfg).unwrap();
        assert!(text.contains("# ip6tables-restore --noflush\n"));
    }

    #[test]
    fn cidr_parsing_rejects_missing_or_too_long_prefixes() {
        assert_eq!(
            "10.244.0.0/16".parse::<Cidr>().unwrap().to_string(),
            "10.244.0.0/16"
        );
        for bad in [
            "10.244.0.0",
            "10.244.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

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
