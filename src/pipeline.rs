//! One `pgbridge run`: sessions of (blue connection, replication stream, applier), restarted
//! with capped exponential backoff after transient errors.
//!
//! Every session starts from blue's checkpoint, never from anything held in memory: what was
//! received but not committed on blue is simply received again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::apply::{self, checkpoint, Applier};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::source::{ReplicationConn, SourceHandle, StartOptions};
use crate::sql;
use crate::telemetry::{State, Telemetry};

/// Chunks (of at most [`crate::source::stream::CHUNK_BYTES`] each) buffered between the socket
/// reader and the applier.
const CHANNEL_CAPACITY: usize = 8;
/// How long `run` waits at start for a slot still held by a previous, dying walsender.
const SLOT_BUSY_GRACE: Duration = Duration::from_secs(30);

/// Capped exponential backoff with jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    /// Lag grows while pgbridge waits: retry a down server at least this often.
    const CAP: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        base.mul_f64(jitter)
    }
}

/// Streams until `shutdown` becomes true (`Ok`) or a definite error.
pub async fn run(
    config: Arc<Config>,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
    guard: crate::drift::Guard,
) -> Result<()> {
    let result = run_sessions(&config, &telemetry, &mut shutdown, &guard).await;
    match &result {
        Ok(()) => telemetry.set_state(State::Stopped),
        Err(_) => {
            telemetry.error("definite");
            telemetry.set_state(State::Failed);
        }
    }
    result
}

async fn run_sessions(
    config: &Arc<Config>,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
    guard: &crate::drift::Guard,
) -> Result<()> {
    let mut backoff = Backoff::new();
    // Green transactions (commit LSN ranges) to apply row by row because blue rejected one of
    // their rows.
    let mut careful: Vec<(Lsn, Lsn)> = Vec::new();
    // Green tables whose batched inserts go out as upserts (see `apply::batch`).
    let mut upsert_tables: HashSet<String> = HashSet::new();
    let mut streamed = false;
    // In-progress streaming is a fast path; after trouble in it, one session goes without.
    let streaming = std::env::var("PGBRIDGE_STREAMING").map_or(true, |v| v != "off");
    let mut unstreamed = false;
    // A green transaction the schema changed at: the next session commits what comes before
    // it and stops there.
    let mut stop_before: Option<(Lsn, String)> = None;
    let started = Instant::now();
    loop {
        let session_start = Instant::now();
        let replay = Replay {
            careful: &careful,
            upsert_tables: &upsert_tables,
            streaming: streaming && !std::mem::take(&mut unstreamed) && stop_before.is_none(),
            guard,
            stop_before: stop_before.as_ref(),
        };
        let mut progressed = false;
        let result = session(
            config,
            telemetry,
            shutdown,
            replay,
            &mut streamed,
            &mut progressed,
            started,
        )
        .await;
        let err = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Some(table) = err.insert_conflict() {
            // Nothing of the failed group was committed; inserting with upserts settles it.
            tracing::info!(
                table,
                "a row inserted on green already exists on blue; replaying from the checkpoint with upserts into this table from now on"
            );
            upsert_tables.insert(table.to_string());
            continue;
        }
        if let Some(lsn) = err
            .stop_before()
            .filter(|_| stop_before.is_none() && !*shutdown.borrow())
        {
            // Nothing of that transaction was committed, but transactions before it that
            // shared its blue transaction were not either: commit them, then stop.
            tracing::debug!(before = %lsn, "the schema changed at a green transaction; committing everything before it, then stopping");
            stop_before = Some((lsn, err.message().to_string()));
            continue;
        }
        if err.wants_unstreamed_retry() && !*shutdown.borrow() {
            // Nothing of the streamed transaction was committed: green sends it again whole,
            // and the ordinary path finds the failing row or waits for the lock.
            tracing::warn!(error = %err, "applying a transaction green streamed in progress failed; replaying from the checkpoint with that transaction sent whole");
            unstreamed = true;
            continue;
        }
        if let Some((first, last)) = err.careful_replay() {
            // Nothing of the failed group was committed: replay the transactions involved row
            // by row to find the row.
            tracing::warn!(error = %err, from = %first, to = %last, "blue rejected a row; replaying those green transactions row by row from the checkpoint");
            careful.push((first, last));
            continue;
        }
        // Before the first successful start, a problem is most likely configuration: say so
        // at once rather than retrying forever.
        // A failure while finishing on shutdown is reported, not retried: exit 0 would claim
        // a clean stop. Nothing is lost either way; the next start resumes from the checkpoint.
        if !err.is_transient() || !streamed || *shutdown.borrow() {
            return Err(err);
        }
        // A session that moved blue's checkpoint had a working connection: a cut after it
        // is a new fault, retried at once, not the next step of a failing one.
        if progressed || session_start.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        telemetry.error("transient");
        telemetry.reconnect(side_of(&err));
        telemetry.set_state(State::Reconnecting);
        let delay = backoff.step();
        tracing::warn!(error = %err, retry_in = ?delay, "connection lost; reconnecting from the checkpoint");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Which connection an error came from, for `pgbridge_reconnects_total{side}`: errors name
/// their side in their message ("blue (user@host...)", "on blue", "green ...").
fn side_of(err: &Error) -> &'static str {
    let text = err.message();
    match (text.find("blue"), text.find("green")) {
        (Some(b), Some(g)) if b < g => "blue",
        (Some(_), None) => "blue",
        _ => "green",
    }
}

/// What earlier sessions of this run learned about applying the stream.
#[derive(Clone, Copy)]
struct Replay<'a> {
    /// Green transactions (commit LSN ranges) to apply row by row.
    careful: &'a [(Lsn, Lsn)],
    upsert_tables: &'a HashSet<String>,
    /// Ask green for large transactions while they are in progress.
    streaming: bool,
    guard: &'a crate::drift::Guard,
    stop_before: Option<&'a (Lsn, String)>,
}

