//! Row-level semantics: which statement a green change becomes, and with which values.
//!
//! * insert: upsert by blue's key (idempotent replay), or a plain insert without one;
//! * update: upsert when the whole row is known; when green left unchanged TOAST values out
//!   ('u'), an UPDATE of only the blue columns that do not read them, so blue keeps its stored
//!   value (rule 4); when the key changed, the row moves to the new key (rule 5); with a
//!   filter, a row that no longer passes it is deleted;
//! * delete: by blue's key, or the first row matching green's old tuple;
//! * truncate: the tables green lists (its CASCADE already expanded), with RESTART IDENTITY.

use std::sync::Arc;

use super::exec::Context;
use super::params::WireParam;
use super::Applier;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::statements::{can_update, From, Param, Shape};
use crate::mapping::{KeyColumn, KeyPlan, TablePlan};
use crate::protocol::pgoutput::{OldTuple, Truncate, TupleData, TupleValue};

/// The tuples a statement's parameters are read from.
#[derive(Clone, Copy)]
pub(super) struct Values<'a> {
    pub new: Option<&'a [TupleValue]>,
    pub old: Option<&'a [TupleValue]>,
    pub lsn: Lsn,
}

impl Values<'_> {
    /// The parameters of a statement from these tuples; `binary`: green was asked for binary
    /// values (else one is an error).
    pub fn bind(&self, plan: &TablePlan, params: &[Param], binary: bool) -> Result<Vec<WireParam>> {
        params
            .iter()
            .map(|p| {
                let tuple = match p.from {
                    From::New => self.new,
                    From::Old => self.old,
                };
                match (tuple.and_then(|t| t.get(p.green)), p.from) {
                    (Some(TupleValue::Null), _) => Ok(WireParam::NULL),
                    (Some(TupleValue::Text(b)), _) => Ok(WireParam {
                        value: Some(b.clone()),
                        binary: false,
                    }),
                    (Some(TupleValue::Binary(b)), _) if binary => Ok(WireParam {
                        value: Some(b.clone()),
                        binary: true,
                    }),
                    // In the new row only targets that do not read it are written.
                    (Some(TupleValue::UnchangedToast), From::New) => Ok(WireParam::NULL),
                    (Some(TupleValue::UnchangedToast), From::Old) | (None, _) => Err(Error::definite(format!(
                        "green transaction at {}: no old value for key column {}.{}; set REPLICA IDENTITY FULL on green for this table",
                        self.lsn, plan.green_name, plan.green.columns[p.green].name
                    ))),
                    (Some(TupleValue::Binary(_)), _) => Err(Error::definite(format!(
                        "green sent column {}.{} in binary format, which pgbridge does not request",
                        plan.green_name, plan.green.columns[p.green].name
                    ))),
                }
            })
            .collect()
    }
}

fn check_arity(plan: &TablePlan, tuple: &TupleData, lsn: Lsn) -> Result<()> {
    if tuple.columns.len() == plan.green_columns() {
        Ok(())
    } else {
        Err(Error::definite(format!(
            "green transaction at {lsn}: a row of {} has {} columns but its Relation message announced {}",
            plan.green_name,
            tuple.columns.len(),
            plan.green_columns()
        )))
    }
}

/// Under REPLICA IDENTITY FULL: the new row with its unchanged TOAST values taken from the
/// old row, or `None` when nothing was left unchanged.
fn merge_unchanged(new: &[TupleValue], old: &[TupleValue]) -> Option<Vec<TupleValue>> {
    if !new.iter().any(|v| matches!(v, TupleValue::UnchangedToast)) {
        return None;
    }
    let merged = new
        .iter()
        .zip(old)
        .map(|(n, o)| match (n, o) {
            (TupleValue::UnchangedToast, TupleValue::Text(_) | TupleValue::Null | TupleValue::Binary(_)) => o.clone(),
            _ => n.clone(),
        })
        .collect();
    Some(merged)
}

