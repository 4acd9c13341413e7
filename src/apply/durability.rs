//! Which positions may be confirmed to green, and when (rule 2 of DESIGN.md): a position is
//! confirmed only once the blue commit carrying it is durable, and never out of order.
//!
//! Under synchronous commit, a COMMIT that returned is durable, so its position is confirmed
//! at once. Under asynchronous commit (`synchronous_commit = off`, what PostgreSQL's own apply
//! worker does) a returned COMMIT is visible but maybe not yet on disk: its position is first
//! tied to blue's WAL insert position read after it, then confirmed once blue's WAL flush
//! position has passed that. Everything here is bookkeeping without I/O; the applier reads
//! blue's WAL positions and forces a flush.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::lsn::Lsn;

/// How blue commits are made durable before their position is confirmed to green (rule 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Each COMMIT waits for blue's WAL flush (and its synchronous standbys, if any).
    Sync,
    /// COMMIT returns at once (`synchronous_commit = off`, as PostgreSQL's own apply worker
    /// does); a position is confirmed to green only once blue's WAL is flushed past it.
    Async,
}

/// The positions committed on blue and those confirmed to green.
pub(super) struct Durability {
    mode: Mode,
    /// End of everything committed on blue (visible there, maybe not yet flushed).
    committed: Lsn,
    /// Under [`Mode::Async`]: a committed position not yet tied to a blue WAL position.
    unbound: Option<Lsn>,
    /// Under [`Mode::Async`]: positions waiting for blue's WAL flush, as (green position, blue
    /// WAL position), oldest first.
    unflushed: VecDeque<(Lsn, Lsn)>,
    /// The position confirmed to green: committed and durable on blue.
    confirmed: watch::Sender<Lsn>,
    /// When blue's WAL positions were last read.
    last_check: Instant,
}

impl Durability {
    /// Starts at the position `confirmed` holds, taken as committed and durable.
    pub(super) fn new(mode: Mode, confirmed: watch::Sender<Lsn>) -> Self {
        let committed = *confirmed.borrow();
        Durability {
            mode,
            committed,
            unbound: None,
            unflushed: VecDeque::new(),
            confirmed,
            last_check: Instant::now(),
        }
    }

    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    /// The end of everything committed on blue.
    pub(super) fn committed(&self) -> Lsn {
        self.committed
    }

    /// A blue COMMIT carrying everything up to `lsn` has returned (they return in order).
    pub(super) fn committed_at(&mut self, lsn: Lsn) {
        self.committed = lsn;
        match self.mode {
            Mode::Sync => {
                self.confirmed.send_replace(lsn);
            }
            Mode::Async => self.unbound = Some(lsn),
        }
    }

    /// Whether committed positions wait for blue's WAL flush.
    pub(super) fn waiting(&self) -> bool {
        self.unbound.is_some() || !self.unflushed.is_empty()
    }

    /// Whether to read blue's WAL positions now: under asynchronous commit, at most once per
    /// `every`. Counts as a check.
    pub(super) fn check_due(&mut self, every: Duration) -> bool {
        if self.mode == Mode::Async && self.last_check.elapsed() >= every {
            self.last_check = Instant::now();
            return true;
        }
        false
    }

    /// Blue's WAL insert and flush positions, read after every COMMIT that returned so far:
    /// ties the latest committed position to `insert` and confirms, in order, the positions
    /// whose blue WAL position `flushed` has passed. Returns the newly confirmed position.
    pub(super) fn blue_wal(&mut self, insert: Lsn, flushed: Lsn) -> Option<Lsn> {
        // Every commit returned before the query ran lies below the insert position.
        if let Some(lsn) = self.unbound.take() {
            self.unflushed.push_back((lsn, insert));
        }
        let mut confirmed = None;
        while let Some(&(green, blue)) = self.unflushed.front() {
            if blue > flushed {
                break;
            }
            confirmed = Some(green);
            self.unflushed.pop_front();
        }
        if let Some(lsn) = confirmed {
            self.confirmed.send_replace(lsn);
        }
        confirmed
    }

