//! The blue side: turns green's change stream into blue transactions.
//!
//! Each blue transaction holds one or more *whole* green transactions and, last, the checkpoint
//! row update; only after its COMMIT returns is the new position published to the source as
//! durable, so green never forgets a change blue does not have (rules 1 and 2 of DESIGN.md).
//! Consecutive green transactions share a blue transaction while more of them are already
//! waiting in the channel (up to `max_batch_rows` / `max_batch_delay`); when the channel is
//! empty the group commits at once, so a lone transaction is not delayed.
//!
//! Changes are applied as they stream in, never buffered whole, so a transaction of any size
//! runs in bounded memory.

mod batch;
pub mod checkpoint;
mod durability;
pub mod exec;
mod group;
pub mod origin;
mod rows;
mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::config::{Config, Endpoint, OnError};
use crate::error::{Cause, Error, Result, Side};
use crate::evaluation::Environment;
use crate::failpoint;
use crate::lsn::Lsn;
use crate::mapping::resolve::{Mappings, TypeNames};
use crate::mapping::statements::{self, Shape};
use crate::mapping::{GreenTable, TablePlan};
use crate::protocol::pgoutput::{LogicalMessage, Relation};
use crate::source::SourceEvent;
use crate::telemetry::{Commit, Telemetry};
use durability::{Durability, Mode};
use exec::{Context, Pipeline, TextParam};
use group::{CommitPolicy, Group, Groups};

/// Blue sessions of transactions green streams in progress (each with its own origin).
pub const MAX_LANES: usize = stream::MAX_LANES;
/// Statements kept in flight on the blue connection.
const MAX_IN_FLIGHT: usize = 512;
/// What a failed checkpoint update says. It fails when the row no longer holds the position
/// written last: an earlier pipelined transaction failed (that error is reported instead), or
/// something else wrote the row.
const CHECKPOINT_UPDATE: &str =
    "updating the checkpoint (a NULL lsn means the row changed under pgbridge: is another pgbridge using this slot?)";
/// Housekeeping cadence: delayed group commits, idle checkpoints, flush confirmations.
const TICK: Duration = Duration::from_millis(100);
/// Idle positions are written to blue at most this often.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Connects to blue with the session settings the apply path relies on.
pub async fn connect_blue(endpoint: &Endpoint) -> Result<Arc<Client>> {
    let mut pg = endpoint.pg.clone();
    if pg.get_application_name().is_none() {
        pg.application_name("pgbridge");
    }
    let tls = crate::tls::MakeTls::new(&endpoint.tls);
    let (client, connection) = pg.connect(tls).await.map_err(|e| connect_error(endpoint, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "blue connection ended");
        }
    });
    Ok(Arc::new(client))
}

/// A failed connection attempt, with advice that fits the failure.
pub fn connect_error(endpoint: &Endpoint, err: &tokio_postgres::Error) -> Error {
    let e = Error::postgres(format!("cannot connect to {}", endpoint.describe()), err);
    match err.as_db_error().map(|d| d.code().code()) {
        Some("28P01") => e.hint(format!("check the password in {}.dsn", endpoint.side)),
        Some("28000") => e.hint("add a pg_hba.conf line that admits this user and database"),
        Some("3D000") => e.hint(format!("check the database name in {}.dsn", endpoint.side)),
        Some(_) => e,
        None if e.message().contains("TLS handshake failed") => e,
        None if e.message().contains("server does not support TLS") => e.hint(endpoint.tls.refused_hint(endpoint.side)),
        None => e.hint(format!(
            "check host and port in {}.dsn and that the server is running",
            endpoint.side
        )),
    }
}

/// Per-connection settings: no timeouts that an operator set for applications, the one
/// evaluation environment (see [`crate::evaluation`]: every path computes mapped values under
/// the same settings), and how commits become durable. Returns whether the replica role was
/// granted.
async fn prepare_session(client: &Client, env: &Environment) -> Result<(bool, Mode)> {
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;")
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    env.apply(client).await?;
    // Timeouts an operator may have set for applications, where they exist (PostgreSQL 14+
    // idle_session_timeout, 17+ transaction_timeout): a large transaction must not be cut off.
    client
        .batch_execute(
            "SELECT set_config(name, '0', false) FROM pg_settings \
             WHERE name IN ('idle_session_timeout', 'transaction_timeout')",
        )
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names')",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    let (sync, standbys): (String, String) = (row.get(0), row.get(1));
    // Without synchronous standbys, durable means flushed to blue's own WAL, which pgbridge
    // can observe; so commits need not wait for it. With them, every commit waits as
    // configured, so a failover of blue to a standby loses nothing green has forgotten.
    let durability = if standbys.trim().is_empty() {
        Mode::Async
    } else {
        Mode::Sync
    };
    let setting = match (durability, sync.as_str()) {
        (Mode::Async, _) => Some("off"),
        (Mode::Sync, "off") => Some("local"),
        (Mode::Sync, _) => None,
    };
    if let Some(setting) = setting {
        client
            .batch_execute(&format!("SET synchronous_commit = {setting}"))
            .await
            .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    }
    // What PostgreSQL's own apply worker does: triggers and foreign-key checks do not fire for
    // replicated rows. Needs superuser or GRANT SET ON PARAMETER (PostgreSQL 15+).
    let replica_role = match client.batch_execute("SET session_replication_role = replica").await {
        Ok(()) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => false,
        Err(e) => return Err(Error::postgres("configuring the blue session", &e)),
    };
    Ok((replica_role, durability))
}

