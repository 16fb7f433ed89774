//! Typed OpenFlow flows: matches, actions, cookies, and their rendering in `ovs-ofctl` syntax.
//! Rendering is canonical: fields come out in the order and spelling `ovs-ofctl dump-flows
//! --no-names` prints them, so a flow read back from the switch compares equal to the flow we
//! wrote (the programmer's verification depends on it; a test on a real OVS proves it). Nothing
//! here does I/O.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::net::{Ipv4Network, Ipv6Network, Mac, OvsIpv6, OvsPrefix};
use super::regs::RegMark;
use super::table::Table;

/// What kind of object a flow exists for (cookie bits 40..47), Antrea's numbering
/// (`pkg/agent/openflow/cookie`: 4 is Egress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// The pipeline skeleton: table-miss flows.
    Default = 0,
    PodConnectivity = 1,
    Egress = 4,
}

impl Category {
    /// Whether the 64-bit `cookie` of a flow (of any round) carries this category.
    pub fn holds(self, cookie: u64) -> bool {
        (cookie >> 40) & 0xff == self as u64
    }
}

/// A flow's cookie without its round: `category << 40 | object`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cookie {
    pub category: Category,
    pub object: u32,
}

/// Mask selecting the round bits of a cookie.
pub const ROUND_MASK: u64 = 0xffff << 48;

impl Cookie {
    pub const DEFAULT: Cookie = Cookie {
        category: Category::Default,
        object: 0,
    };

    pub const fn new(category: Category, object: u32) -> Self {
        Cookie { category, object }
    }

    /// The 64-bit cookie: `round << 48 | category << 40 | object`.
    pub fn value(self, round: u16) -> u64 {
        (u64::from(round) << 48) | ((self.category as u64) << 40) | u64::from(self.object)
    }
}

/// The cookie value/mask that selects every flow of `round`.
pub fn round_cookie(round: u16) -> (u64, u64) {
    (u64::from(round) << 48, ROUND_MASK)
}

/// Conntrack state bits as OVS orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtFlag {
    New = 0x01,
    Est = 0x02,
    Rel = 0x04,
    Rpl = 0x08,
    Inv = 0x10,
    Trk = 0x20,
}

const CT_FLAGS: [(CtFlag, &str); 6] = [
    (CtFlag::New, "new"),
    (CtFlag::Est, "est"),
    (CtFlag::Rel, "rel"),
    (CtFlag::Rpl, "rpl"),
    (CtFlag::Inv, "inv"),
    (CtFlag::Trk, "trk"),
];

/// A `ct_state` match: flags that must be set (`+`) and flags that must be clear (`-`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtState {
    set: u8,
    clear: u8,
}

impl CtState {
    pub fn set(mut self, flag: CtFlag) -> Self {
        self.set |= flag as u8;
        self.clear &= !(flag as u8);
        self
    }

    pub fn clear(mut self, flag: CtFlag) -> Self {
        self.clear |= flag as u8;
        self.set &= !(flag as u8);
        self
    }
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, name) in CT_FLAGS {
            if self.set & flag as u8 != 0 {
                write!(f, "+{name}")?;
            } else if self.clear & flag as u8 != 0 {
                write!(f, "-{name}")?;
            }
        }
        Ok(())
    }
}

/// The protocol a match is restricted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Ip,
    Ipv6,
    Arp,
}

/// A flow match. Build with the chained setters; unset fields are wildcards, and so is a /0
/// prefix (OVS drops it from the match, so it is never stored). A field of a family needs that
/// family's protocol (`ip` for `nw_*`/`tun_dst`, `ipv6` for `ipv6_*`/`tun_ipv6_dst`), as in
/// `ovs-ofctl`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pkt_mark: Option<(u32, u32)>,
    ct_state: Option<CtState>,
    ct_mark: Option<(u32, u32)>,
    proto: Option<Proto>,
    regs: Vec<RegMark>,
    tun_dst: Option<Ipv4Addr>,
    tun_ipv6_dst: Option<Ipv6Addr>,
    in_port: Option<u32>,
    eth_src: Option<Mac>,
    eth_dst: Option<Mac>,
    nw_src: Option<Ipv4Network>,
    nw_dst: Option<Ipv4Network>,
    ipv6_src: Option<Ipv6Network>,
    ipv6_dst: Option<Ipv6Network>,
    arp_spa: Option<Ipv4Addr>,
    arp_tpa: Option<Ipv4Addr>,
    arp_op: Option<u16>,
    arp_sha: Option<Mac>,
}

