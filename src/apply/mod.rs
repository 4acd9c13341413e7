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
//!
//! Where things are:
//! * this file: the [`Applier`] and its event loop, which only dispatches;
//! * `transaction`: Begin, Commit and Origin on the ordinary path;
//! * `relations`: Relation messages, plans, and the statement cache a change is routed through;
//! * `rows`: which statement a row change becomes; `batch`: set-based apply of many rows;
//!   `careful`: row-by-row apply in savepoints, and dead letters (their SQL in `state/`);
//! * `commits`, with the pure `group` (grouping, commit policy) and `durability` (what may be
//!   confirmed to green, rule 2): the commit path, through the narrow `blue::Blue` seam that
//!   `blue::BluePipe` implements on `exec::Pipeline` (and an in-memory blue in tests);
//!   `commit`: the applier's side of it (publishing, idle checkpoints, finishing);
//! * `drift`: stops for schema drift; `stream`: transactions green streams in progress, on
//!   lanes; `session`: the blue session's settings and checkpoint statements.

mod batch;
mod blue;
mod careful;
use crate::state::checkpoint;
mod commit;
mod commits;
mod drift;
mod durability;
pub mod exec;
mod group;
mod params;
use crate::state::origin;
mod relations;
mod rows;
mod session;
mod stream;
mod transaction;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, Statement};

use crate::config::{Config, OnError};
use crate::error::{Error, Result, Side};
use crate::evaluation::Environment;
use crate::lsn::Lsn;
use crate::mapping::resolve::{Mappings, TypeNames};
use crate::mapping::statements::{self, Shape};
use crate::mapping::{wire, TablePlan};
use crate::protocol::pgoutput::{LogicalMessage, Relation};
use crate::source::SourceEvent;
use crate::state::dead_letters::DeadLetters;
use crate::telemetry::Telemetry;
use commits::Commits;
use durability::{Durability, Mode};
use exec::Pipeline;
use group::CommitPolicy;
use session::{flush_wal, prepare_session, CheckpointStatements};

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

/// What this session learned about green's tables and prepared on blue for them.
#[derive(Default)]
struct Cache {
    /// Relations green described, by OID, with their plans once resolved.
    relations: HashMap<u32, Rel>,
    /// Green's type names, from its Type messages and catalogs.
    types: TypeNames,
    /// Statements prepared on blue, by (green table OID, statement shape).
    statements: HashMap<(u32, Shape), (Statement, Arc<statements::Sql>)>,
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

/// How the pipeline asks a session to apply the stream differently after earlier sessions
/// failed (see `pipeline::replay`).
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Green transactions (commit LSN ranges) applied row by row, each row in a savepoint, so
    /// a row blue rejects is found exactly (and parked under `dead_letter`).
    pub careful: Vec<(Lsn, Lsn)>,
    /// Green tables whose batched inserts always carry `ON CONFLICT`.
    pub upsert_tables: HashSet<String>,
    /// A green transaction (commit LSN) the schema changed at, and why: the transactions
    /// before it are committed, then the session ends with that message.
    pub stop_before: Option<(Lsn, String)>,
}

impl Replay {
    /// Whether the green transaction committed at `lsn` is applied row by row.
    pub fn is_careful(&self, lsn: Lsn) -> bool {
        self.careful.iter().any(|(first, last)| *first <= lsn && lsn <= *last)
    }
}

/// What the pipeline and the drift guard ask of this session (the main one; lanes only
/// share the upserts).
#[derive(Default)]
struct Orders {
    /// What earlier sessions of the run learned (careful ranges, upserts, where to stop).
    replay: Replay,
    /// Where rows blue rejects are parked (`apply.on_error = "dead_letter"`).
    dead_letter: Option<DeadLetters>,
    /// Where to stop because the catalogs drifted (the main session only).
    drift_stop: Option<watch::Receiver<Option<crate::drift::Stop>>>,
}

/// What a session applies with, read-only: the same for the main session and its lanes but
/// for `reorder_tables`, which each blue session learns for itself.
#[derive(Clone)]
struct Inputs {
    config: Arc<Config>,
    mappings: Mappings,
    telemetry: Arc<Telemetry>,
    /// The session settings mapped values are computed under, on this session and its lanes.
    env: Environment,
    /// Blue runs with session_replication_role = replica, so tables may be written in any order.
    reorder_tables: bool,
    /// The server process the blue session was set up on (see [`crate::pooler`]).
    backend: i32,
    /// Whether green's values arrive in binary this session, and which types may.
    wire: Arc<wire::Decision>,
}

/// Applies one replication session's events to blue.
pub struct Applier {
    cx: Inputs,
    pipe: Pipeline,
    /// Green's relations as described, and the statements prepared for them.
    cache: Cache,
    checkpoint: CheckpointStatements,
    /// The open blue transaction, those committing, and what may be confirmed to green.
    commits: Commits,
    /// The green transaction being received.
    tx: Option<GreenTx>,
    progress: Progress,
    orders: Orders,
    /// Set-based apply: pending batches and whether to batch.
    batches: batch::Batches,
    /// Transactions green streams in progress, each on its own blue session.
    lanes: stream::Lanes,
}

