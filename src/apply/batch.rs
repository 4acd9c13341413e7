//! Set-based apply: consecutive changes of one table that the same statement can carry are
//! collected and sent as one statement over arrays (`unnest`), instead of one statement per
//! row.
//!
//! Order is preserved where it matters: a table's batch is flushed before any other statement
//! for that table, and, unless blue runs the session with `session_replication_role = replica`
//! (so no triggers or foreign keys tie tables together), before any statement for another
//! table too. Within a batch every key appears once: a repeated upsert replaces the earlier row
//! (the last image wins, as applying both in order would leave it), anything else flushes first.
//!
//! A batch whose rows all come from inserts on green is sent as a plain `INSERT`: blue's
//! checkpoint commits with the rows, so a green insert never finds its row on blue in normal
//! operation, and a plain insert costs blue about half of an `ON CONFLICT DO UPDATE`. When the
//! row is there after all (rows written on blue by hand, a setup over existing data), the
//! unique violation rolls the group back and the session restarts with that table upserted
//! from then on ([`Error::insert_conflict`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::exec::Context;
use super::params::WireArray;
use super::rows::Values;
use super::Applier;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::statements::{self, Shape};
use crate::mapping::{KeyPlan, TablePlan};
use crate::protocol::pgoutput::TupleValue;
use tokio_postgres::types::Type;

/// Rows per batch statement.
const BATCH_ROWS: usize = 5000;

type Row = Vec<Option<Bytes>>;

/// Set-based apply on one blue session.
pub(super) struct Batches {
    /// Pending batches, by green table OID.
    pub pending: HashMap<u32, Batch>,
    /// Set-based apply is on (PGBRIDGE_APPLY=exact turns it off: the reference path).
    pub enabled: bool,
    /// More events are already waiting behind the one being handled: batches pay off.
    pub backlog: bool,
}

impl Default for Batches {
    fn default() -> Self {
        Batches {
            pending: HashMap::new(),
            enabled: true,
            backlog: false,
        }
    }
}

/// One table's pending rows for one batch shape.
pub(super) struct Batch {
    plan: Arc<TablePlan>,
    shape: Shape,
    /// Parameter values, one array per statement parameter.
    columns: Vec<Vec<Option<Bytes>>>,
    /// Key -> row index, for tables with a unique key.
    keys: HashMap<Row, usize>,
    first_lsn: Lsn,
    last_lsn: Lsn,
    rows: usize,
    /// Every row came from an insert on green (none from an update sent as an upsert).
    fresh: bool,
}

/// Whether a change can join a batch, and as which shape.
pub(super) fn batch_shape(plan: &TablePlan, shape: &Shape) -> Option<Shape> {
    match (shape, &plan.key) {
        (Shape::Upsert, KeyPlan::Unique(_)) => Some(Shape::BatchInsert { upsert: true }),
        (Shape::Insert, KeyPlan::Match(_)) => Some(Shape::BatchInsert { upsert: false }),
        (Shape::Delete, KeyPlan::Unique(_)) => Some(Shape::BatchDelete),
        _ => None,
    }
}

/// A value for a batch's array, or `None` when it cannot join one: an unchanged TOAST value,
/// a value in the other form than the statement's (`binary`) where the column is `read`
/// (a column nothing reads is `bytea[]` in binary, and takes either).
fn value(v: Option<&TupleValue>, binary: bool, read: bool) -> Option<Option<Bytes>> {
    match v {
        Some(TupleValue::Null) => Some(None),
        Some(TupleValue::Text(b)) if !binary || !read => Some(Some(b.clone())),
        Some(TupleValue::Binary(b)) if binary => Some(Some(b.clone())),
        _ => None,
    }
}

impl Batch {
    /// The key and the parameter values of one change, or `None` if it cannot be batched
    /// (a value missing, or not in the statement's form: `binary`).
    fn row(plan: &TablePlan, shape: &Shape, values: &Values<'_>, binary: bool) -> Option<(Option<Row>, Row)> {
        let key_cols = plan.key.columns();
        match shape {
            Shape::BatchInsert { upsert } => {
                let new = values.new?;
                let row: Row = new
                    .iter()
                    .zip(&plan.read)
                    .map(|(v, read)| value(Some(v), binary, *read))
                    .collect::<Option<_>>()?;
                let key = upsert.then(|| key_cols.iter().map(|k| row[k.green].clone()).collect());
                Some((key, row))
            }
            Shape::BatchDelete => {
                let old = values.old?;
                let key: Row = key_cols
                    .iter()
                    .map(|k| value(old.get(k.green), binary, true))
                    .collect::<Option<_>>()?;
                Some((Some(key.clone()), key))
            }
            _ => None,
        }
    }

    /// Adds a row; gives it back when its key is already in the batch and the batch must be
    /// flushed first.
    fn push(&mut self, key: Option<Row>, row: Row, lsn: Lsn, fresh: bool) -> Result<(), (Option<Row>, Row)> {
        if let Some(k) = &key {
            if let Some(&i) = self.keys.get(k) {
                match self.shape {
                    // Deleting a key twice deletes it once.
                    Shape::BatchDelete => return Ok(()),
                    // The last image wins, unless the first image's insert-only values could
                    // differ from the last one's.
                    Shape::BatchInsert { upsert: true } if !self.plan.targets.iter().any(|t| t.insert_only) => {
                        for (column, v) in self.columns.iter_mut().zip(row) {
                            column[i] = v;
                        }
                        self.last_lsn = lsn;
                        self.fresh &= fresh;
                        return Ok(());
                    }
                    _ => return Err((key, row)),
                }
            }
        }
        if let Some(k) = key {
            self.keys.insert(k, self.rows);
        }
        for (column, v) in self.columns.iter_mut().zip(row) {
            column.push(v);
        }
        if self.rows == 0 {
            self.first_lsn = lsn;
        }
        self.last_lsn = lsn;
        self.rows += 1;
        self.fresh &= fresh;
        Ok(())
    }
}

