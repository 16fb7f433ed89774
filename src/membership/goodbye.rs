//! The goodbye an agent sends every other Node when it leaves on purpose (SIGTERM): "Node
//! `node`, boot `boot`, is leaving". Its receivers take that Node out of placement at once,
//! without waiting for its lease, because a leaving agent keeps its egress IPs until their next
//! holders have announced them (the agent's hand-over). foca's own leave only says "down",
//! which cannot be told apart from a failure, whose IPs must wait for the lease.
//!
//! It travels sealed like every membership datagram (so it is authenticated, fresh and
//! replay-checked), and its receiver checks, as for foca's messages, that the named Node's
//! InternalIP is the datagram's source. The plaintext starts with a marker that no foca
//! message can start with (an invalid postcard length prefix), so a receiver that does not know
//! goodbyes drops it as undecodable. Pure: encoding and decoding only.

/// The first bytes of a goodbye's plaintext (`0xff 0xfe` cannot start a foca header).
const MARKER: [u8; 8] = [0xff, 0xfe, b'o', b'e', b'b', b'y', b'e', 1];
/// The longest Node name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Who is leaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goodbye {
    pub node: String,
    /// The leaving agent's boot id (its foca identity's).
    pub boot: u64,
}

impl Goodbye {
    /// The plaintext: marker, boot (big-endian), Node name (UTF-8).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARKER.len() + 8 + self.node.len());
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(self.node.as_bytes());
        out
    }

    /// `None` when `plain` is not a goodbye (then it may be a foca message); `Some(Err)` when
    /// it starts like one but is not well-formed.
    pub fn decode(plain: &[u8]) -> Option<Result<Goodbye, &'static str>> {
        let rest = plain.strip_prefix(&MARKER)?;
        let Some((boot, name)) = rest.split_first_chunk::<8>() else {
            return Some(Err("goodbye too short"));
        };
        let Ok(node) = std::str::from_utf8(name) else {
            return Some(Err("goodbye Node name is not UTF-8"));
        };
        if node.is_empty() || node.len() > MAX_NAME {
            return Some(Err("goodbye Node name empty or too long"));
        }
        Some(Ok(Goodbye {
            node: node.to_string(),
            boot: u64::from_be_bytes(*boot),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Codec, PostcardCodec};

    #[test]
    fn a_goodbye_round_trips_and_anything_else_is_not_one() {
        let bye = Goodbye {
            node: "node-1".into(),
            boot: 0x0102_0304_0506_0708,
        };
        let plain = bye.encode();
        assert_eq!(Goodbye::decode(&plain), Some(Ok(bye)));
        assert_eq!(Goodbye::decode(b"a foca message"), None);
        assert_eq!(Goodbye::decode(&[]), None);
        assert!(matches!(Goodbye::decode(&plain[..12]), Some(Err(_))));
        assert!(matches!(Goodbye::decode(&plain[..16]), Some(Err(_))));
        let mut bad = plain.clone();
        bad.push(0xff);
        assert!(matches!(Goodbye::decode(&bad), Some(Err(_))));
    }

    #[test]
    fn foca_cannot_read_a_goodbye_as_one_of_its_messages() {
        let plain = Goodbye {
            node: "node-1".into(),
            boot: 7,
        }
        .encode();
        let header: Result<foca::Header<super::super::Member>, _> =
            Codec::<super::super::Member>::decode_header(&mut PostcardCodec, &plain[..]);
        assert!(header.is_err());
    }
}
