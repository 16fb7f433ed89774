//! Unit tests of the cluster-file parser and of `render`'s controller steps.

use std::net::IpAddr;

use super::parse::parse_rfc3339;
use super::*;
use crate::model::{FailurePolicy, PodPhase};
use crate::pipeline::egress::MarkCarrier;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn error_of(text: &str) -> ParseError {
    parse_cluster(text).expect_err("the input is invalid")
}

const NODE: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {zone: a}, annotations: {note: x}}
spec: {podCIDR: 10.244.1.0/24}
status:
  addresses:
  - {type: Hostname, address: node-1}
  - {type: InternalIP, address: 10.0.0.1}
  - {type: InternalIP, address: 10.0.0.99}
";

#[test]
fn node_transport_ip_is_the_first_internal_ip_and_pod_cidr_comes_from_spec() {
    let view = parse_cluster(NODE).unwrap().view;
    let node = &view.nodes[0];
    assert_eq!(node.transport_ip, Some(ip("10.0.0.1")));
    assert_eq!(node.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
    assert_eq!(node.labels["zone"], "a");
    assert_eq!(node.annotations["note"], "x");
}

#[test]
fn a_pod_cidr_of_prefix_zero_or_special_addresses_is_an_error_naming_the_field() {
    for cidr in ["::/0", "0.0.0.0/0", "127.0.0.0/8"] {
        let error = error_of(&NODE.replace("10.244.1.0/24", &format!("\"{cidr}\"")));
        assert_eq!(error.field, "spec.podCIDR", "{error}");
        assert!(error.object.contains("Node node-1"), "{error}");
    }
}

#[test]
fn user_guide_pool_list_and_egress_documents_are_accepted_as_written() {
    let text = "
- apiVersion: crd.antrea.io/v1alpha2
  kind: ExternalIPPool
  metadata:
    name: prod-external-ip-pool
  spec:
    ipRanges:
    - start: 10.10.0.2
      end: 10.10.0.10
    - cidr: 10.10.1.0/28
    nodeSelector:
      matchLabels:
        network-role: egress-gateway
---
apiVersion: crd.antrea.io/v1alpha2
kind: Egress
metadata:
  name: egress-prod-web
spec:
  appliedTo:
    namespaceSelector:
      matchLabels:
        env: prod
    podSelector:
      matchLabels:
        role: web
  egressIP: 10.10.0.8 # can be populated by Antrea after assigning an IP from the pool below
  externalIPPool: prod-external-ip-pool
status:
  egressNode: node01
";
    let parsed = parse_cluster(text).unwrap();
    let pool = &parsed.view.pools[0];
    assert_eq!(pool.ip_ranges.len(), 2);
    assert_eq!(pool.ip_ranges[1].cidr.as_deref(), Some("10.10.1.0/28"));
    assert_eq!(
        pool.node_selector.match_labels["network-role"],
        "egress-gateway"
    );
    let egress = &parsed.view.egresses[0];
    assert_eq!(egress.egress_ip.as_deref(), Some("10.10.0.8"));
    assert_eq!(
        egress.external_ip_pool.as_deref(),
        Some("prod-external-ip-pool")
    );
    let pods = egress.applied_to.pod_selector.as_ref().unwrap();
    assert_eq!(pods.match_labels["role"], "web");
    assert!(parsed.warnings.is_empty());
}

#[test]
fn kind_list_items_are_read_and_unknown_kinds_are_skipped_with_a_warning() {
    let text = "
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: prod, labels: {env: prod}}
- kind: ConfigMap
  apiVersion: v1
  metadata: {name: antrea-config, namespace: kube-system}
  data: {antrea-agent.conf: x}
";
    let parsed = parse_cluster(text).unwrap();
    assert_eq!(parsed.view.namespaces[0].labels["env"], "prod");
    assert_eq!(
        parsed.warnings,
        ["document 1, item 2 (ConfigMap antrea-config): kind ConfigMap is not used, skipped"]
    );
}

#[test]
fn pods_default_to_namespace_default_and_read_pod_ips_phase_and_host_network() {
    let text = "
apiVersion: v1
kind: Pod
metadata: {name: a}
spec: {nodeName: node-1, hostNetwork: true}
status: {phase: Succeeded, podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: prod}
status: {podIPs: [{ip: 10.244.1.6}, {ip: 'fd00::6'}], podIP: 10.244.1.6}
";
    let pods = parse_cluster(text).unwrap().view.pods;
    assert_eq!(
        (pods[0].namespace.as_str(), pods[0].node_name.as_deref()),
        ("default", Some("node-1"))
    );
    assert!(pods[0].host_network);
    assert_eq!(pods[0].phase, PodPhase::Succeeded);
    assert_eq!(pods[0].ips, [ip("10.244.1.5")]);
    assert_eq!(pods[1].phase, PodPhase::Pending);
    assert_eq!(pods[1].node_name, None);
    assert_eq!(pods[1].ips, [ip("10.244.1.6"), ip("fd00::6")]);
}