struct Rel {
    relation: Relation,
    label: Arc<str>,
    excluded: bool,
    plan: Option<Arc<TablePlan>>,
}

struct GreenTx {
    commit_lsn: Lsn,
    /// Blue already has it.
    skip: bool,
    /// Applied on green under a replication origin (by a bridge in the other direction, or a
    /// subscription) and `green.origin = "none"`: its changes are not carried, its position is.
    foreign: bool,
    /// Green commit time, until the first change reports the transaction as pending
    /// (`Telemetry::pending_since`); `None` on lanes, whose commit time comes at Stream Commit.
    unreported: Option<i64>,
}

/// Counters for the periodic progress line.
#[derive(Default)]
struct Progress {
    transactions: u64,
    rows: u64,
    skipped: u64,
    last_report: Option<Instant>,
}

/// Applies one replication session's events to blue.
pub struct Applier {
    config: Arc<Config>,
    pipe: Pipeline,
    relations: HashMap<u32, Rel>,
    mappings: Mappings,
    types: TypeNames,
    statements: HashMap<(u32, Shape), (Statement, Arc<statements::Sql>)>,
    advance: Statement,
    advance_idle: Statement,
    /// Forces blue's WAL to disk: rewrites the checkpoint row in a synchronous commit.
    flush: Statement,
    /// What is committed on blue and what may be confirmed to green.
    durability: Durability,
    /// The open blue transaction and those committing.
    groups: Groups,
    policy: CommitPolicy,
    tx: Option<GreenTx>,
    idle: Option<Lsn>,
    last_checkpoint_write: Instant,
    progress: Progress,
    careful: Vec<(Lsn, Lsn)>,
    dead_letter: Option<Statement>,
    telemetry: Arc<Telemetry>,
    /// Pending set-based batches, by green table OID.
    batches: HashMap<u32, batch::Batch>,
    /// Set-based apply is on (PGBRIDGE_APPLY=exact turns it off: the reference path).
    batching: bool,
    /// Blue runs with session_replication_role = replica, so tables may be written in any order.
    reorder_tables: bool,
    /// Green tables (qualified names) whose batched inserts are sent as upserts, because a
    /// plain insert met a row blue already had.
    upsert_tables: HashSet<String>,
    /// More events are already waiting behind the one being handled.
    backlog: bool,
    /// Inside a Stream Start .. Stream Stop block: the in-progress transaction it belongs to.
    stream_block: Option<u32>,
    /// Open in-progress transactions, by green top-level xid (see `stream`).
    lanes: HashMap<u32, stream::Lane>,
    spare_lanes: Vec<stream::Lane>,
    /// Where to stop because the catalogs drifted (the main session only).
    drift_stop: Option<watch::Receiver<Option<crate::drift::Stop>>>,
    /// A green transaction (commit LSN) the schema changed at, and why: everything before it
    /// is committed, then the session ends.
    stop_before: Option<(Lsn, String)>,
    /// The session settings mapped values are computed under, on this session and its lanes.
    env: Environment,
}

