//! Which positions may be confirmed to green, and when (rule 2 of DESIGN.md): a position is
//! confirmed only once the blue commit carrying it is durable, and never out of order.
//!
//! Under synchronous commit, a COMMIT that returned is durable, so its position is confirmed
//! at once. Under asynchronous commit (`synchronous_commit = off`, what PostgreSQL's own apply
//! worker does) a returned COMMIT is visible but maybe not yet on disk: its position is first
//! tied to blue's WAL insert position read after it, then confirmed once blue's WAL flush
//! position has passed that. Everything here is bookkeeping without I/O; the applier reads
//! blue's WAL positions and forces a flush.
//!
//! With `[blue] standbys` (rule 11: blue's asynchronous standbys), durable means flushed on
//! blue *and* on those standbys: under either commit mode every position is tied to blue's WAL
//! insert position, as above, and confirmed once the lowest of blue's own flush and the
//! standbys' flush positions has passed it ([`Durability::gate_on_standbys`]). Without the
//! option, the synchronous path is untouched: a returned COMMIT is confirmed at once.

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

/// Positions waiting for a flush are kept at most this many: beyond it, the newest absorbs the
/// next (confirming it later than it could be, never earlier), so a standby that is away for
/// days does not make the queue grow.
const MAX_UNFLUSHED: usize = 1024;

