//! The I/O around [`super::group`] and [`super::durability`]: opening and committing blue
//! transactions with their checkpoint update, settling the COMMITs that returned, asking blue
//! how far its WAL is flushed, idle checkpoints, and finishing on shutdown.

use std::time::{Duration, Instant};

use super::blue::Blue;
use super::exec::Context;
use super::group::Group;
use super::session::text;
use super::{Applier, Progress, CHECKPOINT_UPDATE, IDLE_CHECKPOINT_INTERVAL, TICK};
use crate::error::Result;
use crate::failpoint;
use crate::lsn::Lsn;
use crate::state::standbys;
use crate::telemetry::Commit;

/// The applier's blue connection as the commit path sees it (a macro, so that the borrow
/// stays on the fields it names and `self.commits` remains free).
macro_rules! blue {
    ($applier:ident) => {
        super::blue::BluePipe {
            pipe: &mut $applier.pipe,
            checkpoint: &$applier.checkpoint,
            slot: &$applier.cx.config.slot,
        }
    };
}

impl Applier {
    /// Commits the open group between green transactions when nothing more is waiting (so a
    /// lone transaction is not delayed) or when it is big or old enough.
    pub(super) async fn maybe_commit(&mut self, queue_empty: bool) -> Result<()> {
        let Some(group) = &self.commits.groups.open else {
            return Ok(());
        };
        if self.tx.is_some() {
            return Ok(());
        }
        if self.commits.policy.due(group, queue_empty) {
            self.commit_group().await?;
            self.maybe_confirm().await?;
        }
        Ok(())
    }

    pub(super) async fn open_group(&mut self) -> Result<()> {
        let mut blue = blue!(self);
        self.commits.open(&mut blue).await
    }

    /// Commits the open group with its checkpoint, then publishes the position as durable.
    pub(super) async fn commit_group(&mut self) -> Result<()> {
        self.flush_batches().await?;
        // The next group's statements follow the COMMIT without waiting for it; the position
        // is published when the COMMIT has returned (`settle_commits`).
        let mut blue = blue!(self);
        for group in self.commits.commit(&mut blue).await? {
            self.group_committed(group);
        }
        Ok(())
    }

    /// Publishes the groups whose COMMIT has returned, in order.
    pub(super) fn settle_commits(&mut self) {
        let mut blue = blue!(self);
        for group in self.commits.settle(&mut blue) {
            self.group_committed(group);
        }
    }

    /// A group's COMMIT has returned: publishes its position and accounts for it.
    pub(super) fn group_committed(&mut self, group: Group) {
        failpoint::hit("after_blue_commit");
        self.publish(group.end);
        self.cx.telemetry.committed(&Commit {
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
        blue!(self).drain().await?;
        self.settle_commits();
        Ok(())
    }

    /// Records a blue commit that reaches `lsn`; it is confirmed to green once durable.
    pub(super) fn publish(&mut self, lsn: Lsn) {
        self.commits.published(lsn);
    }

    /// `[blue] standbys`: from now on positions are confirmed only once blue's standbys have
    /// flushed them too. Refuses a role that cannot see their positions.
    pub(super) async fn require_standbys(&mut self) -> Result<()> {
        if let Some(required) = &self.cx.config.blue_standbys {
            let client = self.pipe.client().clone();
            standbys::require_privilege(&client, &self.cx.config).await?;
            self.commits
                .wait_for_standbys(standbys::Watch::new(client, required.clone()));
            let named = match required {
                crate::config::Standbys::All => "all".to_owned(),
                crate::config::Standbys::Named(names) => names.join(", "),
            };
            tracing::info!(standbys = %named, "positions are confirmed to green once blue's standbys have flushed them");
        }
        Ok(())
    }

    /// Under asynchronous commit or with standbys: confirms the positions blue's WAL flush
    /// (and the standbys') has passed.
    pub(super) async fn confirm_flushed(&mut self) -> Result<()> {
        let mut blue = blue!(self);
        self.commits.confirm_flushed(&mut blue).await
    }

    /// Makes everything committed so far durable and confirms it (at shutdown).
    pub(super) async fn confirm_all(&mut self) -> Result<()> {
        if self.commits.unconfirmed() {
            self.drain().await?;
            let mut blue = blue!(self);
            self.commits.flush_all(&mut blue).await?;
        }
        Ok(())
    }

    pub(super) async fn on_tick(&mut self) -> Result<()> {
        self.check_drift_stop()?;
        if self.tx.is_none()
            && self
                .commits
                .groups
                .open
                .as_ref()
                .is_some_and(|g| self.commits.policy.overdue(g))
        {
            self.commit_group().await?;
        }
        if let (None, Some(idle)) = (&self.commits.groups.open, self.commits.idle) {
            if self.commits.last_write.elapsed() >= IDLE_CHECKPOINT_INTERVAL {
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
        if self.commits.groups.open.is_none() && !self.pipe.busy() && self.commits.durability.check_due(TICK) {
            self.confirm_flushed().await?;
        }
        Ok(())
    }

    pub(super) async fn write_idle_checkpoint(&mut self, lsn: Lsn) -> Result<()> {
        let advance_idle = self.checkpoint.advance_idle.clone();
        self.drain().await?;
        if lsn <= self.commits.committed() {
            return Ok(());
        }
        let params = vec![
            text(&self.cx.config.slot),
            text(&lsn.to_string()),
            text(&self.commits.committed().to_string()),
        ];
        self.pipe
            .execute(&advance_idle, params, Context::new(CHECKPOINT_UPDATE))
            .await?;
        self.drain().await?;
        tracing::debug!(lsn = %lsn, "idle position committed on blue");
        self.publish(lsn);
        self.cx.telemetry.applied_idle(lsn);
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
                checkpoint = %self.commits.committed(),
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
            self.commits.groups.open = None;
            self.batches.pending.clear();
            self.pipe.command("ROLLBACK".into(), Context::new("ROLLBACK")).await?;
            self.drain().await?;
            tracing::info!("rolled back a partly received green transaction; green will send it again");
        } else if self.commits.groups.open.is_some() {
            self.commit_group().await?;
        }
        self.drain().await?;
        if let Some(idle) = self.commits.idle.filter(|i| *i > self.commits.committed()) {
            self.write_idle_checkpoint(idle).await?;
        }
        self.confirm_all().await
    }
}
