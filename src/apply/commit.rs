//! The I/O around [`super::group`] and [`super::durability`]: opening and committing blue
//! transactions with their checkpoint update, settling the COMMITs that returned, asking blue
//! how far its WAL is flushed, idle checkpoints, and finishing on shutdown.

use std::time::{Duration, Instant};

use super::durability::Mode;
use super::exec::Context;
use super::group::Group;
use super::session::{commit_with_checkpoint, flush_wal, text};
use super::{Applier, Progress, CHECKPOINT_UPDATE, IDLE_CHECKPOINT_INTERVAL, TICK};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::lsn::Lsn;
use crate::telemetry::Commit;

impl Applier {
    /// Commits the open group between green transactions when nothing more is waiting (so a
    /// lone transaction is not delayed) or when it is big or old enough.
    pub(super) async fn maybe_commit(&mut self, queue_empty: bool) -> Result<()> {
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

    pub(super) async fn open_group(&mut self) -> Result<()> {
        if self.groups.open.is_none() {
            self.pipe.command("BEGIN".into(), Context::new("BEGIN")).await?;
            self.groups.begin(self.durability.committed());
        }
        Ok(())
    }

    /// Commits the open group with its checkpoint, then publishes the position as durable.
    pub(super) async fn commit_group(&mut self) -> Result<()> {
        self.flush_batches().await?;
        // The checkpoint this group replaces: the previous group's, whose COMMIT may still
        // be in flight.
        let prev = self.committing_end();
        let Some(group) = self.groups.open.take() else {
            return Ok(());
        };
        let advance = self.checkpoint.advance.clone();
        commit_with_checkpoint(&mut self.pipe, &advance, &self.config.slot, &group, prev).await?;
        // The next group's statements follow the COMMIT without waiting for it; the position
        // is published when the COMMIT has returned (`settle_commits`).
        self.groups.committing(group);
        self.settle_commits();
        Ok(())
    }

    /// Publishes the groups whose COMMIT has returned, in order.
    pub(super) fn settle_commits(&mut self) {
        for group in self.groups.settle(self.pipe.take_commits()) {
            self.group_committed(group);
        }
    }

    /// A group's COMMIT has returned: publishes its position and accounts for it.
    pub(super) fn group_committed(&mut self, group: Group) {
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
    pub(super) async fn drain(&mut self) -> Result<()> {
        self.pipe.drain().await?;
        self.settle_commits();
        Ok(())
    }

    /// Records a blue commit that reaches `lsn`; it is confirmed to green once durable.
    pub(super) fn publish(&mut self, lsn: Lsn) {
        self.durability.committed_at(lsn);
        self.last_checkpoint_write = Instant::now();
        if self.idle.is_some_and(|i| i <= lsn) {
            self.idle = None;
        }
    }

    /// Under asynchronous commit: ties committed positions to blue's WAL insert position and
    /// confirms those that blue's WAL flush has passed. One cheap query, only when something
    /// is waiting.
    pub(super) async fn confirm_flushed(&mut self) -> Result<()> {
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
    pub(super) async fn confirm_all(&mut self) -> Result<()> {
        if self.durability.mode() == Mode::Async && self.durability.waiting() {
            self.drain().await?;
            flush_wal(self.pipe.client(), &self.checkpoint.flush, &self.config.slot).await?;
            self.durability.all_flushed();
        }
        Ok(())
    }

    pub(super) async fn on_tick(&mut self) -> Result<()> {
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
    pub(super) async fn maybe_confirm(&mut self) -> Result<()> {
        if self.groups.open.is_none() && !self.pipe.busy() && self.durability.check_due(TICK) {
            self.confirm_flushed().await?;
        }
        Ok(())
    }

    pub(super) async fn write_idle_checkpoint(&mut self, lsn: Lsn) -> Result<()> {
        let advance_idle = self.checkpoint.advance_idle.clone();
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

    pub(super) fn report_progress(&mut self) {
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
    pub(super) async fn finish(&mut self) -> Result<()> {
        // Transactions still in progress on green: closing their connections rolls them back
        // on blue (green streams them again), and releases their locks first.
        self.lanes.close_all();
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
}
