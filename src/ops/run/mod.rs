//! `pgbridge run`: stream until SIGINT/SIGTERM, then finish the batch, checkpoint and exit.
//! Besides the pipeline itself, the bridge validates at start-up ([`startup`]), watches both
//! catalogs against the accepted plan ([`catalogs`]) and polls green for the lag gauges
//! ([`lag_poller`]) and rollback readiness ([`readiness`]).

mod catalogs;
mod lag_poller;
mod readiness;
mod startup;

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pipeline;
use crate::telemetry::{self, State, Telemetry};
use catalogs::watch_catalogs;
use lag_poller::poll_green;
use startup::validate_with_retries;

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
    let (drift_tx, drift_rx) = watch::channel(None);
    let mut waiting = stop_rx.clone();
    let mappings = match validate_with_retries(&config, &telemetry, &drift_tx, &mut waiting).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            telemetry.set_state(State::Stopped);
            tracing::info!("stopped before streaming");
            return Ok(0);
        }
        Err(e) => {
            telemetry.error("definite");
            telemetry.set_state(State::Failed);
            return Err(e.into_definite());
        }
    };
    if mappings.baseline().is_some() {
        tokio::spawn(watch_catalogs(
            config.clone(),
            mappings.clone(),
            telemetry.clone(),
            drift_tx,
            stop_rx.clone(),
        ));
    }
    let guard = drift::Guard {
        mappings,
        stop: drift_rx,
    };
    // A stop at a Relation message needs no record: the stream shows the change again at the
    // same place on every start.
    pipeline::run(config, telemetry, stop_rx, guard).await?;
    Ok(0)
}

/// Green's WAL position: every transaction already visible on green ends before it (the
/// insert position, since with `synchronous_commit = off` a visible commit may not be written).
pub(super) async fn green_position(green: &tokio_postgres::Client) -> Result<Lsn> {
    let text: String = green
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| Error::postgres("reading green's WAL position", &e))?
        .get(0);
    text.parse()
        .map_err(|_| Error::definite(format!("green returned an unreadable WAL position {text:?}")))
}
