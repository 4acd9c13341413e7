//! Watching both catalogs against the accepted plan while the bridge runs: what no Relation
//! message shows stops the bridge once blue has everything green wrote before the change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use super::green_position;
use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::Signature;
use crate::telemetry::Telemetry;

/// Every `[mapping] schema_check_interval`, both catalogs against the accepted plan: what no
/// Relation message shows (a table that left the publication or was created again, partitions
/// attached or detached, blue's DDL) stops the bridge once blue has everything green wrote
/// before the change was seen.
pub(super) async fn watch_catalogs(
    config: Arc<Config>,
    mappings: Mappings,
    telemetry: Arc<Telemetry>,
    drift_tx: watch::Sender<Option<drift::Stop>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.schema_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clients = None;
    // Tables whose partitions all have new storage that no replicated TRUNCATE explains yet,
    // with green's position when that was first seen.
    let mut pending = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if drift_tx.borrow().is_some() {
            continue;
        }
        if clients.is_none() {
            clients = crate::connect::connect_green_sql(&config).await.ok();
        }
        // A new blue session each time: it starts with blue's current defaults, which the
        // evaluation settings are compared by.
        let (Some(green), Ok(blue)) = (&clients, crate::connect::connect_blue(&config.blue).await) else {
            clients = None;
            continue;
        };
        let started = std::time::Instant::now();
        let checked = catalogs_against(&config, green, &blue, &mappings, &mut pending).await;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "checked both catalogs against the accepted plan"
        );
        match checked {
            Ok(None) => {}
            Ok(Some((found, findings))) => {
                telemetry.schema_drift(true);
                tracing::error!(stop_at = %found.at, "{}", found.message);
                drift::record(&blue, &config, found.at, &drift::describe(&findings)).await;
                let _ = drift_tx.send(Some(found));
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking the catalogs against the accepted plan failed; trying again");
                clients = None;
            }
        }
    }
}

/// Both catalogs against `baseline` now; new tables join it. `Some` when the plan drifted,
/// with the position to stop at: green's WAL position after the catalog was read.
async fn catalogs_against(
    config: &Config,
    green: &tokio_postgres::Client,
    blue: &tokio_postgres::Client,
    mappings: &Mappings,
    pending: &mut HashMap<String, Lsn>,
) -> Result<Option<(drift::Stop, Vec<drift::Finding>)>> {
    let Some(baseline) = mappings.baseline() else {
        return Ok(None);
    };
    let current = drift::current_with(config, green, blue, mappings.clone()).await?;
    let accepted = explain_storage(config, green, blue, mappings, &current, pending).await?;
    let accepted = take_empty_partitions(config, green, blue, baseline, &current, accepted).await?;
    let (findings, new) = drift::compare(config, &accepted, &current);
    let (new, attached) = new_partitions_with_rows(green, &accepted, new).await?;
    // Tables first seen in a Relation message have no catalog side yet: take it now, so that
    // what only the catalogs show is checked for them too.
    let mut completed = Vec::new();
    {
        let mut b = baseline.lock().unwrap_or_else(|e| e.into_inner());
        for now in &current.signatures {
            if let Some(was) = b.get_mut(&now.green_table) {
                if was.catalog.is_none() && crate::mapping::signature::diff(was, now).is_empty() {
                    *was = now.clone();
                    completed.push(now.clone());
                }
            }
        }
    }
    if !completed.is_empty() {
        drift::refresh(blue, config, &completed).await?;
    }
    if !new.is_empty() {
        for s in &new {
            tracing::info!(table = %s.green_table, blue = %s.blue_table, "green streams a table that is new since the plan was accepted; carrying it");
        }
        drift::store(blue, config, &new, false).await?;
        let mut b = baseline.lock().unwrap_or_else(|e| e.into_inner());
        for s in new {
            b.entry(s.green_table.clone()).or_insert(s);
        }
    }
    if findings.is_empty() && attached.is_empty() {
        return Ok(None);
    }
    // Catalogs read while DDL commits can be caught halfway: only what a second reading
    // confirms counts.
    let again = drift::current_with(config, green, blue, mappings.clone()).await?;
    let (confirmed, _) = drift::compare(config, &accepted, &again);
    let mut confirmed: Vec<drift::Finding> = confirmed
        .into_iter()
        .filter(|f| findings.iter().any(|g| g.green_table == f.green_table))
        .collect();
    confirmed.extend(attached);
    if confirmed.is_empty() {
        return Ok(None);
    }
    let stop = drift::Stop {
        at: green_position(green).await?,
        message: drift_message(config, &confirmed),
    };
    Ok(Some((stop, confirmed)))
}

