//! `pgbridge ready`: whether a rollback to blue now would lose nothing, condition by condition,
//! read from the databases (whether or not `pgbridge run` is up) and judged by [`judge`], which
//! the running bridge uses too (`crate::ops::run`, for `pgbridge_rollback_ready` and
//! `/status`).
//!
//! The conditions: `bridge` (a bridge streams and blue's checkpoint advances, or none runs and
//! blue has every published transaction green committed), `lag_bytes`, `lag_seconds` (measured
//! by [`super::lag`], exactly as `pgbridge lag`), `dead_letters` (no row parked for the slot,
//! since `--since`), `schema_drift` (both catalogs match the accepted plan, as `status` and
//! `check` compare them), `slot` (exists, not invalidated nor about to be, retains at most
//! `[ready] max_retained_bytes`, green on the timeline blue's checkpoint was made on), and with
//! `--reverse` only, `reverse` (the other direction's configuration pairs with this one and
//! validates against both catalogs, as `switchover` needs).
//!
//! A side that cannot be reached leaves the conditions that read it unknown, with why; the
//! others are still judged, so a condition that definitely fails still says "not ready".

pub mod judge;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use crate::config::{Config, ReadyLimits};
use crate::error::Error;
use crate::ops::lag::{self, GreenState, Lag};
use crate::state::{checkpoint, dead_letters};
use crate::telemetry::rollback::Readiness;
use judge::{Activity, Reading, SlotFacts};

/// What `ready` was asked.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Over `[ready] max_bytes`.
    pub max_bytes: Option<u64>,
    /// Over `[ready] max_seconds`.
    pub max_seconds: Option<f64>,
    /// Dead letters parked before this time do not count.
    pub since: Option<SystemTime>,
    /// The configuration of the bridge in the other direction.
    pub reverse: Option<PathBuf>,
}

/// The limits `options` leave from the configuration.
pub fn limits(config: &Config, options: &Options) -> ReadyLimits {
    ReadyLimits {
        max_bytes: options.max_bytes.unwrap_or(config.ready.max_bytes),
        max_seconds: options.max_seconds.unwrap_or(config.ready.max_seconds),
        ..config.ready.clone()
    }
}

/// Everything read from both sides; each part is a [`Reading`].
struct Read {
    green: Reading<GreenState>,
    checkpoint: Reading<Option<checkpoint::Checkpoint>>,
    /// Seconds since blue's checkpoint moved.
    checkpoint_age: Reading<Option<f64>>,
    timeline: Reading<Option<String>>,
    lag: Reading<Lag>,
    dead_letters: Reading<dead_letters::Summary>,
    drift: Reading<Option<Vec<String>>>,
}

/// Reads both sides and judges every condition.
pub async fn evaluate(config: &Config, options: &Options) -> Readiness {
    let limits = limits(config, options);
    let since = options.since.map(|t| humantime::format_rfc3339_micros(t).to_string());
    let mut read = read(config, since.as_deref()).await;
    let lag_bytes = match (&read.lag, &read.checkpoint, &read.green) {
        (Ok(lag), _, _) => Ok(lag.lag_bytes),
        // `lag` could not tell lag_seconds; the position difference needs no more.
        // Not when the checkpoint is ahead of green's WAL: that is no lag of 0 (`lag` says what).
        (Err(_), Ok(Some(cp)), Ok(green)) if cp.lsn <= green.wal => Ok(cp.lsn.bytes_until(green.wal)),
        (Err(why), _, _) => Err(why.clone()),
    };
    if lag_bytes.as_ref().is_ok_and(|b| *b > 0) {
        recheck_stall(config, &limits, &mut read).await;
    }
    let mut conditions = vec![
        judge::bridge(activity(config, &read, lag_bytes.as_ref().ok().copied()), &limits),
        judge::lag_bytes(lag_bytes, limits.max_bytes),
        judge::lag_seconds(
            read.lag.as_ref().map(|l| l.lag_seconds).map_err(Clone::clone),
            limits.max_seconds,
        ),
        judge::dead_letters(read.dead_letters.clone(), &dead_letter_table(config), since.as_deref()),
        judge::schema_drift(read.drift.clone()),
        judge::slot(slot_facts(config, &read), limits.max_retained_bytes),
    ];
    if let Some(path) = &options.reverse {
        conditions.push(judge::reverse(
            &path.display().to_string(),
            reverse_problems(config, path).await,
        ));
    }
    Readiness::new(conditions)
}

pub fn dead_letter_table(config: &Config) -> String {
    format!("{}.dead_letter", config.schema)
}

fn text(e: Error) -> String {
    e.to_string()
}

/// Reads what every condition needs, each part on its own: a side that cannot be reached
/// leaves only what depends on it unknown.
async fn read(config: &Config, since: Option<&str>) -> Read {
    let green = crate::connect::connect_green_sql(config).await.map_err(text);
    let blue = crate::connect::connect_blue(&config.blue).await.map_err(text);
    let green_state = match &green {
        Ok(g) => lag::green_state(config, g).await.map_err(text),
        Err(why) => Err(why.clone()),
    };
    let (checkpoint, checkpoint_age, dead_letters) = match &blue {
        Ok(b) => (
            checkpoint::read(b, &config.schema, &config.slot).await.map_err(text),
            checkpoint::age_seconds(b, &config.schema, &config.slot)
                .await
                .map_err(text),
            dead_letters::summary(b, &config.schema, &config.slot, since)
                .await
                .map_err(text),
        ),
        Err(why) => (Err(why.clone()), Err(why.clone()), Err(why.clone())),
    };
    let (timeline, lag, drift) = match (&green, &blue, &green_state) {
        (Ok(g), Ok(b), Ok(state)) => both_sides(config, g, b, state, &checkpoint).await,
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
            (Err(why.clone()), Err(why.clone()), Err(why.clone()))
        }
    };
    Read {
        green: green_state,
        checkpoint,
        checkpoint_age,
        timeline,
        lag,
        dead_letters,
        drift,
    }
}

