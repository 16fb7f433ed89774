//! `ovs-egress agent` as a process against the real API server, inside a network namespace of the test's
//! own, in status-only mode (`--no-datapath`, no OVS here): it writes `egressNode`/`egressIP`
//! for a static Egress whose IP is on the Node and for a pool Egress placed on it with
//! `IPAssigned=False` "datapath disabled" (never claiming an IP nothing programmed), writes the
//! `AssignmentError` of an Egress no Node can hold from exactly one of two agents, does not
//! rewrite an unchanged status, skips a malformed object, retries when the API server is not
//! there yet, and refuses a config Egress cannot work with. In-process with a test datapath: a
//! datapath's per-IP failure reaches the status, and readiness waits for the first apply while
//! `/metrics` answers (and `/plan` says no plan is applied yet).

#[path = "controller/harness.rs"]
#[allow(dead_code)]
mod ctl;
#[path = "agent/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;

const NODE_IP: &str = "10.10.0.104";

/// One Node `node-a` with the Namespace `prod` and one `app=web` Pod on it.
async fn one_node(bed: &Bed) {
    bed.create(node("node-a", NODE_IP, &[])).await;
    bed.create(namespace("prod")).await;
    bed.create_pod(pod("prod", "web-1", "node-a", "10.244.1.2"))
        .await;
}

