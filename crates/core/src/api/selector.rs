//! Kubernetes label selectors (`matchLabels` + `matchExpressions`) with the API server's
//! semantics. Used for `appliedTo` and the pools' `nodeSelector`; pure, no I/O.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a label value may look like (empty, or alphanumeric at both ends with `-_.` inside);
/// the CRD schema enforces it on `matchLabels` values and `matchExpressions[].values`.
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A label selector (Kubernetes metav1.LabelSelector); an empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "pattern": LABEL_VALUE_PATTERN}))]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// A requirement on one label key: In, NotIn, Exists or DoesNotExist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = LABEL_VALUE_PATTERN)))]
    pub values: Vec<String>,
}

/// The set-based operators of a label selector requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` pair and every expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement at all (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: key.to_string(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let empty = LabelSelector::default();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[])));
        assert!(empty.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let selector = LabelSelector {
            match_labels: labels(&[("app", "web"), ("env", "prod")]),
            ..Default::default()
        };
        assert!(selector.matches(&labels(&[("app", "web"), ("env", "prod"), ("x", "y")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "dev")])));
    }

    #[test]
    fn in_needs_the_key_with_one_of_the_values() {
        let selector = expression("env", Operator::In, &["prod", "staging"]);
        assert!(selector.matches(&labels(&[("env", "staging")])));
        assert!(!selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[])));
    }

    #[test]
    fn not_in_matches_a_missing_key_or_another_value() {
        let selector = expression("env", Operator::NotIn, &["prod"]);
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn exists_needs_the_key_with_any_value() {
        let selector = expression("env", Operator::Exists, &[]);
        assert!(selector.matches(&labels(&[("env", "")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn does_not_exist_needs_the_key_absent() {
        let selector = expression("env", Operator::DoesNotExist, &[]);
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
    }

    /// The Kubernetes rules written differently: `matchLabels` entries are `In` requirements
    /// with one value, labels are a list searched linearly.
    fn reference_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        let pairs: Vec<(&String, &String)> = labels.iter().collect();
        let mut requirements: Vec<(&String, Operator, Vec<&String>)> = selector
            .match_labels
            .iter()
            .map(|(k, v)| (k, Operator::In, vec![v]))
            .collect();
        for r in &selector.match_expressions {
            requirements.push((&r.key, r.operator, r.values.iter().collect()));
        }
        requirements.iter().all(|(key, operator, values)| {
            let value = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            let listed = value.is_some_and(|v| values.contains(&v));
            match operator {
                Operator::In => listed,
                Operator::NotIn => !listed,
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }

    fn small_labels(max: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("[abc]", "[xyz]", 0..max)
    }

    fn selector() -> impl Strategy<Value = LabelSelector> {
        let operator = prop_oneof![
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ];
        let requirement = ("[abc]", operator, prop::collection::vec("[xyz]", 0..3)).prop_map(
            |(key, operator, values)| LabelSelectorRequirement {
                key,
                operator,
                values,
            },
        );
        (small_labels(3), prop::collection::vec(requirement, 0..3)).prop_map(
            |(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            },
        )
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_reference(selector in selector(), labels in small_labels(4)) {
            prop_assert_eq!(selector.matches(&labels), reference_matches(&selector, &labels));
        }
    }
}
