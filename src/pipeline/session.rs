//! One session: a blue connection and applier, a replication stream from green, and the
//! apply loop between them, until shutdown or an error.
//!
//! The side of an error is settled here, where it leaves the code of one side: whatever
//! starting blue, reading its checkpoint or applying fails with is blue's (the applier marks
//! what green's stream sent it as green's), whatever starting the stream fails with is green's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::replay::{Failed, Replay};
use crate::apply::Applier;
use crate::config::Config;
use crate::error::{Error, Result, Side};
use crate::lsn::Lsn;
use crate::mapping::wire;
use crate::source::{ReplicationConn, SourceEvent, SourceHandle, StartOptions};
use crate::sql;
use crate::state::checkpoint;
use crate::state::server::{self, GreenServer, Verdict};
use crate::telemetry::{State, Telemetry};

/// Chunks (of at most [`crate::source::stream::CHUNK_BYTES`] each) buffered between the socket
/// reader and the applier.
const CHANNEL_CAPACITY: usize = 8;
/// How long `run` waits at start for a slot still held by a previous, dying walsender.
const SLOT_BUSY_GRACE: Duration = Duration::from_secs(30);

/// What every session of one run shares.
pub(super) struct Sessions<'a> {
    pub config: &'a Arc<Config>,
    pub telemetry: &'a Arc<Telemetry>,
    pub guard: &'a crate::drift::Guard,
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// When the run started (the grace for a busy slot counts from it).
    pub started: Instant,
    /// A session of this run has started streaming.
    pub streamed: bool,
}

/// Blue, ready to apply from its checkpoint.
struct Blue {
    applier: Applier,
    /// The applier's connection, for recording which green server the checkpoint belongs to.
    client: Arc<tokio_postgres::Client>,
    /// The green server blue's checkpoint belongs to, as last recorded.
    green_server: Option<GreenServer>,
    checkpoint: Lsn,
    /// What the applier confirms as durable on blue, for green.
    durable: watch::Receiver<Lsn>,
    /// Blue's types, for deciding whether values travel in binary (`None`: text asked for).
    types: Option<wire::Types>,
}

