//! `pgbridge run`: stream until SIGINT/SIGTERM, then finish the batch, checkpoint and exit.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline;

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
    validate_before_streaming(&config).await?;
    pipeline::run(config, stop_rx).await?;
    Ok(0)
}

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
