//! Egress status writes through the `/status` subresource: [`update_status`], the one
//! conflict-retrying writer (re-read, recompute, replace) used by the agent and the controller,
//! and the agent's part: `status.egressNode`, `status.egressIP` and the `IPAssigned` condition
//! of the Egresses this Node is the writer of.
//!
//! It writes only when something changed (`lastTransitionTime` is ignored when comparing, and
//! kept unless the condition's status or reason changes), and the agent never touches the other
//! conditions (`IPAllocated` belongs to the controller).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use ovs_egress_core::api::{EgressCondition, EgressStatus, v1beta1};
use ovs_egress_core::plan;

/// The condition type the agent owns.
pub const IP_ASSIGNED: &str = "IPAssigned";
/// Attempts of one write when the object keeps changing underneath.
const CONFLICT_ATTEMPTS: u32 = 5;

/// `current` with this Node's view `wanted` applied, or `None` when it already says that.
pub fn updated(
    current: &EgressStatus,
    wanted: &plan::EgressStatus,
    now: Time,
) -> Option<EgressStatus> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut next = current.clone();
    next.egress_node = non_empty(&wanted.egress_node);
    next.egress_ip = non_empty(&wanted.egress_ip);
    if let Some(condition) = &wanted.ip_assigned {
        let status = match condition.status {
            plan::ConditionStatus::True => "True",
            plan::ConditionStatus::False => "False",
        };
        let reason = match condition.reason {
            plan::Reason::Assigned => "Assigned",
            plan::Reason::AssignmentError => "AssignmentError",
        };
        let previous = current.conditions.iter().find(|c| c.type_ == IP_ASSIGNED);
        let same_state =
            previous.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
        let condition = EgressCondition {
            type_: IP_ASSIGNED.to_string(),
            status: status.to_string(),
            last_transition_time: match previous {
                Some(p) if same_state => p.last_transition_time.clone(),
                _ => Some(now),
            },
            reason: Some(reason.to_string()),
            message: Some(condition.message.clone()),
        };
        match next.conditions.iter_mut().find(|c| c.type_ == IP_ASSIGNED) {
            Some(slot) => *slot = condition,
            None => next.conditions.push(condition),
        }
    }
    (without_times(&next) != without_times(current)).then_some(next)
}

fn without_times(status: &EgressStatus) -> EgressStatus {
    let mut status = status.clone();
    for condition in &mut status.conditions {
        condition.last_transition_time = None;
    }
    status
}

/// Replaces Egress `name`'s status with what `update` makes of the current one (`None`:
/// nothing to write), on the freshest object: on a conflict it re-reads and asks `update`
/// again, up to [`CONFLICT_ATTEMPTS`] times. Returns whether it wrote. A missing Egress
/// (deleted meanwhile) is not an error.
pub async fn update_status(
    api: &Api<v1beta1::Egress>,
    name: &str,
    mut update: impl FnMut(&EgressStatus) -> Option<EgressStatus>,
) -> Result<bool, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(mut egress) = api.get_opt(name).await? else {
            return Ok(false);
        };
        let current = egress.status.clone().unwrap_or_default();
        let Some(next) = update(&current) else {
            return Ok(false);
        };
        egress.status = Some(next);
        match api
            .replace_status(name, &PostParams::default(), &egress)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(
                    egress = name,
                    attempt,
                    "conflict writing status, re-reading"
                );
            }
            Err(error) => return Err(error),
        }
    }
}

/// Bring Egress `name`'s status to this Node's `wanted` ([`updated`]); returns whether it
/// wrote.
pub async fn write(
    api: &Api<v1beta1::Egress>,
    name: &str,
    wanted: &plan::EgressStatus,
) -> Result<bool, kube::Error> {
    let wrote = update_status(api, name, |current| {
        updated(current, wanted, Time(Timestamp::now()))
    })
    .await?;
    if wrote {
        tracing::info!(egress = name, node = %wanted.egress_node, ip = %wanted.egress_ip,
            condition = ?wanted.ip_assigned, "status updated");
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_egress_core::plan::Condition;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn wanted(node: &str, ip: &str, condition: Condition) -> plan::EgressStatus {
        plan::EgressStatus {
            egress_node: node.to_string(),
            egress_ip: ip.to_string(),
            ip_assigned: Some(condition),
            writer: true,
        }
    }

    fn allocated() -> EgressCondition {
        EgressCondition {
            type_: "IPAllocated".into(),
            status: "True".into(),
            last_transition_time: Some(time(5)),
            reason: Some("Allocated".into()),
            message: Some("EgressIP is successfully allocated".into()),
        }
    }

    #[test]
    fn assignment_is_written_next_to_the_controllers_condition() {
        let current = EgressStatus {
            conditions: vec![allocated()],
            ..Default::default()
        };
        let next = updated(
            &current,
            &wanted("n1", "10.0.0.5", Condition::assigned()),
            time(9),
        )
        .expect("a change");
        assert_eq!(next.egress_node.as_deref(), Some("n1"));
        assert_eq!(next.egress_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(next.conditions[0], allocated());
        let assigned = &next.conditions[1];
        assert_eq!(
            (assigned.type_.as_str(), assigned.status.as_str()),
            ("IPAssigned", "True")
        );
        assert_eq!(assigned.reason.as_deref(), Some("Assigned"));
        assert_eq!(assigned.last_transition_time, Some(time(9)));
    }

    #[test]
    fn nothing_to_write_when_only_the_time_would_differ() {
        let current = updated(
            &EgressStatus::default(),
            &wanted("n1", "10.0.0.5", Condition::assigned()),
            time(1),
        )
        .unwrap();
        let again = updated(
            &current,
            &wanted("n1", "10.0.0.5", Condition::assigned()),
            time(50),
        );
        assert_eq!(again, None);
    }

    #[test]
    fn transition_time_kept_on_message_change_and_set_on_reason_change() {
        let current = updated(
            &EgressStatus::default(),
            &wanted("", "", Condition::assignment_error("no Node available")),
            time(1),
        )
        .unwrap();
        let other_message = updated(
            &current,
            &wanted("", "", Condition::assignment_error("something else")),
            time(2),
        )
        .unwrap();
        assert_eq!(
            other_message.conditions[0].last_transition_time,
            Some(time(1))
        );
        let assigned = updated(
            &other_message,
            &wanted("n1", "10.0.0.5", Condition::assigned()),
            time(3),
        )
        .unwrap();
        assert_eq!(assigned.conditions[0].last_transition_time, Some(time(3)));
        assert_eq!(assigned.conditions.len(), 1);
    }

    #[test]
    fn empty_node_and_ip_clear_the_fields() {
        let current = EgressStatus {
            egress_node: Some("n1".into()),
            egress_ip: Some("10.0.0.5".into()),
            conditions: vec![],
        };
        let next = updated(
            &current,
            &wanted("", "", Condition::assignment_error("no Node available")),
            time(1),
        )
        .unwrap();
        assert_eq!((next.egress_node, next.egress_ip), (None, None));
    }
}