impl Match {
    /// Matches every packet.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn ip(mut self) -> Self {
        self.proto = Some(Proto::Ip);
        self
    }

    pub fn ipv6(mut self) -> Self {
        self.proto = Some(Proto::Ipv6);
        self
    }

    pub fn arp(mut self) -> Self {
        self.proto = Some(Proto::Arp);
        self
    }

    pub fn pkt_mark(mut self, value: u32, mask: u32) -> Self {
        self.pkt_mark = Some((value, mask));
        self
    }

    pub fn ct_state(mut self, state: CtState) -> Self {
        self.ct_state = Some(state);
        self
    }

    pub fn ct_mark(mut self, value: u32, mask: u32) -> Self {
        self.ct_mark = Some((value, mask));
        self
    }

    /// Adds a register match; a later mark on the same register is merged into it.
    pub fn reg(mut self, mark: RegMark) -> Self {
        match self.regs.iter_mut().find(|m| m.reg == mark.reg) {
            Some(m) => {
                m.value = (m.value & !mark.mask) | (mark.value & mark.mask);
                m.mask |= mark.mask;
            }
            None => {
                self.regs.push(mark);
                self.regs.sort();
            }
        }
        self
    }

    pub fn tun_dst(mut self, ip: Ipv4Addr) -> Self {
        self.tun_dst = Some(ip);
        self
    }

    pub fn tun_ipv6_dst(mut self, ip: Ipv6Addr) -> Self {
        self.tun_ipv6_dst = Some(ip);
        self
    }

    pub fn in_port(mut self, ofport: u32) -> Self {
        self.in_port = Some(ofport);
        self
    }

    pub fn eth_src(mut self, mac: Mac) -> Self {
        self.eth_src = Some(mac);
        self
    }

    pub fn eth_dst(mut self, mac: Mac) -> Self {
        self.eth_dst = Some(mac);
        self
    }

    pub fn nw_src(mut self, cidr: Ipv4Network) -> Self {
        self.nw_src = Ipv4Network::new(cidr.network(), cidr.prefix())
            .ok()
            .filter(|c| c.prefix() > 0);
        self
    }

    pub fn nw_dst(mut self, cidr: Ipv4Network) -> Self {
        self.nw_dst = Ipv4Network::new(cidr.network(), cidr.prefix())
            .ok()
            .filter(|c| c.prefix() > 0);
        self
    }

    pub fn ipv6_src(mut self, cidr: Ipv6Network) -> Self {
        self.ipv6_src = Ipv6Network::new(cidr.network(), cidr.prefix())
            .ok()
            .filter(|c| c.prefix() > 0);
        self
    }

    pub fn ipv6_dst(mut self, cidr: Ipv6Network) -> Self {
        self.ipv6_dst = Ipv6Network::new(cidr.network(), cidr.prefix())
            .ok()
            .filter(|c| c.prefix() > 0);
        self
    }

    pub fn arp_spa(mut self, ip: Ipv4Addr) -> Self {
        self.arp_spa = Some(ip);
        self
    }

    pub fn arp_tpa(mut self, ip: Ipv4Addr) -> Self {
        self.arp_tpa = Some(ip);
        self
    }

    pub fn arp_op(mut self, op: u16) -> Self {
        self.arp_op = Some(op);
        self
    }

    pub fn arp_sha(mut self, mac: Mac) -> Self {
        self.arp_sha = Some(mac);
        self
    }
}

/// A value under a mask, printed OVS style: zero as `0`, else hex; a full mask is omitted.
struct Masked(u32, u32);

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0")?,
            v => write!(f, "{v:#x}")?,
        }
        if self.1 != u32::MAX {
            write!(f, "/{:#x}", self.1)?;
        }
        Ok(())
    }
}

