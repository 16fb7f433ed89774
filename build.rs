//! Build script: hands the git commit being built to the code as `OVS_EGRESS_GIT_COMMIT`
//! (`ovs_egress_build_info`'s `git_commit` label). A value set in the build's environment wins;
//! outside a git checkout nothing is set and the label says "unknown". It reruns only when the
//! checked-out commit changes (HEAD, the current branch's ref, packed refs).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=OVS_EGRESS_GIT_COMMIT");
    if std::env::var_os("OVS_EGRESS_GIT_COMMIT").is_some() {
        return;
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=OVS_EGRESS_GIT_COMMIT={commit}");
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let paths = [
        git(&["rev-parse", "--git-path", "HEAD"]),
        branch.and_then(|b| git(&["rev-parse", "--git-path", &b])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ];
    // Only existing files: a missing one would make cargo rerun this script on every build.
    for path in paths.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
