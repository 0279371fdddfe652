//! Deployment rollout arithmetic, as kube-controller-manager's deployment controller does it.
//!
//! Pure: given the Deployment's desired replicas and strategy and the replica counts of its
//! new and old ReplicaSets, say what each ReplicaSet should be scaled to next. The API-facing
//! controller calls this on every change and applies the result.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A ReplicaSet as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsCounts {
    /// Name, to report decisions by.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// Pods that are available (ready for `minReadySeconds`).
    pub available: i32,
}

/// The rolling update bounds, resolved against the desired replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Pods allowed above `replicas` during a rollout.
    pub max_surge: i32,
    /// Pods allowed below `replicas` during a rollout.
    pub max_unavailable: i32,
}

/// Resolves `maxSurge` (percent rounds up, default 25%) and `maxUnavailable` (percent rounds
/// down, default 25%). Both zero would deadlock, so unavailability becomes 1, as upstream.
pub fn bounds(
    replicas: i32,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
) -> Bounds {
    let quarter = IntOrString::String("25%".into());
    let resolve = |v: &IntOrString, round_up: bool| match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = pct * replicas as f64 / 100.0;
            (if round_up { exact.ceil() } else { exact.floor() }) as i32
        }
    };
    let max_surge = resolve(max_surge.unwrap_or(&quarter), true);
    let mut max_unavailable = resolve(max_unavailable.unwrap_or(&quarter), false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Bounds { max_surge, max_unavailable: max_unavailable.min(replicas) }
}

/// The next scale for the new ReplicaSet under a rolling update.
pub fn next_new_replicas(desired: i32, bounds: Bounds, new: &RsCounts, olds: &[RsCounts]) -> i32 {
    if new.replicas >= desired {
        return desired;
    }
    let total: i32 = new.replicas + olds.iter().map(|o| o.replicas).sum::<i32>();
    let max_total = desired + bounds.max_surge;
    if total >= max_total {
        return new.replicas;
    }
    new.replicas + (max_total - total).min(desired - new.replicas)
}

/// The next scale of each old ReplicaSet (same order as `olds`, oldest first) under a rolling
/// update: unhealthy old pods go first, then available ones, never below
/// `desired - maxUnavailable` available pods in all.
pub fn next_old_replicas(
    desired: i32,
    bounds: Bounds,
    new: &RsCounts,
    olds: &[RsCounts],
) -> Vec<i32> {
    let mut next: Vec<i32> = olds.iter().map(|o| o.replicas).collect();
    let old_total: i32 = next.iter().sum();
    if old_total == 0 {
        return next;
    }
    let all = old_total + new.replicas;
    let min_available = desired - bounds.max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return next;
    }
    // Pods of old ReplicaSets that are not available cost nothing to remove.
    for (slot, old) in next.iter_mut().zip(olds) {
        let unhealthy = (old.replicas - old.available).max(0).min(budget);
        *slot -= unhealthy;
        budget -= unhealthy;
        if budget == 0 {
            break;
        }
    }
    let available_total: i32 =
        new.available + olds.iter().zip(&next).map(|(o, n)| o.available.min(*n)).sum::<i32>();
    let mut scale_down = (available_total - min_available).max(0);
    for slot in next.iter_mut() {
        if scale_down == 0 {
            break;
        }
        let cut = (*slot).min(scale_down);
        *slot -= cut;
        scale_down -= cut;
    }
    next
}

/// A Deployment's `Available` and `Progressing` condition values:
/// `(available, available_reason, progressing_reason)`.
pub fn condition_reasons(
    desired: i32,
    bounds: Bounds,
    updated: i32,
    available: i32,
    total: i32,
) -> (bool, &'static str, &'static str) {
    let is_available = available >= desired - bounds.max_unavailable;
    let available_reason =
        if is_available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" };
    let complete = updated == desired && total == desired && available >= desired;
    let progressing_reason = if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" };
    (is_available, available_reason, progressing_reason)
}

#[cfg(test)]
mod tests;
