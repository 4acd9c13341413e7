//! Grouping green transactions into blue transactions, and when to commit a group.
//!
//! Consecutive green transactions share a blue transaction while more of them are already
//! waiting (up to `max_batch_rows` / `max_batch_delay`); when nothing more is waiting the group
//! commits at once, so a lone transaction is not delayed. A group's COMMIT is pipelined: the
//! next group's statements follow it without waiting, so several groups may be committing at
//! once; they settle in the order they were sent. No I/O here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// An open blue transaction.
#[derive(Debug)]
pub(super) struct Group {
    pub started: Instant,
    pub rows: u64,
    pub transactions: u64,
    /// The green position the group's checkpoint update writes.
    pub end: Lsn,
    pub commit_time: i64,
    /// Changes per (green table, operation), for the metrics.
    pub counts: BTreeMap<(Arc<str>, &'static str), u64>,
}

impl Group {
    /// A new group continuing from `end`.
    pub(super) fn new(end: Lsn) -> Self {
        Group {
            started: Instant::now(),
            rows: 0,
            transactions: 0,
            end,
            commit_time: 0,
            counts: BTreeMap::new(),
        }
    }
}

/// When an open group is committed.
#[derive(Clone, Copy, Debug)]
pub(super) struct CommitPolicy {
    pub max_rows: u64,
    pub max_delay: Duration,
}

impl CommitPolicy {
    /// Between green transactions: commit now when nothing more is waiting, or when the group
    /// is big or old enough.
    pub(super) fn due(&self, group: &Group, queue_empty: bool) -> bool {
        queue_empty || group.rows >= self.max_rows || self.overdue(group)
    }

    /// The group has waited long enough for more transactions.
    pub(super) fn overdue(&self, group: &Group) -> bool {
        group.started.elapsed() >= self.max_delay
    }
}

/// The open group and those whose COMMIT is in flight.
#[derive(Default)]
pub(super) struct Groups {
    pub open: Option<Group>,
    /// Groups whose COMMIT is in flight, oldest first.
    committing: VecDeque<Group>,
}

impl Groups {
    /// The position after every group committed (`committed`) or committing on blue.
    pub(super) fn committing_end(&self, committed: Lsn) -> Lsn {
        self.committing.back().map_or(committed, |g| g.end.max(committed))
    }

    /// The position after everything applied so far, committed or not.
    pub(super) fn applied_end(&self, committed: Lsn) -> Lsn {
        let committing = self.committing_end(committed);
        self.open.as_ref().map_or(committing, |g| g.end.max(committing))
    }

    /// Opens a group unless one is open; `true` when it did (then BEGIN is due).
    pub(super) fn begin(&mut self, committed: Lsn) -> bool {
        if self.open.is_some() {
            return false;
        }
        self.open = Some(Group::new(self.committing_end(committed)));
        true
    }

    /// The open group's COMMIT was sent.
    pub(super) fn committing(&mut self, group: Group) {
        self.committing.push_back(group);
    }

    /// `n` more COMMITs returned: their groups, oldest first.
    pub(super) fn settle(&mut self, n: usize) -> Vec<Group> {
        let n = n.min(self.committing.len());
        self.committing.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CommitPolicy = CommitPolicy {
        max_rows: 100,
        max_delay: Duration::from_secs(3600),
    };

    #[test]
    fn a_lone_transaction_commits_at_once() {
        let group = Group::new(Lsn(10));
        assert!(POLICY.due(&group, true));
    }

    #[test]
    fn waiting_transactions_share_a_group_until_it_is_full_or_old() {
        let mut group = Group::new(Lsn(10));
        group.rows = 99;
        assert!(!POLICY.due(&group, false));
        group.rows = 100;
        assert!(POLICY.due(&group, false));
        let old = Group {
            started: Instant::now() - Duration::from_millis(50),
            ..Group::new(Lsn(10))
        };
        let quick = CommitPolicy {
            max_delay: Duration::from_millis(10),
            ..POLICY
        };
        assert!(quick.overdue(&old));
        assert!(quick.due(&old, false));
        assert!(!POLICY.overdue(&old));
    }

    #[test]
    fn a_new_group_continues_from_the_last_one_committing() {
        let mut groups = Groups::default();
        assert!(groups.begin(Lsn(100)));
        assert!(!groups.begin(Lsn(100)), "one open group at a time");
        let mut first = groups.open.take().expect("opened");
        assert_eq!(first.end, Lsn(100));
        first.end = Lsn(200);
        groups.committing(first);
        assert_eq!(groups.committing_end(Lsn(100)), Lsn(200));
        assert!(groups.begin(Lsn(100)));
        let second = groups.open.as_mut().expect("opened");
        assert_eq!(
            second.end,
            Lsn(200),
            "the second group's checkpoint replaces the first's"
        );
        second.end = Lsn(300);
        assert_eq!(groups.applied_end(Lsn(100)), Lsn(300));
    }

    #[test]
    fn groups_settle_in_the_order_their_commits_were_sent() {
        let mut groups = Groups::default();
        for end in [200, 300, 400] {
            groups.committing(Group::new(Lsn(end)));
        }
        let settled: Vec<Lsn> = groups.settle(2).into_iter().map(|g| g.end).collect();
        assert_eq!(settled, vec![Lsn(200), Lsn(300)]);
        assert_eq!(groups.committing_end(Lsn(300)), Lsn(400));
        // More commits reported than are in flight: only those there settle.
        assert_eq!(groups.settle(5).len(), 1);
        assert_eq!(groups.committing_end(Lsn(400)), Lsn(400));
    }
}
