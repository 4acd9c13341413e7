//! Stopping for schema drift (rules 7 and 9 of DESIGN.md): a Relation message that no longer
//! plans, or plans differently from the accepted plan, and a drift the catalog check saw,
//! stop the bridge before the green transaction they concern; everything before it is
//! committed first.

use super::Applier;
use crate::error::{Cause, Error, Result};
use crate::lsn::Lsn;
use crate::mapping::TablePlan;

impl Applier {
    /// Why to stop before the green transaction (or idle position) at `lsn`: the catalogs were
    /// seen to drift at or before it (the main session only).
    pub(super) fn drift_stop_message(&self, lsn: Lsn) -> Option<String> {
        let stop = self.orders.drift_stop.as_ref()?.borrow();
        let stop = stop.as_ref().filter(|s| lsn >= s.at)?;
        Some(format!(
            "{}; blue has everything green committed before {}",
            stop.message, stop.at
        ))
    }

    /// Idle: nothing left to apply before the drift's position (a transaction at or past it
    /// stops at its Begin).
    pub(super) fn check_drift_stop(&self) -> Result<()> {
        if self.tx.is_none() && self.commits.groups.open.is_none() {
            if let Some(message) = self.drift_stop_message(self.commits.committed()) {
                return Err(Error::definite(message));
            }
        }
        Ok(())
    }

    /// A Relation message that no longer plans: when the table is part of the accepted plan,
    /// that is drift, and the message says what to do about it.
    pub(super) fn drifted_or(&self, e: Error) -> Error {
        if self.cx.mappings.baseline().is_none() {
            return e;
        }
        self.cx.telemetry.schema_drift(true);
        self.drift_error(format!(
            "{}{}; blue has everything green committed before it and nothing after; {}. If the mapping files were \
             already changed for a newer green schema, the stream has not reached that change yet: keep the earlier \
             mapping until the bridge stops at the change, then switch",
            e.message(),
            self.at_lsn(),
            crate::drift::fix(&self.cx.config)
        ))
    }

    /// A stop for drift at the transaction being received: the transactions before it
    /// (maybe in the same blue transaction) are committed first (the pipeline restarts the
    /// session to do so). On a lane the transaction's position is not known yet, so green
    /// sends it again whole.
    pub(super) fn drift_error(&self, message: String) -> Error {
        let e = Error::definite(message);
        match (&self.tx, self.orders.drift_stop.is_some()) {
            (Some(tx), true) => e.with_cause(Cause::SchemaChangedAt(tx.commit_lsn)),
            (_, false) => e.with_cause(Cause::InProgress),
            _ => e,
        }
    }

    /// ` at green LSN x/y` for the transaction being received, for messages.
    pub(super) fn at_lsn(&self) -> String {
        match &self.tx {
            Some(tx) => format!(" (green transaction committed at {})", tx.commit_lsn),
            None => String::new(),
        }
    }

    /// Rule 9: a Relation message whose plan differs from the accepted one stops the bridge
    /// before the transaction that carries it is applied, naming what changed. A table not in
    /// the accepted plan (created since) joins it.
    pub(super) fn hold_to_baseline(&self, plan: &TablePlan, blue: &crate::mapping::catalog::BlueTable) -> Result<()> {
        let Some(baseline) = self.cx.mappings.baseline() else {
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
        self.cx.telemetry.schema_drift(true);
        Err(self.drift_error(format!(
            "green table {} no longer maps onto blue as accepted{}: {}; blue has everything green committed before \
             it and nothing after; {}",
            plan.green_name,
            self.at_lsn(),
            changes.join("; "),
            crate::drift::fix(&self.cx.config)
        )))
    }
}