impl fmt::Display for Match {
    /// The canonical field list (no leading or trailing comma; empty for match-all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut field = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| {
            let sep = if first { "" } else { "," };
            first = false;
            write!(f, "{sep}{args}")
        };
        if let Some((v, m)) = self.pkt_mark {
            field(f, format_args!("pkt_mark={}", Masked(v, m)))?;
        }
        if let Some(state) = self.ct_state {
            field(f, format_args!("ct_state={state}"))?;
        }
        if let Some((v, m)) = self.ct_mark {
            field(f, format_args!("ct_mark={}", Masked(v, m)))?;
        }
        match self.proto {
            Some(Proto::Ip) => field(f, format_args!("ip"))?,
            Some(Proto::Ipv6) => field(f, format_args!("ipv6"))?,
            Some(Proto::Arp) => field(f, format_args!("arp"))?,
            None => {}
        }
        for r in &self.regs {
            field(f, format_args!("reg{}={}", r.reg, Masked(r.value, r.mask)))?;
        }
        if let Some(v) = self.tun_dst {
            field(f, format_args!("tun_dst={v}"))?;
        }
        if let Some(v) = self.tun_ipv6_dst {
            field(f, format_args!("tun_ipv6_dst={}", OvsIpv6(v)))?;
        }
        if let Some(v) = self.in_port {
            field(f, format_args!("in_port={v}"))?;
        }
        if let Some(v) = self.eth_src {
            field(f, format_args!("dl_src={v}"))?;
        }
        if let Some(v) = self.eth_dst {
            field(f, format_args!("dl_dst={v}"))?;
        }
        if let Some(v) = self.nw_src {
            field(f, format_args!("nw_src={}", OvsPrefix(v)))?;
        }
        if let Some(v) = self.nw_dst {
            field(f, format_args!("nw_dst={}", OvsPrefix(v)))?;
        }
        if let Some(v) = self.ipv6_src {
            field(f, format_args!("ipv6_src={}", OvsPrefix(v)))?;
        }
        if let Some(v) = self.ipv6_dst {
            field(f, format_args!("ipv6_dst={}", OvsPrefix(v)))?;
        }
        if let Some(v) = self.arp_spa {
            field(f, format_args!("arp_spa={v}"))?;
        }
        if let Some(v) = self.arp_tpa {
            field(f, format_args!("arp_tpa={v}"))?;
        }
        if let Some(v) = self.arp_op {
            field(f, format_args!("arp_op={v}"))?;
        }
        if let Some(v) = self.arp_sha {
            field(f, format_args!("arp_sha={v}"))?;
        }
        Ok(())
    }
}

/// A field `move:` can copy (whole field, or a bit range of a register / ct_mark).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveField {
    EthSrc,
    EthDst,
    ArpSha,
    ArpTha,
    ArpSpa,
    ArpTpa,
    /// `NXM_NX_REG<reg>[lo..hi]`
    Reg {
        reg: u8,
        lo: u8,
        hi: u8,
    },
    /// `NXM_NX_CT_MARK[lo..hi]`
    CtMark {
        lo: u8,
        hi: u8,
    },
}

impl fmt::Display for MoveField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveField::EthSrc => f.write_str("NXM_OF_ETH_SRC[]"),
            MoveField::EthDst => f.write_str("NXM_OF_ETH_DST[]"),
            MoveField::ArpSha => f.write_str("NXM_NX_ARP_SHA[]"),
            MoveField::ArpTha => f.write_str("NXM_NX_ARP_THA[]"),
            MoveField::ArpSpa => f.write_str("NXM_OF_ARP_SPA[]"),
            MoveField::ArpTpa => f.write_str("NXM_OF_ARP_TPA[]"),
            MoveField::Reg { reg, lo, hi } => write!(f, "NXM_NX_REG{reg}[{lo}..{hi}]"),
            MoveField::CtMark { lo, hi } => write!(f, "NXM_NX_CT_MARK[{lo}..{hi}]"),
        }
    }
}

/// The `ct(...)` action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ct {
    pub commit: bool,
    /// Where the packet continues after conntrack (recirculation; may be any table).
    pub table: Option<Table>,
    pub zone: u16,
    pub nat: bool,
    /// Actions applied to the connection when committing (e.g. `move` into ct_mark).
    pub exec: Vec<Action>,
}

