//! One `pgbridge run`: sessions of (blue connection, replication stream, applier), restarted
//! with capped exponential backoff after transient errors.
//!
//! Every session starts from blue's checkpoint, never from anything held in memory: what was
//! received but not committed on blue is simply received again.
//!
//! * [`session`]: one session, and which side an error came from;
//! * [`replay`]: what the next session does after one failed (a pure decision);
//! * [`backoff`]: how long to wait before reconnecting.

pub(crate) mod backoff;
mod replay;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Result, Side};
use crate::telemetry::{State, Telemetry};
use backoff::Backoff;
use replay::{Next, Replay};
use session::Sessions;

/// Streams until `shutdown` becomes true (`Ok`) or a definite error.
pub async fn run(
    config: Arc<Config>,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
    guard: crate::drift::Guard,
) -> Result<()> {
    let mut sessions = Sessions {
        config: &config,
        telemetry: &telemetry,
        guard: &guard,
        shutdown: &mut shutdown,
        started: Instant::now(),
        streamed: false,
    };
    let result = run_sessions(&mut sessions).await;
    match &result {
        Ok(()) => telemetry.set_state(State::Stopped),
        Err(_) => {
            telemetry.error("definite");
            telemetry.set_state(State::Failed);
        }
    }
    result
}

async fn run_sessions(sessions: &mut Sessions<'_>) -> Result<()> {
    let mut backoff = Backoff::new();
    // In-progress streaming is a fast path; after trouble in it, one session goes without.
    let streaming = sessions.config.switches.streaming;
    let mut replay = Replay::new(streaming);
    loop {
        let session_start = Instant::now();
        let streaming = replay.take_streaming();
        let failed = match sessions.session(&replay, streaming).await {
            Ok(()) => return Ok(()),
            Err(failed) => failed,
        };
        let shutdown = *sessions.shutdown.borrow();
        let next = replay.next(&failed, shutdown);
        let err = failed.error;
        log_replay(&next, &err);
        if replay.learn(&next, &err) {
            continue;
        }
        if next == Next::Stop {
            return Err(err);
        }
        // A session that moved blue's checkpoint had a working connection: a cut after it
        // is a new fault, retried at once, not the next step of a failing one.
        if failed.progressed || session_start.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        let telemetry = sessions.telemetry;
        telemetry.error("transient");
        telemetry.reconnect(err.side().unwrap_or(Side::Green).label());
        telemetry.set_state(State::Reconnecting);
        let delay = backoff.step();
        if sessions.streamed {
            tracing::warn!(error = %err, retry_in = ?delay, "connection lost; reconnecting from the checkpoint");
        } else {
            tracing::warn!(error = %err, retry_in = ?delay, "cannot start streaming yet; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sessions.shutdown.changed() => return Ok(()),
        }
    }
}

/// Says why the next session replays from the checkpoint differently.
fn log_replay(next: &Next, err: &crate::error::Error) {
    match next {
        // Nothing of the failed group was committed; inserting with upserts settles it.
        Next::UpsertInto(table) => tracing::info!(
            table,
            "a row inserted on green already exists on blue; replaying from the checkpoint with upserts into this table from now on"
        ),
        // Nothing of that transaction was committed, but transactions before it that
        // shared its blue transaction were not either: commit them, then stop.
        Next::StopBefore(lsn) => {
            tracing::debug!(before = %lsn, "the schema changed at a green transaction; committing everything before it, then stopping")
        }
        // Nothing of the streamed transaction was committed: green sends it again whole,
        // and the ordinary path finds the failing row or waits for the lock.
        Next::Unstreamed => {
            tracing::warn!(error = %err, "applying a transaction green streamed in progress failed; replaying from the checkpoint with that transaction sent whole")
        }
        // Nothing of the failed group was committed: replay the transactions involved row
        // by row to find the row.
        Next::ReplayCarefully(first, last) => {
            tracing::warn!(error = %err, from = %first, to = %last, "blue rejected a row; replaying those green transactions row by row from the checkpoint")
        }
        Next::Reconnect | Next::Stop => {}
    }
}
