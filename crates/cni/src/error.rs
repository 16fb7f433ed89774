//! The CNI error: a code from the spec (or one of ours, ≥ 100) and a message that names the
//! object and the field or command concerned. It is what the plugin prints on stdout when a
//! command fails; it must never carry a half-built result.

use serde::Serialize;

/// Error codes of CNI spec 1.0.0 (§ "Error") and our own (≥ 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the network config's `cniVersion` is not one we support.
    IncompatibleVersion,
    /// 2: a field in the network config has a value we do not support.
    UnsupportedField,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnv,
    /// 6: stdin is not a JSON object.
    DecodingFailure,
    /// 7: the network config is valid JSON but not a valid config.
    InvalidNetworkConfig,
    /// 11: a dependency (OVS) is not available right now.
    TryAgainLater,
    /// 100: an operation on the host (netlink, iptables, OVS, state dir) failed.
    HostOperation,
    /// 101: every address of the Node's podCIDR is reserved.
    PodCidrExhausted,
    /// 102: CHECK found the container's network not as ADD left it.
    CheckMismatch,
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::DecodingFailure => 6,
            Code::InvalidNetworkConfig => 7,
            Code::TryAgainLater => 11,
            Code::HostOperation => 100,
            Code::PodCidrExhausted => 101,
            Code::CheckMismatch => 102,
        }
    }
}

/// A failed CNI command.
#[derive(Debug, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code.number(), details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// An error with the underlying cause in `details`.
    pub fn with_cause(code: Code, msg: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: Some(cause.to_string()),
        }
    }

    /// A host operation (named by `what`) that failed with `cause`.
    pub fn host(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::with_cause(Code::HostOperation, what, cause)
    }

    /// The JSON object of the spec's error format.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        let out = Out {
            cni_version,
            code: self.code.number(),
            msg: &self.msg,
            details: self.details.as_deref(),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields_and_omits_empty_details() {
        let err = CniError::new(Code::InvalidEnv, "CNI_IFNAME is missing");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_IFNAME is missing");
        assert!(v.get("details").is_none());
        let err = CniError::host("adding port p to br-int", "boom");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 100);
        assert_eq!(v["details"], "boom");
    }
}