/// One action of a flow's action list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    SetEthSrc(Mac),
    SetEthDst(Mac),
    SetTunDst(Ipv4Addr),
    SetTunIpv6Dst(Ipv6Addr),
    SetReg(RegMark),
    SetPktMark {
        value: u32,
        mask: u32,
    },
    SetArpOp(u16),
    SetArpSha(Mac),
    SetArpSpa(Ipv4Addr),
    Move {
        src: MoveField,
        dst: MoveField,
    },
    /// Continue in a later table (OVS rejects a jump backwards).
    GotoTable(Table),
    Ct(Ct),
    Output(u32),
    /// `output:NXM_NX_REG<n>[]`: the port number held in a register.
    OutputReg(u8),
    /// Send the packet back out of the port it came in on.
    InPort,
    DecTtl,
    /// Must be the only action.
    Drop,
}

/// How table references are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Table numbers: what the programmer sends and `dump-flows --no-names` prints.
    Numeric,
    /// Table names: for people (`render`, golden files).
    Names,
}

fn table_ref(table: Table, style: Style) -> String {
    match style {
        Style::Numeric => table.number().to_string(),
        Style::Names => table.name().to_string(),
    }
}

impl Action {
    fn render(&self, style: Style, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match self {
            Action::SetEthSrc(mac) => write!(out, "set_field:{mac}->eth_src"),
            Action::SetEthDst(mac) => write!(out, "set_field:{mac}->eth_dst"),
            Action::SetTunDst(ip) => write!(out, "set_field:{ip}->tun_dst"),
            Action::SetTunIpv6Dst(ip) => write!(out, "set_field:{}->tun_ipv6_dst", OvsIpv6(*ip)),
            Action::SetReg(m) => write!(out, "set_field:{}->reg{}", Masked(m.value, m.mask), m.reg),
            Action::SetPktMark { value, mask } => {
                write!(out, "set_field:{}->pkt_mark", Masked(*value, *mask))
            }
            Action::SetArpOp(op) => write!(out, "set_field:{op}->arp_op"),
            Action::SetArpSha(mac) => write!(out, "set_field:{mac}->arp_sha"),
            Action::SetArpSpa(ip) => write!(out, "set_field:{ip}->arp_spa"),
            Action::Move { src, dst } => write!(out, "move:{src}->{dst}"),
            Action::GotoTable(t) => write!(out, "goto_table:{}", table_ref(*t, style)),
            Action::Ct(ct) => {
                let mut args = Vec::new();
                if ct.commit {
                    args.push("commit".to_string());
                }
                if let Some(t) = ct.table {
                    args.push(format!("table={}", table_ref(t, style)));
                }
                args.push(format!("zone={}", ct.zone));
                if ct.nat {
                    args.push("nat".to_string());
                }
                if !ct.exec.is_empty() {
                    args.push(format!("exec({})", render_actions(&ct.exec, style)));
                }
                write!(out, "ct({})", args.join(","))
            }
            Action::Output(port) => write!(out, "output:{port}"),
            Action::OutputReg(reg) => write!(out, "output:NXM_NX_REG{reg}[]"),
            Action::InPort => write!(out, "IN_PORT"),
            Action::DecTtl => write!(out, "dec_ttl"),
            Action::Drop => write!(out, "drop"),
        };
    }
}

/// An action list in `ovs-ofctl` syntax (`drop` when empty).
pub fn render_actions(actions: &[Action], style: Style) -> String {
    if actions.is_empty() {
        return "drop".to_string();
    }
    let mut out = String::new();
    for (i, action) in actions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        action.render(style, &mut out);
    }
    out
}

/// A flow's identity on the switch: OpenFlow replaces a flow with the same table, priority and
/// match, so the programmer owns flows by this key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub table: u8,
    pub priority: u16,
    /// The canonical match (see [`Match`]'s `Display`).
    pub matches: String,
}

impl fmt::Display for FlowKey {
    /// `table=N,priority=P[,match]`: valid `ovs-ofctl` syntax for a strict delete.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table={},priority={}", self.table, self.priority)?;
        if !self.matches.is_empty() {
            write!(f, ",{}", self.matches)?;
        }
        Ok(())
    }
}

