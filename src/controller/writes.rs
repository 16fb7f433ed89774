//! What the controller must write to make the API match `ipam::allocate_all`'s decision: pure
//! diffing of the objects as the reflectors see them against the allocations. It never decides
//! an allocation itself and never does I/O; `reconcile` performs the writes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ovs_egress_core::api::{EgressCondition, IpPoolUsage, v1beta1};
use ovs_egress_core::ipam::{AllocationError, Allocations};

pub const IP_ALLOCATED: &str = "IPAllocated";
/// The pool condition the controller sets (False) while it refuses to allocate from a pool.
pub const ALLOCATABLE: &str = "Allocatable";

/// The desired `IPAllocated` condition, without its timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// One write to the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Merge-patch `spec.egressIP` to this IP, or to null, only if the Egress is still at
    /// `resource_version` (the version the decision was made on).
    EgressIp {
        egress: String,
        ip: Option<IpAddr>,
        resource_version: Option<String>,
    },
    /// Set (`Some`) or remove (`None`) the `IPAllocated` condition on `/status`.
    Allocated {
        egress: String,
        condition: Option<Condition>,
    },
    /// Set the pool's `status.usage`.
    Usage { pool: String, usage: IpPoolUsage },
    /// Set (`Some`) or remove (`None`) the pool's `Allocatable` condition; `current` are the
    /// pool's conditions as the decision saw them.
    PoolAllocatable {
        pool: String,
        current: Vec<EgressCondition>,
        condition: Option<Condition>,
    },
}

/// The pool condition for a pool the allocator refused (`Some(reason)`), or none.
pub fn pool_condition(refused: Option<&String>) -> Option<Condition> {
    refused.map(|reason| Condition {
        status: "False",
        reason: "OverlapsPool",
        message: format!("no IP is allocated from this pool: {reason}"),
    })
}

/// The condition Antrea's controller reports for an allocation result.
pub fn condition(result: &Result<IpAddr, AllocationError>) -> Condition {
    match result {
        Ok(_) => Condition {
            status: "True",
            reason: "Allocated",
            message: "EgressIP is successfully allocated".to_string(),
        },
        Err(error) => Condition {
            status: "False",
            reason: "AllocationError",
            message: format!("Cannot allocate EgressIP from ExternalIPPool: {error}"),
        },
    }
}

/// Whether an existing condition already says what `wanted` says (timestamps ignored).
fn same(existing: &EgressCondition, wanted: &Condition) -> bool {
    existing.status == wanted.status
        && existing.reason.as_deref() == Some(wanted.reason)
        && existing.message.as_deref() == Some(wanted.message.as_str())
}

/// Every write needed, in a stable order: spec IPs first (so agents see IPs early), then
/// conditions, then pool usage.
pub fn compute(
    egresses: &[v1beta1::Egress],
    pools: &[v1beta1::ExternalIPPool],
    allocations: &Allocations,
) -> Vec<Write> {
    let mut ips = Vec::new();
    let mut conditions = Vec::new();
    for egress in egresses {
        let name = egress.metadata.name.clone().unwrap_or_default();
        let spec_ip = egress.spec.egress_ip.as_deref().filter(|ip| !ip.is_empty());
        let current = egress
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == IP_ALLOCATED));
        let Some(result) = allocations.by_egress.get(&name) else {
            // No pool: the controller has nothing to say about this Egress.
            if current.is_some() {
                conditions.push(Write::Allocated {
                    egress: name,
                    condition: None,
                });
            }
            continue;
        };
        match result {
            Ok(ip) if spec_ip.is_none() => ips.push(Write::EgressIp {
                egress: name.clone(),
                ip: Some(*ip),
                resource_version: egress.metadata.resource_version.clone(),
            }),
            Err(AllocationError::PoolNotFound(_)) if spec_ip.is_some() => {
                ips.push(Write::EgressIp {
                    egress: name.clone(),
                    ip: None,
                    resource_version: egress.metadata.resource_version.clone(),
                })
            }
            _ => {}
        }
        let wanted = condition(result);
        if current.is_none_or(|c| !same(c, &wanted)) {
            conditions.push(Write::Allocated {
                egress: name,
                condition: Some(wanted),
            });
        }
    }
    let mut usages = Vec::new();
    let current: BTreeMap<&str, Option<IpPoolUsage>> = pools
        .iter()
        .filter_map(|p| {
            let usage = p.status.as_ref().and_then(|s| s.usage);
            Some((p.metadata.name.as_deref()?, usage))
        })
        .collect();
    for (pool, usage) in &allocations.usage {
        let wanted = IpPoolUsage {
            total: i64::try_from(usage.total).unwrap_or(i64::MAX),
            used: i64::try_from(usage.used).unwrap_or(i64::MAX),
        };
        if current
            .get(pool.as_str())
            .is_some_and(|u| *u != Some(wanted))
        {
            usages.push(Write::Usage {
                pool: pool.clone(),
                usage: wanted,
            });
        }
    }
    for pool in pools {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let current: Vec<EgressCondition> = pool
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let existing = current.iter().find(|c| c.type_ == ALLOCATABLE);
        let wanted = pool_condition(allocations.refused.get(name));
        let differs = match (existing, &wanted) {
            (None, None) => false,
            (Some(existing), Some(wanted)) => !same(existing, wanted),
            _ => true,
        };
        if differs {
            usages.push(Write::PoolAllocatable {
                pool: name.to_string(),
                current,
                condition: wanted,
            });
        }
    }
    ips.into_iter().chain(conditions).chain(usages).collect()
}