/// A checkpoint that has stood still for longer than `max_stall` may only be about to move:
/// green idle for a while, then writing just before it was read. A streaming bridge moves it
/// within milliseconds, so it is read again for up to a second before the bridge counts as
/// stuck.
async fn recheck_stall(config: &Config, limits: &ReadyLimits, read: &mut Read) {
    let streaming = read
        .green
        .as_ref()
        .is_ok_and(|g| g.slot.as_ref().is_some_and(|s| s.active));
    let stalled =
        |age: &Reading<Option<f64>>| matches!(age, Ok(Some(a)) if Duration::from_secs_f64(*a) > limits.max_stall);
    if !streaming || !stalled(&read.checkpoint_age) {
        return;
    }
    let Ok(blue) = crate::connect::connect_blue(&config.blue).await else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let age = checkpoint::age_seconds(&blue, &config.schema, &config.slot)
            .await
            .map_err(text);
        if !stalled(&age) {
            read.checkpoint_age = age;
            return;
        }
    }
}

type BothSides = (Reading<Option<String>>, Reading<Lag>, Reading<Option<Vec<String>>>);

/// What needs both sides: green's timeline against blue's record, lag, and drift.
async fn both_sides(
    config: &Config,
    green: &Client,
    blue: &Client,
    state: &GreenState,
    checkpoint: &Reading<Option<checkpoint::Checkpoint>>,
) -> BothSides {
    let mut timeline = lag::timeline_problem(config, blue, state.timeline).await.map_err(text);
    // Green restored to an earlier state on the same timeline: blue's checkpoint is ahead of
    // green's WAL (read again: `state` was read before the checkpoint).
    if let (Ok(None), Ok(Some(cp))) = (&timeline, checkpoint) {
        if cp.lsn > state.wal {
            timeline = crate::state::server::checkpoint_ahead(green, cp.lsn)
                .await
                .map_err(text);
        }
    }
    let lag = match checkpoint {
        Ok(Some(_)) => lag::measure_at(config, green, blue, state).await.map_err(text),
        Ok(None) => Err(not_set_up(config)),
        Err(why) => Err(why.clone()),
    };
    let drift = crate::drift::for_rollback(config, green, blue)
        .await
        .map(|found| found.map(|f| f.iter().map(|f| format!("{}: {}", f.green_table, f.text())).collect()))
        .map_err(text);
    (timeline, lag, drift)
}

fn not_set_up(config: &Config) -> String {
    format!(
        "blue has no checkpoint for slot {} in {}.checkpoint: the bridge is not set up; run `pgbridge setup`",
        config.slot, config.schema
    )
}

/// Who keeps blue current, from what was read.
fn activity(config: &Config, read: &Read, lag_bytes: Option<u64>) -> Reading<Activity> {
    let green = read.green.as_ref().map_err(Clone::clone)?;
    let Some(slot) = &green.slot else {
        return Ok(Activity::Down(format!(
            "slot {} does not exist on green, so nothing keeps blue current; see the slot condition",
            config.slot
        )));
    };
    let Some(cp) = read.checkpoint.as_ref().map_err(Clone::clone)? else {
        return Ok(Activity::Down(not_set_up(config)));
    };
    if slot.active {
        let behind_for = match lag_bytes {
            Some(0) => None,
            _ => read
                .checkpoint_age
                .as_ref()
                .map_err(Clone::clone)?
                .map(Duration::from_secs_f64),
        };
        return Ok(Activity::Streaming { behind_for });
    }
    let lag = read.lag.as_ref().map_err(Clone::clone)?;
    Ok(Activity::Stopped {
        applied: cp.lsn,
        green: green.wal,
        pending: lag.pending.as_ref().map(|p| (p.end_lsn, lag.lag_seconds)),
    })
}

fn slot_facts<'a>(config: &'a Config, read: &'a Read) -> Reading<SlotFacts<'a>> {
    let green = read.green.as_ref().map_err(Clone::clone)?;
    Ok(SlotFacts {
        name: &config.slot,
        slot: green.slot.as_ref(),
        checkpoint: read.checkpoint.as_ref().ok().and_then(Option::as_ref).map(|c| c.lsn),
        timeline: read.timeline.clone(),
    })
}

/// What keeps `reverse` from serving a switchover: the pairing of both configurations by the
/// servers they reach (as `switchover` checks it) and, against both live catalogs, every problem `check -c PATH`
/// would list. Not the application roles: `switchover --app-role` checks those.
async fn reverse_problems(config: &Config, path: &std::path::Path) -> Reading<Vec<String>> {
    let reverse = match Config::load(path) {
        Ok(r) => r,
        Err(e) => return Ok(vec![e.to_string()]),
    };
    // A side that cannot be reached leaves the pairing, and so the condition, unknown.
    if let Some(problem) = super::switchover::reverse_problem(config, &reverse)
        .await
        .map_err(text)?
    {
        return Ok(vec![problem]);
    }
    let (green, blue) = crate::connect::both(&reverse).await.map_err(text)?;
    let report = super::preflight::validate(&reverse, &green, &blue)
        .await
        .map_err(text)?;
    Ok(report.problems)
}