#[test]
fn errors_name_the_document_the_object_and_the_field() {
    let text = format!(
        "{NODE}---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {{name: e}}
spec: {{appliedTo: {{}}, egressIP: 5}}
"
    );
    let error = error_of(&text);
    assert_eq!(error.object, "document 2 (Egress e)");
    assert_eq!(error.field, "spec.egressIP");
    assert_eq!(
        error.to_string(),
        "document 2 (Egress e): spec.egressIP: expected a string, found a number"
    );
}

#[test]
fn the_failure_policy_annotation_reaches_the_plan_and_a_wrong_value_is_named() {
    let egress = |policy: &str| {
        format!(
            "{NODE}---\napiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: e\n  \
             annotations: {{egress.ovs-egress.io/failure-policy: {policy}}}\n\
             spec: {{appliedTo: {{}}, egressIP: 10.0.0.1}}\n"
        )
    };
    let view = parse_cluster(&egress("drop")).unwrap().view;
    assert_eq!(view.egresses[0].failure_policy, FailurePolicy::Drop);
    let error = error_of(&egress("sometimes"));
    assert_eq!(
        error.field,
        "metadata.annotations[egress.ovs-egress.io/failure-policy]"
    );
    assert_eq!(
        error.message,
        "must be node-ip or drop, found \"sometimes\""
    );
}

#[test]
fn each_invalid_field_is_reported_by_name() {
    let egress = |spec: &str| {
        format!(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: Egress\nmetadata: {{name: e}}\nspec: {spec}\n"
        )
    };
    let pool = |spec: &str| {
        format!(
            "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {{name: p}}\nspec: {spec}\n"
        )
    };
    let cases = [
        (egress("{egressIP: 10.0.0.1}"), "spec.appliedTo", "is required"),
        (egress("{appliedTo: {}}"), "spec", "one of egressIP or externalIPPool"),
        (
            egress("{appliedTo: {}, egressIP: '', externalIPPool: ''}"),
            "spec",
            "one of egressIP or externalIPPool",
        ),
        (
            egress("{appliedTo: {podSelecter: {}}, egressIP: 10.0.0.1}"),
            "spec.appliedTo",
            "unknown field podSelecter",
        ),
        (
            egress("{appliedTo: {podSelector: {matchExpressions: [{key: a, operator: Has}]}}, egressIP: x}"),
            "spec.appliedTo",
            "unknown variant `Has`",
        ),
        (
            egress("{appliedTo: {}, egressIPs: [10.0.0.1]}"),
            "spec.egressIPs",
            "not supported",
        ),
        (
            pool("{ipRanges: [{cidr: 10.0.0.0/24}]}"),
            "spec.nodeSelector",
            "nodeSelector: {}",
        ),
        (pool("{nodeSelector: {}}"), "spec.ipRanges", "is required"),
        (
            "apiVersion: crd.antrea.io/v1\nkind: Egress\nmetadata: {name: e}\n".to_string(),
            "apiVersion",
            "not supported for Egress",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {v: 1}}\n".to_string(),
            "metadata.labels.v",
            "expected a string value",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {phase: Done}\n".to_string(),
            "status.phase",
            "is not one of",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{ip: x}]}\n"
                .to_string(),
            "status.podIPs[0].ip",
            "not an IP address",
        ),
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: [{type: InternalIP}]}\n"
                .to_string(),
            "status.addresses[0].address",
            "is required",
        ),
        ("kind: Node\nmetadata: {}\n".to_string(), "metadata.name", "is required"),
        ("metadata: {name: n}\n".to_string(), "kind", "is required"),
    ];
    for (text, field, message) in cases {
        match parse_cluster(&text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(error) => {
                assert_eq!(error.field, field, "{text}: {error}");
                assert!(error.message.contains(message), "{text}: {error}");
            }
        }
    }
}

#[test]
fn egress_creation_timestamp_must_be_rfc3339() {
    let text = "apiVersion: crd.antrea.io/v1alpha2\nkind: Egress\nmetadata: {name: e, creationTimestamp: yesterday}\nspec: {appliedTo: {}, egressIP: 10.0.0.1}\n";
    assert_eq!(error_of(text).field, "metadata.creationTimestamp");
}

