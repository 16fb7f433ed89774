//! Decodes the protobuf bodies kubectl's typed clients send for built-ins (`kubectl create
//! namespace|configmap|secret`): the `k8s\0` runtime.Unknown envelope, then Namespace, ConfigMap
//! or Secret with the common ObjectMeta fields. Anything else is refused with a message naming
//! the kind; answers are always JSON. Never used for custom resources (kubectl sends them as JSON).

use base64::Engine;
use serde_json::{Map, Value, json};

enum Field<'a> {
    /// A varint; no field we decode is numeric, so its value is skipped.
    Varint,
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let f = match key & 7 {
            0 => {
                varint(b, &mut i)?;
                Field::Varint
            }
            2 => {
                let len = varint(b, &mut i)? as usize;
                let s = b
                    .get(i..i + len)
                    .ok_or("truncated length-delimited field")?;
                i += len;
                Field::Bytes(s)
            }
            1 => {
                i += 8;
                continue;
            }
            5 => {
                i += 4;
                continue;
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        out.push((key >> 3, f));
    }
    Ok(out)
}

fn string(f: &Field) -> Result<String, String> {
    match f {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|e| e.to_string()),
        Field::Varint => Err("expected a string".into()),
    }
}

/// A `map<string, string|bytes>` entry (key = 1, value = 2).
fn map_entry(f: &Field, bytes_value: bool) -> Result<(String, Value), String> {
    let Field::Bytes(b) = f else {
        return Err("expected a map entry".into());
    };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, &f) {
            (1, _) => k = string(&f)?,
            (2, Field::Bytes(raw)) if bytes_value => {
                v = Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
            }
            (2, _) => v = Value::String(string(&f)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let (mut m, mut labels, mut annotations, mut finalizers) =
        (Map::new(), Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(b)? {
        match n {
            1 => _ = m.insert("name".into(), Value::String(string(&f)?)),
            2 => _ = m.insert("generateName".into(), Value::String(string(&f)?)),
            3 => _ = m.insert("namespace".into(), Value::String(string(&f)?)),
            11 => {
                let (k, v) = map_entry(&f, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(&f, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(Value::String(string(&f)?)),
            _ => {}
        }
    }
    for (k, v) in [("labels", labels), ("annotations", annotations)] {
        if !v.is_empty() {
            m.insert(k.into(), Value::Object(v));
        }
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let env = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf magic prefix")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(env)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match n {
                        1 => api_version = string(&f)?,
                        2 => kind = string(&f)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let bytes_data = kind == "Secret";
    if !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret") {
        return Err(format!(
            "protobuf bodies of kind {kind:?} are not supported by kube-emu; send JSON (kubectl apply -f / create -f)"
        ));
    }
    let (mut data, mut binary, mut string_data) = (Map::new(), Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n) {
            (_, 1) => {
                obj["metadata"] = object_meta(match f {
                    Field::Bytes(b) => b,
                    Field::Varint => return Err("metadata must be a message".into()),
                })?
            }
            ("ConfigMap" | "Secret", 2) => {
                let (k, v) = map_entry(&f, bytes_data)?;
                data.insert(k, v);
            }
            ("ConfigMap", 3) => {
                let (k, v) = map_entry(&f, true)?;
                binary.insert(k, v);
            }
            ("Secret", 3) => obj["type"] = Value::String(string(&f)?),
            ("Secret", 4) => {
                let (k, v) = map_entry(&f, false)?;
                string_data.insert(k, v);
            }
            _ => {}
        }
    }
    for (k, v) in [
        ("data", data),
        ("binaryData", binary),
        ("stringData", string_data),
    ] {
        if !v.is_empty() {
            obj[k] = Value::Object(v);
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_with_labels_from_the_k8s_envelope() {
        let label = [field(1, b"team"), field(2, b"net")].concat();
        let meta = [field(1, b"prod"), field(11, &label)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [
            b"k8s\0".to_vec(),
            field(1, &type_meta),
            field(2, &field(1, &meta)),
        ]
        .concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"team": "net"}}})
        );
    }

    #[test]
    fn refuses_unsupported_kinds_by_name() {
        let type_meta = [field(1, b"v1"), field(2, b"Pod")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta)].concat();
        assert!(decode(&body).unwrap_err().contains("\"Pod\""));
    }
}
