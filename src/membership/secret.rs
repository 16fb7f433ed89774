//! Reads the membership keys from their Kubernetes Secret (data key [`SECRET_DATA_KEY`]) and
//! re-reads it every [`POLL_INTERVAL`], so a rotation reaches every agent within that time.
//! It never logs a key; a Secret that is missing or malformed gives an error naming it, which
//! the membership turns into "this Node claims no egress IP".

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::sync::watch;

use super::KeyInput;
use super::seal::{KeyError, Keys, SECRET_DATA_KEY};

/// How often the Secret is read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The keys of `secret`, or why they cannot be used (naming the Secret).
pub fn keys_of(namespace: &str, name: &str, secret: Option<&Secret>) -> KeyInput {
    let Some(secret) = secret else {
        return Err(format!("Secret {namespace}/{name} does not exist"));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(SECRET_DATA_KEY))
        .map(|bytes| bytes.0.clone())
        .ok_or(KeyError::Missing)
        .map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
    Keys::parse(&value).map_err(|e| format!("Secret {namespace}/{name}: {e}"))
}

/// Polls the Secret `namespace/name`; the channel holds the latest result. An API error keeps
/// the keys last read (the API server being away must not take the membership down).
pub fn watch_keys(client: kube::Client, namespace: &str, name: &str) -> watch::Receiver<KeyInput> {
    let (tx, rx) = watch::channel(Err(format!(
        "Secret {namespace}/{name} has not been read yet"
    )));
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    tokio::spawn(async move {
        let mut read_once = false;
        loop {
            match api.get_opt(&name).await {
                Ok(secret) => {
                    let input = keys_of(&namespace, &name, secret.as_ref());
                    read_once = true;
                    tx.send_if_modified(|old| {
                        let changed = *old != input;
                        *old = input;
                        changed
                    });
                }
                Err(error) if !read_once => {
                    let input = Err(format!("reading Secret {namespace}/{name}: {error}"));
                    tx.send_if_modified(|old| {
                        let changed = *old != input;
                        *old = input;
                        changed
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, secret = %name, "membership key Secret not re-read");
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(data: Option<&[u8]>) -> Secret {
        Secret {
            data: data
                .map(|d| BTreeMap::from([(SECRET_DATA_KEY.to_string(), ByteString(d.to_vec()))])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_missing_or_malformed_secret_names_itself() {
        let error = keys_of("kube-system", "k", None).unwrap_err();
        assert_eq!(error, "Secret kube-system/k does not exist");
        let error = keys_of("ns", "k", Some(&secret(None))).unwrap_err();
        assert_eq!(error, "Secret ns/k: data key `keys` is missing");
        let error = keys_of("ns", "k", Some(&secret(Some(b"AAAA\n")))).unwrap_err();
        assert_eq!(
            error,
            "Secret ns/k: data key `keys`, line 1: 3 bytes, a key has 32"
        );
        let good = format!("{}\n", "A".repeat(43) + "=");
        assert_eq!(
            keys_of("ns", "k", Some(&secret(Some(good.as_bytes()))))
                .unwrap()
                .len(),
            1
        );
    }
}