#[test]
fn duplicate_objects_are_rejected_naming_the_first() {
    let error = error_of(&format!("{NODE}---{NODE}"));
    assert_eq!(error.object, "document 2 (Node node-1)");
    assert!(error.message.contains("first in document 1"), "{error}");
}

#[test]
fn yaml_syntax_errors_and_non_objects_name_the_document() {
    let error = error_of(&format!("{NODE}---\nkind: [unclosed\n"));
    assert!(error.object.starts_with("document 2"), "{error}");
    let error = error_of("--- 42\n");
    assert_eq!(
        error.to_string(),
        "document 1: expected a Kubernetes object or a list of objects, found a number"
    );
}

#[test]
fn rfc3339_times_convert_to_epoch_seconds() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2024-05-01T10:00:00Z"), Some(1_714_557_600));
    assert_eq!(
        parse_rfc3339("2024-05-01T12:00:00.123+02:00"),
        Some(1_714_557_600)
    );
    assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
    for bad in [
        "2024-05-01",
        "2024-05-01T10:00:00",
        "2024-13-01T10:00:00Z",
        "2024-05-01T10:00:00.Z",
        "2024-05-01T10:00:00+2",
        "+024-05-01T10:00:00Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn render_fills_allocated_ips_marks_down_nodes_and_reads_local_ip_annotations() {
    let text = "
apiVersion: v1
kind: Node
metadata: {name: a, annotations: {ovs-egress.io/down: 'true'}}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: b, annotations: {ovs-egress.io/local-ips: '192.0.2.7, 192.0.2.8'}}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
---
apiVersion: crd.antrea.io/v1beta1
kind: ExternalIPPool
metadata: {name: p}
spec: {ipRanges: [{start: 10.9.0.1, end: 10.9.0.1}], nodeSelector: {}}
---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {name: first, creationTimestamp: '2024-01-01T00:00:00Z'}
spec: {appliedTo: {}, externalIPPool: p}
---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {name: second, creationTimestamp: '2024-01-02T00:00:00Z'}
spec: {appliedTo: {}, externalIPPool: p}
---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {name: static}
spec: {appliedTo: {}, egressIP: 192.0.2.8}
";
    let view = parse_cluster(text).unwrap().view;
    let rendered = render(view, "b").unwrap();
    assert_eq!(rendered.down_nodes, ["a"]);
    assert_eq!(rendered.allocations["first"].ip, Some(ip("10.9.0.1")));
    let error = rendered.allocations["second"].error.clone().unwrap();
    assert!(
        error.starts_with("Cannot allocate EgressIP from ExternalIPPool: "),
        "{error}"
    );
    // Node a is down, so the only pool IP lands on b; the annotation makes 192.0.2.8 local.
    assert_eq!(
        rendered.plan.hold_ips.iter().copied().collect::<Vec<_>>(),
        [ip("10.9.0.1")]
    );
    assert!(rendered.plan.mark_of(ip("192.0.2.8")).is_some());
    assert_eq!(rendered.plan.statuses["first"].egress_node, "b");
}

#[test]
fn render_rejects_unknown_nodes_and_bad_local_ip_annotations() {
    let view = parse_cluster(NODE).unwrap().view;
    assert_eq!(
        render(view.clone(), "node-9").unwrap_err().to_string(),
        "Node node-9 is not in the cluster file (Nodes: node-1)"
    );
    let mut view = view;
    view.nodes[0]
        .annotations
        .insert(LOCAL_IPS_ANNOTATION.into(), "10.0.0.7,nope".into());
    assert_eq!(
        render(view, "node-1").unwrap_err(),
        RenderError::InvalidLocalIp {
            node: "node-1".into(),
            text: "nope".into()
        }
    );
}