    /// Blue's WAL was forced to disk after every COMMIT that returned: all of it is durable.
    pub(super) fn all_flushed(&mut self) {
        self.unbound = None;
        self.unflushed.clear();
        self.confirmed.send_replace(self.committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durability(mode: Mode, start: u64) -> (Durability, watch::Receiver<Lsn>) {
        let (tx, rx) = watch::channel(Lsn(start));
        (Durability::new(mode, tx), rx)
    }

    #[test]
    fn synchronous_commits_are_confirmed_when_they_return() {
        let (mut d, rx) = durability(Mode::Sync, 100);
        assert_eq!(d.committed(), Lsn(100));
        d.committed_at(Lsn(200));
        assert_eq!(*rx.borrow(), Lsn(200));
        assert!(!d.waiting());
        assert!(
            !d.check_due(Duration::ZERO),
            "nothing to ask blue under synchronous commit"
        );
    }

    #[test]
    fn asynchronous_commits_wait_for_blues_wal_flush() {
        let (mut d, rx) = durability(Mode::Async, 100);
        d.committed_at(Lsn(200));
        assert_eq!(d.committed(), Lsn(200));
        assert_eq!(*rx.borrow(), Lsn(100), "returned is not durable");
        assert!(d.waiting());
        // Blue's WAL insert position after the commit is 5000; the flush is behind it.
        assert_eq!(d.blue_wal(Lsn(5000), Lsn(4000)), None);
        assert_eq!(*rx.borrow(), Lsn(100));
        // The flush passes the commit: confirmed.
        assert_eq!(d.blue_wal(Lsn(5100), Lsn(5000)), Some(Lsn(200)));
        assert_eq!(*rx.borrow(), Lsn(200));
        assert!(!d.waiting());
    }

    #[test]
    fn positions_are_confirmed_in_order_and_only_up_to_the_flush() {
        let (mut d, rx) = durability(Mode::Async, 100);
        d.committed_at(Lsn(200));
        d.blue_wal(Lsn(1000), Lsn(500));
        d.committed_at(Lsn(300));
        d.blue_wal(Lsn(2000), Lsn(900));
        d.committed_at(Lsn(400));
        d.blue_wal(Lsn(3000), Lsn(900));
        assert_eq!(*rx.borrow(), Lsn(100));
        // The flush passed the first two commits, not the third.
        assert_eq!(d.blue_wal(Lsn(3000), Lsn(2500)), Some(Lsn(300)));
        assert_eq!(*rx.borrow(), Lsn(300));
        assert!(d.waiting());
        assert_eq!(d.blue_wal(Lsn(3000), Lsn(3000)), Some(Lsn(400)));
        assert_eq!(*rx.borrow(), Lsn(400));
    }

    #[test]
    fn a_commit_returned_after_a_check_is_tied_to_the_next_one() {
        let (mut d, rx) = durability(Mode::Async, 100);
        d.committed_at(Lsn(200));
        d.committed_at(Lsn(300));
        // Both returned before the query: both lie below its insert position; the newest
        // stands for both.
        assert_eq!(d.blue_wal(Lsn(1000), Lsn(1000)), Some(Lsn(300)));
        d.committed_at(Lsn(400));
        // A flush position read earlier says nothing about it.
        assert_eq!(d.blue_wal(Lsn(2000), Lsn(1000)), None);
        assert_eq!(*rx.borrow(), Lsn(300));
    }

    #[test]
    fn a_forced_flush_confirms_everything_committed() {
        let (mut d, rx) = durability(Mode::Async, 100);
        d.committed_at(Lsn(200));
        d.blue_wal(Lsn(1000), Lsn(0));
        d.committed_at(Lsn(300));
        d.all_flushed();
        assert_eq!(*rx.borrow(), Lsn(300));
        assert!(!d.waiting());
    }

    #[test]
    fn blues_wal_is_read_at_most_once_per_interval() {
        let (mut d, _rx) = durability(Mode::Async, 100);
        assert!(d.check_due(Duration::ZERO));
        assert!(!d.check_due(Duration::from_secs(3600)));
    }
}