async fn session(
    config: &Arc<Config>,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
    replay: Replay<'_>,
    streamed: &mut bool,
    progressed: &mut bool,
    started: Instant,
) -> Result<()> {
    let blue = apply::connect_blue(&config.blue).await?;
    let checkpoint = checkpoint::read_required(&blue, &config.schema, &config.slot).await?;
    if checkpoint.lsn.is_zero() {
        return Err(Error::definite(format!(
            "blue's checkpoint for slot {} is at 0/0: the initial copy into blue (`pgbridge setup --copy`) did not \
             finish, so blue is incomplete; run `pgbridge setup --copy` again",
            config.slot
        )));
    }
    // Blue has everything up to here: the lag gauges count from it, not from 0.
    telemetry.applied_idle(checkpoint.lsn);
    let (durable_tx, durable_rx) = watch::channel(checkpoint.lsn);
    let mut applier = Applier::new(
        config.clone(),
        blue,
        durable_tx,
        replay.careful.to_vec(),
        replay.upsert_tables.clone(),
        telemetry.clone(),
        replay.guard,
    )
    .await?;
    if let Some((lsn, message)) = replay.stop_before {
        applier.stop_before(*lsn, message.clone());
    }

    let options = StartOptions {
        slot: config.slot.clone(),
        publication: config.publication.clone(),
        start: checkpoint.lsn,
        streaming: replay.streaming,
        origin_none: false,
    };
    let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
    let source = loop {
        let attempt = async {
            let mut conn = ReplicationConn::connect(&config.green, "pgbridge").await?;
            let system = conn.identify_system().await?;
            tracing::debug!(system_id = %system.system_id, timeline = system.timeline, wal = %system.xlogpos, "green identified");
            let mut conn = check_slot(conn, config, checkpoint.lsn).await?;
            let options = for_server(&options, config, conn.server_version_num());
            if options.streaming {
                cap_decoding_memory(&mut conn).await?;
            }
            SourceHandle::start(conn, &options, durable_rx.clone(), tx.clone()).await
        };
        match attempt.await {
            Ok(handle) => break handle,
            // A walsender of a killed pgbridge keeps the slot until it notices its client
            // is gone; give it a moment at start-up.
            Err(e) if e.sqlstate() == Some("55006") && !*streamed && started.elapsed() < SLOT_BUSY_GRACE => {
                tracing::info!(error = %e, "slot busy; waiting for its previous user to let go");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) if e.sqlstate() == Some("55006") => {
                let e = e.hint(format!(
                    "another pgbridge or a subscription is streaming slot {}; stop it first (see pg_stat_replication on green)",
                    config.slot
                ));
                return Err(if *streamed { e } else { e.into_definite() });
            }
            Err(e) => return Err(e),
        }
    };
    drop(tx);
    if let Err(e) = applier.attach_origin().await {
        source.close().await;
        return Err(e);
    }
    *streamed = true;
    telemetry.set_state(State::Streaming);
    tracing::info!(slot = %config.slot, from = %checkpoint.lsn, "streaming from green");
    let result = applier.run(&mut rx, shutdown).await;
    *progressed = *durable_rx.borrow() > checkpoint.lsn;
    source.close().await;
    match &result {
        Ok(()) => tracing::info!(checkpoint = %*durable_rx.borrow(), "stopped cleanly"),
        Err(e) => tracing::debug!(error = %e, "session ended"),
    }
    result
}

