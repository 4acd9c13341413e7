//! What the next session does after one failed: the decision is made here, from the facts the
//! error carries ([`crate::error`]) and what earlier sessions of this run learned, without I/O.
//!
//! Every session starts from blue's checkpoint, and nothing of a failed blue transaction was
//! committed, so each order below only changes *how* the same stretch of the stream is applied
//! again: row by row, with upserts, without in-progress streaming, or up to a transaction.

use crate::apply;
use crate::error::{Cause, Error};
use crate::lsn::Lsn;

/// What to do after a failed session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// A plain batched insert met a row blue already had: replay from the checkpoint with
    /// upserts into this green table from now on.
    UpsertInto(String),
    /// The schema changed at the green transaction committed at this LSN: replay, commit
    /// everything before it, then stop.
    StopBefore(Lsn),
    /// Applying a transaction green streamed in progress failed: replay with green sending
    /// transactions whole, where the ordinary path finds the row or waits for the lock.
    Unstreamed,
    /// Blue rejected a row of these green transactions (commit LSNs, first and last): replay
    /// them row by row to find it.
    ReplayCarefully(Lsn, Lsn),
    /// Reconnect after a backoff and resume from the checkpoint.
    Reconnect,
    /// End the run with the error.
    Stop,
}

/// How a session ended with an error.
pub(super) struct Failed {
    pub error: Error,
    /// The error came from applying the stream (not from starting the session).
    pub applying: bool,
    /// The session moved blue's checkpoint before it failed.
    pub progressed: bool,
}

/// What earlier sessions of this run learned about applying the stream.
pub(super) struct Replay {
    /// What the next session is told: the green transactions to apply row by row because
    /// blue rejected one of their rows, the green tables whose batched inserts go out as
    /// upserts (see `apply::batch`), and the transaction the schema changed at (the next
    /// session commits what comes before it and stops there).
    pub learned: apply::Replay,
    /// In-progress streaming is allowed at all (`PGBRIDGE_STREAMING`).
    streaming: bool,
    /// The next session goes without in-progress streaming (once, after trouble in it).
    unstreamed: bool,
}

impl Replay {
    pub(super) fn new(streaming: bool) -> Self {
        Replay {
            learned: apply::Replay::default(),
            streaming,
            unstreamed: false,
        }
    }

    /// Whether the next session asks green for in-progress transactions; a one-session
    /// fallback is used up by asking.
    pub(super) fn take_streaming(&mut self) -> bool {
        self.streaming && !std::mem::take(&mut self.unstreamed) && self.learned.stop_before.is_none()
    }

    /// What to do after `failed`. `shutdown`: a shutdown was asked for (a failure while
    /// finishing is reported, not retried: exit 0 would claim a clean stop). A transient error
    /// is retried whether or not a session has streamed yet: a daemon started while green or
    /// blue restarts or fails over waits for it; problems of configuration are definite.
    pub(super) fn next(&self, failed: &Failed, shutdown: bool) -> Next {
        let err = &failed.error;
        if let Some(table) = err.insert_conflict() {
            return Next::UpsertInto(table.to_string());
        }
        if let Some(Cause::SchemaChangedAt(lsn)) = err.cause() {
            if self.learned.stop_before.is_none() && !shutdown {
                return Next::StopBefore(*lsn);
            }
        }
        // lock_timeout is set only while streamed transactions are open (see `apply::stream`).
        let in_progress =
            err.cause() == Some(&Cause::InProgress) || (failed.applying && err.sqlstate() == Some("55P03"));
        if in_progress && !shutdown {
            return Next::Unstreamed;
        }
        if let Some((first, last)) = err.lsns().filter(|_| failed.applying) {
            if err.is_row_rejection() && !self.learned.is_careful(first) {
                return Next::ReplayCarefully(first, last);
            }
        }
        if !err.is_transient() || shutdown {
            return Next::Stop;
        }
        Next::Reconnect
    }

