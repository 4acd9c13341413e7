//! Validation at start-up: the same validation as `pgbridge check`, then the plan to stream
//! under and, when the catalogs already differ from it, where to stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_postgres::Client;

use super::catalogs::drift_message;
use super::green_position;
use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::Signature;
use crate::ops::preflight::Report;
use crate::pipeline::backoff::Backoff;
use crate::state::checkpoint;
use crate::telemetry::Telemetry;

/// Validation at start-up, retried while it fails transiently: a daemon started while green or
/// blue restarts, fails over or is not up yet waits for it, logging each attempt. A definite
/// problem (authentication, a missing database, role or slot, the configuration, a mapping)
/// stops the start with exit 2 at once. `None`: shutdown was asked for while waiting.
pub(super) async fn validate_with_retries(
    config: &Config,
    telemetry: &Telemetry,
    drift_tx: &watch::Sender<Option<drift::Stop>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Mappings>> {
    let mut backoff = Backoff::new();
    let mut attempt = 1u32;
    loop {
        // SIGTERM ends the wait at once, also while an attempt is under way.
        let result = tokio::select! {
            result = validate_before_streaming(config, telemetry, drift_tx) => result,
            _ = shutdown.changed() => return Ok(None),
        };
        let e = match result {
            Err(e) if e.is_transient() => e,
            other => return other.map(Some),
        };
        telemetry.error("transient");
        let delay = backoff.step();
        tracing::warn!(error = %e, attempt, retry_in = ?delay, "cannot start yet; waiting for the databases");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(None),
        }
        attempt += 1;
    }
}

/// The same validation as `pgbridge check`: an invalid plan never starts streaming. Returns
/// the mappings held to the accepted plan (stored now when an earlier pgbridge's `setup`
/// stored none). When the catalogs already differ from it, streaming goes on up to green's
/// current position and stops there (or earlier, at the Relation message that shows the
/// change), so blue gets everything written under the accepted plan.
async fn validate_before_streaming(
    config: &Config,
    telemetry: &Telemetry,
    drift_tx: &watch::Sender<Option<drift::Stop>>,
) -> Result<Mappings> {
    let green = crate::connect::connect_green_sql(config).await?;
    let blue = crate::connect::connect_blue(&config.blue).await?;
    let report = crate::ops::preflight::validate(config, &green, &blue)
        .await
        .map_err(|e| crate::pooler::explain(e, &config.blue))?;
    // Changed while `run` was down: what green wrote before the change still maps as accepted.
    let catalog_only = report.accepted.is_some() && report.problems.iter().all(|p| report.catalog_problems.contains(p));
    let problems = if catalog_only { 0 } else { report.problems.len() };
    match problems {
        0 => {
            tracing::info!(tables = report.tables.len(), "mapping validated against both catalogs");
            let mut mappings = Mappings::load(config)?;
            mappings.learn_partitions(&report.green_tables);
            let accepted = accepted_plan(config, &blue, &report).await?;
            mappings.hold_to(Arc::new(Mutex::new(accepted)));
            let mut findings = report.drift.clone();
            findings.extend(report.problems.iter().map(|p| drift::Finding {
                green_table: "(catalog)".into(),
                changes: vec![p.clone()],
            }));
            if !findings.is_empty() {
                let found = stop_for(config, &green, &blue, findings).await?;
                telemetry.schema_drift(true);
                tracing::error!(stop_at = %found.at, "{}", found.message);
                drift_tx.send_replace(Some(found));
            }
            Ok(mappings)
        }
        1 => Err(Error::definite(format!("{}; nothing was streamed", report.problems[0]))),
        n => Err(Error::definite(format!(
            "{n} problems, nothing was streamed (details: pgbridge check):\n  - {}",
            report.problems.join("\n  - ")
        ))),
    }
}

/// The plan to stream under: the accepted one with the tables new since then added (and
/// stored), or the current one, stored now, when an earlier pgbridge's `setup` stored none.
async fn accepted_plan(config: &Config, blue: &Client, report: &Report) -> Result<BTreeMap<String, Signature>> {
    Ok(match &report.accepted {
        Some(accepted) => {
            let (_, new) = drift::compare(config, accepted, &report.current);
            drift::store(blue, config, &new, false).await?;
            let mut all = accepted.clone();
            for s in new {
                tracing::info!(table = %s.green_table, "green table is new since the plan was accepted; carrying it");
                all.insert(s.green_table.clone(), s);
            }
            all
        }
        None => {
            tracing::info!("no accepted plan on blue (set up by an earlier pgbridge); accepting the current one");
            drift::store(blue, config, &report.current.signatures, true).await?;
            report
                .current
                .signatures
                .iter()
                .map(|s| (s.green_table.clone(), s.clone()))
                .collect()
        }
    })
}

/// Where streaming stops for `findings` found at start-up, recorded on blue when new. A drift
/// recorded earlier stops where it stopped then: a restart (by a supervisor, say) carries
/// nothing further, and refuses to start when blue already has everything before it.
async fn stop_for(
    config: &Config,
    green: &Client,
    blue: &Client,
    findings: Vec<drift::Finding>,
) -> Result<drift::Stop> {
    let recorded_at = drift::recorded_stops(blue, config).await?.iter().map(|r| r.at).min();
    let checkpoint = checkpoint::read_required(blue, &config.schema, &config.slot).await?;
    let at = match recorded_at {
        Some(at) if checkpoint.lsn >= at => {
            return Err(Error::definite(format!(
                "{}; blue has everything green committed before {at} and nothing was streamed",
                drift_message(config, &findings)
            )))
        }
        Some(at) => at,
        None => green_position(green).await?,
    };
    let found = drift::Stop {
        at,
        message: drift_message(config, &findings),
    };
    let new: Vec<drift::Finding> = findings.into_iter().filter(|f| f.green_table != "(recorded)").collect();
    if !new.is_empty() && recorded_at.is_none() {
        drift::record(blue, config, at, &drift::describe(&new)).await;
    }
    Ok(found)
}
