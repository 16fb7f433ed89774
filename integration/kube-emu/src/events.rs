//! events.k8s.io/v1 ⇄ core/v1 Event conversion. As in Kubernetes both APIs show the same
//! objects: storage holds the core/v1 form, events.k8s.io requests are converted on the way in
//! and out (field renames only), so `kubectl get events`/`describe` see events that kube-rs's
//! `Recorder` published through events.k8s.io.

use serde_json::Value;

/// (events.k8s.io/v1 name, core/v1 name)
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("deprecatedSource", "source"),
];

fn rename(v: &mut Value, to_core: bool) {
    let Some(m) = v.as_object_mut() else { return };
    for (new, old) in RENAMES {
        let (from, to) = if to_core { (new, old) } else { (old, new) };
        if let Some(x) = m.remove(from) {
            m.insert(to.to_string(), x);
        }
    }
}

/// An events.k8s.io/v1 Event body in storage (core/v1) form.
pub fn to_core(mut v: Value) -> Value {
    rename(&mut v, true);
    v
}

/// A stored (core/v1) Event as events.k8s.io/v1 shows it.
pub fn to_events_v1(mut v: Value) -> Value {
    rename(&mut v, false);
    v
}

/// Field selector paths of events.k8s.io/v1 in storage form.
pub fn selector_to_core(s: &str) -> String {
    s.replace("regarding.", "involvedObject.")
        .replace("reportingController", "reportingComponent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversion_round_trips_and_renames_the_documented_fields() {
        let v1 = json!({"regarding": {"name": "e"}, "note": "n", "reportingController": "c", "reason": "R", "series": {"count": 2}});
        let core = to_core(v1.clone());
        assert_eq!(
            core,
            json!({"involvedObject": {"name": "e"}, "message": "n", "reportingComponent": "c", "reason": "R", "series": {"count": 2}})
        );
        assert_eq!(to_events_v1(core), v1);
    }
}
