//! Transactions green streams while they are still in progress (protocol 2, `streaming 'on'`).
//!
//! Without streaming, green decodes a large transaction whole, spilling it to disk, re-reads it
//! at its commit and only then sends the first row, so blue starts applying only after green has
//! finished decoding. With streaming, green sends the transaction in blocks as it decodes, and
//! pgbridge applies each block at once in a blue transaction of its own: a *lane*, one blue
//! connection per in-progress green transaction, left open until green's Stream Commit.
//!
//! Correctness rests on four points:
//! * Order. Green's WAL order is its lock order, and green sends everything in WAL order:
//!   a whole transaction that commits while a streamed one is open never touched the rows the
//!   streamed one holds, but a block may change rows that whole transactions received before
//!   it inserted or changed. So before a block is applied, the main connection commits and
//!   *drains*: everything received earlier is on blue before the lane's first statement runs.
//!   After a subtransaction abort the lane drains too, so whole transactions that follow may
//!   take the rows it released.
//! * Commit. At Stream Commit the main connection drains first; the lane then writes the
//!   checkpoint row (which it never touched before) and commits. Blue's checkpoint advances
//!   in green's commit order, exactly as on the ordinary path.
//! * Aborts. Each subtransaction gets a savepoint before its first change; a subtransaction
//!   abort rolls back to it (everything after it belongs to that subtransaction or its
//!   children), a top-level abort rolls the lane back.
//! * Restarts. A lane's transaction never commits before green's commit, so a crash or
//!   reconnect simply rolls it back and green streams the transaction again from its start.
//!
//! Anything unusual (a row blue rejects, a lock wait past [`LOCK_TIMEOUT`], more than
//! [`MAX_LANES`] large transactions at once) fails the session with
//! [`Cause::InProgress`]: the next session replays from the checkpoint with green
//! sending transactions whole, where the ordinary path finds the row or waits for the lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use super::durability::{Durability, Mode};
use super::exec::Context;
use super::session::{commit_with_checkpoint, prepare_session};
use super::{green, origin, Applier, GreenTx, Inputs};
use crate::error::{Cause, Error, Result};
use crate::lsn::Lsn;
use crate::protocol::pgoutput::{LogicalMessage, Relation, StreamAbort, StreamCommit, StreamStart};
use crate::sql;

/// In-progress transactions applied at once; beyond that the session falls back.
pub(super) const MAX_LANES: usize = 4;
/// Subtransactions with changes in one transaction (a PL/pgSQL loop with an EXCEPTION block
/// makes one per iteration); beyond that the session falls back.
const MAX_SAVEPOINTS: usize = 1000;
/// Idle lanes kept connected for the next streamed transaction.
const SPARE_LANES: usize = 2;
/// While lanes are open, a statement waiting this long for a lock on blue (on a lane, or on
/// the main connection behind a lane) ends the session and replays without streaming: a wait
/// between pgbridge's own connections would otherwise never end.
const LOCK_TIMEOUT: &str = "10s";

/// The lanes of one session.
#[derive(Default)]
pub(super) struct Lanes {
    /// Open in-progress transactions, by green top-level xid.
    pub open: HashMap<u32, Lane>,
    /// Idle lanes kept connected for the next streamed transaction.
    pub spare: Vec<Lane>,
    /// Inside a Stream Start .. Stream Stop block: the in-progress transaction it belongs to.
    pub block: Option<u32>,
}

impl Lanes {
    /// Closes every lane: their blue transactions roll back (green streams them again).
    pub(super) fn close_all(&mut self) {
        self.open.clear();
        self.spare.clear();
        self.block = None;
    }
}

/// One in-progress green transaction, applied in an open blue transaction.
pub(super) struct Lane {
    applier: Box<Applier>,
    /// Subtransactions with a savepoint, in the order they were set.
    savepoints: Vec<u32>,
    /// Relations described inside this transaction: green treats them as described to the
    /// main stream too once it commits.
    relations: Vec<Relation>,
    /// Whether a change was applied on it: then, once green commits it, it is lag until blue
    /// has it too.
    changed: bool,
    /// Which of the lane origins (`origin::lane_name`) its session selected: 1 to
    /// [`MAX_LANES`], unique among the open and spare lanes.
    number: usize,
    /// Another bridge applied the transaction (its marker came, see
    /// [`crate::state::origin`]) and `green.origin = "none"`: rolled back at its commit.
    foreign: bool,
}