/// The positions committed on blue and those confirmed to green.
pub(super) struct Durability {
    mode: Mode,
    /// `[blue] standbys`: positions wait for the standbys' flush too, under either mode.
    standbys: bool,
    /// Since when positions have waited without any being confirmed.
    stalled_since: Option<Instant>,
    /// End of everything committed on blue (visible there, maybe not yet flushed).
    committed: Lsn,
    /// Under [`Mode::Async`] or with standbys: a committed position not yet tied to a blue WAL
    /// position.
    unbound: Option<Lsn>,
    /// Under [`Mode::Async`] or with standbys: positions waiting for blue's WAL flush (and the
    /// standbys'), as (green position, blue WAL position), oldest first.
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
            standbys: false,
            stalled_since: None,
            committed,
            unbound: None,
            unflushed: VecDeque::new(),
            confirmed,
            last_check: Instant::now(),
        }
    }

    /// Positions are confirmed only once blue's standbys have flushed them too (`[blue]
    /// standbys`). The position `confirmed` holds (blue's checkpoint at start) is not yet
    /// known to be on them: it is withdrawn (0/0, which green ignores) and waits like any
    /// other.
    pub(super) fn gate_on_standbys(&mut self) {
        self.standbys = true;
        self.unbound = Some(self.committed);
        self.confirmed.send_replace(Lsn(0));
    }

    /// The end of everything committed on blue.
    pub(super) fn committed(&self) -> Lsn {
        self.committed
    }

    /// A blue COMMIT carrying everything up to `lsn` has returned (they return in order).
    pub(super) fn committed_at(&mut self, lsn: Lsn) {
        self.committed = lsn;
        if self.mode == Mode::Sync && !self.standbys {
            self.confirmed.send_replace(lsn);
        } else {
            self.unbound = Some(lsn);
        }
    }

    /// Whether committed positions wait for blue's WAL flush.
    pub(super) fn waiting(&self) -> bool {
        self.unbound.is_some() || !self.unflushed.is_empty()
    }

    /// Whether to read blue's WAL positions now: under asynchronous commit or with standbys, at
    /// most once per `every`. Counts as a check.
    pub(super) fn check_due(&mut self, every: Duration) -> bool {
        if (self.mode == Mode::Async || self.standbys) && self.last_check.elapsed() >= every {
            self.last_check = Instant::now();
            return true;
        }
        false
    }

    /// Blue's WAL insert and flush positions, read after every COMMIT that returned so far:
    /// ties the latest committed position to `insert` and confirms, in order, the positions
    /// whose blue WAL position `flushed` has passed. With standbys, `flushed` is the lowest of
    /// blue's own and theirs. Returns the newly confirmed position.
    pub(super) fn blue_wal(&mut self, insert: Lsn, flushed: Lsn) -> Option<Lsn> {
        // Every commit returned before the query ran lies below the insert position.
        if let Some(lsn) = self.unbound.take() {
            let full = self.unflushed.len() >= MAX_UNFLUSHED;
            match self.unflushed.back_mut() {
                Some(newest) if full => *newest = (lsn, insert),
                _ => self.unflushed.push_back((lsn, insert)),
            }
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
        self.stalled_since = match (self.unflushed.is_empty(), confirmed, self.stalled_since) {
            (true, _, _) => None,
            (false, None, Some(since)) => Some(since),
            (false, _, _) => Some(Instant::now()),
        };
        confirmed
    }

    /// How long positions have waited without any being confirmed, and the oldest one's blue
    /// WAL position (what the standbys must flush next).
    pub(super) fn stalled(&self) -> Option<(Duration, Lsn)> {
        let since = self.stalled_since?;
        let (_, blue) = self.unflushed.front()?;
        Some((since.elapsed(), *blue))
    }

    /// Blue's WAL was forced to disk after every COMMIT that returned: all of it is durable
    /// (without standbys to wait for).
    pub(super) fn all_flushed(&mut self) {
        debug_assert!(!self.standbys, "a local flush says nothing about blue's standbys");
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

    fn on_standbys(mode: Mode, start: u64) -> (Durability, watch::Receiver<Lsn>) {
        let (mut d, rx) = durability(mode, start);
        d.gate_on_standbys();
        (d, rx)
    }

    #[test]
    fn with_standbys_a_synchronous_commit_waits_for_them_too() {
        let (mut d, rx) = on_standbys(Mode::Sync, 100);
        d.committed_at(Lsn(200));
        assert_eq!(*rx.borrow(), Lsn(0), "flushed on blue is not on its standbys");
        assert!(d.waiting());
        assert!(
            d.check_due(Duration::ZERO),
            "blue's standbys are read under synchronous commit too"
        );
        // Blue flushed everything (5000); the standbys only up to 700, before the commit's
        // insert position 1000: the lower of the two counts.
        assert_eq!(d.blue_wal(Lsn(1000), Lsn(5000).min(Lsn(700))), None);
        assert_eq!(*rx.borrow(), Lsn(0));
        assert_eq!(d.blue_wal(Lsn(1100), Lsn(5000).min(Lsn(1000))), Some(Lsn(200)));
        assert_eq!(*rx.borrow(), Lsn(200));
        assert!(!d.waiting());
    }

    #[test]
    fn with_standbys_the_starting_checkpoint_is_withdrawn_until_they_have_it() {
        let (mut d, rx) = on_standbys(Mode::Async, 100);
        assert_eq!(d.committed(), Lsn(100));
        assert_eq!(*rx.borrow(), Lsn(0), "green ignores 0/0, so nothing is confirmed yet");
        assert!(d.waiting());
        // A standby not connected reads as 0/0: nothing is safe.
        assert_eq!(d.blue_wal(Lsn(800), Lsn(0)), None);
        assert_eq!(d.blue_wal(Lsn(900), Lsn(799)), None);
        assert_eq!(d.blue_wal(Lsn(900), Lsn(800)), Some(Lsn(100)));
        assert_eq!(*rx.borrow(), Lsn(100));
    }

    #[test]
    fn a_stall_names_the_blue_position_the_standbys_must_reach() {
        let (mut d, _rx) = on_standbys(Mode::Async, 100);
        assert_eq!(d.stalled(), None);
        d.blue_wal(Lsn(800), Lsn(0));
        d.committed_at(Lsn(200));
        d.blue_wal(Lsn(900), Lsn(0));
        let (_, needed) = d.stalled().expect("stalled");
        assert_eq!(needed, Lsn(800), "the oldest waiting position");
        d.blue_wal(Lsn(900), Lsn(800));
        assert_eq!(
            d.stalled().map(|(_, n)| n),
            Some(Lsn(900)),
            "progress, the next one waits"
        );
        d.blue_wal(Lsn(900), Lsn(900));
        assert_eq!(d.stalled(), None);
    }

    #[test]
    fn a_standby_away_for_long_keeps_the_queue_bounded_and_nothing_confirmed_early() {
        let (mut d, rx) = on_standbys(Mode::Async, 100);
        for i in 0..5 * MAX_UNFLUSHED as u64 {
            d.committed_at(Lsn(200 + i));
            assert_eq!(d.blue_wal(Lsn(1000 + i), Lsn(0)), None);
        }
        assert!(d.unflushed.len() <= MAX_UNFLUSHED);
        assert_eq!(*rx.borrow(), Lsn(0));
        // Every green position still waits for a blue position at or above its own commit's.
        assert!(d
            .unflushed
            .iter()
            .all(|&(green, blue)| blue.0 >= 1000 + (green.0 - 200)));
        // The standby comes back and catches up: everything is confirmed.
        let last = 5 * MAX_UNFLUSHED as u64 - 1;
        assert_eq!(d.blue_wal(Lsn(1000 + last), Lsn(1000 + last)), Some(Lsn(200 + last)));
        assert!(!d.waiting());
    }
}
