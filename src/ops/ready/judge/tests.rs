use super::*;

fn limits() -> ReadyLimits {
    ReadyLimits {
        max_bytes: 100,
        max_seconds: 5.0,
        max_retained_bytes: 1000,
        max_stall: Duration::from_secs(60),
    }
}

fn slot_state(active: bool, lost: bool, wal_status: &str, confirmed: u64, retained: u64) -> SlotState {
    SlotState {
        active,
        lost,
        confirmed: Some(Lsn(confirmed)),
        retained_bytes: retained,
        wal_status: Some(wal_status.into()),
    }
}

#[test]
fn condition_names_are_a_fixed_distinct_set() {
    let mut names: Vec<&str> = Condition::ALL.iter().map(|c| c.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Condition::ALL.len());
}

#[test]
fn a_streaming_bridge_holds_until_its_checkpoint_stalls() {
    let l = limits();
    assert_eq!(
        bridge(Ok(Activity::Streaming { behind_for: None }), &l).holds,
        Some(true)
    );
    let moving = Activity::Streaming {
        behind_for: Some(Duration::from_secs(3)),
    };
    assert_eq!(bridge(Ok(moving), &l).holds, Some(true));
    let stuck = bridge(
        Ok(Activity::Streaming {
            behind_for: Some(Duration::from_secs(61)),
        }),
        &l,
    );
    assert_eq!(stuck.holds, Some(false));
    assert!(stuck.detail.contains("stuck"), "{}", stuck.detail);
}

#[test]
fn a_stopped_bridge_holds_only_when_blue_has_everything() {
    let l = limits();
    let caught_up = Activity::Stopped {
        applied: Lsn(10),
        green: Lsn(20),
        pending: None,
    };
    assert_eq!(bridge(Ok(caught_up), &l).holds, Some(true));
    let behind = Activity::Stopped {
        applied: Lsn(10),
        green: Lsn(20),
        pending: Some((Lsn(15), 2.0)),
    };
    let c = bridge(Ok(behind), &l);
    assert_eq!(c.holds, Some(false));
    assert!(c.detail.contains("pgbridge run"), "{}", c.detail);
    assert_eq!(bridge(Ok(Activity::Down("no slot".into())), &l).holds, Some(false));
    assert_eq!(bridge(Err("green is down".into()), &l).holds, None);
}

#[test]
fn lags_are_held_to_their_limits_inclusive() {
    assert_eq!(lag_bytes(Ok(100), 100).holds, Some(true));
    let over = lag_bytes(Ok(101), 100);
    assert_eq!(over.holds, Some(false));
    assert_eq!(over.value, Some(101.into()));
    assert_eq!(over.limit, Some(100.into()));
    assert_eq!(lag_seconds(Ok(5.0), 5.0).holds, Some(true));
    assert_eq!(lag_seconds(Ok(5.5), 5.0).holds, Some(false));
    assert_eq!(lag_seconds(Ok(f64::NAN), 5.0).holds, None);
    let unknown = lag_seconds(Err("no free slot; raise max_replication_slots".into()), 5.0);
    assert_eq!(unknown.holds, None);
    assert!(
        unknown.detail.starts_with("cannot tell: no free slot"),
        "{}",
        unknown.detail
    );
}

#[test]
fn any_dead_letter_fails_and_says_how_to_clear_it() {
    let none = Summary { count: 0, newest: None };
    assert_eq!(dead_letters(Ok(none), "pgbridge.dead_letter", None).holds, Some(true));
    let some = Summary {
        count: 2,
        newest: Some("2024-05-01 10:00:00+00".into()),
    };
    let c = dead_letters(Ok(some), "pgbridge.dead_letter", Some("2024-05-01T09:00:00Z"));
    assert_eq!(c.holds, Some(false));
    assert!(
        c.detail.contains("2 row(s)") && c.detail.contains("--since"),
        "{}",
        c.detail
    );
}

#[test]
fn drift_without_an_accepted_plan_cannot_be_told() {
    assert_eq!(schema_drift(Ok(Some(vec![]))).holds, Some(true));
    assert_eq!(
        schema_drift(Ok(Some(vec!["t: column x added".into()]))).holds,
        Some(false)
    );
    assert_eq!(schema_drift(Ok(None)).holds, None);
}

fn facts(slot: Option<&SlotState>, timeline: Reading<Option<String>>) -> Reading<SlotFacts<'_>> {
    Ok(SlotFacts {
        name: "s",
        slot,
        checkpoint: Some(Lsn(50)),
        timeline,
    })
}

#[test]
fn the_slot_fails_missing_lost_unreserved_ahead_over_the_limit_or_on_another_timeline() {
    let ok = slot_state(true, false, "reserved", 40, 10);
    assert_eq!(slot(facts(Some(&ok), Ok(None)), 1000).holds, Some(true));
    assert_eq!(slot(facts(None, Ok(None)), 1000).holds, Some(false));
    for bad in [
        slot_state(false, true, "lost", 40, 10),
        slot_state(true, false, "unreserved", 40, 10),
        slot_state(true, false, "reserved", 60, 10),
        slot_state(true, false, "extended", 40, 1001),
    ] {
        assert_eq!(
            slot(facts(Some(&bad), Ok(None)), 1000).holds,
            Some(false),
            "{:?}",
            bad.wal_status
        );
    }
    let moved = slot(facts(Some(&ok), Ok(Some("green failed over".into()))), 1000);
    assert_eq!(moved.holds, Some(false));
    assert_eq!(slot(facts(Some(&ok), Err("blue is down".into())), 1000).holds, None);
    // A definite failure is told even when the timeline cannot be.
    assert_eq!(slot(facts(None, Err("blue is down".into())), 1000).holds, Some(false));
}

#[test]
fn reverse_holds_without_problems() {
    assert_eq!(reverse("r.toml", Ok(vec![])).holds, Some(true));
    assert_eq!(reverse("r.toml", Ok(vec!["same slot".into()])).holds, Some(false));
    assert_eq!(reverse("r.toml", Err("cannot connect".into())).holds, None);
}
