//! The OpenFlow pipeline of `br-int` as code: the table catalog, typed matches and actions,
//! cookies, rendering to `ovs-ofctl` syntax, and the Pod networking flows. Pure: nothing here
//! talks to OVS (that is `ovs::ofctl`), so every flow can be computed and checked without a
//! switch. Egress flows (a later module) are built from the same types and appended to
//! [`pod_network_flows`]' output before programming.

pub mod egress;
pub mod flow;
pub mod net;
pub mod pod;
pub mod regs;
pub mod table;

pub use flow::{
    Action, Category, Cookie, Ct, CtFlag, CtState, Flow, FlowKey, Match, MoveField, Style,
    render_sorted, round_cookie,
};
pub use net::{
    GLOBAL_VIRTUAL_MAC, IpNetwork, Ipv4Network, Ipv6Network, Mac, OvsIpv6, OvsPrefix, first_host,
    ipv4_only, ipv6_only,
};
pub use pod::{Gateway, LocalPod, PodNetwork, RemoteNode, pod_network_flows};
pub use table::{Miss, Table, catalog_markdown, miss_flows, table_names};

/// The repository's root (goldens, examples and the chart live there), for tests.
#[cfg(test)]
pub(crate) fn repository_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Compares `actual` with the file `path` (relative to the repository's root); with
/// `UPDATE_GOLDEN=1` rewrites the file instead.
#[cfg(test)]
pub(crate) fn check_golden(path: &str, actual: &str) {
    let full = repository_path(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&full, actual).unwrap_or_else(|e| panic!("writing {}: {e}", full.display()));
        return;
    }
    let expected = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        expected == actual,
        "{path} is out of date with the code; if the change is intended, regenerate it with \
         `UPDATE_GOLDEN=1 cargo test -p ovs-egress-core --lib pipeline::` and review the diff.\n\
         --- expected ({path})\n{expected}\n--- actual\n{actual}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_md_matches_the_catalog() {
        check_golden("ovs-flows/pipeline.md", &catalog_markdown());
    }
}