impl Lane {
    /// A failure on the lane: the ordinary path retries it, unless it is the connection or
    /// the server going away (reconnect as usual) or an insert that met an existing row
    /// (retried with upserts).
    fn error(e: Error) -> Error {
        if e.insert_conflict().is_some() {
            return e;
        }
        match e.sqlstate() {
            None if e.is_transient() => e,
            // Connection exceptions, operator intervention (shutdown, terminate), resources.
            Some(c) if ["08", "57", "53", "58"].iter().any(|class| c.starts_with(class)) => e,
            _ => e.with_cause(Cause::InProgress),
        }
    }

    fn reset(&mut self) {
        self.applier.forget_transaction();
        self.savepoints.clear();
        self.relations.clear();
        self.changed = false;
        self.foreign = false;
    }

    /// Rolls the lane's transaction back; [`Applier::retire`] then clears its state.
    async fn rollback(&mut self) -> Result<()> {
        self.applier
            .pipe
            .command("ROLLBACK".into(), Context::new("ROLLBACK"))
            .await?;
        self.applier.pipe.drain().await
    }
}

/// Applies a message on a lane (boxed: the lane's applier is the same type as the caller).
fn apply_on_lane(applier: &mut Applier, message: LogicalMessage) -> Pin<Box<dyn Future<Output = Result<()>> + '_>> {
    Box::pin(applier.on_message(message))
}

fn set_lock_timeout(value: &str) -> String {
    format!("SET lock_timeout = {}", sql::literal(value))
}

fn savepoint(subxid: u32) -> String {
    sql::ident(&format!("pgbridge_sub_{subxid}"))
}

/// The (sub)transaction a change inside a stream block belongs to.
fn change_xid(message: &LogicalMessage) -> Option<u32> {
    match message {
        LogicalMessage::Insert(m) => m.xid,
        LogicalMessage::Update(m) => m.xid,
        LogicalMessage::Delete(m) => m.xid,
        LogicalMessage::Truncate(m) => m.xid,
        _ => None,
    }
}

impl Applier {
    /// A message between Stream Start and Stream Stop: it belongs to in-progress transaction
    /// `top`, applied on its lane.
    pub(super) async fn in_stream_block(&mut self, top: u32, message: LogicalMessage) -> Result<()> {
        let lane = self
            .lanes
            .open
            .get_mut(&top)
            .ok_or_else(|| green(format!("green streamed transaction {top} without starting it")))?;
        match message {
            LogicalMessage::StreamStop => {
                self.lanes.block = None;
                Ok(())
            }
            LogicalMessage::Begin(_)
            | LogicalMessage::Commit(_)
            | LogicalMessage::StreamStart(_)
            | LogicalMessage::StreamCommit(_)
            | LogicalMessage::StreamAbort(_) => Err(green(format!(
                "green sent {message:?} inside the stream block of transaction {top}; restarting the stream"
            ))),
            LogicalMessage::Relation(r) => {
                lane.relations.retain(|known| known.oid != r.oid);
                lane.relations.push(r.clone());
                apply_on_lane(&mut lane.applier, LogicalMessage::Relation(r))
                    .await
                    .map_err(Lane::error)
            }
            LogicalMessage::Type(t) => {
                // Type names are not transactional: the main stream may use them as well.
                self.cache.types.learn(t.oid, &t.namespace, &t.name);
                apply_on_lane(&mut lane.applier, LogicalMessage::Type(t))
                    .await
                    .map_err(Lane::error)
            }
            LogicalMessage::Message(m) => {
                lane.foreign |=
                    self.cx.config.skip_origins && m.transactional && m.prefix == crate::state::origin::MARKER_PREFIX;
                Ok(())
            }
            LogicalMessage::Origin(_) => Ok(()),
            change => {
                let xid = change_xid(&change).unwrap_or(top);
                if xid != top && !lane.savepoints.contains(&xid) {
                    if lane.savepoints.len() >= MAX_SAVEPOINTS {
                        return Err(Error::transient(format!(
                            "transaction {top} green streams in progress has more than {MAX_SAVEPOINTS} subtransactions"
                        ))
                        .with_cause(Cause::InProgress));
                    }
                    // Batched rows are sent first, so the savepoint separates exactly the
                    // changes before it from those after.
                    lane.applier.flush_batches().await.map_err(Lane::error)?;
                    let sql = format!("SAVEPOINT {}", savepoint(xid));
                    lane.applier
                        .pipe
                        .command(sql, Context::new("SAVEPOINT"))
                        .await
                        .map_err(Lane::error)?;
                    lane.savepoints.push(xid);
                }
                lane.applier.batches.backlog = true;
                lane.changed = true;
                apply_on_lane(&mut lane.applier, change).await.map_err(Lane::error)
            }
        }
    }

