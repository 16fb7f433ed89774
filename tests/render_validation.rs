//! `ovs-egress render` applies the validating webhook's rules to every object of the file:
//! broken objects make it exit non-zero with errors naming the object and the field, unless
//! `--allow-invalid`, which prints them as warnings and renders anyway; oversized input is
//! refused before parsing.

use std::path::PathBuf;
use std::process::Command;

struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("oe-render-{tag}-{}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn render(file: &TempFile, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ovs-egress"))
        .args(["render", "--node", "n1", "-f"])
        .arg(&file.0)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n\
    spec: {podCIDR: 10.244.1.0/24}\n\
    status: {addresses: [{type: InternalIP, address: 10.10.0.1}]}\n";

fn cluster(pools: &str, egresses: &str) -> String {
    format!("{NODE}---\n{pools}---\n{egresses}")
}

#[test]
fn render_refuses_objects_the_webhook_would_refuse_naming_object_and_field() {
    // Before: start > end rendered as an "exhausted" pool, overlaps were accepted.
    let pools = "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\n\
        metadata: {name: backwards}\n\
        spec: {nodeSelector: {}, ipRanges: [{start: 10.1.0.9, end: 10.1.0.1}]}\n---\n\
        apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {name: a}\n\
        spec: {nodeSelector: {}, ipRanges: [{cidr: 10.2.0.0/24}]}\n---\n\
        apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {name: b}\n\
        spec: {nodeSelector: {}, ipRanges: [{cidr: 10.3.0.0/24}, {start: 10.2.0.10, end: 10.2.0.20}]}\n";
    let egresses = "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {name: e}\n\
        spec: {appliedTo: {}, externalIPPool: a, egressIP: 10.9.9.9, \
        bandwidth: {rate: fast, burst: 1M}}\n";
    let file = TempFile::new("invalid", cluster(pools, egresses).as_bytes());

    let (ok, stdout, stderr) = render(&file, &[]);
    assert!(!ok, "render succeeded:\n{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    for expected in [
        "error: ",
        "ExternalIPPool backwards: spec.ipRanges[0]: range start 10.1.0.9 should not be greater than range end 10.1.0.1",
        "ExternalIPPool a: spec.ipRanges[0]: range [10.2.0.0/24] overlaps with range [10.2.0.10-10.2.0.20] of ExternalIPPool b",
        "ExternalIPPool b: spec.ipRanges[1]: range [10.2.0.10-10.2.0.20] overlaps with range [10.2.0.0/24] of ExternalIPPool a",
        "Egress e: spec.bandwidth.rate: Rate fast in Egress e is invalid",
        "Egress e: spec.egressIP: IP 10.9.9.9 is not within the IP range",
        "--allow-invalid",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    let (ok, stdout, stderr) = render(&file, &["--allow-invalid"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("ExternalIPPool backwards: spec.ipRanges[0]"),
        "{stderr}"
    );
    assert!(!stderr.contains("error: "), "{stderr}");
    assert!(stdout.contains("n1"), "{stdout}");
}

#[test]
fn render_accepts_a_valid_file_without_warnings() {
    let pools = "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {name: a}\n\
        spec: {nodeSelector: {}, ipRanges: [{cidr: 10.2.0.0/24}]}\n";
    let egresses = "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {name: e}\n\
        spec: {appliedTo: {}, externalIPPool: a}\n";
    let file = TempFile::new("valid", cluster(pools, egresses).as_bytes());
    let (ok, stdout, stderr) = render(&file, &[]);
    assert!(ok, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("10.2.0.1"), "{stdout}");
}

#[test]
fn render_refuses_input_above_the_size_cap_before_parsing() {
    let limit = ovs_egress_core::render::validate::MAX_INPUT_BYTES as usize;
    let mut text = cluster("", "").into_bytes();
    text.resize(limit + 1, b'#');
    let file = TempFile::new("big", &text);
    let (ok, _, stderr) = render(&file, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("the input is larger than 8 MiB, the most render reads"),
        "{stderr}"
    );
}
