//! `pgbridge run`: stream until SIGINT/SIGTERM, then finish the batch, checkpoint and exit.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pipeline;
use crate::telemetry::{self, State, Telemetry};

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

/// Every two seconds, green's WAL position and the WAL its slot retains, for the lag gauges.
async fn poll_green(config: Arc<Config>, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if client.is_none() {
            client = super::connect_green_sql(&config).await.ok();
        }
        let Some(c) = &client else { continue };
        let row = c
            .query_one(
                "SELECT pg_current_wal_lsn()::text, coalesce((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
                 FROM pg_replication_slots WHERE slot_name = $1), 0)",
                &[&config.slot],
            )
            .await;
        match row {
            Ok(r) => {
                if let Ok(lsn) = r.get::<_, String>(0).parse::<Lsn>() {
                    telemetry.green_position(lsn, r.get::<_, i64>(1).max(0) as u64);
                    telemetry.refresh();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "polling green's position failed; retrying");
                client = None;
            }
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