    /// Stream Start: opens (or continues) the lane of an in-progress transaction.
    pub(super) async fn stream_start(&mut self, start: StreamStart) -> Result<()> {
        if self.tx.is_some() {
            return Err(green(
                "green sent Stream Start inside a transaction; restarting the stream",
            ));
        }
        // Whole transactions received so far are committed on blue before the block's first
        // statement runs: the block may change their rows.
        self.commit_group().await?;
        if self.lanes.open.is_empty() {
            self.set_lock_timeout(LOCK_TIMEOUT).await?;
        }
        self.drain().await?;
        match (self.lanes.open.contains_key(&start.xid), start.first_segment) {
            (true, false) | (false, true) => {}
            (open, _) => {
                return Err(green(format!(
                    "green sent {} block of transaction {} {}; restarting the stream",
                    if start.first_segment { "the first" } else { "a further" },
                    start.xid,
                    if open { "again" } else { "without its first" }
                )))
            }
        }
        if !self.lanes.open.contains_key(&start.xid) {
            if self.lanes.open.len() >= MAX_LANES {
                return Err(Error::transient(format!(
                    "green streams more than {MAX_LANES} large transactions in progress at once"
                ))
                .with_cause(Cause::InProgress));
            }
            let mut lane = match self.lanes.spare.pop() {
                Some(lane) => lane,
                None => self.new_lane().await?,
            };
            lane.applier.tx = Some(GreenTx {
                commit_lsn: Lsn(0),
                skip: false,
                foreign: false,
                unreported: None,
            });
            lane.applier.open_group().await.map_err(Lane::error)?;
            self.lanes.open.insert(start.xid, lane);
        }
        self.lanes.block = Some(start.xid);
        Ok(())
    }

    /// Stream Commit: after everything green committed before it, the lane commits with the
    /// checkpoint.
    pub(super) async fn stream_commit(&mut self, commit: StreamCommit) -> Result<()> {
        self.cx.telemetry.received(commit.end_lsn);
        let mut lane = self.lanes.open.remove(&commit.xid).ok_or_else(|| {
            green(format!(
                "green committed streamed transaction {} that it never streamed; restarting the stream",
                commit.xid
            ))
        })?;
        if lane.changed && !lane.foreign {
            self.cx.telemetry.pending_since(commit.commit_lsn, commit.timestamp);
        }
        self.commit_group().await?;
        self.drain().await?;
        if lane.foreign || commit.commit_lsn < self.applied_end() {
            if lane.foreign {
                tracing::debug!(commit_lsn = %commit.commit_lsn, "not carrying a transaction another bridge applied on green");
            } else {
                tracing::debug!(commit_lsn = %commit.commit_lsn, checkpoint = %self.commits.committed(), "rolling back a streamed transaction blue already has");
            }
            self.progress.skipped += 1;
            lane.rollback().await.map_err(Lane::error)?;
        } else {
            let applier = &mut lane.applier;
            let mut group = applier
                .commits
                .groups
                .open
                .take()
                .expect("a lane always has its group open");
            group.transactions = 1;
            group.end = commit.end_lsn;
            group.commit_time = commit.timestamp;
            let advance = applier.checkpoint.advance.clone();
            let commit_sql = applier.checkpoint.commit.clone();
            let committed = async {
                applier.flush_batches().await?;
                commit_with_checkpoint(
                    &mut applier.pipe,
                    (&advance, &commit_sql),
                    &self.cx.config.slot,
                    &group,
                    self.commits.committed(),
                )
                .await?;
                applier.pipe.drain().await
            };
            committed.await.map_err(Lane::error)?;
            self.group_committed(group);
        }
        // Green now counts these relations as described to the main stream as well.
        for relation in std::mem::take(&mut lane.relations) {
            self.on_relation(relation).await?;
        }
        self.retire(lane).await
    }