/// The streaming options green's server version allows. Transactions applied under a
/// replication origin are skipped by green itself on PostgreSQL 16+ (`origin 'none'`); on 15
/// pgbridge drops them by their Origin message, which green sends only for whole
/// transactions (the origin of an in-progress one is not known yet), so there they are
/// received whole.
fn for_server(options: &StartOptions, config: &Config, version: u32) -> StartOptions {
    let mut options = options.clone();
    if config.skip_origins {
        if version >= 160000 {
            options.origin_none = true;
        } else if options.streaming {
            tracing::debug!("green runs PostgreSQL {version}: large transactions are received whole, so that those applied under a replication origin can be recognized (green.origin = \"none\")");
            options.streaming = false;
        }
    }
    options
}

/// Green streams an in-progress transaction once its decoded changes exceed
/// `logical_decoding_work_mem`, and decodes without sending until then. A cap on this walsender
/// session (the server's setting is untouched, and a lower one is kept) lets blue start on a
/// large transaction sooner and keeps green's decoding and blue's apply overlapped.
const STREAMING_DECODING_MEM_KB: u64 = 16 * 1024;

async fn cap_decoding_memory(conn: &mut ReplicationConn) -> Result<()> {
    let rows = conn
        .simple_query("SELECT setting FROM pg_settings WHERE name = 'logical_decoding_work_mem'")
        .await?;
    let current: u64 = rows.first("setting").and_then(|v| v.parse().ok()).unwrap_or(0);
    if current > STREAMING_DECODING_MEM_KB {
        conn.simple_query(&format!("SET logical_decoding_work_mem = {STREAMING_DECODING_MEM_KB}"))
            .await?;
    }
    Ok(())
}

/// Refuses to stream from a slot that cannot deliver everything after the checkpoint.
async fn check_slot(mut conn: ReplicationConn, config: &Config, checkpoint: Lsn) -> Result<ReplicationConn> {
    let version = conn.server_version_num();
    if version < 140000 {
        return Err(Error::definite(format!(
            "green runs PostgreSQL {version}; pgbridge needs 14 or later (pgoutput messages)"
        )));
    }
    let rows = conn
        .simple_query(&format!(
            "SELECT plugin, database, wal_status, confirmed_flush_lsn::text AS confirmed, active_pid::text AS pid, \
                    (SELECT count(*) FROM pg_publication WHERE pubname = {pub})::text AS publications \
             FROM pg_replication_slots WHERE slot_name = {slot}",
            slot = sql::literal(&config.slot),
            pub = sql::literal(&config.publication),
        ))
        .await?;
    if rows.rows.is_empty() {
        return Err(Error::definite(format!(
            "replication slot {} does not exist on green; run `pgbridge setup` (if it was dropped, blue missed \
             every change since: re-copy blue with `pgbridge setup --copy`)",
            config.slot
        )));
    }
    if rows.first("plugin") != Some("pgoutput") {
        return Err(Error::definite(format!(
            "replication slot {} on green uses plugin {:?}, not pgoutput; drop it or choose another green.slot",
            config.slot,
            rows.first("plugin").unwrap_or("?")
        )));
    }
    if rows.first("wal_status") == Some("lost") {
        return Err(Error::definite(format!(
            "replication slot {} on green was invalidated (wal_status = lost): green removed WAL that blue has not \
             received, so blue is missing changes after {checkpoint}. pgbridge will not continue from a new slot as if \
             nothing happened: run `pgbridge teardown`, then `pgbridge setup --copy` to re-synchronize blue",
            config.slot
        )));
    }
    if rows.first("publications") == Some("0") {
        return Err(Error::definite(format!(
            "publication {} does not exist on green; run `pgbridge setup`",
            config.publication
        )));
    }
    if let Some(pid) = rows.first("pid") {
        // Same SQLSTATE as START_REPLICATION's own refusal, so start-up waits the same way
        // for a walsender that has not yet noticed its client died.
        return Err(Error::from_server(
            format!("starting replication on {}", config.green.describe()),
            "55006",
            format!("replication slot \"{}\" is active for PID {pid}", config.slot),
        ));
    }
    if let Some(confirmed) = rows.first("confirmed").and_then(|c| c.parse::<Lsn>().ok()) {
        if confirmed > checkpoint {
            return Err(Error::definite(format!(
                "slot {} on green has confirmed {confirmed}, beyond blue's checkpoint {checkpoint}: green will not resend \
                 the changes in between, so blue is missing them (was blue restored from a backup, or did another \
                 consumer use the slot?). Re-synchronize blue with `pgbridge teardown` and `pgbridge setup --copy`",
                config.slot
            )));
        }
    }
    Ok(conn)
}
