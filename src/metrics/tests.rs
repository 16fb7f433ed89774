use super::*;

#[test]
fn prometheus_asks_for_openmetrics_and_curl_gets_the_text_format() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(wants_openmetrics(Some(prometheus)));
    assert!(!wants_openmetrics(Some("*/*")));
    assert!(!wants_openmetrics(None));
    assert!(!wants_openmetrics(Some(
        "application/openmetrics-text; q=0"
    )));
}

#[test]
fn counters_get_their_total_name_and_unit_and_eof_lines_go_in_the_text_format() {
    let open = "# HELP ovs_egress_a_things Things.\n# TYPE ovs_egress_a_things counter\n\
                ovs_egress_a_things_total{reason=\"x\"} 3\n\
                # HELP ovs_egress_a_wait_seconds Wait.\n# TYPE ovs_egress_a_wait_seconds histogram\n\
                # UNIT ovs_egress_a_wait_seconds seconds\novs_egress_a_wait_seconds_sum 0.5\n\
                # HELP ovs_egress_a_level Level.\n# TYPE ovs_egress_a_level gauge\n\
                ovs_egress_a_level 1\n# EOF\n";
    let text = to_prometheus_text(open);
    assert_eq!(
        text,
        "# HELP ovs_egress_a_things_total Things.\n# TYPE ovs_egress_a_things_total counter\n\
         ovs_egress_a_things_total{reason=\"x\"} 3\n\
         # HELP ovs_egress_a_wait_seconds Wait.\n# TYPE ovs_egress_a_wait_seconds histogram\n\
         ovs_egress_a_wait_seconds_sum 0.5\n\
         # HELP ovs_egress_a_level Level.\n# TYPE ovs_egress_a_level gauge\n\
         ovs_egress_a_level 1\n"
    );
}

#[test]
fn every_family_of_both_processes_has_help_and_the_ovs_egress_prefix() {
    for registry in [agent::registry(), controller::registry()] {
        let (content_type, text) = exposition(&registry, None).unwrap();
        assert_eq!(content_type, TEXT_CONTENT_TYPE);
        let mut helped = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.trim().is_empty(), "{name} has no help");
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(name.starts_with("ovs_egress_"), "{name}");
                assert!(helped.contains(name), "{name} has no HELP line");
            }
        }
        assert!(text.contains("ovs_egress_build_info{version=\""), "{text}");
        assert!(text.contains("ovs_egress_process_open_fds "), "{text}");
    }
}

#[test]
fn the_agent_exports_the_membership_it_runs_by_state_and_drop_reason() {
    let state = crate::membership::State {
        members: crate::membership::MemberCounts {
            alive: 2,
            suspect: 1,
            down: 0,
            left: 1,
        },
        drops: crate::membership::seal::DropCounts {
            unauthenticated: 7,
            spoofed: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(state);
    agent::metrics().set_membership(rx);
    agent::metrics().observe_failover(0.3);
    agent::metrics().observe_failover_since_contact(2.5);
    let (_, text) = exposition(&agent::registry(), None).unwrap();
    for line in [
        "ovs_egress_agent_membership_members{state=\"alive\"} 2",
        "ovs_egress_agent_membership_members{state=\"suspect\"} 1",
        "ovs_egress_agent_membership_members{state=\"down\"} 0",
        "ovs_egress_agent_membership_members{state=\"left\"} 1",
        "ovs_egress_agent_membership_datagrams_dropped_total{reason=\"unauthenticated\"} 7",
        "ovs_egress_agent_membership_datagrams_dropped_total{reason=\"spoofed\"} 2",
        "ovs_egress_agent_membership_datagrams_dropped_total{reason=\"replayed\"} 0",
        "# TYPE ovs_egress_agent_membership_datagrams_dropped_total counter",
        "# TYPE ovs_egress_agent_failover_duration_seconds histogram",
        "ovs_egress_agent_failover_duration_seconds_bucket{le=\"0.64\"} 1",
        "ovs_egress_agent_failover_since_last_contact_seconds_bucket{le=\"3.2\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}
