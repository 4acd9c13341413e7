//! The commit path as one type: the open group and those committing ([`super::group`]), what
//! may be confirmed to green ([`super::durability`]) and when to commit ([`CommitPolicy`]),
//! driven through the narrow [`Blue`] seam. It never confirms a position itself before the
//! applier has published the COMMIT that carries it, so the applier can account for each
//! group (and a crash test can stop) in between.

use std::time::{Duration, Instant};

use super::blue::Blue;
use super::durability::Durability;
use super::group::{CommitPolicy, Group, Groups};
use crate::error::Result;
use crate::lsn::Lsn;
use crate::state::standbys::Watch;

/// At shutdown, how long the standbys get to flush what blue committed before the last
/// position is confirmed (what they lack then, green sends again and blue skips, rule 3).
const STANDBYS_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// The applier's blue transactions and what is confirmed to green.
pub(super) struct Commits {
    pub groups: Groups,
    pub durability: Durability,
    pub policy: CommitPolicy,
    /// A position green reported while nothing was pending (a keepalive), to write to blue's
    /// checkpoint when idle.
    pub idle: Option<Lsn>,
    /// When blue's checkpoint row was last written.
    pub last_write: Instant,
    /// `[blue] standbys`: the standbys positions wait for.
    standbys: Option<Watch>,
}

impl Commits {
    pub(super) fn new(durability: Durability, policy: CommitPolicy) -> Self {
        Commits {
            groups: Groups::default(),
            durability,
            policy,
            idle: None,
            last_write: Instant::now(),
            standbys: None,
        }
    }

    /// From now on a position is confirmed only once `standbys` have flushed it too,
    /// including the position the session started at.
    pub(super) fn wait_for_standbys(&mut self, standbys: Watch) {
        self.durability.gate_on_standbys();
        self.standbys = Some(standbys);
    }

    /// The end of everything committed on blue.
    pub(super) fn committed(&self) -> Lsn {
        self.durability.committed()
    }

    /// The position after everything applied so far, committed or not.
    pub(super) fn applied_end(&self) -> Lsn {
        self.groups.applied_end(self.committed())
    }

    /// The position after every group committed or committing on blue.
    pub(super) fn committing_end(&self) -> Lsn {
        self.groups.committing_end(self.committed())
    }

    /// A blue commit reaching `lsn` returned (a group's or an idle checkpoint's): it is
    /// confirmed to green once durable.
    pub(super) fn published(&mut self, lsn: Lsn) {
        self.durability.committed_at(lsn);
        self.last_write = Instant::now();
        if self.idle.is_some_and(|i| i <= lsn) {
            self.idle = None;
        }
    }

    /// Opens a group (and a blue transaction) unless one is open.
    pub(super) async fn open(&mut self, blue: &mut impl Blue) -> Result<()> {
        if self.groups.open.is_none() {
            blue.begin().await?;
            self.groups.begin(self.committed());
        }
        Ok(())
    }

    /// Sends the open group's checkpoint update and COMMIT. The next group's statements follow
    /// without waiting for it; returns the groups whose COMMIT has returned, oldest first, for
    /// the applier to publish.
    pub(super) async fn commit(&mut self, blue: &mut impl Blue) -> Result<Vec<Group>> {
        // The checkpoint this group replaces: the previous group's, whose COMMIT may still
        // be in flight.
        let prev = self.committing_end();
        let Some(group) = self.groups.open.take() else {
            return Ok(Vec::new());
        };
        blue.commit(&group, prev).await?;
        self.groups.committing(group);
        Ok(self.settle(blue))
    }

    /// The groups whose COMMIT has returned since the last call, oldest first.
    pub(super) fn settle(&mut self, blue: &mut impl Blue) -> Vec<Group> {
        self.groups.settle(blue.take_commits())
    }

    /// Under asynchronous commit or with standbys: ties committed positions to blue's WAL
    /// insert position and confirms those that blue's WAL flush (and the standbys') has passed.
    /// One cheap query (two with standbys), only when something is waiting.
    pub(super) async fn confirm_flushed(&mut self, blue: &mut impl Blue) -> Result<()> {
        if !self.durability.waiting() {
            return Ok(());
        }
        let (insert, mut flushed) = blue.wal_positions().await?;
        if let Some(standbys) = &mut self.standbys {
            // Read after the insert position: what it ties may be confirmed at once.
            flushed = flushed.min(standbys.flushed().await?);
        }
        self.durability.blue_wal(insert, flushed);
        if let (Some(standbys), Some((waited, needed))) = (&mut self.standbys, self.durability.stalled()) {
            standbys.stalled(waited, needed);
        }
        Ok(())
    }

