use super::*;

fn rs(name: &str, replicas: i32, available: i32) -> RsCounts {
    RsCounts { name: name.into(), replicas, available }
}

#[test]
fn bounds_round_like_upstream() {
    let pct = |s: &str| IntOrString::String(s.into());
    assert_eq!(bounds(10, None, None), Bounds { max_surge: 3, max_unavailable: 2 });
    assert_eq!(
        bounds(3, Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0))).max_unavailable,
        1
    );
    assert_eq!(
        bounds(3, Some(&pct("50%")), Some(&pct("50%"))),
        Bounds { max_surge: 2, max_unavailable: 1 }
    );
}

/// Simulates a whole rollout where every pod becomes available as soon as it exists, and
/// checks the invariants at each step.
#[test]
fn a_rollout_never_drops_below_the_availability_floor_nor_exceeds_the_surge() {
    for (surge, unavail) in [(1, 0), (0, 1), (1, 1), (2, 0), (3, 2)] {
        let desired = 4;
        let b = bounds(desired, Some(&IntOrString::Int(surge)), Some(&IntOrString::Int(unavail)));
        let mut new = rs("new", 0, 0);
        let mut olds = vec![rs("old", desired, desired)];
        for step in 0..50 {
            new.replicas = next_new_replicas(desired, b, &new, &olds);
            let total = new.replicas + olds.iter().map(|o| o.replicas).sum::<i32>();
            assert!(total <= desired + b.max_surge, "surge exceeded at step {step}");
            // New pods become available one step later.
            let next = next_old_replicas(desired, b, &new, &olds);
            for (o, n) in olds.iter_mut().zip(next) {
                o.replicas = n;
                o.available = o.available.min(n);
            }
            let available = new.available + olds.iter().map(|o| o.available).sum::<i32>();
            assert!(
                available >= desired - b.max_unavailable,
                "floor broken at step {step} ({surge},{unavail})"
            );
            new.available = new.replicas;
            if new.replicas == desired && olds.iter().all(|o| o.replicas == 0) {
                break;
            }
            assert!(step < 49, "rollout did not finish with surge {surge} unavailable {unavail}");
        }
    }
}

#[test]
fn unhealthy_old_pods_go_first() {
    let b = Bounds { max_surge: 1, max_unavailable: 0 };
    let new = rs("new", 1, 0);
    let olds = [rs("old-a", 2, 0), rs("old-b", 3, 3)];
    // 6 pods, a floor of 3 available, 1 new pod not yet available: 2 may go, the unavailable ones.
    assert_eq!(next_old_replicas(3, b, &new, &olds), vec![0, 3]);
}

#[test]
fn conditions() {
    let b = Bounds { max_surge: 1, max_unavailable: 1 };
    assert_eq!(
        condition_reasons(3, b, 3, 3, 3),
        (true, "MinimumReplicasAvailable", "NewReplicaSetAvailable")
    );
    assert_eq!(
        condition_reasons(3, b, 1, 2, 4),
        (true, "MinimumReplicasAvailable", "ReplicaSetUpdated")
    );
    assert_eq!(
        condition_reasons(3, b, 3, 1, 3),
        (false, "MinimumReplicasUnavailable", "ReplicaSetUpdated")
    );
}