impl Applier {
    /// Adds a change to its table's batch; `Ok(false)` if it cannot be batched. `fresh`: the
    /// change is an insert on green.
    pub(super) async fn batch(
        &mut self,
        plan: &Arc<TablePlan>,
        shape: &Shape,
        lsn: Lsn,
        values: &Values<'_>,
        fresh: bool,
    ) -> Result<bool> {
        let Some(batch_shape) = batch_shape(plan, shape) else {
            return Ok(false);
        };
        let binary = self.cx.wire.binary;
        if binary && self.reads_arrays(plan) {
            return Ok(false);
        }
        let Some((key, row)) = Batch::row(plan, &batch_shape, values, binary) else {
            return Ok(false);
        };
        let oid = plan.green.oid;
        // Keep the order of statements across tables unless blue ignores it (replica role).
        if !self.cx.reorder_tables && self.batches.pending.keys().any(|o| *o != oid) {
            let others: Vec<u32> = self.batches.pending.keys().copied().filter(|o| *o != oid).collect();
            for o in others {
                self.flush_batch(o).await?;
            }
        }
        if self
            .batches
            .pending
            .get(&oid)
            .is_some_and(|b| b.shape != batch_shape || !Arc::ptr_eq(&b.plan, plan))
        {
            self.flush_batch(oid).await?;
        }
        let width = row.len();
        let new_batch = || Batch {
            plan: plan.clone(),
            shape: batch_shape.clone(),
            columns: vec![Vec::with_capacity(BATCH_ROWS); width],
            keys: HashMap::new(),
            first_lsn: lsn,
            last_lsn: lsn,
            rows: 0,
            fresh: true,
        };
        let batch = self.batches.pending.entry(oid).or_insert_with(new_batch);
        if let Err((key, row)) = batch.push(key, row, lsn, fresh) {
            // The key is already pending in a way that cannot be merged: send what is there,
            // then start a new batch with this row.
            self.flush_batch(oid).await?;
            let batch = self.batches.pending.entry(oid).or_insert_with(new_batch);
            let _ = batch.push(key, row, lsn, fresh);
        }
        if self.batches.pending.get(&oid).is_some_and(|b| b.rows >= BATCH_ROWS) {
            self.flush_batch(oid).await?;
        }
        Ok(true)
    }

    /// Sends the pending batch of one table.
    pub(super) async fn flush_batch(&mut self, oid: u32) -> Result<()> {
        let Some(batch) = self.batches.pending.remove(&oid) else {
            return Ok(());
        };
        let optimistic = batch.fresh
            && batch.shape == (Shape::BatchInsert { upsert: true })
            && !self.orders.replay.upsert_tables.contains(&*batch.plan.green_name);
        let shape = if optimistic {
            Shape::BatchInsert { upsert: false }
        } else {
            batch.shape.clone()
        };
        let key = (oid, shape);
        if !self.cache.statements.contains_key(&key) {
            let sql = statements::build_for(&batch.plan, &key.1, self.wire_form());
            // In binary blue infers each array's type from its cast to green's type.
            let types = match self.cx.wire.binary {
                true => Vec::new(),
                false => vec![Type::TEXT_ARRAY; sql.params.len()],
            };
            let stmt = match self.pipe.client().prepare_typed(&sql.text, &types).await {
                Ok(s) => s,
                Err(e) => {
                    let err = Error::postgres(format!("preparing a batch for blue table {}", batch.plan.blue_name), &e);
                    return Err(self.pipe.root_cause(err).await);
                }
            };
            self.cache.statements.insert(key.clone(), (stmt, Arc::new(sql)));
        }
        let stmt = self.cache.statements[&key].0.clone();
        let weight = batch
            .columns
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(4, |b| b.len() + 4))
            .sum();
        let params: Vec<WireArray> = batch.columns.into_iter().map(WireArray).collect();
        let ctx = Context {
            action: match batch.shape {
                Shape::BatchDelete => "delete (batch)",
                _ => "insert (batch)",
            },
            table: Some(batch.plan.green_name.clone()),
            lsn: batch.first_lsn,
            lsn_end: batch.last_lsn,
            expect_rows: None,
            weight,
            commit: false,
            optimistic,
        };
        self.pipe.execute(&stmt, params, ctx).await
    }

    /// Whether `plan` reads a green array column: in binary its values cannot be batched (an
    /// array of arrays is one array with another dimension, which unnest flattens), so its rows
    /// go one statement each.
    fn reads_arrays(&self, plan: &TablePlan) -> bool {
        let Some(rel) = self.cache.relations.get(&plan.green.oid) else {
            return true;
        };
        rel.relation
            .columns
            .iter()
            .enumerate()
            .any(|(g, c)| plan.read.get(g).copied().unwrap_or(true) && self.cx.wire.arrays.contains(&c.type_oid))
    }

    /// Sends every pending batch.
    pub(super) async fn flush_batches(&mut self) -> Result<()> {
        let oids: Vec<u32> = self.batches.pending.keys().copied().collect();
        for oid in oids {
            self.flush_batch(oid).await?;
        }
        Ok(())
    }

    /// Before a statement for `oid` outside the batches: flush what must come before it.
    pub(super) async fn flush_before(&mut self, oid: u32) -> Result<()> {
        if self.cx.reorder_tables {
            self.flush_batch(oid).await
        } else {
            self.flush_batches().await
        }
    }
}
