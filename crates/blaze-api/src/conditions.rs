//! Status conditions as the Kubernetes API conventions define them: one entry per type,
//! `observedGeneration` on each, and `lastTransitionTime` that moves only when the status
//! flips, so that writing the same observation twice changes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `True`, `False` or `Unknown`, as the API spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Nobody knows yet.
    Unknown,
}

impl ConditionStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// An observation to record in a conditions list.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Condition type (`Ready`, ...).
    pub type_: &'a str,
    /// Its status.
    pub status: ConditionStatus,
    /// A CamelCase reason.
    pub reason: &'a str,
    /// What a person should know, and do.
    pub message: String,
    /// The object's `metadata.generation` the observation is of.
    pub generation: Option<i64>,
}

/// Records `obs` in `conditions`, keeping `lastTransitionTime` unless the status flipped.
/// Returns whether anything changed, so callers write status only when it did.
pub fn set_condition(conditions: &mut Vec<Condition>, obs: Observed<'_>, now: Timestamp) -> bool {
    let status = obs.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == obs.type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != status {
                c.status = status.to_owned();
                c.last_transition_time = Time(now);
            }
            c.reason = obs.reason.to_owned();
            c.message = obs.message;
            c.observed_generation = obs.generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: obs.type_.to_owned(),
                status: status.to_owned(),
                reason: obs.reason.to_owned(),
                message: obs.message,
                observed_generation: obs.generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(status: bool, reason: &str, generation: i64) -> Observed<'_> {
        Observed {
            type_: "Ready",
            status: status.into(),
            reason,
            message: format!("{reason} message"),
            generation: Some(generation),
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let mut c = Vec::new();
        assert!(set_condition(&mut c, obs(false, "Loading", 1), t0));
        assert_eq!(c[0].last_transition_time.0, t0);

        // Same status, same everything: no change, nothing to write.
        assert!(!set_condition(&mut c, obs(false, "Loading", 1), t1));
        // Same status, new reason and generation: a change, but the time stays.
        assert!(set_condition(&mut c, obs(false, "Pulling", 2), t1));
        assert_eq!(c[0].last_transition_time.0, t0);
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(c[0].reason, "Pulling");

        // A flip moves the time.
        assert!(set_condition(&mut c, obs(true, "Serving", 2), t2));
        assert_eq!(c[0].last_transition_time.0, t2);
        assert_eq!(c.len(), 1);
        assert!(is_true(&c, "Ready"));
        assert!(!is_true(&c, "Degraded"));
    }
}