    /// Stream Abort: drops a subtransaction's changes, or the whole transaction's.
    pub(super) async fn stream_abort(&mut self, abort: StreamAbort) -> Result<()> {
        if abort.xid == abort.subxid {
            if let Some(mut lane) = self.lanes.open.remove(&abort.xid) {
                lane.rollback().await.map_err(Lane::error)?;
                self.retire(lane).await?;
            }
            return Ok(());
        }
        let Some(lane) = self.lanes.open.get_mut(&abort.xid) else {
            return Ok(());
        };
        // Without a savepoint the subtransaction changed nothing pgbridge applied (or an
        // enclosing rollback already undid it).
        if let Some(i) = lane.savepoints.iter().position(|s| *s == abort.subxid) {
            // Pending batched rows all come after the newest savepoint, so after this one.
            lane.applier.batches.pending.clear();
            let sql = format!("ROLLBACK TO SAVEPOINT {}", savepoint(abort.subxid));
            lane.applier
                .pipe
                .command(sql, Context::new("ROLLBACK TO SAVEPOINT"))
                .await
                .map_err(Lane::error)?;
            // Whole transactions after the abort may take the rows it released.
            lane.applier.pipe.drain().await.map_err(Lane::error)?;
            lane.savepoints.truncate(i);
        }
        Ok(())
    }

    /// A finished lane goes back to the spares; the lock timeout goes when no lane is open.
    async fn retire(&mut self, mut lane: Lane) -> Result<()> {
        lane.reset();
        if self.lanes.spare.len() < SPARE_LANES {
            self.lanes.spare.push(lane);
        }
        if self.lanes.open.is_empty() {
            self.set_lock_timeout("0").await?;
        }
        Ok(())
    }

    async fn set_lock_timeout(&mut self, value: &str) -> Result<()> {
        self.pipe
            .command(set_lock_timeout(value), Context::new("SET lock_timeout"))
            .await
    }

    /// A lane: its own blue connection, configured like the main one, planning with the same
    /// mapping files.
    async fn new_lane(&mut self) -> Result<Lane> {
        let client = crate::connect::connect_blue(&self.cx.config.blue).await?;
        let (replica_role, _, backend) = prepare_session(&client, &self.cx.env).await?;
        client
            .batch_execute(&set_lock_timeout(LOCK_TIMEOUT))
            .await
            .map_err(|e| Error::postgres("configuring a blue session for streamed transactions", &e))?;
        let number = (1..=MAX_LANES)
            .find(|n| {
                !self
                    .lanes
                    .open
                    .values()
                    .chain(&self.lanes.spare)
                    .any(|lane| lane.number == *n)
            })
            .expect("there are never more lanes than MAX_LANES");
        if let Some(base) = &self.cx.config.origin {
            origin::attach(&client, &origin::lane_name(base, number), &self.cx.config.blue.user()).await?;
        }
        let (durable_tx, _) = watch::channel(self.commits.committed());
        let durability = Durability::new(Mode::Sync, durable_tx);
        let cx = Inputs {
            reorder_tables: replica_role,
            backend,
            ..self.cx.clone()
        };
        let mut applier = Applier::on_session(cx, client, durability).await?;
        applier.batches.enabled = self.batches.enabled;
        applier.orders.replay.upsert_tables = self.orders.replay.upsert_tables.clone();
        tracing::debug!(
            lanes = self.lanes.open.len() + 1,
            "opened a blue session for a streamed transaction"
        );
        Ok(Lane {
            applier: Box::new(applier),
            savepoints: Vec::new(),
            relations: Vec::new(),
            changed: false,
            number,
            foreign: false,
        })
    }
}
