//! Row-level semantics: which statement a green change becomes, and with which values.
//!
//! * insert: upsert by blue's key (idempotent replay), or a plain insert without one;
//! * update: upsert when the whole row is known; when green left unchanged TOAST values out
//!   ('u'), an UPDATE of only the columns it sent, so blue keeps its stored value (rule 4);
//!   when the key changed, the old row is deleted and the new one written (rule 5), or moved
//!   by an UPDATE when unchanged TOAST values must be kept;
//! * delete: by blue's key, or the first row matching green's old tuple;
//! * truncate: the tables green lists (its CASCADE already expanded), with RESTART IDENTITY.

use std::sync::Arc;

use super::exec::{Context, TextParam};
use super::Applier;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::statements::{From, Param, Shape};
use crate::mapping::{KeyPlan, TablePlan};
use crate::protocol::pgoutput::{OldTuple, Truncate, TupleData, TupleValue};

/// The tuples a statement's parameters are read from.
pub(super) struct Values<'a> {
    pub new: Option<&'a [TupleValue]>,
    pub old: Option<&'a [TupleValue]>,
    pub lsn: Lsn,
}

impl Values<'_> {
    pub fn bind(&self, plan: &TablePlan, params: &[Param]) -> Result<Vec<TextParam>> {
        params
            .iter()
            .map(|p| {
                let column = &plan.columns[p.column];
                let tuple = match p.from {
                    From::New => self.new,
                    From::Old => self.old,
                };
                match tuple.and_then(|t| t.get(column.green_index)) {
                    Some(TupleValue::Null) => Ok(TextParam(None)),
                    Some(TupleValue::Text(b)) => Ok(TextParam(Some(b.clone()))),
                    Some(TupleValue::UnchangedToast) | None => Err(Error::definite(format!(
                        "green transaction at {}: no value for column {}.{} where blue needs one \
                         (unchanged TOAST or missing old key); set REPLICA IDENTITY FULL on green for this table",
                        self.lsn, plan.green_name, column.green_name
                    ))),
                    Some(TupleValue::Binary(_)) => Err(Error::definite(format!(
                        "green sent column {}.{} in binary format, which pgbridge does not request",
                        plan.green_name, column.green_name
                    ))),
                }
            })
            .collect()
    }
}

fn check_arity(plan: &TablePlan, tuple: &TupleData, lsn: Lsn) -> Result<()> {
    if tuple.columns.len() == plan.green_columns {
        Ok(())
    } else {
        Err(Error::definite(format!(
            "green transaction at {lsn}: a row of {} has {} columns but its Relation message announced {}",
            plan.green_name,
            tuple.columns.len(),
            plan.green_columns
        )))
    }
}

fn same(a: &TupleValue, b: &TupleValue) -> bool {
    match (a, b) {
        (TupleValue::Null, TupleValue::Null) => true,
        (TupleValue::Text(x), TupleValue::Text(y)) | (TupleValue::Binary(x), TupleValue::Binary(y)) => x == y,
        _ => false,
    }
}

impl Applier {
    pub(super) async fn insert(&mut self, plan: &Arc<TablePlan>, lsn: Lsn, new: &TupleData) -> Result<()> {
        check_arity(plan, new, lsn)?;
        let shape = match plan.key {
            KeyPlan::Unique(_) => Shape::Upsert,
            KeyPlan::Match(_) => Shape::Insert,
        };
        let values = Values {
            new: Some(&new.columns),
            old: None,
            lsn,
        };
        self.run_shape(plan, shape, lsn, "insert", values).await
    }

