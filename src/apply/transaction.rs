//! Green's transactions on the ordinary path: Begin (skip what blue has, stop before a
//! schema change, open a group), Commit (extend the group to its end) and Origin (transactions
//! not carried). Their changes go through [`super::relations`] and [`super::rows`].

use super::{green, Applier, GreenTx};
use crate::error::{Error, Result};
use crate::protocol::pgoutput::{Begin, Commit, Origin};

impl Applier {
    /// Forgets the green transaction being received, its open group and its batched rows
    /// (a lane's, once its blue transaction has ended).
    pub(super) fn forget_transaction(&mut self) {
        self.tx = None;
        self.commits.groups.open = None;
        self.batches.pending.clear();
    }

    /// Begin: a transaction blue already has is skipped; one at or past a stop for drift
    /// commits everything before it and ends the session; any other opens (or joins) a group.
    pub(super) async fn on_begin(&mut self, b: Begin) -> Result<()> {
        if self.tx.is_some() {
            return Err(green("green sent Begin inside a transaction; restarting the stream"));
        }
        // Delivery is in commit order, so a transaction that commits before the
        // checkpoint is exactly one whose end_lsn is at or below it: already on blue.
        let skip = b.final_lsn < self.applied_end();
        let stop = match &self.orders.replay.stop_before {
            Some((lsn, message)) if b.final_lsn >= *lsn => Some(message.clone()),
            _ => self.drift_stop_message(b.final_lsn),
        };
        if let Some(message) = stop.filter(|_| !skip) {
            self.commit_group().await?;
            self.drain().await?;
            self.confirm_all().await?;
            tracing::debug!(at = %b.final_lsn, checkpoint = %self.commits.committed(), "committed everything before the change");
            return Err(Error::definite(message));
        }
        if skip {
            tracing::debug!(commit_lsn = %b.final_lsn, checkpoint = %self.commits.committed(), "skipping a transaction blue already has");
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

    /// Commit: the group now reaches the transaction's end.
    pub(super) fn on_commit(&mut self, c: Commit) -> Result<()> {
        self.cx.telemetry.received(c.end_lsn);
        let tx = self
            .tx
            .take()
            .ok_or_else(|| green("green sent Commit outside a transaction"))?;
        if tx.skip {
            return Ok(());
        }
        let group = self
            .commits
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

    /// Sent after Begin for a transaction applied under a replication origin. With
    /// `origin 'none'` (PostgreSQL 16+) green filters these itself.
    pub(super) fn on_origin(&mut self, o: &Origin) {
        if let Some(tx) = self.tx.as_mut().filter(|_| self.cx.config.skip_origins) {
            if !tx.foreign && !tx.skip {
                tracing::debug!(origin = %o.name, commit_lsn = %tx.commit_lsn, "not carrying a transaction applied on green under a replication origin");
            }
            tx.foreign = true;
        }
    }
}