impl Applier {
    /// Prepares the blue session; `durable_tx` holds the checkpoint read at start (confirmed
    /// to green as soon as streaming starts, so it is flushed here first), `replay` what
    /// earlier sessions of the run learned. A failure that shows a pooler between pgbridge
    /// and blue says so ([`crate::pooler::explain`]).
    pub async fn new(
        config: Arc<Config>,
        client: Arc<Client>,
        durable_tx: watch::Sender<Lsn>,
        replay: Replay,
        telemetry: Arc<Telemetry>,
        guard: &crate::drift::Guard,
    ) -> Result<Self> {
        let blue = config.blue.clone();
        let set_up = async move {
            let env = Environment::resolve(&client, &config).await?;
            let (replica_role, mode, backend) = prepare_session(&client, &env).await?;
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
            let batching = config.switches.batching;
            let cx = Inputs {
                config,
                mappings,
                telemetry,
                env,
                reorder_tables: replica_role,
                backend,
                wire: Arc::new(wire::Decision::off()),
            };
            let mut applier = Applier::on_session(cx, client, durability).await?;
            applier.batches.enabled = batching;
            applier.orders.drift_stop = Some(guard.stop.clone());
            applier.require_standbys().await?;
            if mode == Mode::Async {
                // The checkpoint just read may be an asynchronous commit of an earlier run that
                // blue has not flushed yet: it is confirmed to green as it is, so flush it first.
                flush_wal(
                    applier.pipe.client(),
                    &applier.checkpoint.flush,
                    &applier.cx.config.slot,
                )
                .await?;
            }
            if applier.cx.config.on_error == OnError::DeadLetter {
                applier.orders.dead_letter =
                    Some(DeadLetters::prepare(applier.pipe.client(), &applier.cx.config.schema).await?);
            }
            applier.orders.replay = replay;
            Ok(applier)
        };
        set_up.await.map_err(|e| crate::pooler::explain(e, &blue))
    }

    /// The form green sends values in this session, as decided before streaming started;
    /// statements are prepared for it.
    pub fn use_wire(&mut self, decision: wire::Decision) {
        self.cache.statements.clear();
        self.cx.wire = Arc::new(decision);
    }

    /// An applier on a prepared blue session, without the main connection's duties (dead
    /// letters, careful replays, upserts); `durability` holds the position it starts at.
    async fn on_session(cx: Inputs, client: Arc<Client>, durability: Durability) -> Result<Self> {
        let checkpoint = CheckpointStatements::prepare(&client, &cx.config, cx.backend).await?;
        let policy = CommitPolicy {
            max_rows: cx.config.max_batch_rows,
            max_delay: cx.config.max_batch_delay,
        };
        Ok(Applier {
            commits: Commits::new(durability, policy),
            cx,
            pipe: Pipeline::new(client, MAX_IN_FLIGHT),
            cache: Cache::default(),
            checkpoint,
            tx: None,
            progress: Progress::default(),
            orders: Orders::default(),
            batches: batch::Batches::default(),
            lanes: stream::Lanes::default(),
        })
    }

    /// Selects the replication origin blue's commits are tagged with (`apply.origin`). Call
    /// it once green's slot is held, so no other run of this bridge can be using the origin.
    pub async fn attach_origin(&mut self) -> Result<()> {
        if let Some(name) = &self.cx.config.origin {
            origin::attach(self.pipe.client(), name, &self.cx.config.blue.user())
                .await
                .map_err(|e| crate::pooler::explain(e, &self.cx.config.blue))?;
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
        let result = (self.apply_until_done(events, shutdown).await)
            .map_err(|e| crate::pooler::explain(e, &self.cx.config.blue));
        if result.is_err() {
            // Groups whose COMMIT returned before the failure are on blue: they are accounted
            // for (metrics, progress) and their positions published, as they would have been
            // had nothing failed after them. Nothing of the failed group is.
            self.settle_commits();
        }
        result
    }

    async fn apply_until_done(
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
            self.batches.backlog = i < last || !events.is_empty();
            self.handle(event).await?;
            self.maybe_commit(i == last && events.is_empty()).await?;
        }
        self.settle_commits();
        Ok(())
    }

    /// Whether the green transaction committed at `lsn` is applied row by row.
    fn is_careful(&self, lsn: Lsn) -> bool {
        self.orders.replay.is_careful(lsn)
    }

    /// The position after everything applied so far, committed or not.
    fn applied_end(&self) -> Lsn {
        self.commits.applied_end()
    }

    async fn handle(&mut self, event: SourceEvent) -> Result<()> {
        match event {
            SourceEvent::Message(m) => self.on_message(m).await,
            SourceEvent::Keepalive { wal_end } => {
                self.cx.telemetry.received(wal_end);
                if self.tx.is_none() && wal_end > self.applied_end() {
                    // Everything green committed before wal_end has been received and applied
                    // (or is in the open group), so the position is safe to confirm.
                    match &mut self.commits.groups.open {
                        Some(g) => g.end = g.end.max(wal_end),
                        None => self.commits.idle = Some(wal_end),
                    }
                }
                Ok(())
            }
            SourceEvent::Failed(e) => Err(e.or_side(Side::Green)),
        }
    }

    async fn on_message(&mut self, message: LogicalMessage) -> Result<()> {
        if let Some(top) = self.lanes.block {
            return self.in_stream_block(top, message).await;
        }
        match message {
            LogicalMessage::Begin(b) => self.on_begin(b).await,
            LogicalMessage::Commit(c) => self.on_commit(c),
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
                self.cache.types.learn(t.oid, &t.namespace, &t.name);
                Ok(())
            }
            LogicalMessage::Origin(o) => {
                self.on_origin(&o);
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
                self.cx.telemetry.pending_since(tx.commit_lsn, commit_time);
            }
        }
    }

    /// Counts one change for the metrics of the open group.
    fn count(&mut self, plan: &TablePlan, op: &'static str) {
        if let Some(g) = self.commits.groups.open.as_mut() {
            *g.counts.entry((plan.green_name.clone(), op)).or_default() += 1;
        }
    }
}

/// A transient error in what green's stream sent.
pub(super) fn green(message: impl Into<String>) -> Error {
    Error::transient(message).with_side(Side::Green)
}
