//! `pgbridge run`: stream until SIGINT/SIGTERM, then finish the batch, checkpoint and exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::Signature;
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
    let (drift_tx, drift_rx) = watch::channel(None);
    let mappings = match validate_with_retries(&config, &telemetry, &drift_tx).await {
        Ok(m) => m,
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

/// Every `[mapping] schema_check_interval`, both catalogs against the accepted plan: what no
/// Relation message shows (a table that left the publication or was created again, partitions
/// attached or detached, blue's DDL) stops the bridge once blue has everything green wrote
/// before the change was seen.
async fn watch_catalogs(
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
        let (Some(green), Ok(blue)) = (&clients, crate::apply::connect_blue(&config.blue).await) else {
            clients = None;
            continue;
        };
        match catalogs_against(&config, green, &blue, &mappings, &mut pending).await {
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
    let applied = crate::apply::checkpoint::read(blue, &config.schema, &config.slot)
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

fn drift_message(config: &Config, findings: &[drift::Finding]) -> String {
    format!(
        "green's or blue's catalog no longer matches the plan `pgbridge setup` accepted:\n{}\n{}; stopping once \
         blue has everything green wrote before the change was seen",
        drift::describe(findings),
        drift::fix(config)
    )
}

/// Green's WAL position: every transaction already visible on green ends before it (the
/// insert position, since with `synchronous_commit = off` a visible commit may not be written).
async fn green_position(green: &tokio_postgres::Client) -> Result<Lsn> {
    let text: String = green
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| Error::postgres("reading green's WAL position", &e))?
        .get(0);
    text.parse()
        .map_err(|_| Error::definite(format!("green returned an unreadable WAL position {text:?}")))
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
                    previous = Some(state.wal);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "polling green's position failed; retrying");
                    client = None;
                }
            }
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

/// Validation at start-up. A connection that drops during it is retried a few times (a network
/// blip is not a configuration problem); anything else, or a drop that keeps happening, stops
/// the start with exit 2.
async fn validate_with_retries(
    config: &Config,
    telemetry: &Telemetry,
    drift_tx: &watch::Sender<Option<drift::Stop>>,
) -> Result<Mappings> {
    let mut attempt = 1;
    loop {
        match validate_before_streaming(config, telemetry, drift_tx).await {
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
    let blue = crate::apply::connect_blue(&config.blue).await?;
    let report = super::preflight::validate(config, &green, &blue).await?;
    // Changed while `run` was down: what green wrote before the change still maps as accepted.
    let catalog_only = report.accepted.is_some() && report.problems.iter().all(|p| report.catalog_problems.contains(p));
    let problems = if catalog_only { 0 } else { report.problems.len() };
    match problems {
        0 => {
            tracing::info!(tables = report.tables.len(), "mapping validated against both catalogs");
            let mut mappings = Mappings::load(config)?;
            mappings.learn_partitions(&report.green_tables);
            let accepted = match &report.accepted {
                Some(accepted) => {
                    let (_, new) = drift::compare(config, accepted, &report.current);
                    drift::store(&blue, config, &new, false).await?;
                    let mut all = accepted.clone();
                    for s in new {
                        tracing::info!(table = %s.green_table, "green table is new since the plan was accepted; carrying it");
                        all.insert(s.green_table.clone(), s);
                    }
                    all
                }
                None => {
                    tracing::info!(
                        "no accepted plan on blue (set up by an earlier pgbridge); accepting the current one"
                    );
                    drift::store(&blue, config, &report.current.signatures, true).await?;
                    report
                        .current
                        .signatures
                        .iter()
                        .map(|s| (s.green_table.clone(), s.clone()))
                        .collect()
                }
            };
            mappings.hold_to(Arc::new(Mutex::new(accepted)));
            let mut findings = report.drift.clone();
            findings.extend(report.problems.iter().map(|p| drift::Finding {
                green_table: "(catalog)".into(),
                changes: vec![p.clone()],
            }));
            if !findings.is_empty() {
                // A drift recorded earlier stops where it stopped then: a restart (by a
                // supervisor, say) carries nothing further.
                let recorded_at = drift::recorded_stops(&blue, config).await?.iter().map(|r| r.at).min();
                let checkpoint = crate::apply::checkpoint::read_required(&blue, &config.schema, &config.slot).await?;
                let at = match recorded_at {
                    Some(at) if checkpoint.lsn >= at => {
                        return Err(Error::definite(format!(
                            "{}; blue has everything green committed before {at} and nothing was streamed",
                            drift_message(config, &findings)
                        )))
                    }
                    Some(at) => at,
                    None => green_position(&green).await?,
                };
                let found = drift::Stop {
                    at,
                    message: drift_message(config, &findings),
                };
                let new: Vec<drift::Finding> = findings.into_iter().filter(|f| f.green_table != "(recorded)").collect();
                if !new.is_empty() && recorded_at.is_none() {
                    drift::record(&blue, config, at, &drift::describe(&new)).await;
                }
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
