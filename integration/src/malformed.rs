//! Writes an object that no version of the API allows into a real API server, the way one
//! stored under an older, laxer CRD would look: the webhook (if registered) and the v1alpha2
//! schema of the field are relaxed for the write, then restored. The watch streams of the
//! controller and the agents then carry an object their typed readers cannot parse, which they
//! must log by name and skip.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

const EGRESS_CRD: &str = "egresses.crd.antrea.io";

/// The schema of `spec.appliedTo` in the v1alpha2 version of the Egress CRD `crd`.
fn v1alpha2_applied_to(crd: &mut Value) -> anyhow::Result<&mut Value> {
    let versions = crd["spec"]["versions"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("{EGRESS_CRD} has no versions"))?;
    let v1alpha2 = versions
        .iter_mut()
        .find(|v| v["name"] == "v1alpha2")
        .ok_or_else(|| anyhow::anyhow!("{EGRESS_CRD} has no v1alpha2"))?;
    Ok(&mut v1alpha2["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["appliedTo"])
}

/// Replaces the v1alpha2 `spec.appliedTo` schema of the Egress CRD; returns the previous one.
async fn set_v1alpha2_applied_to(client: &kube::Client, schema: Value) -> anyhow::Result<Value> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(crds.get(EGRESS_CRD).await?)?;
    let previous = std::mem::replace(v1alpha2_applied_to(&mut crd)?, schema);
    crds.replace(
        EGRESS_CRD,
        &PostParams::default(),
        &serde_json::from_value(crd)?,
    )
    .await?;
    Ok(previous)
}

/// Stores an Egress `name` whose `spec.appliedTo` is a string. `webhook` names the validating
/// webhook configuration to lift for the write, if one is registered.
pub async fn store_malformed_egress(
    client: &kube::Client,
    name: &str,
    webhook: Option<&str>,
) -> anyhow::Result<()> {
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let lifted = match webhook {
        Some(hook_name) => {
            let hook = hooks.get(hook_name).await?;
            hooks.delete(hook_name, &DeleteParams::default()).await?;
            Some(hook)
        }
        None => None,
    };
    let loose = json!({"x-kubernetes-preserve-unknown-fields": true});
    let schema = set_v1alpha2_applied_to(client, loose).await?;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "crd.antrea.io",
        "v1alpha2",
        "Egress",
    ));
    let egresses: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "crd.antrea.io/v1alpha2", "kind": "Egress",
        "metadata": {"name": name},
        "spec": {"appliedTo": "every-pod", "egressIP": "10.10.0.99"},
    }))?;
    // The server applies a changed CRD schema (and a deleted webhook) a moment after it
    // answered the write: until then the create is refused, so it is tried again for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let created = loop {
        match egresses.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => break result,
        }
    };

    set_v1alpha2_applied_to(client, schema).await?;
    if let Some(mut hook) = lifted {
        hook.metadata.resource_version = None;
        hook.metadata.uid = None;
        hooks.create(&PostParams::default(), &hook).await?;
    }
    created?;
    Ok(())
}
