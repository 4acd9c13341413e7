//! The lag poller: green's position and what the stream has not delivered yet, for the lag
//! gauges, while the bridge runs; after each poll, rollback readiness ([`super::readiness`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::ops::lag;
use crate::telemetry::{Telemetry, Verdict};

/// How often the poller reads green's position for the lag gauges.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often it polls until the first session has read blue's checkpoint.
const POLL_INTERVAL_AT_START: Duration = Duration::from_millis(100);

/// Every two seconds: green's WAL position and the WAL its slot retains, and what the stream
/// has not delivered yet, for the lag gauges (see [`crate::telemetry`]).
pub(super) async fn poll_green(config: Arc<Config>, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let mut client = None;
    // Green's WAL position at the previous poll.
    let mut previous: Option<Lsn> = None;
    let mut unknown = UnknownLog::default();
    let mut readiness = super::readiness::Watch::default();
    loop {
        if client.is_none() {
            client = crate::connect::connect_green_sql(&config).await.ok();
        }
        // Before the first session has read blue's checkpoint the verdict is unknown: poll
        // again soon, so that it is not left unknown for a whole interval once it is known.
        let started = !telemetry.applied_lsn().is_zero();
        if let Some(c) = &client {
            match lag::green_state(&config, c).await {
                Ok(state) => {
                    telemetry.green_position(state.wal, state.retained_bytes());
                    let verdict = undelivered(&config, &telemetry, c, &state, previous, &mut unknown).await;
                    telemetry.set_verdict(verdict);
                    telemetry.refresh();
                    readiness.evaluate(&config, &telemetry, Ok(&state)).await;
                    previous = Some(state.wal);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "polling green's position failed; retrying");
                    readiness.evaluate(&config, &telemetry, Err(e.to_string())).await;
                    client = None;
                }
            }
        } else {
            let why = format!(
                "cannot connect to green ({}) to read its position",
                config.green.address()
            );
            readiness.evaluate(&config, &telemetry, Err(why)).await;
        }
        let pause = if started { POLL_INTERVAL } else { POLL_INTERVAL_AT_START };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What blue lacks beyond the transactions the applier has received. Cheap unless the stream
/// is behind what green had at the previous poll: then the slot is decoded, as `lag` does.
async fn undelivered(
    config: &Config,
    telemetry: &Telemetry,
    green: &tokio_postgres::Client,
    state: &lag::GreenState,
    previous: Option<Lsn>,
    unknown: &mut UnknownLog,
) -> Verdict {
    let applied = telemetry.applied_lsn();
    if applied.is_zero() {
        return Verdict::Unknown;
    }
    // Blue has everything the slot confirmed (rule 2; a session checks it in the right order
    // at start, see `pipeline::session`). Beyond what this process applied, the slot can only
    // have been moved by another pgbridge that holds it while this one waits: what this one
    // knows is stale, not blue's loss.
    let confirmed = state.slot.as_ref().and_then(|s| s.confirmed).unwrap_or_default();
    let applied = applied.max(confirmed);
    if telemetry.oldest_received().is_some() || applied >= state.wal {
        return Verdict::Nothing;
    }
    // Everything green had written by the previous poll has been sent, so anything not
    // received is younger than one poll.
    if previous.is_some_and(|p| telemetry.received_lsn() >= p) {
        return Verdict::Nothing;
    }
    // The oldest transaction green has not sent stays the oldest until blue has it: decoding
    // a copy of the slot again (the whole of a large transaction, beside the walsender doing
    // the same) would tell nothing new.
    if let Verdict::Pending { end_lsn, .. } = telemetry.verdict() {
        if end_lsn > applied {
            return telemetry.verdict();
        }
    }
    match lag::oldest_pending(config, green, state, applied, lag::Reader::CopyOnly).await {
        Ok(found) => {
            tracing::debug!(applied = %applied, green = %state.wal, ?found, "stream behind green's previous position: decoded a copy of the slot");
            unknown.clear();
            found.map_or(Verdict::Nothing, |p| Verdict::Pending {
                end_lsn: p.end_lsn,
                commit_time: p.commit_time,
            })
        }
        Err(e) => {
            unknown.warn(&e);
            Verdict::Unknown
        }
    }
}

/// Logs why lag_seconds cannot be told once per distinct reason, not every poll.
#[derive(Default)]
struct UnknownLog(Option<String>);

impl UnknownLog {
    fn warn(&mut self, e: &Error) {
        let text = e.to_string();
        if self.0.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "cannot tell what green has not sent yet: pgbridge_lag_seconds is NaN while nothing received is pending");
            self.0 = Some(text);
        }
    }

    fn clear(&mut self) {
        if self.0.take().is_some() {
            tracing::info!("what green has not sent yet can be told again (pgbridge_lag_seconds)");
        }
    }
}
