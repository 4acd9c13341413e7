//! The conditions of rollback readiness, judged from what was read. Pure, so that `pgbridge
//! ready` and the running bridge judge alike and the rules are tested without a server.
//!
//! Every condition holds, does not hold, or cannot be told (`Err` readings, with why and how to
//! fix that); [`crate::telemetry::rollback::Readiness::new`] makes the verdict.

use std::time::Duration;

use serde_json::Value;

use crate::config::ReadyLimits;
use crate::lsn::Lsn;
use crate::ops::copy::progress::human_bytes;
use crate::ops::lag::SlotState;
use crate::state::dead_letters::Summary;
use crate::telemetry::rollback::ConditionState;

/// A fact that could be read, or why it could not (and how to fix that).
pub type Reading<T> = std::result::Result<T, String>;

/// The conditions, a fixed set: their names are the values of the `condition` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Bridge,
    LagBytes,
    LagSeconds,
    DeadLetters,
    SchemaDrift,
    Slot,
    Reverse,
}

impl Condition {
    pub const ALL: [Condition; 7] = [
        Condition::Bridge,
        Condition::LagBytes,
        Condition::LagSeconds,
        Condition::DeadLetters,
        Condition::SchemaDrift,
        Condition::Slot,
        Condition::Reverse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Bridge => "bridge",
            Condition::LagBytes => "lag_bytes",
            Condition::LagSeconds => "lag_seconds",
            Condition::DeadLetters => "dead_letters",
            Condition::SchemaDrift => "schema_drift",
            Condition::Slot => "slot",
            Condition::Reverse => "reverse",
        }
    }
}

fn judged(condition: Condition, holds: bool, detail: String) -> ConditionState {
    ConditionState {
        name: condition.as_str(),
        holds: Some(holds),
        detail,
        value: None,
        limit: None,
    }
}

fn unknown(condition: Condition, why: &str) -> ConditionState {
    ConditionState {
        name: condition.as_str(),
        holds: None,
        detail: format!("cannot tell: {why}"),
        value: None,
        limit: None,
    }
}

fn measured(mut state: ConditionState, value: impl Into<Value>, limit: impl Into<Value>) -> ConditionState {
    state.value = Some(value.into());
    state.limit = Some(limit.into());
    state
}

/// Who keeps blue current.
#[derive(Clone, Debug, PartialEq)]
pub enum Activity {
    /// A walsender holds the slot (normally `pgbridge run`); `behind_for`: how long blue's
    /// checkpoint has stood still while green's WAL is ahead of it (`None`: it is at green's
    /// position).
    Streaming { behind_for: Option<Duration> },
    /// Nothing holds the slot. `pending`: the oldest green transaction with published changes
    /// blue lacks, as (end position, age in seconds).
    Stopped {
        applied: Lsn,
        green: Lsn,
        pending: Option<(Lsn, f64)>,
    },
    /// Nothing keeps blue current and nothing can (no slot, no checkpoint, a failed bridge),
    /// with why and what to do.
    Down(String),
}

/// `bridge`: a bridge streams and blue's checkpoint advances, or none runs and blue has every
/// published transaction green committed.
pub fn bridge(activity: Reading<Activity>, limits: &ReadyLimits) -> ConditionState {
    let c = Condition::Bridge;
    match activity {
        Err(why) => unknown(c, &why),
        Ok(Activity::Streaming { behind_for: None }) => {
            judged(c, true, "streaming; blue's checkpoint is at green's WAL position".into())
        }
        Ok(Activity::Streaming {
            behind_for: Some(still),
        }) if still > limits.max_stall => judged(
            c,
            false,
            format!(
                "streaming, but blue's checkpoint has not moved for {} while green's WAL is ahead of it (limit {}): \
                 is `pgbridge run` stuck? Its log, and pg_stat_activity on blue (a lock?), say why",
                seconds(still.as_secs_f64()),
                seconds(limits.max_stall.as_secs_f64())
            ),
        ),
        Ok(Activity::Streaming {
            behind_for: Some(still),
        }) => judged(
            c,
            true,
            format!("streaming; blue's checkpoint moved {} ago", seconds(still.as_secs_f64())),
        ),
        Ok(Activity::Stopped {
            applied,
            green,
            pending: None,
        }) => judged(
            c,
            true,
            format!(
                "not running, and blue has every published transaction green committed (applied {applied}, green at {green})"
            ),
        ),
        Ok(Activity::Stopped {
            applied,
            pending: Some((end, age)),
            ..
        }) => judged(
            c,
            false,
            format!(
                "not running, and blue lacks green transactions from the one ending at {end} (committed {} ago; blue \
                 applied up to {applied}): start `pgbridge run`; if it stopped on an error, its log names the \
                 table, row or change and the fix (docs/runbook.md, \"A row blue refuses\")",
                seconds(age)
            ),
        ),
        Ok(Activity::Down(why)) => judged(c, false, why),
    }
}