impl Applier {
    /// Prepares the blue session; `durable_tx` holds the checkpoint read at start (confirmed
    /// to green as soon as streaming starts, so it is flushed here first).
    /// The green transactions whose commit LSN falls in one of the `careful` ranges are applied
    /// row by row, each row in a savepoint, so a row blue rejects is found exactly (and parked
    /// under `dead_letter`). Batched inserts into the `upsert_tables` always carry
    /// `ON CONFLICT`.
    pub async fn new(
        config: Arc<Config>,
        client: Arc<Client>,
        durable_tx: watch::Sender<Lsn>,
        careful: Vec<(Lsn, Lsn)>,
        upsert_tables: HashSet<String>,
        telemetry: Arc<Telemetry>,
        guard: &crate::drift::Guard,
    ) -> Result<Self> {
        let env = Environment::resolve(&client, &config).await?;
        let (replica_role, mode) = prepare_session(&client, &env).await?;
        if !replica_role {
            tracing::warn!(
                "blue refused session_replication_role = replica; triggers and foreign keys on blue fire for \
                 replicated rows and tables are applied in green's order (grant it with: GRANT SET ON PARAMETER \
                 session_replication_role TO {})",
                crate::sql::ident(&config.blue.user())
            );
        }
        let mappings = guard.mappings.clone();
        tracing::info!(settings = %env.describe(), "mappings are evaluated on blue with these settings");
        let durability = Durability::new(mode, durable_tx);
        let mut applier =
            Applier::on_session(config, client, mappings, durability, telemetry, replica_role, env).await?;
        applier.drift_stop = Some(guard.stop.clone());
        if mode == Mode::Async {
            // The checkpoint just read may be an asynchronous commit of an earlier run that
            // blue has not flushed yet: it is confirmed to green as it is, so flush it first.
            flush_wal(applier.pipe.client(), &applier.flush, &applier.config.slot).await?;
        }
        if applier.config.on_error == OnError::DeadLetter {
            applier.dead_letter = Some(rows::prepare_dead_letter(applier.pipe.client(), &applier.config.schema).await?);
        }
        applier.careful = careful;
        applier.upsert_tables = upsert_tables;
        Ok(applier)
    }

    /// An applier on a prepared blue session, without the main connection's duties (dead
    /// letters, careful replays, upserts); `durability` holds the position it starts at.
    async fn on_session(
        config: Arc<Config>,
        client: Arc<Client>,
        mappings: Mappings,
        durability: Durability,
        telemetry: Arc<Telemetry>,
        replica_role: bool,
        env: Environment,
    ) -> Result<Self> {
        let text3 = [Type::TEXT, Type::TEXT, Type::TEXT];
        let advance = client
            .prepare_typed(
                &checkpoint::advance_sql(&config.schema, config.origin.is_some()),
                &[Type::TEXT; 4],
            )
            .await
            .map_err(|e| Error::postgres("preparing the checkpoint update on blue", &e))?;
        let advance_idle = client
            .prepare_typed(&checkpoint::advance_idle_sql(&config.schema), &text3)
            .await
            .map_err(|e| Error::postgres("preparing the checkpoint update on blue", &e))?;
        let flush = client
            .prepare_typed(&checkpoint::touch_sql(&config.schema), &text3[..1])
            .await
            .map_err(|e| Error::postgres("preparing the checkpoint update on blue", &e))?;
        Ok(Applier {
            policy: CommitPolicy {
                max_rows: config.max_batch_rows,
                max_delay: config.max_batch_delay,
            },
            config,
            pipe: Pipeline::new(client, MAX_IN_FLIGHT),
            relations: HashMap::new(),
            mappings,
            types: TypeNames::default(),
            statements: HashMap::new(),
            advance,
            advance_idle,
            flush,
            durability,
            groups: Groups::default(),
            tx: None,
            idle: None,
            last_checkpoint_write: Instant::now(),
            progress: Progress::default(),
            careful: Vec::new(),
            dead_letter: None,
            telemetry,
            batches: HashMap::new(),
            batching: std::env::var("PGBRIDGE_APPLY").map_or(true, |v| v != "exact"),
            reorder_tables: replica_role,
            upsert_tables: HashSet::new(),
            backlog: false,
            stream_block: None,
            lanes: HashMap::new(),
            spare_lanes: Vec::new(),
            drift_stop: None,
            stop_before: None,
            env,
        })
    }

    /// Selects the replication origin blue's commits are tagged with (`apply.origin`). Call
    /// it once green's slot is held, so no other run of this bridge can be using the origin.
    pub async fn attach_origin(&mut self) -> Result<()> {
        if let Some(name) = &self.config.origin {
            origin::attach(self.pipe.client(), name, &self.config.blue.user()).await?;
        }
        Ok(())
    }

