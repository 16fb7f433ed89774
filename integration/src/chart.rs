//! The Helm chart `charts/ovs-egress` under test: rendering it with the pinned `helm`
//! ([`crate::bins::helm`]), its golden files, and reading the objects it renders. Helm runs
//! with its configuration, cache and data in a directory of the caller ([`HelmHome`]), never
//! in the user's, and talks to no cluster unless given a kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The release name the tests install and render as.
pub const RELEASE: &str = "ovs-egress";
/// The namespace the chart is installed into (as Antrea's).
pub const NAMESPACE: &str = "kube-system";

/// The value files under `charts/ovs-egress/tests/` the golden files are rendered with:
/// (case, values file; `None` for the chart's defaults). The golden file of a case is
/// `tests/<case>.golden.yaml`.
pub const CASES: &[(&str, Option<&str>)] = &[
    ("default", None),
    ("custom", Some("custom.values.yaml")),
    ("cert-manager", Some("cert-manager.values.yaml")),
    ("egress-off", Some("egress-off.values.yaml")),
];

/// Keys whose values the chart generates at random on a fresh install (the membership key, the
/// webhook's CA, certificate and key): masked in golden files.
const GENERATED_KEYS: &[&str] = &["keys", "ca.crt", "tls.crt", "tls.key", "caBundle"];

/// `charts/ovs-egress` of this checkout.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ovs-egress")
}

/// A private directory for Helm's configuration, cache and data, removed on drop.
pub struct HelmHome(PathBuf);

impl HelmHome {
    pub fn new(tag: &str) -> Result<HelmHome> {
        let dir =
            std::env::temp_dir().join(format!("{}-chart-{tag}", crate::netns::unique_token()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(HelmHome(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `helm ARGS` with this home; fails only when helm cannot be run.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let helm = crate::bins::helm()?;
        Command::new(&helm)
            .args(args)
            .env("HELM_CONFIG_HOME", self.0.join("config"))
            .env("HELM_CACHE_HOME", self.0.join("cache"))
            .env("HELM_DATA_HOME", self.0.join("data"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} {}", helm.display(), args.join(" ")))
    }

    /// `helm ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "helm {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `helm template` of the chart as release [`RELEASE`] in [`NAMESPACE`] with the values
    /// file `values` (relative to `charts/ovs-egress/tests/`) and `--set` arguments.
    pub fn template(&self, values: Option<&str>, set: &[&str]) -> Result<String> {
        self.template_as(RELEASE, values, set)
    }

    /// [`Self::template`] as release `release`.
    pub fn template_as(&self, release: &str, values: Option<&str>, set: &[&str]) -> Result<String> {
        let mut args = template_args(values, set);
        args[1] = release.to_string();
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `helm template` that must fail; its error output.
    pub fn template_error(&self, values: Option<&str>, set: &[&str]) -> Result<String> {
        let args = template_args(values, set);
        let out = self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        if out.status.success() {
            bail!("helm template with {values:?} {set:?} succeeded; it should have failed");
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for HelmHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn template_args(values: Option<&str>, set: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["template", RELEASE, &chart_dir().display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--namespace".to_string(), NAMESPACE.to_string()]);
    if let Some(file) = values {
        args.push("--values".to_string());
        args.push(chart_dir().join("tests").join(file).display().to_string());
    }
    for s in set {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

/// `rendered` with every randomly generated value ([`GENERATED_KEYS`]) replaced by
/// `<generated>`, so two renderings compare equal.
pub fn mask_generated(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        let indent = line.len() - line.trim_start().len();
        match line.trim_start().split_once(": ") {
            Some((key, _)) if GENERATED_KEYS.contains(&key) => {
                out.push_str(&line[..indent]);
                out.push_str(key);
                out.push_str(": <generated>");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The objects of a multi-document YAML text (empty documents left out).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (index, doc) in yaml.split("\n---").enumerate() {
        let value: Value = serde_yaml::from_str(doc)
            .with_context(|| format!("rendered document {index}:\n{doc}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The object of `kind` named `name` among `docs`.
pub fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} rendered"))
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` (the kubectl built with the test bed's API server)
/// with `input` on stdin; its stdout, or an error with its output.
pub fn kubectl(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(crate::bins::go_tool("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docs` as one `v1/List` (for `kubectl apply -f -`).
pub fn list(docs: &[Value]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}
