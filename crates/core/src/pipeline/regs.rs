//! Register marks: the bits flows use to tell later tables about a packet, with Antrea's
//! layout (Antrea's `pkg/agent/openflow/fields.go`) so that dumps read the same. Only these constants may assign meaning to
//! register bits; a flow that needs a new bit adds it here, never as a literal.

/// `value` under `mask` in register `reg` (NXM_NX_REGn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegMark {
    pub reg: u8,
    pub value: u32,
    pub mask: u32,
}

const fn reg0(value: u32, mask: u32) -> RegMark {
    RegMark {
        reg: 0,
        value,
        mask,
    }
}

/// reg0[0..3] PktSource: from the tunnel.
pub const FROM_TUNNEL: RegMark = reg0(0x1, 0xf);
/// reg0[0..3] PktSource: from the gateway.
pub const FROM_GATEWAY: RegMark = reg0(0x2, 0xf);
/// reg0[0..3] PktSource: from a local Pod.
pub const FROM_POD: RegMark = reg0(0x3, 0xf);
/// reg0[4..7] PktDestination: to the tunnel.
pub const TO_TUNNEL: RegMark = reg0(0x10, 0xf0);
/// reg0[4..7] PktDestination: to the gateway.
pub const TO_GATEWAY: RegMark = reg0(0x20, 0xf0);
/// `reg0[9]` RewriteMAC set: the packet arrived with the virtual MAC and needs real MACs.
pub const REWRITE_MAC: RegMark = reg0(0x200, 0x200);
/// `reg0[9]` RewriteMAC clear.
pub const NOT_REWRITE_MAC: RegMark = reg0(0, 0x200);
/// reg0[21..22] = 1 OutputToOFPort: reg1 holds the output port.
pub const OUTPUT_TO_OFPORT: RegMark = reg0(0x200000, 0x600000);

/// reg1 (whole register): the target output port.
pub const fn target_ofport(ofport: u32) -> RegMark {
    RegMark {
        reg: 1,
        value: ofport,
        mask: u32::MAX,
    }
}

/// The register that holds the target port (`output:NXM_NX_REG1[]`).
pub const TARGET_OFPORT_REG: u8 = 1;

/// Conntrack zone of all Pod traffic (Antrea's CtZone).
pub const CT_ZONE: u16 = 65520;