    pub(super) async fn update(
        &mut self,
        plan: &Arc<TablePlan>,
        lsn: Lsn,
        old: Option<&OldTuple>,
        new: &TupleData,
    ) -> Result<()> {
        check_arity(plan, new, lsn)?;
        // Under REPLICA IDENTITY FULL the old tuple ('O') carries every value, detoasted: use it
        // for the columns the new tuple marks unchanged. A key tuple ('K') does not: its
        // non-key slots are 'n' meaning absent, never NULL.
        let full_old = match old {
            Some(OldTuple::Full(t)) => Some(t),
            _ => None,
        };
        let old = old.map(|o| match o {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        });
        if let Some(o) = old {
            check_arity(plan, o, lsn)?;
        }
        let merged: Vec<TupleValue>;
        let new_values: &[TupleValue] = match full_old {
            Some(o) if new.columns.iter().any(|v| matches!(v, TupleValue::UnchangedToast)) => {
                merged = new
                    .columns
                    .iter()
                    .zip(&o.columns)
                    .map(|(n, o)| match (n, o) {
                        (
                            TupleValue::UnchangedToast,
                            TupleValue::Text(_) | TupleValue::Null | TupleValue::Binary(_),
                        ) => o.clone(),
                        _ => n.clone(),
                    })
                    .collect();
                &merged
            }
            _ => &new.columns,
        };
        let old_values: &[TupleValue] = old.map_or(new_values, |o| &o.columns);
        let present: Vec<usize> = (0..plan.columns.len())
            .filter(|&c| !matches!(new_values[plan.columns[c].green_index], TupleValue::UnchangedToast))
            .collect();
        let complete = present.len() == plan.columns.len();
        let values = Values {
            new: Some(new_values),
            old: Some(old_values),
            lsn,
        };

        match &plan.key {
            KeyPlan::Unique(key) => {
                let key_changed = key.iter().any(|&c| {
                    let i = plan.columns[c].green_index;
                    !same(&old_values[i], &new_values[i])
                });
                if complete {
                    if !key_changed {
                        return self
                            .run_shape(plan, Shape::Upsert, lsn, "update", Values { old: None, ..values })
                            .await;
                    }
                    if plan.overriding_system_value {
                        // GENERATED ALWAYS identity columns cannot be set by UPDATE.
                        let old_only = Values { new: None, ..values };
                        self.run_shape(plan, Shape::Delete, lsn, "delete (key change)", old_only)
                            .await?;
                        return self
                            .run_shape(plan, Shape::Upsert, lsn, "update", Values { old: None, ..values })
                            .await;
                    }
                    // Move the row rather than delete-and-upsert: should blue already hold the
                    // new key (a swap under a deferrable key on green), this fails instead of
                    // silently overwriting that row.
                    self.run_shape(plan, Shape::MoveOrUpsert, lsn, "update (key change)", values)
                        .await
                } else {
                    // Keep blue's stored TOAST values: update only what green sent, moving the
                    // row to its new key if the key changed.
                    let set: Vec<usize> = present
                        .into_iter()
                        .filter(|c| key_changed || !key.contains(c))
                        .collect();
                    if set.is_empty() {
                        return Ok(());
                    }
                    self.run_shape(plan, Shape::Update(set), lsn, "update", values).await
                }
            }
            KeyPlan::Match(_) => {
                if present.is_empty() {
                    return Ok(());
                }
                self.run_shape(plan, Shape::Update(present), lsn, "update", values)
                    .await
            }
        }
    }

    pub(super) async fn delete(&mut self, plan: &Arc<TablePlan>, lsn: Lsn, old: &OldTuple) -> Result<()> {
        let (OldTuple::Key(t) | OldTuple::Full(t)) = old;
        check_arity(plan, t, lsn)?;
        let values = Values {
            new: None,
            old: Some(&t.columns),
            lsn,
        };
        self.run_shape(plan, Shape::Delete, lsn, "delete", values).await
    }

    pub(super) async fn truncate(&mut self, t: &Truncate) -> Result<()> {
        let lsn = match &self.tx {
            Some(tx) if tx.skip => return Ok(()),
            Some(tx) => tx.commit_lsn,
            None => return Err(Error::transient("green sent Truncate outside a transaction")),
        };
        let mut tables = Vec::new();
        for &oid in &t.relation_oids {
            if let Some((plan, _)) = self.change_target(oid).await? {
                // ONLY keeps blue's inheritance children alone, but a partitioned table can
                // only be truncated as a whole.
                let only = if plan.blue_partitioned { "" } else { "ONLY " };
                tables.push(format!("{only}{}", plan.blue_sql));
            }
        }
        if tables.is_empty() {
            return Ok(());
        }
        let mut text = format!("TRUNCATE {}", tables.join(", "));
        if t.restart_identity() {
            text.push_str(" RESTART IDENTITY");
        }
        // Green lists every table its CASCADE reached; cascading again on blue would also empty
        // blue-only tables. PostgreSQL's own apply worker replays with RESTRICT for the same reason.
        let ctx = Context {
            lsn,
            ..Context::new("truncate")
        };
        self.pipe.command(text, ctx).await
    }
}
