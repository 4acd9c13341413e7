//! Rollback readiness as the metrics and `/status` show it: whether a rollback to blue now would
//! lose nothing, condition by condition ([`crate::ops::ready`] judges them; `pgbridge ready`
//! prints the same document). `pgbridge_rollback_ready` is 1 when every condition holds;
//! `pgbridge_rollback_condition{condition}` is 1 per condition that holds, and 0 when it does
//! not or cannot be told (`/status` says which: `holds` is `null` then). Condition names are a
//! fixed, bounded set: the names [`crate::ops::ready`] defines.

use serde::Serialize;

use super::names::{ROLLBACK_CONDITION, ROLLBACK_READY};

/// One condition: whether it holds (`None`: cannot be told), what was measured against which
/// limit, and in words why (and how to fix it when it does not hold).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionState {
    pub name: &'static str,
    pub holds: Option<bool>,
    pub detail: String,
    /// The measured value (bytes, seconds or a count), when the condition has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The limit it is held to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<serde_json::Value>,
}

/// The verdict and every condition: `ready` is `true` when every condition holds, `false` when
/// one definitely does not (whatever the others), `null` when none fails but one cannot be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: Option<bool>,
    pub conditions: Vec<ConditionState>,
}

impl Readiness {
    /// The verdict over `conditions`: one that fails decides (definitely not ready) even when
    /// others cannot be told.
    pub fn new(conditions: Vec<ConditionState>) -> Readiness {
        let ready = if conditions.iter().any(|c| c.holds == Some(false)) {
            Some(false)
        } else if conditions.iter().any(|c| c.holds.is_none()) || conditions.is_empty() {
            None
        } else {
            Some(true)
        };
        Readiness { ready, conditions }
    }

    /// Names of the conditions in `state` (`Some(false)`: failing, `None`: unknown).
    pub fn names_where(&self, state: Option<bool>) -> Vec<&'static str> {
        self.conditions
            .iter()
            .filter(|c| c.holds == state)
            .map(|c| c.name)
            .collect()
    }

    /// Sets the gauges: one series per condition evaluated, 1 when it holds.
    pub(super) fn publish(&self) {
        metrics::gauge!(ROLLBACK_READY).set(if self.ready == Some(true) { 1.0 } else { 0.0 });
        for c in &self.conditions {
            let holds = if c.holds == Some(true) { 1.0 } else { 0.0 };
            metrics::gauge!(ROLLBACK_CONDITION, "condition" => c.name).set(holds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &'static str, holds: Option<bool>) -> ConditionState {
        ConditionState {
            name,
            holds,
            detail: String::new(),
            value: None,
            limit: None,
        }
    }

    #[test]
    fn one_failing_condition_decides_even_beside_an_unknown_one() {
        let r = Readiness::new(vec![c("a", Some(true)), c("b", None), c("c", Some(false))]);
        assert_eq!(r.ready, Some(false));
        assert_eq!(r.names_where(Some(false)), vec!["c"]);
        assert_eq!(r.names_where(None), vec!["b"]);
    }

    #[test]
    fn unknown_without_a_failure_is_cannot_tell_and_all_holding_is_ready() {
        assert_eq!(Readiness::new(vec![c("a", Some(true)), c("b", None)]).ready, None);
        assert_eq!(
            Readiness::new(vec![c("a", Some(true)), c("b", Some(true))]).ready,
            Some(true)
        );
        assert_eq!(Readiness::new(vec![]).ready, None, "nothing evaluated is not ready");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = Readiness::new(vec![ConditionState {
            value: Some(12.into()),
            limit: Some(0.into()),
            ..c("lag_bytes", Some(false))
        }]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["conditions"][0]["name"], "lag_bytes");
        assert_eq!(v["conditions"][0]["holds"], false);
        assert_eq!(v["conditions"][0]["value"], 12);
        assert_eq!(v["conditions"][0]["limit"], 0);
        assert!(v["conditions"][0].get("detail").is_some());
    }
}