#[test]
fn example_node_4_renders_to_the_golden_text_with_flows_and_iptables_rules() {
    let path = crate::pipeline::repository_path("examples/cluster.yaml");
    let view = parse_cluster(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .view;
    for (options, golden) in [
        (
            EgressOptions::default(),
            "ovs-flows/egress-render-node-4.txt",
        ),
        (
            EgressOptions {
                carrier: MarkCarrier::SourceMac,
                except_cidrs: vec!["192.0.2.0/24".parse().unwrap()],
                ..EgressOptions::default()
            },
            "ovs-flows/egress-render-node-4-netdev.txt",
        ),
    ] {
        let rendered = render_with(view.clone(), "node-4", &options).unwrap();
        crate::pipeline::check_golden(golden, &text::to_text(&rendered));
    }
}

#[test]
fn rendered_rules_snat_exactly_the_local_ips_with_their_marks() {
    let path = crate::pipeline::repository_path("examples/cluster.yaml");
    let view = parse_cluster(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .view;
    for node in node_names(&view) {
        let rendered = render(view.clone(), &node).unwrap();
        let snat_lines: Vec<&str> = rendered
            .datapath
            .iptables
            .lines()
            .filter(|l| l.contains("-j SNAT"))
            .collect();
        assert_eq!(snat_lines.len(), rendered.plan.snat_rules.len(), "{node}");
        for rule in &rendered.plan.snat_rules {
            let mark = format!("--mark {:#x}/0xff", rule.mark);
            let to = format!("--to-source {}", rule.ip);
            assert!(
                snat_lines
                    .iter()
                    .any(|l| l.contains(&mark) && l.ends_with(&to)),
                "{node}: no rule for {rule:?} in {snat_lines:#?}"
            );
            let tun = format!("tun_dst={} ", rule.ip);
            assert!(
                rendered.datapath.flows.iter().any(|f| f.contains(&tun)),
                "{node}: no tunnel mark flow for {}",
                rule.ip
            );
        }
    }
}

/// An IPv6 cluster: node-1 holds the static egress IP fd00:30::100 (annotation), node-2 holds
/// fd00:30::102; Pod web-0 on node-1 uses the local IP, api-0 on node-1 the remote one.
const IPV6_CLUSTER: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-1, annotations: {ovs-egress.io/local-ips: 'fd00:30::100'}}
spec: {podCIDR: 'fd00:10:244:1::/64'}
status: {addresses: [{type: InternalIP, address: 'fd00:30::11'}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, annotations: {ovs-egress.io/local-ips: 'fd00:30::102'}}
spec: {podCIDR: 'fd00:10:244:2::/64'}
status: {addresses: [{type: InternalIP, address: 'fd00:30::12'}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 'fd00:10:244:1::10'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: prod, labels: {app: api}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 'fd00:10:244:1::11'}]}
---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {name: eg-web, creationTimestamp: '2024-01-01T10:00:00Z'}
spec: {appliedTo: {podSelector: {matchLabels: {app: web}}}, egressIP: 'fd00:30::100'}
---
apiVersion: crd.antrea.io/v1beta1
kind: Egress
metadata: {name: eg-api, creationTimestamp: '2024-01-01T11:00:00Z'}
spec: {appliedTo: {podSelector: {matchLabels: {app: api}}}, egressIP: 'fd00:30::102'}
";

#[test]
fn ipv6_static_egress_renders_ipv6_flows_and_ip6tables_rules_to_the_golden_text() {
    let view = parse_cluster(IPV6_CLUSTER).unwrap().view;
    let options = EgressOptions {
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ],
        except_cidrs: vec!["2001:db8:ffff::/48".parse().unwrap()],
        ..EgressOptions::default()
    };
    let rendered = render_with(view, "node-1", &options).unwrap();
    let flows = &rendered.datapath.flows;
    let has = |want: &str| {
        assert!(
            flows.iter().any(|f| f.contains(want)),
            "missing {want}: {flows:#?}"
        )
    };
    // web-0 (port 101, name order) is marked; api-0 (port 100) is tunnelled to node-2's IP.
    has("priority=200,ct_state=+trk,ipv6,in_port=101 actions=set_field:0x1/0xff->pkt_mark");
    has("priority=200,ct_state=+trk,ipv6,tun_ipv6_dst=fd00:30::100 actions=set_field:0x1/0xff");
    has(
        "priority=200,ipv6,in_port=100 actions=set_field:0a:00:00:00:00:01->eth_src,\
         set_field:aa:bb:cc:dd:ee:ff->eth_dst,set_field:fd00:30::102->tun_ipv6_dst,",
    );
    for dst in [
        "fd00:30::11",
        "fd00:30::12",
        "fd00:10:244:1::/64",
        "fd00:10:244:2::/64",
        "fd00:10:96::/112",
        "2001:db8:ffff::/48",
    ] {
        has(&format!("priority=210,ipv6,ipv6_dst={dst} actions="));
    }
    has("priority=210,ip,nw_dst=10.96.0.0/12 actions=");
    assert!(rendered.datapath.unprogrammed.is_empty());
    let iptables = &rendered.datapath.iptables;
    assert!(iptables.starts_with("# ip6tables-restore"), "{iptables}");
    assert!(
        iptables
            .lines()
            .any(|l| l.contains("--mark 0x1/0xff")
                && l.ends_with("-j SNAT --to-source fd00:30::100")),
        "{iptables}"
    );
    crate::pipeline::check_golden(
        "ovs-flows/egress-render-ipv6.txt",
        &text::to_text(&rendered),
    );
}