/// The blue columns an update writes: those whose green columns were all sent. A column
/// that reads some sent and some unchanged values cannot be computed.
fn present_targets(plan: &TablePlan, new_values: &[TupleValue], lsn: Lsn) -> Result<Vec<usize>> {
    let unchanged = |g: &usize| matches!(new_values[*g], TupleValue::UnchangedToast);
    let mut present = Vec::new();
    for (t, target) in plan.targets.iter().enumerate() {
        let missing = target.reads().iter().filter(|g| unchanged(g)).count();
        if missing == 0 {
            present.push(t);
        } else if missing < target.reads().len() && can_update(plan, t) {
            return Err(Error::definite(format!(
                "green transaction at {lsn}: blue column {}.{} reads green columns of which some changed and some \
                 are unchanged TOAST values green did not send; set REPLICA IDENTITY FULL on green table {} so \
                 pgbridge receives every value, or change the mapping in {}",
                plan.blue_name,
                target.blue_name,
                plan.green_name,
                plan.source_of_truth()
            )));
        }
    }
    Ok(present)
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
        let merged = full_old.and_then(|o| merge_unchanged(&new.columns, &o.columns));
        let new_values: &[TupleValue] = merged.as_deref().unwrap_or(&new.columns);
        // A blue column is written only when every green column it reads was sent.
        let present = present_targets(plan, new_values, lsn)?;
        let old_values: &[TupleValue] = old.map_or(new_values, |o| &o.columns);
        let values = Values {
            new: Some(new_values),
            old: Some(old_values),
            lsn,
        };
        if plan.filter.is_some() {
            // A row that leaves the filter leaves blue.
            self.run_shape(
                plan,
                Shape::DeleteIfFilteredOut,
                lsn,
                "update (leaving the filter)",
                values,
            )
            .await?;
        }
        match &plan.key {
            KeyPlan::Unique(key) => {
                let key_changed = key.iter().any(|k| !same(&old_values[k.green], &new_values[k.green]));
                self.update_by_key(plan, key, key_changed, present, values).await
            }
            KeyPlan::Match(_) => {
                let set: Vec<usize> = present.into_iter().filter(|t| can_update(plan, *t)).collect();
                if set.is_empty() {
                    return Ok(());
                }
                self.run_shape(plan, Shape::Update(set), lsn, "update", values).await
            }
        }
    }

    /// An update of a row blue finds by its key: an upsert when green sent the whole row,
    /// otherwise an UPDATE of what it sent; a changed key moves the row (rule 5).
    async fn update_by_key(
        &mut self,
        plan: &Arc<TablePlan>,
        key: &[KeyColumn],
        key_changed: bool,
        present: Vec<usize>,
        values: Values<'_>,
    ) -> Result<()> {
        let lsn = values.lsn;
        let complete = present.len() == plan.targets.len();
        let is_key = |t: &usize| key.iter().any(|k| k.target == *t);
        if complete && !key_changed {
            return self.run_shape(plan, Shape::Upsert, lsn, "update", values).await;
        }
        // GENERATED ALWAYS identity columns cannot be set by UPDATE: a key made of
        // one changes by delete and insert.
        let identity_key = key.iter().any(|k| plan.targets[k.target].identity_always);
        if complete && identity_key {
            self.run_shape(plan, Shape::Delete, lsn, "delete (key change)", values)
                .await?;
            return self.run_shape(plan, Shape::Upsert, lsn, "update", values).await;
        }
        if key_changed && identity_key {
            return Err(Error::definite(format!(
                "green transaction at {lsn}: the key of {} changed while large values were left unchanged \
                 (unchanged TOAST), and blue's key is a GENERATED ALWAYS identity that UPDATE cannot move; set \
                 REPLICA IDENTITY FULL on the green table",
                plan.green_name
            )));
        }
        if complete {
            // Move the row rather than delete-and-upsert: should blue already hold the
            // new key (a swap under a deferrable key on green), this fails instead of
            // silently overwriting that row.
            return self
                .run_shape(plan, Shape::MoveOrUpsert, lsn, "update (key change)", values)
                .await;
        }
        if key_changed && plan.filter.is_some() {
            // The row may be entering the filter, and then blue has no row to move and
            // green did not send the whole new one.
            return Err(Error::definite(format!(
                "green transaction at {lsn}: a key change in {} left large values unchanged (unchanged TOAST), \
                 so pgbridge cannot tell whether the row enters the filter of {} with all its values; set \
                 REPLICA IDENTITY FULL on the green table",
                plan.green_name,
                plan.source_of_truth()
            )));
        }
        // Keep blue's stored TOAST values: update only what green sent, moving the row
        // to its new key if the key changed.
        let set: Vec<usize> = present
            .into_iter()
            .filter(|t| can_update(plan, *t) && (key_changed || !is_key(t)))
            .collect();
        if set.is_empty() {
            return Ok(());
        }
        self.run_shape(plan, Shape::Update(set), lsn, "update", values).await
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
            Some(tx) if tx.skip || tx.foreign => return Ok(()),
            Some(tx) => tx.commit_lsn,
            None => return Err(super::green("green sent Truncate outside a transaction")),
        };
        let mut plans = Vec::new();
        for &oid in &t.relation_oids {
            if let Some((plan, _)) = self.change_target(oid).await? {
                plans.push(plan);
            }
        }
        // A TRUNCATE of a partitioned table published partition by partition lists every
        // partition: that empties blue's table as a whole. Some partitions only cannot be told
        // apart on blue.
        let truncated: Vec<String> = plans.iter().map(|p| p.green_name.to_string()).collect();
        let mut tables = Vec::new();
        for plan in plans {
            if let Some(parent) = &plan.partition_of {
                let leaves = self.cx.mappings.partitions_of(parent);
                let whole = !leaves.is_empty() && leaves.iter().all(|l| truncated.contains(l));
                if !whole {
                    return Err(self.drift_error(format!(
                        "green truncated partition {} of {parent} (green transaction committed at {lsn}), which maps \
                         onto blue table {} as a whole: blue cannot tell which of its rows came from that partition, so \
                         nothing from this transaction on was applied (blue's checkpoint stays before it). Re-synchronize \
                         blue with `pgbridge setup --copy`; to carry partitioned tables whole, publish them through \
                         their root first: ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                        plan.green_name,
                        plan.blue_name,
                        crate::sql::ident(&self.cx.config.publication)
                    )));
                }
            }
            // ONLY keeps blue's inheritance children alone, but a partitioned table can only
            // be truncated as a whole.
            let only = if plan.blue_partitioned { "" } else { "ONLY " };
            let table = format!("{only}{}", plan.blue_sql);
            if !tables.contains(&table) {
                tables.push(table);
            }
            self.count(&plan, "truncate");
            self.cx.mappings.note_truncate(&plan.green_name);
        }
        if tables.is_empty() {
            return Ok(());
        }
        self.flush_batches().await?;
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn text(s: &'static str) -> TupleValue {
        TupleValue::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn unchanged_toast_values_come_from_the_full_old_row() {
        let new = [text("1"), TupleValue::UnchangedToast, TupleValue::UnchangedToast];
        let old = [text("1"), text("big"), TupleValue::Null];
        let merged = merge_unchanged(&new, &old).expect("something was unchanged");
        assert!(same(&merged[1], &text("big")));
        assert!(same(&merged[2], &TupleValue::Null));
        assert!(merge_unchanged(&old, &old).is_none(), "a whole row is used as sent");
    }

    #[test]
    fn same_compares_values_not_markers() {
        assert!(same(&text("a"), &text("a")));
        assert!(!same(&text("a"), &text("b")));
        assert!(!same(&TupleValue::UnchangedToast, &TupleValue::UnchangedToast));
        assert!(!same(&TupleValue::Null, &text("a")));
    }
}