/// `lag_bytes`: green's WAL position minus blue's checkpoint, at most the limit.
pub fn lag_bytes(value: Reading<u64>, max: u64) -> ConditionState {
    let c = Condition::LagBytes;
    match value {
        Err(why) => unknown(c, &why),
        Ok(bytes) => measured(
            judged(
                c,
                bytes <= max,
                format!("{}, limit {}", exact_bytes(bytes), exact_bytes(max)),
            ),
            bytes,
            max,
        ),
    }
}

/// `lag_seconds`: the age of the oldest green transaction blue lacks, at most the limit.
pub fn lag_seconds(value: Reading<f64>, max: f64) -> ConditionState {
    let c = Condition::LagSeconds;
    match value {
        Err(why) => unknown(c, &why),
        Ok(s) if !s.is_finite() => unknown(c, "the age of the oldest transaction blue lacks is not known yet"),
        Ok(s) => measured(
            judged(c, s <= max, format!("{s:.3} s, limit {max} s")),
            (s * 1000.0).round() / 1000.0,
            max,
        ),
    }
}

/// `dead_letters`: no row parked for the slot (since `since`, when given): a parked row is a
/// row blue lacks or holds differently.
pub fn dead_letters(found: Reading<Summary>, table: &str, since: Option<&str>) -> ConditionState {
    let c = Condition::DeadLetters;
    let when = since.map_or(String::new(), |t| format!(" since {t}"));
    match found {
        Err(why) => unknown(c, &why),
        Ok(Summary { count: 0, .. }) => measured(judged(c, true, format!("none in {table}{when}")), 0, 0),
        Ok(Summary { count, newest }) => {
            let at_least = if count >= Summary::COUNT_CAP as u64 {
                "at least "
            } else {
                ""
            };
            measured(
                judged(
                    c,
                    false,
                    format!(
                        "{at_least}{count} row(s) in {table}{when}, the newest parked at {}: blue lacks them; make blue \
                         accept them and have green send them again (docs/runbook.md, \"A row blue refuses\"; never \
                         write them on blue by hand while the bridge to green runs), then delete them from {table} (or \
                         pass --since a time after the last one handled)",
                        newest.as_deref().unwrap_or("?")
                    ),
                ),
                count,
                0,
            )
        }
    }
}

/// `schema_drift`: both catalogs match the accepted plan. `Ok(None)`: no plan was accepted;
/// `Ok(Some(changes))`: what changed, one line each.
pub fn schema_drift(found: Reading<Option<Vec<String>>>) -> ConditionState {
    let c = Condition::SchemaDrift;
    match found {
        Err(why) => unknown(c, &why),
        Ok(None) => unknown(
            c,
            "blue holds no accepted plan to compare with (set up by an older pgbridge?); run `pgbridge setup` to store it",
        ),
        Ok(Some(changes)) if changes.is_empty() => measured(
            judged(c, true, "both catalogs match the accepted plan".into()),
            0,
            0,
        ),
        Ok(Some(changes)) => {
            // The same change found by several checks (recorded, compared, carried) once.
            let mut seen = std::collections::HashSet::new();
            let changes: Vec<String> = changes
                .into_iter()
                .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|c| seen.insert(c.clone()))
                .collect();
            let n = changes.len();
            measured(
                judged(
                    c,
                    false,
                    format!(
                        "{n} change(s) since `pgbridge setup` accepted the plan: {}; see `pgbridge check`",
                        changes.join("; ")
                    ),
                ),
                n,
                0,
            )
        }
    }
}