    /// Records what the next session does differently; `false` for [`Next::Reconnect`] and
    /// [`Next::Stop`], which change nothing here.
    pub(super) fn learn(&mut self, next: &Next, err: &Error) -> bool {
        match next {
            Next::UpsertInto(table) => {
                self.learned.upsert_tables.insert(table.clone());
            }
            Next::StopBefore(lsn) => self.learned.stop_before = Some((*lsn, err.message().to_string())),
            Next::Unstreamed => self.unstreamed = true,
            Next::ReplayCarefully(first, last) => self.learned.careful.push((*first, *last)),
            Next::Reconnect | Next::Stop => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: Error) -> Failed {
        Failed {
            error,
            applying: true,
            progressed: false,
        }
    }

    fn rejected(first: u64, last: u64) -> Error {
        Error::from_server("insert for table public.t on blue", "23514", "check violation")
            .at_lsns(Lsn(first), Lsn(last))
    }

    #[test]
    fn a_row_rejected_in_a_group_replays_that_group_row_by_row() {
        let mut replay = Replay::new(true);
        let next = replay.next(&failed(rejected(100, 200)), false);
        assert_eq!(next, Next::ReplayCarefully(Lsn(100), Lsn(200)));
        assert!(replay.learn(&next, &failed(rejected(100, 200)).error));
        assert_eq!(replay.learned.careful, vec![(Lsn(100), Lsn(200))]);
        // Replayed row by row, the row is rejected again: that is the operator's to see.
        assert_eq!(replay.next(&failed(rejected(150, 150)), false), Next::Stop);
        // A later group is replayed carefully too.
        assert_eq!(
            replay.next(&failed(rejected(300, 400)), false),
            Next::ReplayCarefully(Lsn(300), Lsn(400))
        );
    }

    #[test]
    fn a_rejection_is_replayed_even_during_shutdown_but_not_outside_the_apply_loop() {
        let replay = Replay::new(true);
        assert_eq!(
            replay.next(&failed(rejected(100, 100)), true),
            Next::ReplayCarefully(Lsn(100), Lsn(100))
        );
        let starting = Failed {
            applying: false,
            ..failed(rejected(100, 100))
        };
        assert_eq!(replay.next(&starting, false), Next::Stop);
    }

    #[test]
    fn an_insert_conflict_replays_with_upserts_into_that_table() {
        let mut replay = Replay::new(true);
        let err = Error::from_server("insert", "23505", "duplicate key")
            .at_lsn(Lsn(100))
            .conflicted_insert("public.t");
        let next = replay.next(&failed(err), true);
        assert_eq!(next, Next::UpsertInto("public.t".into()));
        replay.learn(&next, &Error::transient("x"));
        assert!(replay.learned.upsert_tables.contains("public.t"));
    }

    #[test]
    fn trouble_in_a_streamed_transaction_replays_once_without_streaming() {
        let mut replay = Replay::new(true);
        let err = Error::transient("too many").with_cause(Cause::InProgress);
        let next = replay.next(&failed(err), false);
        assert_eq!(next, Next::Unstreamed);
        replay.learn(&next, &Error::transient("x"));
        assert!(!replay.take_streaming());
        assert!(replay.take_streaming());
        // A lock wait on blue while lanes were open is the same trouble.
        let lock = Error::from_server("update on blue", "55P03", "lock timeout");
        assert_eq!(replay.next(&failed(lock), false), Next::Unstreamed);
        // Not during shutdown.
        let err = Error::transient("too many").with_cause(Cause::InProgress);
        assert_eq!(replay.next(&failed(err), true), Next::Stop);
    }

    #[test]
    fn a_schema_change_commits_what_comes_before_it_then_stops() {
        let mut replay = Replay::new(true);
        let err = Error::definite("green table t no longer maps").with_cause(Cause::SchemaChangedAt(Lsn(500)));
        let next = replay.next(&failed(err), false);
        assert_eq!(next, Next::StopBefore(Lsn(500)));
        replay.learn(&next, &Error::definite("green table t no longer maps"));
        assert_eq!(
            replay.learned.stop_before,
            Some((Lsn(500), "green table t no longer maps".into()))
        );
        assert!(
            !replay.take_streaming(),
            "the stopping session streams transactions whole"
        );
        // The stopping session's own stop is final.
        let err = Error::definite("green table t no longer maps").with_cause(Cause::SchemaChangedAt(Lsn(500)));
        assert_eq!(replay.next(&failed(err), false), Next::Stop);
    }

    #[test]
    fn transient_errors_reconnect_unless_shutting_down() {
        let replay = Replay::new(true);
        let lost = || failed(Error::transient("connection closed"));
        assert_eq!(replay.next(&lost(), false), Next::Reconnect);
        assert_eq!(replay.next(&lost(), true), Next::Stop, "while finishing on shutdown");
        assert_eq!(replay.next(&failed(Error::definite("bad mapping")), false), Next::Stop);
    }

    #[test]
    fn streaming_off_stays_off() {
        let mut replay = Replay::new(false);
        assert!(!replay.take_streaming());
    }
}