    /// Applies events until shutdown (`Ok`) or an error. On shutdown a complete group is
    /// committed and a partly received green transaction is rolled back (green resends it).
    pub async fn run(
        &mut self,
        events: &mut mpsc::Receiver<Vec<SourceEvent>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return self.finish().await;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return self.finish().await,
                chunk = events.recv() => match chunk {
                    Some(chunk) => self.on_chunk(chunk, events).await?,
                    None => return Err(green("the replication stream from green ended")),
                },
                done = self.pipe.finish_one(), if self.pipe.busy() => {
                    done?;
                    self.settle_commits();
                    self.maybe_confirm().await?;
                }
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    /// Handles a chunk of events, committing between green transactions when due.
    async fn on_chunk(&mut self, chunk: Vec<SourceEvent>, events: &mpsc::Receiver<Vec<SourceEvent>>) -> Result<()> {
        let last = chunk.len().saturating_sub(1);
        for (i, event) in chunk.into_iter().enumerate() {
            self.backlog = i < last || !events.is_empty();
            self.handle(event).await?;
            self.maybe_commit(i == last && events.is_empty()).await?;
        }
        self.settle_commits();
        Ok(())
    }

    /// Whether the green transaction committed at `lsn` is applied row by row.
    fn is_careful(&self, lsn: Lsn) -> bool {
        self.careful.iter().any(|(first, last)| *first <= lsn && lsn <= *last)
    }

    /// The position after everything applied so far, committed or not.
    fn applied_end(&self) -> Lsn {
        self.groups.applied_end(self.durability.committed())
    }

    /// The position after every group committed or committing on blue.
    fn committing_end(&self) -> Lsn {
        self.groups.committing_end(self.durability.committed())
    }

    /// Commits the open group between green transactions when nothing more is waiting (so a
    /// lone transaction is not delayed) or when it is big or old enough.
    async fn maybe_commit(&mut self, queue_empty: bool) -> Result<()> {
        let Some(group) = &self.groups.open else { return Ok(()) };
        if self.tx.is_some() {
            return Ok(());
        }
        if self.policy.due(group, queue_empty) {
            self.commit_group().await?;
            self.maybe_confirm().await?;
        }
        Ok(())
    }

    async fn handle(&mut self, event: SourceEvent) -> Result<()> {
        match event {
            SourceEvent::Message(m) => self.on_message(m).await,
            SourceEvent::Keepalive { wal_end } => {
                self.telemetry.received(wal_end);
                if self.tx.is_none() && wal_end > self.applied_end() {
                    // Everything green committed before wal_end has been received and applied
                    // (or is in the open group), so the position is safe to confirm.
                    match &mut self.groups.open {
                        Some(g) => g.end = g.end.max(wal_end),
                        None => self.idle = Some(wal_end),
                    }
                }
                Ok(())
            }
            SourceEvent::Failed(e) => Err(e.or_side(Side::Green)),
        }
    }

    async fn on_message(&mut self, message: LogicalMessage) -> Result<()> {
        if let Some(top) = self.stream_block {
            return self.in_stream_block(top, message).await;
        }
        match message {
            LogicalMessage::Begin(b) => {
                if self.tx.is_some() {
                    return Err(green("green sent Begin inside a transaction; restarting the stream"));
                }
                // Delivery is in commit order, so a transaction that commits before the
                // checkpoint is exactly one whose end_lsn is at or below it: already on blue.
                let skip = b.final_lsn < self.applied_end();
                let stop = match &self.stop_before {
                    Some((lsn, message)) if b.final_lsn >= *lsn => Some(message.clone()),
                    _ => self.drift_stop_message(b.final_lsn),
                };
                if let Some(message) = stop.filter(|_| !skip) {
                    self.commit_group().await?;
                    self.drain().await?;
                    self.confirm_all().await?;
                    tracing::debug!(at = %b.final_lsn, checkpoint = %self.durability.committed(), "committed everything before the change");
                    return Err(Error::definite(message));
                }
                if skip {
                    tracing::debug!(commit_lsn = %b.final_lsn, checkpoint = %self.durability.committed(), "skipping a transaction blue already has");
                    self.progress.skipped += 1;
                } else {
                    self.open_group().await?;
                }
                self.tx = Some(GreenTx {
                    commit_lsn: b.final_lsn,
                    skip,
                    foreign: false,
                    unreported: Some(b.timestamp),
                });
                Ok(())
            }
            LogicalMessage::Commit(c) => {
                self.telemetry.received(c.end_lsn);
                let tx = self
                    .tx
                    .take()
                    .ok_or_else(|| green("green sent Commit outside a transaction"))?;
                if tx.skip {
                    return Ok(());
                }
                let group = self
                    .groups
                    .open
                    .as_mut()
                    .ok_or_else(|| Error::transient("commit without an open blue transaction"))?;
                group.end = group.end.max(c.end_lsn);
                if tx.foreign {
                    self.progress.skipped += 1;
                    return Ok(());
                }
                group.transactions += 1;
                group.commit_time = c.timestamp;
                Ok(())
            }
            LogicalMessage::Relation(r) => self.on_relation(r).await,
            LogicalMessage::Insert(m) => {
                self.report_pending();
                if let Some((plan, lsn)) = self.change_target(m.relation_oid).await? {
                    self.count(&plan, "insert");
                    self.insert(&plan, lsn, &m.new).await?;
                }
                Ok(())
            }
            LogicalMessage::Update(m) => {
                self.report_pending();
                if let Some((plan, lsn)) = self.change_target(m.relation_oid).await? {
                    self.count(&plan, "update");
                    self.update(&plan, lsn, m.old.as_ref(), &m.new).await?;
                }
                Ok(())
            }
            LogicalMessage::Delete(m) => {
                self.report_pending();
                if let Some((plan, lsn)) = self.change_target(m.relation_oid).await? {
                    self.count(&plan, "delete");
                    self.delete(&plan, lsn, &m.old).await?;
                }
                Ok(())
            }
            LogicalMessage::Truncate(t) => {
                self.report_pending();
                self.truncate(&t).await
            }
            LogicalMessage::Message(m) => {
                if !m.transactional {
                    tracing::debug!(prefix = %m.prefix, lsn = %m.lsn, "ignoring a non-transactional logical message");
                }
                Ok(())
            }
            LogicalMessage::Type(t) => {
                self.types.learn(t.oid, &t.namespace, &t.name);
                Ok(())
            }
            LogicalMessage::Origin(o) => {
                // Sent after Begin for a transaction applied under a replication origin. With
                // `origin 'none'` (PostgreSQL 16+) green filters these itself.
                if let Some(tx) = self.tx.as_mut().filter(|_| self.config.skip_origins) {
                    if !tx.foreign && !tx.skip {
                        tracing::debug!(origin = %o.name, commit_lsn = %tx.commit_lsn, "not carrying a transaction applied on green under a replication origin");
                    }
                    tx.foreign = true;
                }
                Ok(())
            }
            LogicalMessage::StreamStart(s) => self.stream_start(s).await,
            LogicalMessage::StreamCommit(c) => self.stream_commit(c).await,
            LogicalMessage::StreamAbort(a) => self.stream_abort(a).await,
            LogicalMessage::StreamStop => Err(green(
                "green sent Stream Stop outside a stream block; restarting the stream",
            )),
        }
    }

    /// A change of a transaction blue lacks: from now on it counts as lag until a blue commit
    /// passes it (transactions without changes, which green sends before PostgreSQL 15, and
    /// those not carried never count, as in `pgbridge lag`).
    fn report_pending(&mut self) {
        if let Some(tx) = self.tx.as_mut().filter(|t| !t.skip && !t.foreign) {
            if let Some(commit_time) = tx.unreported.take() {
                self.telemetry.pending_since(tx.commit_lsn, commit_time);
            }
        }
    }

    async fn open_group(&mut self) -> Result<()> {
        if self.groups.open.is_none() {
            self.pipe.command("BEGIN".into(), Context::new("BEGIN")).await?;
            self.groups.begin(self.durability.committed());
        }
        Ok(())
    }

    /// Commits the open group with its checkpoint, then publishes the position as durable.
    async fn commit_group(&mut self) -> Result<()> {
        self.flush_batches().await?;
        // The checkpoint this group replaces: the previous group's, whose COMMIT may still
        // be in flight.
        let prev = self.committing_end();
        let Some(group) = self.groups.open.take() else {
            return Ok(());
        };
        let advance = self.advance.clone();
        commit_with_checkpoint(&mut self.pipe, &advance, &self.config.slot, &group, prev).await?;
        // The next group's statements follow the COMMIT without waiting for it; the position
        // is published when the COMMIT has returned (`settle_commits`).
        self.groups.committing(group);
        self.settle_commits();
        Ok(())
    }

    /// Publishes the groups whose COMMIT has returned, in order.
    fn settle_commits(&mut self) {
        for group in self.groups.settle(self.pipe.take_commits()) {
            self.group_committed(group);
        }
    }

    /// A group's COMMIT has returned: publishes its position and accounts for it.
    fn group_committed(&mut self, group: Group) {
        failpoint::hit("after_blue_commit");
        self.publish(group.end);
        self.telemetry.committed(&Commit {
            lsn: group.end,
            transactions: group.transactions,
            rows: group.rows,
            duration: group.started.elapsed(),
            last_commit_time: group.commit_time,
            counts: &group.counts,
        });
        self.progress.transactions += group.transactions;
        self.progress.rows += group.rows;
        tracing::debug!(lsn = %group.end, transactions = group.transactions, rows = group.rows, "committed on blue");
    }

    /// Waits for everything in flight and publishes what it committed.
    async fn drain(&mut self) -> Result<()> {
        self.pipe.drain().await?;
        self.settle_commits();
        Ok(())
    }

    /// Counts one change for the metrics of the open group.
    fn count(&mut self, plan: &TablePlan, op: &'static str) {
        if let Some(g) = self.groups.open.as_mut() {
            *g.counts.entry((plan.green_name.clone(), op)).or_default() += 1;
        }
    }

    /// Records a blue commit that reaches `lsn`; it is confirmed to green once durable.
    fn publish(&mut self, lsn: Lsn) {
        self.durability.committed_at(lsn);
        self.last_checkpoint_write = Instant::now();
        if self.idle.is_some_and(|i| i <= lsn) {
            self.idle = None;
        }
    }

    /// Under asynchronous commit: ties committed positions to blue's WAL insert position and
    /// confirms those that blue's WAL flush has passed. One cheap query, only when something
    /// is waiting.
    async fn confirm_flushed(&mut self) -> Result<()> {
        if !self.durability.waiting() {
            return Ok(());
        }
        let row = match self
            .pipe
            .client()
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) => {
                let e = Error::postgres("reading blue's WAL positions", &e);
                return Err(self.pipe.root_cause(e).await);
            }
        };
        let parse = |i: usize| -> Result<Lsn> {
            let text: String = row.get(i);
            text.parse()
                .map_err(|_| Error::transient(format!("blue returned an unreadable WAL position {text:?}")))
        };
        let (insert, flushed) = (parse(0)?, parse(1)?);
        self.durability.blue_wal(insert, flushed);
        Ok(())
    }

    /// Makes everything committed so far durable and confirms it (at shutdown).
    async fn confirm_all(&mut self) -> Result<()> {
        if self.durability.mode() == Mode::Async && self.durability.waiting() {
            self.drain().await?;
            flush_wal(self.pipe.client(), &self.flush, &self.config.slot).await?;
            self.durability.all_flushed();
        }
        Ok(())
    }

    /// Why to stop before the green transaction (or idle position) at `lsn`: the catalogs were
    /// seen to drift at or before it (the main session only).
    fn drift_stop_message(&self, lsn: Lsn) -> Option<String> {
        let stop = self.drift_stop.as_ref()?.borrow();
        let stop = stop.as_ref().filter(|s| lsn >= s.at)?;
        Some(format!(
            "{}; blue has everything green committed before {}",
            stop.message, stop.at
        ))
    }

    /// Idle: nothing left to apply before the drift's position (a transaction at or past it
    /// stops at its Begin).
    fn check_drift_stop(&self) -> Result<()> {
        if self.tx.is_none() && self.groups.open.is_none() {
            if let Some(message) = self.drift_stop_message(self.durability.committed()) {
                return Err(Error::definite(message));
            }
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<()> {
        self.check_drift_stop()?;
        if self.tx.is_none() && self.groups.open.as_ref().is_some_and(|g| self.policy.overdue(g)) {
            self.commit_group().await?;
        }
        if let (None, Some(idle)) = (&self.groups.open, self.idle) {
            if self.last_checkpoint_write.elapsed() >= IDLE_CHECKPOINT_INTERVAL {
                self.write_idle_checkpoint(idle).await?;
            }
        }
        self.maybe_confirm().await?;
        self.report_progress();
        Ok(())
    }

    /// Checks blue's WAL flush at most once per tick, and only between blue transactions:
    /// then nothing is in flight and the query costs one round trip.
    async fn maybe_confirm(&mut self) -> Result<()> {
        if self.groups.open.is_none() && !self.pipe.busy() && self.durability.check_due(TICK) {
            self.confirm_flushed().await?;
        }
        Ok(())
    }

    async fn write_idle_checkpoint(&mut self, lsn: Lsn) -> Result<()> {
        let advance_idle = self.advance_idle.clone();
        self.drain().await?;
        if lsn <= self.durability.committed() {
            return Ok(());
        }
        let params = vec![
            text(&self.config.slot),
            text(&lsn.to_string()),
            text(&self.durability.committed().to_string()),
        ];
        self.pipe
            .execute(&advance_idle, params, Context::new(CHECKPOINT_UPDATE))
            .await?;
        self.drain().await?;
        tracing::debug!(lsn = %lsn, "idle position committed on blue");
        self.publish(lsn);
        self.telemetry.applied_idle(lsn);
        Ok(())
    }

    fn report_progress(&mut self) {
        let now = Instant::now();
        let last = *self.progress.last_report.get_or_insert(now);
        if now.duration_since(last) >= Duration::from_secs(30)
            && (self.progress.transactions > 0 || self.progress.skipped > 0)
        {
            tracing::info!(
                transactions = self.progress.transactions,
                rows = self.progress.rows,
                skipped = self.progress.skipped,
                checkpoint = %self.durability.committed(),
                "applied to blue in the last 30 s"
            );
            self.progress = Progress {
                last_report: Some(now),
                ..Progress::default()
            };
        }
    }

    /// On shutdown: commit what is complete, roll back what is not.
    async fn finish(&mut self) -> Result<()> {
        // Transactions still in progress on green: closing their connections rolls them back
        // on blue (green streams them again), and releases their locks first.
        self.lanes.clear();
        self.spare_lanes.clear();
        self.stream_block = None;
        if self.tx.as_ref().is_some_and(|t| !t.skip) {
            self.groups.open = None;
            self.batches.clear();
            self.pipe.command("ROLLBACK".into(), Context::new("ROLLBACK")).await?;
            self.drain().await?;
            tracing::info!("rolled back a partly received green transaction; green will send it again");
        } else if self.groups.open.is_some() {
            self.commit_group().await?;
        }
        self.drain().await?;
        if let Some(idle) = self.idle.filter(|i| *i > self.durability.committed()) {
            self.write_idle_checkpoint(idle).await?;
        }
        self.confirm_all().await
    }

    async fn on_relation(&mut self, relation: Relation) -> Result<()> {
        let oid = relation.oid;
        // Rows batched under the old description go out before it changes.
        self.flush_batch(oid).await?;
        self.statements.retain(|(o, _), _| *o != oid);
        let excluded = self.config.is_excluded(&relation.namespace, &relation.name);
        let label: Arc<str> = format!("{}.{}", relation.namespace, relation.name).into();
        self.relations.insert(
            oid,
            Rel {
                relation,
                label,
                excluded,
                plan: None,
            },
        );
        // Rule 7: a Relation message that no longer fits stops the bridge before the
        // transaction that carries it is applied. Inside a skipped transaction the plan is
        // resolved when first used instead.
        let expected = self.mappings.expects(&self.relations[&oid].label);
        if !excluded && expected && !self.tx.as_ref().is_some_and(|t| t.skip) {
            self.resolve(oid).await?;
        }
        Ok(())
    }

    async fn resolve(&mut self, oid: u32) -> Result<Arc<TablePlan>> {
        self.pipe.drain().await?;
        let relation = self.relations[&oid].relation.clone();
        let oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        let planned = async {
            self.types.resolve_builtins(self.pipe.client(), &oids).await?;
            let green = GreenTable::from_relation(&relation, |o| self.types.get(o))?;
            self.mappings.plan_with_blue(self.pipe.client(), &green).await
        };
        let (plan, blue) = match planned.await {
            Ok(p) => p,
            Err(e) if e.is_transient() => return Err(self.pipe.root_cause(e).await),
            Err(e) => return Err(self.drifted_or(e)),
        };
        self.hold_to_baseline(&plan, &blue)?;
        let rel = self.relations.get_mut(&oid).expect("relation just looked up");
        tracing::info!(table = %rel.label, blue = %plan.blue_name, columns = plan.targets.len(), "mapped green table");
        rel.plan = Some(plan.clone());
        Ok(plan)
    }

    /// A Relation message that no longer plans: when the table is part of the accepted plan,
    /// that is drift, and the message says what to do about it.
    fn drifted_or(&self, e: Error) -> Error {
        if self.mappings.baseline().is_none() {
            return e;
        }
        self.telemetry.schema_drift(true);
        self.drift_error(format!(
            "{}{}; blue has everything green committed before it and nothing after; {}. If the mapping files were \
             already changed for a newer green schema, the stream has not reached that change yet: keep the earlier \
             mapping until the bridge stops at the change, then switch",
            e.message(),
            self.at_lsn(),
            crate::drift::fix(&self.config)
        ))
    }

    /// A stop for drift at the transaction being received: the transactions before it
    /// (maybe in the same blue transaction) are committed first (the pipeline restarts the
    /// session to do so). On a lane the transaction's position is not known yet, so green
    /// sends it again whole.
    pub(super) fn drift_error(&self, message: String) -> Error {
        let e = Error::definite(message);
        match (&self.tx, self.drift_stop.is_some()) {
            (Some(tx), true) => e.with_cause(Cause::SchemaChangedAt(tx.commit_lsn)),
            (_, false) => e.with_cause(Cause::InProgress),
            _ => e,
        }
    }

    /// Set by the pipeline after a stop for drift: the transactions before `lsn` are
    /// committed, then the session ends with `message`.
    pub fn stop_before(&mut self, lsn: Lsn, message: String) {
        self.stop_before = Some((lsn, message));
    }

    /// ` at green LSN x/y` for the transaction being received, for messages.
    fn at_lsn(&self) -> String {
        match &self.tx {
            Some(tx) => format!(" (green transaction committed at {})", tx.commit_lsn),
            None => String::new(),
        }
    }

    /// Rule 9: a Relation message whose plan differs from the accepted one stops the bridge
    /// before the transaction that carries it is applied, naming what changed. A table not in
    /// the accepted plan (created since) joins it.
    fn hold_to_baseline(&self, plan: &TablePlan, blue: &crate::mapping::catalog::BlueTable) -> Result<()> {
        let Some(baseline) = self.mappings.baseline() else {
            return Ok(());
        };
        let now = crate::mapping::signature::Signature::of(plan, blue);
        let mut accepted = baseline.lock().unwrap_or_else(|e| e.into_inner());
        let Some(was) = accepted.get(plan.green_name.as_ref()) else {
            tracing::info!(table = %plan.green_name, blue = %plan.blue_name, "green table is new since the plan was accepted; carrying it");
            accepted.insert(plan.green_name.to_string(), now);
            return Ok(());
        };
        let changes = crate::mapping::signature::diff(was, &now);
        if changes.is_empty() {
            return Ok(());
        }
        self.telemetry.schema_drift(true);
        Err(self.drift_error(format!(
            "green table {} no longer maps onto blue as accepted{}: {}; blue has everything green committed before \
             it and nothing after; {}",
            plan.green_name,
            self.at_lsn(),
            changes.join("; "),
            crate::drift::fix(&self.config)
        )))
    }

    /// The plan for a change's table, or `None` when the change is not applied (skipped
    /// transaction or excluded table).
    async fn change_target(&mut self, oid: u32) -> Result<Option<(Arc<TablePlan>, Lsn)>> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| green("green sent a change outside a transaction"))?;
        if tx.skip || tx.foreign {
            return Ok(None);
        }
        let lsn = tx.commit_lsn;
        let rel = self
            .relations
            .get(&oid)
            .ok_or_else(|| green(format!("green sent a change for relation {oid} before describing it")))?;
        if rel.excluded {
            return Ok(None);
        }
        let plan = match &rel.plan {
            Some(p) => p.clone(),
            None => self.resolve(oid).await?,
        };
        if let Some(g) = self.groups.open.as_mut() {
            g.rows += 1;
        }
        Ok(Some((plan, lsn)))
    }

    /// Runs `shape` for `plan` with values from the new and old tuples.
    async fn run_shape(
        &mut self,
        plan: &Arc<TablePlan>,
        shape: Shape,
        lsn: Lsn,
        action: &'static str,
        values: rows::Values<'_>,
    ) -> Result<()> {
        let key = (plan.green.oid, shape);
        // Batches pay off when changes are waiting; a change that arrives alone goes out at
        // once as its own statement, so steady-state latency stays low.
        if self.batching
            && self.backlog
            && !self.is_careful(lsn)
            && self.batch(plan, &key.1, lsn, &values, action == "insert").await?
        {
            return Ok(());
        }
        self.flush_before(plan.green.oid).await?;
        if !self.statements.contains_key(&key) {
            let sql = statements::build(plan, &key.1);
            let types = vec![Type::TEXT; sql.params.len()];
            let prepared = self.pipe.client().prepare_typed(&sql.text, &types).await;
            let stmt = match prepared {
                Ok(s) => s,
                Err(e) => {
                    let err = Error::postgres(format!("preparing {action} for blue table {}", plan.blue_name), &e);
                    return Err(self.pipe.root_cause(err).await);
                }
            };
            self.statements.insert(key.clone(), (stmt, Arc::new(sql)));
        }
        let (stmt, sql) = &self.statements[&key];
        let params = values.bind(plan, &sql.params)?;
        if self.is_careful(lsn) {
            let stmt = stmt.clone();
            return self.apply_one_row(plan, &stmt, params, action, values).await;
        }
        let ctx = Context {
            action,
            table: Some(plan.green_name.clone()),
            lsn,
            lsn_end: lsn,
            expect_rows: None,
            weight: params.iter().map(|p| p.0.as_ref().map_or(4, |b| b.len() + 4)).sum(),
            commit: false,
            optimistic: false,
        };
        let stmt = stmt.clone();
        self.pipe.execute(&stmt, params, ctx).await
    }
}

