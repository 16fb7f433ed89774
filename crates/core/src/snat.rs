//! The iptables half of the egress datapath, as text: the SNAT-by-mark rules of a Node's local
//! egress IPs, the Pod masquerade rule, and (on the userspace datapath) the rules that restore
//! the mark from the source MAC. Rendered exactly as `iptables -S` prints them, so the host
//! adapter verifies by comparing lines, and `render` prints what an agent writes.
//!
//! Only two chains are ours: `OVS-EGRESS-POSTROUTING` in `nat` and `OVS-EGRESS-PREROUTING` in
//! `mangle`; each is declared in the restore input, so it is replaced whole in one transaction.
//! The mark contract (mask, MAC encoding) is `pipeline::egress`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroU8;

use crate::pipeline::egress::{MARK_MASK, MarkCarrier, mark_mac};
use crate::pipeline::{IpNetwork, Mac};
use crate::plan::NodePlan;

/// Our chain in `nat`, jumped to from `POSTROUTING`.
pub const NAT_CHAIN: &str = "OVS-EGRESS-POSTROUTING";
/// Our chain in `mangle`, jumped to from `PREROUTING`.
pub const MANGLE_CHAIN: &str = "OVS-EGRESS-PREROUTING";
/// One local egress IP and the mark its packets carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatEntry {
    pub ip: IpAddr,
    pub mark: NonZeroU8,
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
    pub pod_cidrs: Vec<IpNetwork>,
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

    /// The restore program of this family.
    pub fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The iptables program of this family.
    pub fn program(self) -> &'static str {
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

    /// The comment of the jump rule from the hook to our chain.
    pub fn jump_comment(self) -> &'static str {
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

/// Why a set of SNAT entries or a Pod CIDR cannot become rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnatError {
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
}

/// Checks that marks and IPs are one-to-one, and returns the entries deduplicated and sorted
/// (IPv4 before IPv6, numerically), the order the rules are written in.
fn normalize(entries: &[SnatEntry]) -> Result<Vec<SnatEntry>, SnatError> {
    let mut by_ip: BTreeMap<IpAddr, NonZeroU8> = BTreeMap::new();
    let mut by_mark: BTreeMap<NonZeroU8, IpAddr> = BTreeMap::new();
    for e in entries {
        if let Some(&other) = by_ip.get(&e.ip).filter(|m| **m != e.mark) {
            return Err(SnatError::DuplicateIp {
                ip: e.ip,
                mark: e.mark,
                other,
            });
        }
        if let Some(&other) = by_mark.get(&e.mark).filter(|ip| **ip != e.ip) {
            return Err(SnatError::DuplicateMark {
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
            .filter(|c| Family::of(c.ip()) == family)
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
                    mac = Mac(mark_mac(e.mark)),
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
) -> Result<[ChainRules; 2], SnatError> {
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
        .chain(cfg.pod_cidrs.iter().map(|c| Family::of(c.ip())))
        .collect()
}

/// The `iptables-restore` (IPv4) and `ip6tables-restore` (IPv6) input for a Node, for
/// `ovs-egress render`: each family's section starts with a `# <program>` line.
pub fn render_restore_text(entries: &[SnatEntry], cfg: &SnatConfig) -> Result<String, SnatError> {
    let mut out = String::new();
    for family in families_in_use(entries, cfg) {
        out.push_str(&format!("# {} --noflush\n", family.restore_program()));
        for chain in render_family(entries, cfg, family)? {
            out.push_str(&chain.restore_text());
        }
    }
    Ok(out)
}

/// The SNAT entries of a plan (a mark of 0 never reaches iptables; the plan never gives one).
pub fn snat_entries(plan: &NodePlan) -> Vec<SnatEntry> {
    plan.snat_rules
        .iter()
        .filter_map(|r| NonZeroU8::new(r.mark).map(|mark| SnatEntry { ip: r.ip, mark }))
        .collect()
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
        assert_eq!(Mac(mark_mac(mark(0x1f))).to_string(), "02:ee:00:00:00:1f");
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
        assert!(matches!(err, SnatError::DuplicateMark { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.1"));
        let err = render_family(
            &[entry("10.0.0.1", 5), entry("10.0.0.1", 6)],
            &cfg,
            Family::V4,
        )
        .unwrap_err();
        assert!(matches!(err, SnatError::DuplicateIp { .. }), "{err}");
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
        cfg.pod_cidrs.retain(|c| c.is_ipv4());
        let text = render_restore_text(&[entry("10.0.0.9", 1)], &cfg).unwrap();
        assert!(text.starts_with("# iptables-restore --noflush\n*nat\n"));
        assert!(!text.contains("ip6tables"));
        let text = render_restore_text(&[entry("fd00::9", 1)], &cfg).unwrap();
        assert!(text.contains("# ip6tables-restore --noflush\n"));
    }
}