/// The accepted plan to compare with, with partitions' storage brought up to date where a
/// replicated TRUNCATE of the whole table explains it. Every partition of a table with new
/// storage, but no such TRUNCATE applied yet: green committed one that the stream has not
/// reached, or truncated (or rewrote) each partition itself. It counts only once blue has
/// everything green wrote before it was seen and the TRUNCATE still has not come.
async fn explain_storage(
    config: &Config,
    green: &tokio_postgres::Client,
    blue: &tokio_postgres::Client,
    mappings: &Mappings,
    current: &drift::Current,
    pending: &mut HashMap<String, Lsn>,
) -> Result<BTreeMap<String, Signature>> {
    let Some(baseline) = mappings.baseline() else {
        return Ok(BTreeMap::new());
    };
    let mut moved = Vec::new();
    let mut waiting = Vec::new();
    {
        let mut b = baseline.lock().unwrap_or_else(|e| e.into_inner());
        for now in &current.signatures {
            let Some(was) = b.get_mut(&now.green_table) else {
                continue;
            };
            let (Some(w), Some(n)) = (was.catalog.as_mut(), now.catalog.as_ref()) else {
                continue;
            };
            let all_moved = !w.partition_storage.is_empty()
                && w.partition_storage
                    .iter()
                    .all(|(p, node)| n.partition_storage.get(p).is_some_and(|m| m != node));
            if !all_moved {
                pending.remove(&now.green_table);
            } else if mappings.explains_truncate(&now.green_table) {
                w.partition_storage = n.partition_storage.clone();
                pending.remove(&now.green_table);
                moved.push(was.clone());
            } else {
                waiting.push((now.green_table.clone(), n.partition_storage.clone()));
            }
        }
    }
    if !moved.is_empty() {
        drift::refresh(blue, config, &moved).await?;
    }
    let mut accepted = baseline.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if waiting.is_empty() {
        return Ok(accepted);
    }
    let applied = crate::state::checkpoint::read(blue, &config.schema, &config.slot)
        .await?
        .map_or(Lsn(0), |c| c.lsn);
    for (table, storage) in waiting {
        let since = match pending.get(&table) {
            Some(at) => *at,
            None => {
                let at = green_position(green).await?;
                pending.insert(table.clone(), at);
                at
            }
        };
        if applied < since {
            if let Some(c) = accepted.get_mut(&table).and_then(|s| s.catalog.as_mut()) {
                c.partition_storage = storage;
            }
        }
    }
    Ok(accepted)
}

/// New partitions of a table published through its root: an empty one (created with
/// `PARTITION OF`, or attached empty) changes nothing blue holds and joins the accepted plan;
/// one that held rows when it was attached stays a difference (its rows never reached blue).
async fn take_empty_partitions(
    config: &Config,
    green: &tokio_postgres::Client,
    blue: &tokio_postgres::Client,
    baseline: &drift::Baseline,
    current: &drift::Current,
    mut accepted: BTreeMap<String, Signature>,
) -> Result<BTreeMap<String, Signature>> {
    let mut taken = Vec::new();
    for now in &current.signatures {
        let (Some(n), Some(w)) = (
            now.catalog.as_ref(),
            accepted.get(&now.green_table).and_then(|s| s.catalog.as_ref()),
        ) else {
            continue;
        };
        let added: Vec<&String> = n.partitions.iter().filter(|p| !w.partitions.contains(p)).collect();
        if added.is_empty() {
            continue;
        }
        let mut all_empty = true;
        for p in &added {
            all_empty &= is_empty(green, p).await?;
        }
        if !all_empty {
            continue;
        }
        tracing::info!(table = %now.green_table, partitions = ?added, "green table has new, empty partitions; carrying them");
        let sig = accepted.get_mut(&now.green_table).expect("looked up above");
        if let Some(c) = sig.catalog.as_mut() {
            for p in added {
                c.partitions.push(p.clone());
                if let Some(node) = n.partition_storage.get(p) {
                    c.partition_storage.insert(p.clone(), *node);
                }
            }
            c.partitions.sort();
        }
        taken.push(sig.clone());
    }
    if !taken.is_empty() {
        drift::refresh(blue, config, &taken).await?;
        let mut b = baseline.lock().unwrap_or_else(|e| e.into_inner());
        for s in &taken {
            b.insert(s.green_table.clone(), s.clone());
        }
    }
    Ok(accepted)
}

/// Tables new to the accepted plan that are partitions of a table whose other partitions it
/// holds (published partition by partition): an empty one joins; one with rows was attached
/// with them, and they never reached blue.
async fn new_partitions_with_rows(
    green: &tokio_postgres::Client,
    accepted: &BTreeMap<String, Signature>,
    new: Vec<Signature>,
) -> Result<(Vec<Signature>, Vec<drift::Finding>)> {
    let mut carried = Vec::new();
    let mut findings = Vec::new();
    for s in new {
        let root = s.catalog.as_ref().and_then(|c| c.partition_of.clone());
        let sibling = root.as_ref().is_some_and(|r| {
            accepted
                .values()
                .any(|a| a.catalog.as_ref().and_then(|c| c.partition_of.as_ref()) == Some(r))
        });
        if !sibling {
            carried.push(s);
            continue;
        }
        let name: Option<String> = green
            .query_opt(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                &[&s.green_oid],
            )
            .await
            .map_err(|e| Error::postgres("looking up a partition on green", &e))?
            .map(|r| r.get(0));
        match name {
            Some(n) if !is_empty(green, &n).await? => findings.push(drift::Finding {
                green_table: s.green_table.clone(),
                changes: vec![format!(
                    "partition {} was attached to green table {} with rows that never reached blue table {} \
                     (ATTACH PARTITION is not replicated)",
                    s.green_table,
                    root.unwrap_or_default(),
                    s.blue_table
                )],
            }),
            _ => carried.push(s),
        }
    }
    Ok((carried, findings))
}

/// Whether green relation `qualified` (quoted as SQL) holds no row of its own.
async fn is_empty(green: &tokio_postgres::Client, qualified: &str) -> Result<bool> {
    Ok(green
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM ONLY {qualified})"), &[])
        .await
        .map_err(|e| Error::postgres(format!("reading partition {qualified} on green"), &e))?
        .get(0))
}

pub(super) fn drift_message(config: &Config, findings: &[drift::Finding]) -> String {
    format!(
        "green's or blue's catalog no longer matches the plan `pgbridge setup` accepted:\n{}\n{}; stopping once \
         blue has everything green wrote before the change was seen",
        drift::describe(findings),
        drift::fix(config)
    )
}