/// One OpenFlow flow (without its round, which the programmer adds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub table: Table,
    pub priority: u16,
    pub matches: Match,
    pub actions: Vec<Action>,
    pub cookie: Cookie,
}

impl Flow {
    pub fn new(
        table: Table,
        priority: u16,
        matches: Match,
        actions: Vec<Action>,
        cookie: Cookie,
    ) -> Self {
        Flow {
            table,
            priority,
            matches,
            actions,
            cookie,
        }
    }

    pub fn key(&self) -> FlowKey {
        FlowKey {
            table: self.table.number(),
            priority: self.priority,
            matches: self.matches.to_string(),
        }
    }

    /// The flow as `ovs-ofctl add-flows` reads it (`Numeric`) or as people read it (`Names`,
    /// laid out like `ovs-ofctl --names dump-flows` without the counters).
    pub fn render(&self, round: u16, style: Style) -> String {
        let cookie = self.cookie.value(round);
        let matches = self.matches.to_string();
        let sep = if matches.is_empty() { "" } else { "," };
        let actions = render_actions(&self.actions, style);
        match style {
            Style::Numeric => format!(
                "cookie={cookie:#x},table={},priority={}{sep}{matches} actions={actions}",
                self.table.number(),
                self.priority
            ),
            Style::Names => format!(
                "cookie={cookie:#x}, table={}, priority={}{sep}{matches} actions={actions}",
                self.table.name(),
                self.priority
            ),
        }
    }
}