impl Sessions<'_> {
    /// Runs one session with what earlier sessions learned (`replay`); `streaming`: ask green
    /// for transactions in progress.
    pub(super) async fn session(&mut self, replay: &Replay, streaming: bool) -> Result<(), Failed> {
        let starting = |side: Side| {
            move |e: Error| Failed {
                error: e.or_side(side),
                applying: false,
                progressed: false,
            }
        };
        // Green's side of starting needs nothing of blue's until the checkpoint is compared
        // with the slot: it runs meanwhile. A failure there waits for blue's start, so a
        // failing blue is still reported first, as when they ran one after the other.
        let opening = async { Ok(open_green(self.config).await) };
        let (blue, opened) = tokio::try_join!(self.start_blue(replay), opening)
            .map_err(|e| crate::pooler::explain(e, &self.config.blue))
            .map_err(starting(Side::Blue))?;
        let Blue {
            mut applier,
            client,
            green_server,
            checkpoint,
            durable,
            types,
        } = blue;
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let options = StartOptions {
            slot: self.config.slot.clone(),
            publication: self.config.publication.clone(),
            start: checkpoint,
            streaming,
            origin_none: false,
            binary: false,
        };
        let Some((source, server, decision)) = self
            .start_green(opened, &options, green_server.as_ref(), &durable, types.as_ref(), tx)
            .await
            .map_err(starting(Side::Green))?
        else {
            return Ok(());
        };
        if green_server.as_ref() != Some(&server) {
            let recorded = server::record(&client, &self.config.schema, &self.config.slot, &server)
                .await
                .map_err(|e| crate::pooler::explain(e, &self.config.blue));
            if let Err(e) = recorded {
                source.close().await;
                return Err(starting(Side::Blue)(e));
            }
        }
        if let Err(e) = applier.attach_origin().await {
            source.close().await;
            return Err(starting(Side::Blue)(e));
        }
        applier.use_wire(decision);
        self.streamed = true;
        self.telemetry.set_state(State::Streaming);
        tracing::info!(slot = %self.config.slot, from = %checkpoint, "streaming from green");
        let result = applier.run(&mut rx, self.shutdown).await;
        let progressed = *durable.borrow() > checkpoint;
        source.close().await;
        match &result {
            Ok(()) => tracing::info!(checkpoint = %*durable.borrow(), "stopped cleanly"),
            Err(e) => tracing::debug!(error = %e, "session ended"),
        }
        result.map_err(|e| Failed {
            error: e.or_side(Side::Blue),
            applying: true,
            progressed,
        })
    }

    /// Connects to blue, reads its checkpoint and prepares the applier.
    async fn start_blue(&self, replay: &Replay) -> Result<Blue> {
        let config = self.config;
        let blue = crate::connect::connect_blue(&config.blue).await?;
        let checkpoint = checkpoint::read_required(&blue, &config.schema, &config.slot).await?;
        let green_server = server::read(&blue, &config.schema, &config.slot).await?;
        if checkpoint.lsn.is_zero() {
            return Err(Error::definite(format!(
                "blue's checkpoint for slot {} is at 0/0: the initial copy into blue (`pgbridge setup --copy`) did not \
                 finish, so blue is incomplete; run `pgbridge setup --copy` again",
                config.slot
            )));
        }
        // Blue has everything up to here: the lag gauges count from it, not from 0.
        self.telemetry.applied_idle(checkpoint.lsn);
        let (durable_tx, durable) = watch::channel(checkpoint.lsn);
        let orders = replay.learned.clone();
        let applier = Applier::new(
            config.clone(),
            blue.clone(),
            durable_tx,
            orders,
            self.telemetry.clone(),
            self.guard,
        );
        // Blue's types are read while the applier sets its session up (the same connection
        // runs them in turn, without waiting on each other's round trips).
        let types = async {
            match config.switches.binary {
                true => wire::blue_types(&blue).await.map(Some),
                false => Ok(None),
            }
        };
        let (applier, types) = tokio::try_join!(applier, types)?;
        Ok(Blue {
            applier,
            client: blue,
            green_server,
            checkpoint: checkpoint.lsn,
            durable,
            types,
        })
    }

    /// Starts streaming from green into `tx`, after checking that green is the server blue's
    /// checkpoint belongs to (`recorded`) or a promoted standby of it that has everything blue
    /// has; returns the stream, green's identity and the form values travel in, or `None` when
    /// shutdown came while waiting for a busy slot. `opened`: the connection [`open_green`]
    /// opened meanwhile, for the first attempt. `blue_types`: `None` keeps text.
    async fn start_green(
        &mut self,
        opened: Result<Opened>,
        options: &StartOptions,
        recorded: Option<&GreenServer>,
        durable: &watch::Receiver<Lsn>,
        blue_types: Option<&wire::Types>,
        tx: mpsc::Sender<Vec<SourceEvent>>,
    ) -> Result<Option<(SourceHandle, GreenServer, wire::Decision)>> {
        let config = self.config;
        let mut opened = Some(opened);
        loop {
            let attempt = async {
                let Opened {
                    conn,
                    server,
                    history,
                    green_types,
                } = match opened.take() {
                    Some(o) => o?,
                    None => open_green(config).await?,
                };
                let verdict = server::judge(recorded, &server, &history, options.start)
                    .map_err(|e| Error::definite(format!("{}: {}", conn.describe, e.message())))?;
                if let Verdict::FailedOver { from, to, fork } = verdict {
                    tracing::warn!(green = %conn.describe, from, to, %fork, checkpoint = %options.start, "green failed over; blue has nothing beyond the fork, resuming from blue's checkpoint on the new primary");
                }
                let failed_over = recorded.map_or(server.timeline > 1, |r| r.timeline != server.timeline);
                let mut conn = check_slot(conn, config, options.start, failed_over.then_some(&server)).await?;
                let version = conn.server_version_num();
                let others = if version < 160000 && config.skip_origins && options.streaming {
                    origins_of_others(&mut conn).await?
                } else {
                    Vec::new()
                };
                let mut options = for_server(options, config, version, &others);
                if options.streaming {
                    cap_decoding_memory(&mut conn).await?;
                }
                let decision = decide_wire(green_types, blue_types);
                options.binary = decision.binary;
                let handle = SourceHandle::start(conn, &options, durable.clone(), tx.clone()).await?;
                Ok::<_, Error>((handle, server, decision))
            };
            match attempt.await {
                Ok(started) => return Ok(Some(started)),
                // A walsender of a killed pgbridge keeps the slot until it notices its client
                // is gone; give it a moment at start-up.
                Err(e)
                    if e.sqlstate() == Some("55006") && !self.streamed && self.started.elapsed() < SLOT_BUSY_GRACE =>
                {
                    tracing::info!(error = %e, "slot busy; waiting for its previous user to let go");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = self.shutdown.changed() => return Ok(None),
                    }
                }
                Err(e) if e.sqlstate() == Some("55006") => {
                    let e = e.hint(format!(
                        "another pgbridge or a subscription is streaming slot {}; stop it first (see pg_stat_replication on green)",
                        config.slot
                    ));
                    return Err(if self.streamed { e } else { e.into_definite() });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The streaming options green's server version allows. Transactions applied under a
/// replication origin are skipped by green itself on PostgreSQL 16+ (`origin 'none'`). On 15,
/// green names the origin of a whole transaction (an Origin message) but not of one it streams
/// in progress; a bridge writing to a 15 server begins each transaction with a marker message
/// instead (see [`crate::state::origin`]), which is seen in the first streamed block. So on 15
/// transactions are streamed in progress unless green has replication origins that are not a
/// bridge's (`others`: a subscription's, whose large transactions could not be told apart),
/// and then they are received whole.
fn for_server(options: &StartOptions, config: &Config, version: u32, others: &[String]) -> StartOptions {
    let mut options = options.clone();
    if config.skip_origins {
        if version >= 160000 {
            options.origin_none = true;
        } else if options.streaming && !others.is_empty() {
            tracing::info!(origins = %others.join(", "), "green runs PostgreSQL {version} and has replication origins that are not a bridge's: large transactions are received whole, so that those applied under an origin can be recognized (green.origin = \"none\")");
            options.streaming = false;
        }
    }
    options
}

/// Replication origins on green that no bridge created (a bridge's are named `pgbridge_...`
/// unless `apply.origin` says otherwise, which then counts as another's).
async fn origins_of_others(conn: &mut ReplicationConn) -> Result<Vec<String>> {
    let rows = conn
        .simple_query("SELECT string_agg(roname, ', ' ORDER BY roname) AS names FROM pg_replication_origin WHERE roname NOT LIKE 'pgbridge\\_%'")
        .await?;
    Ok(rows.first("names").map(|n| vec![n.to_string()]).unwrap_or_default())
}

/// Green's types and the columns its publication carries, `(table, column, type OID)`.
type GreenWire = (wire::Types, Vec<(String, String, u32)>);

/// A replication connection to green, opened before blue's checkpoint is known.
struct Opened {
    conn: ReplicationConn,
    server: GreenServer,
    history: Vec<(u32, Lsn)>,
    /// Green's types and published columns, when binary may be asked for (else `None`).
    green_types: Option<GreenWire>,
}

/// Connects to green, identifies it and, unless text is asked for (`PGBRIDGE_BINARY=off`),
/// reads what deciding the form of values needs of green (a server older than pgbridge
/// supports is refused once the slot is checked).
async fn open_green(config: &Config) -> Result<Opened> {
    let mut conn = ReplicationConn::connect(&config.green, "pgbridge").await?;
    let (server, history) = conn.server().await?;
    let green_types = match config.switches.binary && conn.server_version_num() >= 140000 {
        true => Some(green_wire(config).await?),
        false => None,
    };
    Ok(Opened {
        conn,
        server,
        history,
        green_types,
    })
}

/// Green's types and published columns, read on a connection of its own, not on the
/// replication connection: `pg_publication_tables` opens the published tables (PostgreSQL
/// 16+), and a table's description cached in the walsender from its current catalog would be
/// what pgoutput then describes older transactions with.
async fn green_wire(config: &Config) -> Result<GreenWire> {
    let green = crate::connect::connect_green_sql(config).await?;
    let types = wire::types_on(&green, "green").await?;
    let columns = wire::green_columns(&green, &wire::published_columns_sql(&config.publication)).await?;
    Ok((types, columns))
}

/// Whether green's values travel in binary this session: blue's types (`None`: text asked for)
/// against green's and the columns the publication carries (see `mapping::wire`).
fn decide_wire(green: Option<GreenWire>, blue: Option<&wire::Types>) -> wire::Decision {
    let (Some((green, columns)), Some(blue)) = (green, blue) else {
        return wire::Decision::off();
    };
    let decision = wire::Decision::new(&green, blue, &columns);
    match decision.text_columns.first() {
        None => tracing::info!("values travel in binary"),
        Some(c) => tracing::info!(table = %c.table, column = %c.column, why = %c.why, "values travel as text"),
    }
    decision
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

fn require_pg14(version: u32) -> Result<()> {
    if version < 140000 {
        return Err(Error::definite(format!(
            "green runs PostgreSQL {version}; pgbridge needs 14 or later (pgoutput messages)"
        )));
    }
    Ok(())
}

/// Refuses to stream from a slot that cannot deliver everything after the checkpoint.
/// `promoted`: green's server when it is a promoted standby, for what a missing slot means.
async fn check_slot(
    mut conn: ReplicationConn,
    config: &Config,
    checkpoint: Lsn,
    promoted: Option<&GreenServer>,
) -> Result<ReplicationConn> {
    let version = conn.server_version_num();
    require_pg14(version)?;
    let rows = conn
        .simple_query(&format!(
            "SELECT plugin, database, wal_status, confirmed_flush_lsn::text AS confirmed, active_pid::text AS pid, \
                    pg_current_wal_lsn()::text AS wal, (SELECT count(*) FROM pg_publication WHERE pubname = {pub})::text \
                    AS publications FROM pg_replication_slots WHERE slot_name = {slot}",
            slot = sql::literal(&config.slot),
            pub = sql::literal(&config.publication),
        ))
        .await?;
    if rows.rows.is_empty() {
        if let Some(server) = promoted {
            return Err(slot_lost_in_failover(
                config,
                &conn.describe,
                server,
                checkpoint,
                version,
            ));
        }
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
    server::refuse_ahead(checkpoint, rows.first("wal"))?;
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
                 the changes in between, so blue is missing them (did blue fail over to an asynchronous standby that \
                 lacked its last commits — `[blue] standbys` prevents that —, was blue restored from a backup, or did \
                 another consumer use the slot?). Re-synchronize blue with `pgbridge setup --copy`",
                config.slot
            )));
        }
    }
    Ok(conn)
}

/// The slot is missing on a promoted green: the failover did not carry it over.
fn slot_lost_in_failover(config: &Config, green: &str, server: &GreenServer, checkpoint: Lsn, version: u32) -> Error {
    let why = if version < 170000 {
        "before PostgreSQL 17 a replication slot exists only on the primary it was created on".to_string()
    } else {
        "it was not a failover slot synchronized to this standby when it was promoted (see `pgbridge check` and \
         \"High availability\" in the README)"
            .to_string()
    };
    Error::definite(format!(
        "green failed over: {green} is on timeline {} and replication slot {} does not exist there, because {why}. \
         Blue has every green transaction up to {checkpoint}; what green committed after that cannot be streamed. \
         Re-synchronize blue with `pgbridge setup --copy` (it converges blue while green is written; blue is not a \
         rollback target until it finishes)",
        server.timeline, config.slot
    ))
}