#[tokio::test]
async fn static_egress_with_a_local_ip_is_reported_datapath_disabled_without_events_or_rewrite() {
    let bed = Bed::start().await;
    one_node(&bed).await;
    bed.add_ip("10.10.0.50");
    bed.create(egress("static", "10.10.0.50", None)).await;
    let agent = bed.agent("node-a", None);
    agent.wait_ready().await;

    let status = bed
        .wait_status("static", "on node-a, datapath disabled", |s| {
            s.egress_node.as_deref() == Some("node-a")
                && ip_assigned(s).is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(status.egress_ip.as_deref(), Some("10.10.0.50"));
    assert_datapath_disabled(&status);
    assert!(ip_assigned(&status).unwrap().last_transition_time.is_some());

    // Unrelated changes make the agent recompute; the first Egress's status stays untouched.
    let version = bed
        .egresses()
        .get("static")
        .await
        .unwrap()
        .metadata
        .resource_version;
    bed.create(namespace("staging")).await;
    bed.add_ip("10.10.0.51");
    bed.create(egress("second", "10.10.0.51", None)).await;
    bed.wait_status("second", "assigned to node-a", |s| {
        s.egress_node.as_deref() == Some("node-a")
    })
    .await;
    let after = bed
        .egresses()
        .get("static")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(after, version, "the unchanged status was written again");
    assert_eq!(agent.status_writes("static"), 1, "{}", agent.logs());
    assert!(bed.event_notes("IPAssigned", "static").await.is_empty());
}

/// What a status-only agent reports for an IP the plan puts on its Node.
fn assert_datapath_disabled(status: &ovs_egress_core::api::EgressStatus) {
    let condition = ip_assigned(status).unwrap();
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("AssignmentError"));
    assert_eq!(
        condition.message.as_deref(),
        Some(
            format!(
                "Failed to assign the IP to EgressNode: {}",
                ovs_egress::agent::datapath::DATAPATH_DISABLED
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn pool_egress_placed_on_this_node_is_reported_there_datapath_disabled() {
    let bed = Bed::start().await;
    one_node(&bed).await;
    bed.create(pool("pool", "10.10.0.60", "10.10.0.61", &[]))
        .await;
    // spec.egressIP set as the controller would.
    bed.create(egress("pooled", "10.10.0.60", Some("pool")))
        .await;
    let agent = bed.agent("node-a", None);
    agent.wait_ready().await;
    let status = bed
        .wait_status("pooled", "assigned to node-a", |s| {
            s.egress_node.as_deref() == Some("node-a")
        })
        .await;
    assert_eq!(status.egress_ip.as_deref(), Some("10.10.0.60"));
    let status = bed
        .wait_status("pooled", "datapath disabled", |s| ip_assigned(s).is_some())
        .await;
    assert_datapath_disabled(&status);
}

#[tokio::test]
async fn no_node_available_is_written_by_exactly_one_of_two_agents() {
    let bed = Bed::start().await;
    bed.create(node("node-a", NODE_IP, &[])).await;
    bed.create(node("node-b", "10.10.0.105", &[])).await;
    bed.create(pool(
        "nowhere",
        "10.10.0.70",
        "10.10.0.71",
        &[("egress", "yes")],
    ))
    .await;
    bed.create(egress("stranded", "10.10.0.70", Some("nowhere")))
        .await;
    let a = bed.agent("node-a", None);
    let b = bed.agent("node-b", None);
    a.wait_ready().await;
    b.wait_ready().await;
    let status = bed
        .wait_status("stranded", "an AssignmentError", |s| {
            ip_assigned(s).is_some_and(|c| c.status == "False")
        })
        .await;
    let condition = ip_assigned(&status).unwrap();
    assert_eq!(condition.reason.as_deref(), Some("AssignmentError"));
    let message = condition.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("Failed to assign the IP to EgressNode: "),
        "{message}"
    );
    assert!(message.contains("no Node available"), "{message}");
    assert_eq!(status.egress_node, None);
    // Give the other agent time to (wrongly) write too, then count the writers.
    bed.create(namespace("later")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = (a.status_writes("stranded"), b.status_writes("stranded"));
    assert!(
        writes == (1, 0) || writes == (0, 1),
        "writes by (node-a, node-b): {writes:?}\n--- node-a\n{}\n--- node-b\n{}",
        a.logs(),
        b.logs()
    );
}

#[tokio::test]
async fn malformed_egress_is_logged_and_skipped_and_the_rest_keeps_working() {
    let bed = Bed::start().await;
    one_node(&bed).await;
    // spec.appliedTo must be an object: the typed Egress cannot read this one.
    ovs_egress_integration::malformed::store_malformed_egress(&bed.client(), "broken-egress", None)
        .await
        .expect("storing the malformed Egress");
    bed.add_ip("10.10.0.50");
    bed.create(egress("static", "10.10.0.50", None)).await;
    let agent = bed.agent("node-a", None);
    agent.wait_ready().await;
    bed.wait_status("static", "assigned to node-a", |s| {
        s.egress_node.as_deref() == Some("node-a")
    })
    .await;
    let logs = agent.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("skipping malformed object") && l.contains("broken-egress")),
        "{logs}"
    );
}

#[tokio::test]
async fn agent_started_before_the_api_server_becomes_ready_once_it_is_up() {
    ctl::cargo_bin("ovs-egress");
    let ns = ovs_egress_integration::Netns::new("agentearly").expect("creating the namespace");
    enter(&ns);
    let dir = ctl::TempDir::new("agent-early");
    // Started once for its certificates, address and admin kubeconfig, then stopped.
    let mut server = ovs_egress_integration::apiserver::ApiServer::start(&dir.0)
        .expect("starting the API server");
    server.stop();
    let kubeconfig = server.kubeconfig.clone();
    let agent = agent(&kubeconfig, &dir.0, "node-a", None);
    ctl::eventually("the agent answers /livez", 10.0, || async {
        (agent.probe("/livez").await == Some(200)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.probe("/readyz").await,
        Some(503),
        "ready without an API server"
    );

    server.restart().expect("starting the API server");
    let client = server.client().await.unwrap();
    ovs_egress_integration::apiserver::apply_crds_and_wait(&client)
        .await
        .expect("creating the CRDs");
    agent.wait_ready().await;
    assert!(agent.logs().contains("watch error"), "{}", agent.logs());
}

#[test]
fn agent_refuses_a_non_encap_traffic_mode_naming_the_key() {
    let dir = ctl::TempDir::new("agent-conf");
    let config = dir.0.join("agent.conf");
    std::fs::write(&config, "trafficEncapMode: noEncap\n").unwrap();
    let output = std::process::Command::new(ctl::cargo_bin("ovs-egress"))
        .args(["agent", "--node-name", "node-a", "--config"])
        .arg(&config)
        .output()
        .expect("running the agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("trafficEncapMode"), "{stderr}");
}

#[tokio::test]
async fn datapath_failures_reach_the_status_and_readiness_waits_for_the_first_apply_while_metrics_answer()
 {
    use ovs_egress::agent::{PlanRequest, config::AgentArgs, config::AgentConfig, run_with};
    use ovs_egress_core::plan::Condition;
    let bed = Bed::start().await;
    one_node(&bed).await;
    bed.add_ip("10.10.0.50");
    bed.create(egress("static", "10.10.0.50", None)).await;

    // A datapath that holds the first plan until released, then fails every egress IP.
    let (datapath, mut requests) = tokio::sync::mpsc::channel::<PlanRequest>(1);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    tokio::spawn(async move {
        released.notified().await;
        while let Some(request) = requests.recv().await {
            let mut statuses = request.plan.statuses.clone();
            for status in statuses.values_mut().filter(|s| !s.egress_ip.is_empty()) {
                status.ip_assigned = Some(Condition::assignment_error("device egress0 is missing"));
            }
            let _ = request.applied.send(statuses);
        }
    });
    let health = ctl::free_port();
    let args = AgentArgs {
        node_name: "node-a".to_string(),
        config: None,
        kubeconfig: Some(bed.cluster.kubeconfig.clone()),
        health_listen: health,
        ovs_rundir: "/nonexistent".into(),
        no_datapath: false,
        api_retry: Default::default(),
    };
    let agent = tokio::spawn(run_with(args, AgentConfig::default(), datapath));
    let readyz = || async move {
        let stream = tokio::net::TcpStream::connect(health).await.ok()?;
        ctl::http(stream, "GET", "/readyz", "")
            .await
            .ok()
            .map(|(s, _)| s)
    };
    ctl::eventually("the health port answers", 10.0, || async {
        readyz().await.is_some().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        readyz().await,
        Some(503),
        "ready before the datapath applied a plan"
    );
    let get = |path: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(health).await.unwrap();
        ctl::http(stream, "GET", path, "").await.unwrap()
    };
    // While the agent starts (no plan applied yet) the metrics answer, /plan says why it has
    // nothing, and unknown paths are 404.
    let (code, metrics) = get("/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("# TYPE ovs_egress_agent_egress_ip_held gauge"),
        "{metrics}"
    );
    assert!(metrics.contains("ovs_egress_build_info{"), "{metrics}");
    let (code, body) = get("/plan").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no plan applied yet"), "{body}");
    assert_eq!(get("/no-such-path").await.0, 404);
    assert!(
        ip_assigned(&bed.status("static").await).is_none(),
        "status written before apply"
    );

    release.notify_one();
    ctl::eventually("the agent is ready", 10.0, || async {
        (readyz().await == Some(200)).then_some(())
    })
    .await;
    let status = bed
        .wait_status("static", "the datapath's error", |s| {
            ip_assigned(s).is_some_and(|c| c.status == "False")
        })
        .await;
    let condition = ip_assigned(&status).unwrap();
    assert_eq!(condition.reason.as_deref(), Some("AssignmentError"));
    assert_eq!(
        condition.message.as_deref(),
        Some("Failed to assign the IP to EgressNode: device egress0 is missing")
    );
    assert!(bed.event_notes("IPAssigned", "static").await.is_empty());
    // Once applied, /plan shows the plan (with render's placeholders: this datapath programs
    // nothing it could tell); the IP the datapath failed is not counted as held.
    let (code, body) = get("/plan").await;
    assert_eq!(code, 200, "{body}");
    let rendered: ovs_egress_core::render::Rendered = serde_json::from_str(&body).unwrap();
    assert_eq!(rendered.node, "node-a");
    assert!(rendered.plan.statuses.contains_key("static"), "{body}");
    assert!(
        rendered.datapath.placeholders.contains("placeholders"),
        "{body}"
    );
    let (_, metrics) = get("/metrics").await;
    assert!(
        !metrics.contains("ovs_egress_agent_egress_ip_held{"),
        "{metrics}"
    );
    agent.abort();
}

#[tokio::test]
async fn status_write_failing_on_server_errors_is_retried_until_it_succeeds() {
    let bed = Bed::start().await;
    one_node(&bed).await;
    bed.create(egress("static", "10.10.0.50", None)).await;
    let agent = bed.agent("node-a", None);
    agent.wait_ready().await;
    // The IP is not on this Node yet: nobody writes. Then status writes fail (500) while it
    // arrives.
    bed.fail_status_writes(2).await;
    bed.add_ip("10.10.0.50");
    ctl::eventually("a failed status write", 5.0, || async {
        agent.logs().contains("status write failed").then_some(())
    })
    .await;
    let status = bed
        .wait_status("static", "on node-a after the errors", |s| {
            s.egress_node.as_deref() == Some("node-a") && ip_assigned(s).is_some()
        })
        .await;
    assert_datapath_disabled(&status);
}