    /// Whether published positions wait for a flush of blue's WAL (or its standbys') to be
    /// confirmed.
    pub(super) fn unconfirmed(&self) -> bool {
        self.durability.waiting()
    }

    /// Forces blue's WAL to disk and confirms everything published (after a drain); with
    /// standbys, what they flush within [`STANDBYS_AT_SHUTDOWN`].
    pub(super) async fn flush_all(&mut self, blue: &mut impl Blue) -> Result<()> {
        blue.flush_wal().await?;
        if self.standbys.is_none() {
            self.durability.all_flushed();
            return Ok(());
        }
        let deadline = Instant::now() + STANDBYS_AT_SHUTDOWN;
        loop {
            self.confirm_flushed(blue).await?;
            if !self.durability.waiting() || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::super::blue::memory::Memory;
    use super::super::durability::Mode;
    use super::*;

    const POLICY: CommitPolicy = CommitPolicy {
        max_rows: 1000,
        max_delay: Duration::from_secs(3600),
    };

    fn commits(mode: Mode, start: u64) -> (Commits, watch::Receiver<Lsn>) {
        let (tx, rx) = watch::channel(Lsn(start));
        (Commits::new(Durability::new(mode, tx), POLICY), rx)
    }

    /// What the applier does with a settled group: publish its position.
    fn publish(commits: &mut Commits, settled: Vec<Group>) -> Vec<Lsn> {
        settled
            .into_iter()
            .map(|g| {
                commits.published(g.end);
                g.end
            })
            .collect()
    }

    /// One green transaction ending at `end` in the open group.
    async fn transaction(commits: &mut Commits, blue: &mut Memory, end: u64) {
        commits.open(blue).await.expect("begin");
        let group = commits.groups.open.as_mut().expect("open");
        group.end = group.end.max(Lsn(end));
        group.transactions += 1;
    }

    /// One green transaction ending at `end`, committed alone, its COMMIT returned and its
    /// position published.
    async fn committed(commits: &mut Commits, blue: &mut Memory, end: u64) {
        transaction(commits, blue, end).await;
        commits.commit(blue).await.expect("commit");
        blue.drain().await.expect("drain");
        let settled = commits.settle(blue);
        publish(commits, settled);
    }

    #[tokio::test]
    async fn consecutive_transactions_share_one_blue_transaction() {
        let (mut commits, _rx) = commits(Mode::Sync, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        for end in [200, 300, 400] {
            transaction(&mut commits, &mut blue, end).await;
            let group = commits.groups.open.as_ref().expect("open");
            // More are waiting: not yet.
            assert!(!commits.policy.due(group, false));
        }
        commits.commit(&mut blue).await.expect("commit");
        assert_eq!(blue.sent, ["BEGIN", "COMMIT 0/190"]);
    }

    #[tokio::test]
    async fn a_position_is_confirmed_only_once_its_commit_returned() {
        let (mut commits, rx) = commits(Mode::Sync, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        transaction(&mut commits, &mut blue, 200).await;
        let settled = commits.commit(&mut blue).await.expect("commit");
        assert!(settled.is_empty(), "the COMMIT is in flight");
        assert_eq!(*rx.borrow(), Lsn(100));
        blue.commits_return(1);
        let settled = commits.settle(&mut blue);
        assert_eq!(publish(&mut commits, settled), [Lsn(200)]);
        assert_eq!(*rx.borrow(), Lsn(200));
        assert_eq!(blue.checkpoint, Lsn(200));
    }

    #[tokio::test]
    async fn pipelined_groups_chain_their_checkpoints_and_confirm_in_order() {
        let (mut commits, rx) = commits(Mode::Sync, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        for end in [200, 300, 400] {
            transaction(&mut commits, &mut blue, end).await;
            // Each group's checkpoint update is guarded by the previous group's position,
            // though that COMMIT has not returned (Memory refuses a wrong guard).
            commits.commit(&mut blue).await.expect("commit");
        }
        assert_eq!(commits.committing_end(), Lsn(400));
        assert_eq!(*rx.borrow(), Lsn(100));
        blue.commits_return(2);
        let settled = commits.settle(&mut blue);
        assert_eq!(publish(&mut commits, settled), [Lsn(200), Lsn(300)]);
        assert_eq!(*rx.borrow(), Lsn(300));
        blue.drain().await.expect("drain");
        let settled = commits.settle(&mut blue);
        assert_eq!(publish(&mut commits, settled), [Lsn(400)]);
        assert_eq!(*rx.borrow(), Lsn(400));
    }

    #[tokio::test]
    async fn under_asynchronous_commit_green_waits_for_blues_wal_flush() {
        let (mut commits, rx) = commits(Mode::Async, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        committed(&mut commits, &mut blue, 200).await;
        assert_eq!(commits.committed(), Lsn(200));
        // Returned, not flushed: green keeps 100.
        commits.confirm_flushed(&mut blue).await.expect("check");
        assert_eq!(*rx.borrow(), Lsn(100));
        assert!(commits.unconfirmed());
        // A later group, committed after that check, is tied to the next check's position.
        committed(&mut commits, &mut blue, 300).await;
        // The WAL writer flushed up to the first commit's position only: still nothing for
        // the second, so the first is confirmed alone.
        blue.wal_flush = Lsn(100);
        commits.confirm_flushed(&mut blue).await.expect("check");
        assert_eq!(*rx.borrow(), Lsn(200));
        blue.wal_writer_runs();
        commits.confirm_flushed(&mut blue).await.expect("check");
        assert_eq!(*rx.borrow(), Lsn(300));
        assert!(!commits.unconfirmed());
    }

    #[tokio::test]
    async fn at_shutdown_a_forced_flush_confirms_everything_committed() {
        let (mut commits, rx) = commits(Mode::Async, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        committed(&mut commits, &mut blue, 200).await;
        assert!(commits.unconfirmed());
        commits.flush_all(&mut blue).await.expect("flush");
        assert_eq!(*rx.borrow(), Lsn(200));
    }

    #[tokio::test]
    async fn a_failed_group_confirms_nothing_and_a_replay_starts_from_the_checkpoint() {
        let (mut commits, rx) = commits(Mode::Sync, 100);
        let mut blue = Memory::starting_at(Lsn(100));
        committed(&mut commits, &mut blue, 200).await;
        // The next group holds a row blue rejects.
        transaction(&mut commits, &mut blue, 300).await;
        transaction(&mut commits, &mut blue, 400).await;
        blue.fail_next_commit = true;
        let err = commits.commit(&mut blue).await.expect_err("rejected");
        assert!(err.is_row_rejection());
        assert_eq!(*rx.borrow(), Lsn(200), "nothing of the failed group is confirmed");
        assert_eq!(blue.checkpoint, Lsn(200));
        // The next session starts from blue's checkpoint, and its first group continues
        // from there: the failed transactions are applied again.
        let (mut replay, rx) = commits_from(blue.checkpoint);
        transaction(&mut replay, &mut blue, 300).await;
        assert_eq!(replay.applied_end(), Lsn(300));
        replay.commit(&mut blue).await.expect("commit");
        blue.drain().await.expect("drain");
        let settled = replay.settle(&mut blue);
        assert_eq!(publish(&mut replay, settled), [Lsn(300)]);
        assert_eq!(*rx.borrow(), Lsn(300));
    }

    #[test]
    fn a_commit_past_the_idle_position_makes_its_checkpoint_write_moot() {
        let (mut commits, rx) = commits(Mode::Sync, 100);
        commits.idle = Some(Lsn(250));
        commits.published(Lsn(200));
        assert_eq!(commits.idle, Some(Lsn(250)), "still ahead of blue");
        commits.published(Lsn(300));
        assert_eq!(commits.idle, None);
        assert_eq!(*rx.borrow(), Lsn(300));
    }

    fn commits_from(checkpoint: Lsn) -> (Commits, watch::Receiver<Lsn>) {
        commits(Mode::Sync, checkpoint.0)
    }
}
