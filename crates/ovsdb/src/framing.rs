//! Splits the OVSDB byte stream into JSON-RPC messages. A read may end inside a message or hold
//! several (a reply and `update` notifications interleaved); partial bytes are kept for the next
//! read. A small scanner tracks nesting depth, strings and escapes so each byte is looked at
//! once (re-parsing a growing buffer from the start would be quadratic for large monitor
//! snapshots); every complete message is then parsed with serde_json.

use serde_json::Value as Json;

/// Incremental decoder; feed it reads, take complete messages out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned (all belong to the current, incomplete message).
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends `bytes` and returns every message completed by them, in order. An error (the
    /// peer sent something that is not a JSON object stream) leaves the decoder unusable.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Json>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0; // first byte of the message being scanned
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            i += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let frame = &self.buf[start..i];
                        let msg = serde_json::from_slice(frame)
                            .map_err(|e| format!("invalid JSON message: {e}"))?;
                        out.push(msg);
                        start = i;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => start = i,
                _ if self.depth == 0 => {
                    return Err(format!("unexpected byte {:?} between messages", b as char));
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream() -> (Vec<u8>, Vec<Json>) {
        let msgs = vec![
            json!({"id": 1, "result": [{"rows": [{"name": "a}\"]{["}]}], "error": null}),
            json!({"id": null, "method": "update", "params": ["m", {"Interface": {}}]}),
            json!({"id": "echo", "method": "echo", "params": ["\\", "ünï{"]}),
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend_from_slice(m.to_string().as_bytes());
            bytes.extend_from_slice(b"\n ");
        }
        (bytes, msgs)
    }

    #[test]
    fn interleaved_messages_in_one_read_are_all_delivered_in_order() {
        let (bytes, msgs) = stream();
        assert_eq!(FrameDecoder::new().push(&bytes).unwrap(), msgs);
    }

    #[test]
    fn messages_split_at_every_byte_boundary_are_reassembled() {
        let (bytes, msgs) = stream();
        for cut in 0..=bytes.len() {
            let mut d = FrameDecoder::new();
            let mut got = d.push(&bytes[..cut]).unwrap();
            got.extend(d.push(&bytes[cut..]).unwrap());
            assert_eq!(got, msgs, "cut at {cut}");
        }
        let mut d = FrameDecoder::new();
        let got: Vec<Json> = bytes
            .iter()
            .flat_map(|b| d.push(std::slice::from_ref(b)).unwrap())
            .collect();
        assert_eq!(got, msgs);
    }

    #[test]
    fn garbage_between_messages_is_a_protocol_error() {
        let err = FrameDecoder::new().push(b"{\"id\":1} x").unwrap_err();
        assert!(err.contains("unexpected byte 'x'"), "{err}");
        assert!(FrameDecoder::new().push(b"{\"id\":}").is_err());
    }
}