/// Issues `group`'s checkpoint update, guarded by the position it replaces (`prev`), and
/// its COMMIT on `pipe`; neither is waited for.
async fn commit_with_checkpoint(
    pipe: &mut Pipeline,
    advance: &Statement,
    slot: &str,
    group: &Group,
    prev: Lsn,
) -> Result<()> {
    failpoint::hit("before_blue_commit");
    let params = vec![
        text(slot),
        text(&group.end.to_string()),
        text(&group.commit_time.to_string()),
        text(&prev.to_string()),
    ];
    let ctx = Context {
        expect_rows: Some(1),
        ..Context::new(CHECKPOINT_UPDATE)
    };
    pipe.execute(advance, params, ctx).await?;
    let ctx = Context {
        commit: true,
        ..Context::new("COMMIT")
    };
    pipe.command("COMMIT".into(), ctx).await
}

/// Forces blue's WAL to disk up to now: a synchronous commit that writes WAL flushes
/// everything before it (a commit that wrote nothing would not).
async fn flush_wal(client: &Client, touch: &Statement, slot: &str) -> Result<()> {
    let result = async {
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = on").await?;
        client.execute(touch, &[&slot]).await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    result.map_err(|e| Error::postgres("flushing blue's WAL", &e))
}

/// A transient error in what green's stream sent.
pub(super) fn green(message: impl Into<String>) -> Error {
    Error::transient(message).with_side(Side::Green)
}

fn text(s: &str) -> TextParam {
    TextParam(Some(bytes::Bytes::copy_from_slice(s.as_bytes())))
}