/// Flows sorted like `dump-flows` lists them (table, then priority high to low, then match),
/// rendered one per line.
pub fn render_sorted(flows: &[Flow], round: u16, style: Style) -> String {
    let mut sorted: Vec<&Flow> = flows.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.table,
            std::cmp::Reverse(a.priority),
            a.matches.to_string(),
        )
            .cmp(&(
                b.table,
                std::cmp::Reverse(b.priority),
                b.matches.to_string(),
            ))
    });
    let mut out = String::new();
    for flow in sorted {
        out.push_str(&flow.render(round, style));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::regs;

    #[test]
    fn cookie_packs_round_category_and_object() {
        let cookie = Cookie::new(Category::Egress, 7);
        assert!(Category::Egress.holds(cookie.value(3)));
        assert!(!Category::PodConnectivity.holds(cookie.value(3)));
        assert_eq!(cookie.value(1), 0x0001_0400_0000_0007);
        assert_eq!(Cookie::DEFAULT.value(1), 0x1_0000_0000_0000);
        assert_eq!(
            round_cookie(0xabcd),
            (0xabcd_0000_0000_0000, 0xffff_0000_0000_0000)
        );
    }

    #[test]
    fn match_renders_fields_in_ovs_dump_order() {
        let m = Match::new()
            .nw_dst("10.244.2.0/24".parse().unwrap())
            .in_port(3)
            .reg(regs::FROM_POD)
            .reg(regs::TO_GATEWAY)
            .ip()
            .ct_state(CtState::default().set(CtFlag::Trk).clear(CtFlag::Rpl))
            .pkt_mark(0, 0xff)
            .tun_dst(Ipv4Addr::new(172, 30, 0, 50));
        assert_eq!(
            m.to_string(),
            "pkt_mark=0/0xff,ct_state=-rpl+trk,ip,reg0=0x23/0xff,tun_dst=172.30.0.50,in_port=3,nw_dst=10.244.2.0/24"
        );
    }

    #[test]
    fn ipv6_match_renders_fields_in_ovs_dump_order() {
        // The order `ovs-ofctl dump-flows` printed for this match (OVS 3.1).
        let m = Match::new()
            .ipv6_dst("fd00:10:244:1::/64".parse().unwrap())
            .ipv6_src("fd00::1/128".parse().unwrap())
            .eth_src("02:00:00:00:00:01".parse().unwrap())
            .in_port(3)
            .tun_ipv6_dst("fd00:30::100".parse().unwrap())
            .reg(regs::FROM_TUNNEL)
            .ipv6()
            .ct_state(CtState::default().set(CtFlag::Trk))
            .pkt_mark(0, 0xff);
        assert_eq!(
            m.to_string(),
            "pkt_mark=0/0xff,ct_state=+trk,ipv6,reg0=0x1/0xf,tun_ipv6_dst=fd00:30::100,in_port=3,\
             dl_src=02:00:00:00:00:01,ipv6_src=fd00::1,ipv6_dst=fd00:10:244:1::/64"
        );
    }

    #[test]
    fn zero_length_prefixes_are_wildcards_as_ovs_prints_them() {
        let v4 = Match::new().ip().nw_dst("0.0.0.0/0".parse().unwrap());
        let v6 = Match::new()
            .ipv6()
            .ipv6_src("::/0".parse().unwrap())
            .ipv6_dst("::/0".parse().unwrap());
        assert_eq!(v4.to_string(), "ip");
        assert_eq!(v6.to_string(), "ipv6");
    }

    #[test]
    fn tun_ipv6_dst_is_set_and_matched_in_ovs_spelling() {
        let ip: Ipv6Addr = "::a00:1".parse().unwrap();
        assert_eq!(
            render_actions(&[Action::SetTunIpv6Dst(ip)], Style::Numeric),
            "set_field:::10.0.0.1->tun_ipv6_dst"
        );
        assert_eq!(
            Match::new().ipv6().tun_ipv6_dst(ip).to_string(),
            "ipv6,tun_ipv6_dst=::10.0.0.1"
        );
        assert_eq!(
            render_actions(
                &[Action::SetTunIpv6Dst("FD00:30::0102".parse().unwrap())],
                Style::Names
            ),
            "set_field:fd00:30::102->tun_ipv6_dst"
        );
    }

    #[test]
    fn flow_renders_numeric_for_ofctl_and_names_for_people() {
        let flow = Flow::new(
            Table::ConntrackCommit,
            200,
            Match::new()
                .ip()
                .ct_state(CtState::default().set(CtFlag::New).set(CtFlag::Trk)),
            vec![Action::Ct(Ct {
                commit: true,
                table: Some(Table::Output),
                zone: 65520,
                nat: false,
                exec: vec![Action::Move {
                    src: MoveField::Reg {
                        reg: 0,
                        lo: 0,
                        hi: 3,
                    },
                    dst: MoveField::CtMark { lo: 0, hi: 3 },
                }],
            })],
            Cookie::new(Category::PodConnectivity, 0),
        );
        assert_eq!(
            flow.render(2, Style::Numeric),
            "cookie=0x2010000000000,table=11,priority=200,ct_state=+new+trk,ip \
             actions=ct(commit,table=12,zone=65520,exec(move:NXM_NX_REG0[0..3]->NXM_NX_CT_MARK[0..3]))"
        );
        assert_eq!(
            flow.render(2, Style::Names),
            "cookie=0x2010000000000, table=ConntrackCommit, priority=200,ct_state=+new+trk,ip \
             actions=ct(commit,table=Output,zone=65520,exec(move:NXM_NX_REG0[0..3]->NXM_NX_CT_MARK[0..3]))"
        );
        assert_eq!(
            flow.key().to_string(),
            "table=11,priority=200,ct_state=+new+trk,ip"
        );
    }

    #[test]
    fn set_field_prints_zero_and_full_masks_like_ovs() {
        let actions = [
            Action::SetReg(regs::NOT_REWRITE_MAC),
            Action::SetReg(regs::target_ofport(5)),
            Action::SetPktMark {
                value: 0x1,
                mask: 0xff,
            },
            Action::OutputReg(1),
        ];
        assert_eq!(
            render_actions(&actions, Style::Numeric),
            "set_field:0/0x200->reg0,set_field:0x5->reg1,set_field:0x1/0xff->pkt_mark,output:NXM_NX_REG1[]"
        );
        assert_eq!(render_actions(&[], Style::Numeric), "drop");
    }

    #[test]
    fn match_all_flow_has_no_trailing_comma() {
        let flow = Flow::new(
            Table::Output,
            0,
            Match::new(),
            vec![Action::Drop],
            Cookie::DEFAULT,
        );
        assert_eq!(
            flow.render(1, Style::Numeric),
            "cookie=0x1000000000000,table=12,priority=0 actions=drop"
        );
        assert_eq!(flow.key().to_string(), "table=12,priority=0");
    }
}
