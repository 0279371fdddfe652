//! The events an operator would want in `kubectl describe`, from how status changed.

use blaze_api::BlazeEngineStatus;
use blaze_api::conditions::find;
use blaze_api::engine::condition_types as ct;

/// An event to publish (mapped onto `events.k8s.io/v1` by the controller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (something needs a person) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// Events for the flips between `old` and `new` and for a change of the desired size.
pub fn engine_events(old: Option<&BlazeEngineStatus>, new: &BlazeEngineStatus) -> Vec<Note> {
    let mut out = Vec::new();
    let empty = BlazeEngineStatus::default();
    let old = old.unwrap_or(&empty);
    for ty in [ct::READY, ct::MODEL_LOADED, ct::UNSCHEDULABLE, ct::DEGRADED, ct::CACHE_READY] {
        let Some(n) = find(&new.conditions, ty) else { continue };
        let before = find(&old.conditions, ty);
        if before.is_some_and(|b| b.status == n.status && b.reason == n.reason) {
            continue;
        }
        let bad = match ty {
            ct::UNSCHEDULABLE | ct::DEGRADED => n.status == "True",
            _ => {
                let on_its_way = ["Loading", "Downloading", "ScaledToZero"];
                n.status == "False" && !on_its_way.contains(&n.reason.as_str())
            }
        };
        // First observations that are fine, and recoveries from nothing, are not news. For
        // CacheReady only a fault and its end are: not its Unknown while no worker is ready.
        let from_nothing = match ty {
            ct::UNSCHEDULABLE | ct::DEGRADED => before.is_some_and(|b| b.status != "True"),
            ct::CACHE_READY => before.is_some_and(|b| b.status != "False"),
            _ => false,
        };
        if !bad && (before.is_none() || from_nothing) {
            continue;
        }
        // Conditions that flip for one cause (Ready copies ModelLoaded's reason) make one
        // event, not one each.
        if out.iter().any(|o: &Note| o.reason == n.reason && o.message == n.message) {
            continue;
        }
        out.push(Note { warning: bad, reason: n.reason.clone(), message: n.message.clone() });
    }
    if old.desired_replicas != new.desired_replicas && !old.conditions.is_empty() {
        out.push(Note {
            warning: false,
            reason: "Scaled".into(),
            message: format!(
                "desired workers {} -> {}",
                old.desired_replicas, new.desired_replicas
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use blaze_api::conditions::{ConditionStatus, Observed, set_condition};

    use super::*;

    fn with(conds: &[(&str, bool, &str)], desired: i32) -> BlazeEngineStatus {
        let mut s = BlazeEngineStatus { desired_replicas: desired, ..Default::default() };
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        for (t, b, r) in conds {
            let o = Observed {
                type_: t,
                status: ConditionStatus::from(*b),
                reason: r,
                message: format!("{r}!"),
                generation: Some(1),
            };
            set_condition(&mut s.conditions, o, now);
        }
        s
    }

    #[test]
    fn problems_warn_recoveries_inform_and_quiet_starts_say_nothing() {
        let start = with(
            &[
                ("Ready", false, "Loading"),
                ("Degraded", false, "AsExpected"),
                ("Unschedulable", false, "Scheduled"),
            ],
            1,
        );
        assert!(engine_events(None, &start).is_empty());
        // A model on its way is no problem: the step says so quietly.
        let downloading = with(&[("Ready", false, "Downloading")], 1);
        assert!(engine_events(Some(&start), &downloading).iter().all(|e| !e.warning));
        let stuck = with(
            &[
                ("Ready", false, "InsufficientGPU"),
                ("Degraded", false, "AsExpected"),
                ("Unschedulable", true, "InsufficientGPU"),
            ],
            1,
        );
        let ev = engine_events(Some(&start), &stuck);
        // Ready repeats Unschedulable's reason and message: one warning says it.
        assert!(ev.iter().all(|e| e.warning) && ev.len() == 1, "{ev:?}");
        let mut loaded_too = stuck.clone();
        let o = Observed {
            type_: "ModelLoaded",
            status: ConditionStatus::False,
            reason: "LoadFailed",
            message: "exit code 1".into(),
            generation: Some(1),
        };
        set_condition(&mut loaded_too.conditions, o, "2026-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(engine_events(Some(&start), &loaded_too).len(), 2, "different causes");
        assert!(engine_events(Some(&stuck), &stuck).is_empty(), "no repeat");
        let ok = with(
            &[
                ("Ready", true, "Serving"),
                ("Degraded", false, "AsExpected"),
                ("Unschedulable", false, "Scheduled"),
            ],
            3,
        );
        let ev = engine_events(Some(&stuck), &ok);
        assert!(ev.iter().any(|e| !e.warning && e.reason == "Serving"), "{ev:?}");
        assert!(ev.iter().any(|e| !e.warning && e.reason == "Scheduled"), "{ev:?}");
        assert!(
            ev.iter().any(|e| e.reason == "Scaled" && e.message == "desired workers 1 -> 3"),
            "{ev:?}"
        );
    }

    #[test]
    fn a_cache_fault_warns_and_its_end_informs_but_waiting_for_workers_is_quiet() {
        let cache = |status, reason: &str| {
            let mut s = with(&[("Ready", true, "Serving")], 1);
            let o = Observed {
                type_: "CacheReady",
                status,
                reason,
                message: format!("{reason}!"),
                generation: Some(1),
            };
            set_condition(&mut s.conditions, o, "2026-01-01T00:00:00Z".parse().unwrap());
            s
        };
        let waiting = cache(ConditionStatus::Unknown, "NoReadyPods");
        let ready = cache(ConditionStatus::True, "Ready");
        let down = cache(ConditionStatus::False, "RedisUnreachable");
        assert!(engine_events(None, &waiting).is_empty());
        assert!(engine_events(Some(&waiting), &ready).is_empty(), "a first verdict, fine");
        let ev = engine_events(Some(&ready), &down);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].warning && ev[0].reason == "RedisUnreachable", "{ev:?}");
        let ev = engine_events(Some(&down), &ready);
        assert!(ev.len() == 1 && !ev[0].warning && ev[0].reason == "Ready", "{ev:?}");
        assert!(engine_events(Some(&ready), &waiting).is_empty(), "scaled to zero: not news");
    }
}
