//! `pgbridge run`: stream until SIGINT/SIGTERM, then finish the batch, checkpoint and exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pipeline;
use crate::telemetry::{self, State, Telemetry, Verdict};

use super::lag;

pub async fn run(config: Arc<Config>) -> Result<i32> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::definite(format!("cannot install SIGTERM handler: {e}")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::definite(format!("cannot install SIGINT handler: {e}")))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; finishing the current batch"),
            _ = int.recv() => tracing::info!("SIGINT received; finishing the current batch"),
        }
        let _ = stop_tx.send(true);
    });
    tracing::info!(green = %config.green.describe(), blue = %config.blue.describe(), "pgbridge starting");
    telemetry::install();
    let telemetry = Telemetry::new();
    tokio::spawn(telemetry::http::run(
        config.metrics_listen.clone(),
        telemetry.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(poll_green(config.clone(), telemetry.clone(), stop_rx.clone()));
    if let Err(e) = validate_with_retries(&config).await {
        telemetry.error("definite");
        telemetry.set_state(State::Failed);
        return Err(e.into_definite());
    }
    pipeline::run(config, telemetry, stop_rx).await?;
    Ok(0)
}

/// How often the poller reads green's position for the lag gauges.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often it polls until the first session has read blue's checkpoint.
const POLL_INTERVAL_AT_START: Duration = Duration::from_millis(100);

/// Every two seconds: green's WAL position and the WAL its slot retains, and what the stream
/// has not delivered yet, for the lag gauges (see [`crate::telemetry`]).
async fn poll_green(config: Arc<Config>, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let mut client = None;
    // Green's WAL position at the previous poll.
    let mut previous: Option<Lsn> = None;
    let mut unknown = UnknownLog::default();
    loop {
        if client.is_none() {
            client = super::connect_green_sql(&config).await.ok();
        }
        if let Some(c) = &client {
            match lag::green_state(&config, c).await {
                Ok(state) => {
                    telemetry.green_position(state.wal, state.retained_bytes());
                    let verdict = undelivered(&config, &telemetry, c, &state, previous, &mut unknown).await;
                    telemetry.set_verdict(verdict);
                    telemetry.refresh();
                    previous = Some(state.wal);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "polling green's position failed; retrying");
                    client = None;
                }
            }
        }
        let pause = if telemetry.applied_lsn().is_zero() {
            POLL_INTERVAL_AT_START
        } else {
            POLL_INTERVAL
        };
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
    if telemetry.oldest_received().is_some() || applied >= state.wal {
        return Verdict::Nothing;
    }
    // Everything green had written by the previous poll has been sent, so anything not
    // received is younger than one poll.
    if previous.is_some_and(|p| telemetry.received_lsn() >= p) {
        return Verdict::Nothing;
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

/// Validation at start-up. A connection that drops during it is retried a few times (a network
/// blip is not a configuration problem); anything else, or a drop that keeps happening, stops
/// the start with exit 2.
async fn validate_with_retries(config: &Config) -> Result<()> {
    let mut attempt = 1;
    loop {
        match validate_before_streaming(config).await {
            Err(e) if e.is_transient() && attempt < START_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "validating at start failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt as u64)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Attempts at start-up validation when connections drop.
const START_ATTEMPTS: u32 = 3;

/// The same validation as `pgbridge check`: an invalid plan never starts streaming.
async fn validate_before_streaming(config: &Config) -> Result<()> {
    let green = super::connect_green_sql(config).await?;
    let blue = crate::apply::connect_blue(&config.blue).await?;
    let report = super::check::validate(config, &green, &blue).await?;
    match report.problems.len() {
        0 => {
            tracing::info!(tables = report.tables.len(), "mapping validated against both catalogs");
            Ok(())
        }
        1 => Err(Error::definite(format!("{}; nothing was streamed", report.problems[0]))),
        n => Err(Error::definite(format!(
            "{n} problems, nothing was streamed (details: pgbridge check):\n  - {}",
            report.problems.join("\n  - ")
        ))),
    }
}
