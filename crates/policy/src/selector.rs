//! Label selectors (`matchLabels` and `matchExpressions`) evaluated against a node's labels,
//! with the semantics of Kubernetes' `metav1.LabelSelector`: an empty selector selects
//! everything.

use std::collections::BTreeMap;

use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// An operator Kubernetes does not define: selects nothing, so a typo never widens a policy.
    Invalid,
}

/// A label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Selects every node.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
                Requirement::Invalid => false,
            })
    }
}

impl From<&LabelSelector> for Selector {
    fn from(s: &LabelSelector) -> Selector {
        let requirements = s
            .match_expressions
            .iter()
            .flatten()
            .map(|e| {
                let values = e.values.clone().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => Requirement::In(e.key.clone(), values),
                    "NotIn" => Requirement::NotIn(e.key.clone(), values),
                    "Exists" => Requirement::Exists(e.key.clone()),
                    "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                    _ => Requirement::Invalid,
                }
            })
            .collect();
        Selector {
            match_labels: s.match_labels.clone().unwrap_or_default(),
            requirements,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_selector_selects_every_node() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::from(&LabelSelector::default()).matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = Selector::from(&LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["db".into(), "cache".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        });
        assert!(s.matches(&labels(&[("zone", "a"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("tier", "db"), ("legacy", "")])));
    }

    #[test]
    fn an_unknown_operator_selects_nothing() {
        let s = Selector::from(&LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Like".into(),
                values: None,
            }]),
        });
        assert!(!s.matches(&labels(&[("x", "y")])));
    }
}