/// `conditions` with `IPAllocated` set to `wanted` (or removed), other conditions kept in
/// place; the transition time changes only when the status does.
pub fn with_condition(
    conditions: &[EgressCondition],
    wanted: Option<&Condition>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Vec<EgressCondition> {
    with_condition_of(IP_ALLOCATED, conditions, wanted, now)
}

/// [`with_condition`] for the condition type `type_`.
pub fn with_condition_of(
    type_: &str,
    conditions: &[EgressCondition],
    wanted: Option<&Condition>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Vec<EgressCondition> {
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let mut out: Vec<EgressCondition> = conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    if let Some(wanted) = wanted {
        let last_transition_time = match previous {
            Some(p) if p.status == wanted.status => p.last_transition_time.clone(),
            _ => Some(now),
        };
        out.push(EgressCondition {
            type_: type_.to_string(),
            status: wanted.status.to_string(),
            last_transition_time,
            reason: Some(wanted.reason.to_string()),
            message: Some(wanted.message.clone()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use ovs_egress_core::api::{EgressStatus, ExternalIPPoolStatus, IpRange, v1beta1::EgressSpec};
    use ovs_egress_core::ipam::allocate_all;
    use ovs_egress_core::model;

    fn egress(name: &str, ip: Option<&str>, pool: Option<&str>) -> v1beta1::Egress {
        v1beta1::Egress::new(
            name,
            EgressSpec {
                egress_ip: ip.map(str::to_string),
                external_ip_pool: pool.map(str::to_string),
                ..Default::default()
            },
        )
    }

    fn pool(name: &str, cidr: &str, usage: Option<(i64, i64)>) -> v1beta1::ExternalIPPool {
        let mut pool = v1beta1::ExternalIPPool::new(
            name,
            v1beta1::ExternalIPPoolSpec {
                ip_ranges: vec![IpRange {
                    cidr: Some(cidr.to_string()),
                    ..Default::default()
                }],
                node_selector: Default::default(),
            },
        );
        pool.status = usage.map(|(total, used)| ExternalIPPoolStatus {
            usage: Some(IpPoolUsage { total, used }),
            conditions: vec![],
        });
        pool
    }

    fn decide(egresses: &[v1beta1::Egress], pools: &[v1beta1::ExternalIPPool]) -> Vec<Write> {
        let model_egresses: Vec<model::Egress> = egresses.iter().map(Into::into).collect();
        let model_pools: Vec<model::ExternalIpPool> = pools.iter().map(Into::into).collect();
        compute(
            egresses,
            pools,
            &allocate_all(&model_pools, &model_egresses),
        )
    }

    fn condition_status(egress: &mut v1beta1::Egress, wanted: &Condition) {
        let status = egress.status.get_or_insert_with(EgressStatus::default);
        status.conditions = with_condition(
            &status.conditions,
            Some(wanted),
            Time(Timestamp::UNIX_EPOCH),
        );
    }

    #[test]
    fn a_pool_overlapping_an_older_one_gets_allocatable_false_and_loses_it_when_fixed() {
        let mut old = pool("old", "10.0.0.0/29", Some((6, 1)));
        old.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut newer = pool("newer", "10.0.0.4/30", Some((2, 0)));
        newer.metadata.creation_timestamp = Some(Time(Timestamp::from_second(60).unwrap()));
        let egresses = [
            egress("a", Some("10.0.0.1"), Some("old")),
            egress("b", None, Some("newer")),
        ];
        let writes = decide(&egresses, &[old.clone(), newer.clone()]);
        let wanted = Condition {
            status: "False",
            reason: "OverlapsPool",
            message: "no IP is allocated from this pool: its range [10.0.0.4/30] overlaps \
                      ExternalIPPool old"
                .to_string(),
        };
        assert!(
            writes.contains(&Write::PoolAllocatable {
                pool: "newer".to_string(),
                current: vec![],
                condition: Some(wanted.clone()),
            }),
            "{writes:#?}"
        );
        assert!(
            !writes
                .iter()
                .any(|w| matches!(w, Write::EgressIp { egress, .. } if egress == "b"))
        );
        let b = writes.iter().find_map(|w| match w {
            Write::Allocated { egress, condition } if egress == "b" => condition.clone(),
            _ => None,
        });
        assert!(
            b.is_some_and(
                |c| c.status == "False" && c.message.contains("ExternalIPPool newer is refused")
            ),
            "{writes:#?}"
        );
        // Once applied nothing more is written for the pool; once the overlap is gone, the
        // condition is removed.
        newer.status.get_or_insert_with(Default::default).conditions =
            with_condition_of(ALLOCATABLE, &[], Some(&wanted), Time(Timestamp::UNIX_EPOCH));
        let writes = decide(&egresses, &[old.clone(), newer.clone()]);
        assert!(
            !writes
                .iter()
                .any(|w| matches!(w, Write::PoolAllocatable { .. }))
        );
        let writes = decide(&egresses, &[newer.clone()]);
        assert!(
            writes.iter().any(|w| matches!(w, Write::PoolAllocatable { pool, condition: None, .. } if pool == "newer")),
            "{writes:#?}"
        );
    }

    #[test]
    fn egress_without_ip_gets_a_spec_ip_a_true_condition_and_the_pool_usage() {
        let writes = decide(
            &[egress("a", None, Some("p"))],
            &[pool("p", "10.0.0.0/29", None)],
        );
        assert_eq!(
            writes,
            [
                Write::EgressIp {
                    egress: "a".to_string(),
                    ip: Some("10.0.0.1".parse().unwrap()),
                    resource_version: None
                },
                Write::Allocated {
                    egress: "a".to_string(),
                    condition: Some(Condition {
                        status: "True",
                        reason: "Allocated",
                        message: "EgressIP is successfully allocated".to_string()
                    })
                },
                Write::Usage {
                    pool: "p".to_string(),
                    usage: IpPoolUsage { total: 6, used: 1 }
                },
            ]
        );
    }

    #[test]
    fn nothing_is_written_when_the_api_already_matches() {
        let mut a = egress("a", Some("10.0.0.1"), Some("p"));
        condition_status(&mut a, &condition(&Ok("10.0.0.1".parse().unwrap())));
        assert_eq!(decide(&[a], &[pool("p", "10.0.0.0/29", Some((6, 1)))]), []);
    }

    #[test]
    fn missing_pool_clears_the_spec_ip_and_reports_the_pool_by_name() {
        let mut a = egress("a", Some("10.0.0.1"), Some("gone"));
        a.metadata.resource_version = Some("7".to_string());
        let writes = decide(&[a], &[]);
        assert_eq!(
            writes,
            [
                Write::EgressIp {
                    egress: "a".to_string(),
                    ip: None,
                    resource_version: Some("7".to_string())
                },
                Write::Allocated {
                    egress: "a".to_string(),
                    condition: Some(Condition {
                        status: "False",
                        reason: "AllocationError",
                        message:
                            "Cannot allocate EgressIP from ExternalIPPool: ExternalIPPool gone does not exist"
                                .to_string()
                    })
                },
            ]
        );
    }

    #[test]
    fn conflicting_static_ip_keeps_its_spec_ip_and_gets_an_allocation_error() {
        let writes = decide(
            &[
                egress("a", Some("10.0.0.1"), Some("p")),
                egress("b", Some("10.0.0.1"), Some("p")),
            ],
            &[pool("p", "10.0.0.0/29", Some((6, 1)))],
        );
        assert!(!writes.iter().any(|w| matches!(w, Write::EgressIp { .. })));
        let Some(Write::Allocated {
            condition: Some(c), ..
        }) = writes
            .iter()
            .find(|w| matches!(w, Write::Allocated { egress, .. } if egress == "b"))
        else {
            panic!("no condition for b in {writes:?}");
        };
        assert_eq!((c.status, c.reason), ("False", "AllocationError"));
        assert!(
            c.message.contains("already allocated to Egress a"),
            "{}",
            c.message
        );
    }

    #[test]
    fn condition_is_removed_when_the_egress_no_longer_names_a_pool() {
        let mut a = egress("a", Some("1.2.3.4"), None);
        condition_status(&mut a, &condition(&Ok("1.2.3.4".parse().unwrap())));
        assert_eq!(
            decide(&[a], &[]),
            [Write::Allocated {
                egress: "a".to_string(),
                condition: None
            }]
        );
    }

    #[test]
    fn other_conditions_are_kept_and_transition_time_moves_only_with_the_status() {
        let t0 = Time(Timestamp::UNIX_EPOCH);
        let t1 = Time(Timestamp::from_second(100).unwrap());
        let assigned = EgressCondition {
            type_: "IPAssigned".to_string(),
            status: "True".to_string(),
            last_transition_time: None,
            reason: Some("Assigned".to_string()),
            message: None,
        };
        let error = |message: &str| Condition {
            status: "False",
            reason: "AllocationError",
            message: message.to_string(),
        };
        let first = with_condition(
            std::slice::from_ref(&assigned),
            Some(&error("x")),
            t0.clone(),
        );
        let reworded = with_condition(&first, Some(&error("y")), t1.clone());
        assert_eq!(reworded[0], assigned);
        assert_eq!(reworded[1].last_transition_time, Some(t0));
        assert_eq!(reworded[1].message.as_deref(), Some("y"));
        let ok = condition(&Ok("10.0.0.1".parse().unwrap()));
        let flipped = with_condition(&reworded, Some(&ok), t1.clone());
        assert_eq!(flipped[1].last_transition_time, Some(t1.clone()));
        assert_eq!(with_condition(&flipped, None, t1), [assigned]);
    }
}
