//! Locating this build's binaries (`ovs-egress`, `ovs-egress-cni`) for the test bed and the
//! demo.
//! Under `cargo test` (cargo sets `CARGO`) they are built once per process in the test's
//! profile, since cargo does not build another package's binaries for an integration test;
//! run directly (the demo) they are expected next to the running executable.
//!
//! The Go tools (`ovs-egress-apiserver`, `kubectl` of the same Kubernetes release) come from
//! `$OVS_EGRESS_GO_BIN` when set, else from `scripts/build-go-tools.sh --print-dir`, which
//! builds them only when its machine-wide cache lacks this module's version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The directory holding this profile's binaries: `target/<profile>` (tests run from its
/// `deps/` subdirectory).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("executable without a directory")?;
    Ok(match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    })
}

/// Builds `ovs-egress` and `ovs-egress-cni` in the running profile, once per process.
fn build_once(profile_dir: &Path) -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "-q",
                "--bins",
                "-p",
                "ovs-egress",
                "-p",
                "ovs-egress-cni",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // The CARGO_* variables cargo sets for a test process would change the nested build's
        // fingerprints and force a rebuild of every dependency.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CARGO_")) {
            build.env_remove(key);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        match build.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build of ovs-egress and ovs-egress-cni: {s}")),
            Err(e) => Err(format!("running cargo build: {e}")),
        }
    });
    built.clone().map_err(anyhow::Error::msg)
}

/// The path of binary `name` of this build (`ovs-egress`, `ovs-egress-cni`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = profile_dir()?;
    if std::env::var_os("CARGO").is_some() {
        build_once(&dir)?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --bins -p ovs-egress)",
            path.display()
        );
    }
    Ok(path)
}

/// `$<variable>` when set, else the one line `scripts/<script> <flag>` prints (the script
/// builds what its machine-wide cache lacks and names on stderr what is missing).
fn from_env_or_script(variable: &str, script: &str, flag: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let output = Command::new(&script)
        .arg(flag)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); it names what is missing above",
            script.display(),
            output.status
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    ))
}

/// The directory of the Go tools, once per process.
fn go_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        from_env_or_script("OVS_EGRESS_GO_BIN", "build-go-tools.sh", "--print-dir")
    });
    dir.clone().map_err(anyhow::Error::msg)
}

/// The path of Go tool `name` (`ovs-egress-apiserver` or `kubectl`).
pub fn go_tool(name: &str) -> Result<PathBuf> {
    let path = go_bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/build-go-tools.sh (or unset OVS_EGRESS_GO_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// The `helm` binary, once per process: `$OVS_EGRESS_HELM` when set, else the one
/// `scripts/build-helm.sh --print-path` builds (only when its machine-wide cache lacks the
/// release `integration/helm` pins).
pub fn helm() -> Result<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let helm =
        HELM.get_or_init(|| from_env_or_script("OVS_EGRESS_HELM", "build-helm.sh", "--print-path"));
    let path = helm.clone().map_err(anyhow::Error::msg)?;
    if !path.exists() {
        bail!(
            "helm ({}) is missing: run scripts/build-helm.sh (or unset OVS_EGRESS_HELM)",
            path.display()
        );
    }
    Ok(path)
}