/// What `slot` is judged by.
pub struct SlotFacts<'a> {
    pub name: &'a str,
    /// The slot on green; `None` when it does not exist.
    pub slot: Option<&'a SlotState>,
    /// Blue's checkpoint, when known.
    pub checkpoint: Option<Lsn>,
    /// Why green is not on the timeline blue's checkpoint was recorded on (`None`: it is, or
    /// nothing was recorded).
    pub timeline: Reading<Option<String>>,
}

/// `slot`: it exists, is not invalidated nor about to be, retains at most the limit, has not
/// confirmed beyond blue's checkpoint, and green is on the timeline the checkpoint was made on.
pub fn slot(facts: Reading<SlotFacts<'_>>, max_retained: u64) -> ConditionState {
    let c = Condition::Slot;
    let facts = match facts {
        Err(why) => return unknown(c, &why),
        Ok(f) => f,
    };
    let name = facts.name;
    let resync = "re-synchronize blue with `pgbridge teardown` and `pgbridge setup --copy`";
    let Some(slot) = facts.slot else {
        return judged(
            c,
            false,
            format!("{name} does not exist on green: blue misses every change since it went; {resync}"),
        );
    };
    let status = slot.wal_status.as_deref().unwrap_or("?");
    let problem = if slot.lost || status == "lost" {
        Some(format!(
            "{name} was invalidated (wal_status = lost): green no longer has what blue lacks; {resync}"
        ))
    } else if status == "unreserved" {
        Some(format!(
            "{name} has wal_status = unreserved: green is about to remove WAL it holds (max_slot_wal_keep_size), \
             which would invalidate it; let the bridge catch up, or raise max_slot_wal_keep_size"
        ))
    } else if let Some(confirmed) = slot.confirmed.filter(|c| facts.checkpoint.is_some_and(|cp| *c > cp)) {
        Some(format!(
            "{name} has confirmed {confirmed}, beyond blue's checkpoint {}: green will not send the changes in \
             between again; {resync}",
            facts.checkpoint.unwrap_or_default()
        ))
    } else {
        None
    };
    let retained = slot.retained_bytes;
    let problem = problem.or_else(|| match &facts.timeline {
        Ok(Some(why)) => Some(why.clone()),
        _ => None,
    });
    if let Some(problem) = problem {
        return measured(judged(c, false, problem), retained, max_retained);
    }
    if let Err(why) = facts.timeline {
        return unknown(c, &why);
    }
    let holds = retained <= max_retained;
    let advice = if holds {
        ""
    } else {
        ": green's disk fills and the slot may be invalidated; let the bridge catch up (a long transaction on green \
         also holds WAL back)"
    };
    measured(
        judged(
            c,
            holds,
            format!(
                "{name}: wal_status {status}, retains {} of WAL, limit {}{advice}",
                exact_bytes(retained),
                exact_bytes(max_retained)
            ),
        ),
        retained,
        max_retained,
    )
}

/// `reverse`: the configuration for the other direction is what a switchover needs.
/// `Ok(problems)`: every problem found, none when it is.
pub fn reverse(path: &str, problems: Reading<Vec<String>>) -> ConditionState {
    let c = Condition::Reverse;
    match problems {
        Err(why) => unknown(c, &why),
        Ok(p) if p.is_empty() => judged(
            c,
            true,
            format!("{path} pairs with this bridge and validates against both catalogs"),
        ),
        Ok(p) => measured(judged(c, false, format!("{path}: {}", p.join("; "))), p.len(), 0),
    }
}

/// Seconds for people: "42.0 s", "3m 5s".
fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        humantime::format_duration(Duration::from_secs(s as u64)).to_string()
    }
}

/// Bytes for people, exact below 1 kB.
fn exact_bytes(b: u64) -> String {
    if b < 1024 {
        format!("{b} bytes")
    } else {
        format!("{} ({b} bytes)", human_bytes(b))
    }
}

#[cfg(test)]
mod tests;
