//! The narrow seam between the commit path and blue: what it sends (BEGIN, a group's
//! checkpoint update with its COMMIT, a WAL flush) and what it asks (how many COMMITs returned,
//! how far blue's WAL is written and flushed). [`BluePipe`] is the real one, on the pipelined
//! blue connection; [`memory::Memory`] keeps blue in memory so the commit path's ordering is
//! unit-tested without a server.

use tokio_postgres::Client;

use super::exec::{Context, Pipeline};
use super::group::Group;
use super::session::{commit_with_checkpoint, flush_wal, CheckpointStatements};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// What the commit path sends to blue and asks of it.
pub(super) trait Blue {
    /// Opens a blue transaction (pipelined: not waited for).
    async fn begin(&mut self) -> Result<()>;
    /// Sends `group`'s checkpoint update, guarded by the position it replaces (`prev`), and
    /// its COMMIT; neither is waited for.
    async fn commit(&mut self, group: &Group, prev: Lsn) -> Result<()>;
    /// How many COMMITs returned since the last call (they return in the order sent).
    fn take_commits(&mut self) -> usize;
    /// Waits for everything sent; the first error in the order sent.
    async fn drain(&mut self) -> Result<()>;
    /// Blue's WAL insert and flush positions, read after every COMMIT that returned so far.
    async fn wal_positions(&mut self) -> Result<(Lsn, Lsn)>;
    /// Forces blue's WAL to disk up to now.
    async fn flush_wal(&mut self) -> Result<()>;
}

/// Blue through the pipelined connection of an applier.
pub(super) struct BluePipe<'a> {
    pub pipe: &'a mut Pipeline,
    pub checkpoint: &'a CheckpointStatements,
    pub slot: &'a str,
}

impl Blue for BluePipe<'_> {
    async fn begin(&mut self) -> Result<()> {
        self.pipe.command("BEGIN".into(), Context::new("BEGIN")).await
    }

    async fn commit(&mut self, group: &Group, prev: Lsn) -> Result<()> {
        commit_with_checkpoint(
            self.pipe,
            (&self.checkpoint.advance, &self.checkpoint.commit),
            self.slot,
            group,
            prev,
        )
        .await
    }

    fn take_commits(&mut self) -> usize {
        self.pipe.take_commits()
    }

    async fn drain(&mut self) -> Result<()> {
        self.pipe.drain().await
    }

    async fn wal_positions(&mut self) -> Result<(Lsn, Lsn)> {
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
        Ok((parse(0)?, parse(1)?))
    }

    async fn flush_wal(&mut self) -> Result<()> {
        let client: &Client = self.pipe.client();
        flush_wal(client, &self.checkpoint.flush, self.slot).await
    }
}

#[cfg(test)]
pub(super) mod memory {
    //! Blue in memory: a checkpoint row, COMMITs that return when the test says so, and a WAL
    //! whose flush position the test moves.

    use std::collections::VecDeque;

    use super::*;

    /// Blue in memory.
    #[derive(Default)]
    pub(in crate::apply) struct Memory {
        /// What was sent, in order ("BEGIN", "COMMIT 0/C8").
        pub sent: Vec<String>,
        /// The checkpoint row as the COMMITs that returned left it.
        pub checkpoint: Lsn,
        /// The checkpoint row as the statements sent so far leave it.
        written: Lsn,
        /// Positions of the COMMITs sent and not yet returned, oldest first.
        in_flight: VecDeque<Lsn>,
        /// COMMITs returned but not yet reported by `take_commits`.
        unreported: usize,
        /// Blue's WAL: each COMMIT writes 100 bytes.
        pub wal_insert: Lsn,
        pub wal_flush: Lsn,
        /// The next COMMIT fails (a row rejected in its group).
        pub fail_next_commit: bool,
    }

    impl Memory {
        pub fn starting_at(checkpoint: Lsn) -> Self {
            Memory {
                checkpoint,
                written: checkpoint,
                ..Memory::default()
            }
        }

        /// The oldest `n` COMMITs in flight return.
        pub fn commits_return(&mut self, n: usize) {
            for _ in 0..n {
                let Some(end) = self.in_flight.pop_front() else { return };
                self.checkpoint = end;
                self.unreported += 1;
            }
        }

        /// Blue's WAL writer flushes everything written so far.
        pub fn wal_writer_runs(&mut self) {
            self.wal_flush = self.wal_insert;
        }
    }

    impl Blue for Memory {
        async fn begin(&mut self) -> Result<()> {
            self.sent.push("BEGIN".into());
            Ok(())
        }

        async fn commit(&mut self, group: &Group, prev: Lsn) -> Result<()> {
            if std::mem::take(&mut self.fail_next_commit) {
                // The group's transaction is rolled back: the checkpoint stays.
                self.sent.push("ROLLBACK".into());
                return Err(Error::from_server("insert on blue", "23514", "check violation").at_lsn(group.end));
            }
            if prev != self.written {
                return Err(Error::definite("updating the checkpoint: expected 1 row(s), got 0"));
            }
            self.written = group.end;
            self.sent.push(format!("COMMIT {}", group.end));
            self.in_flight.push_back(group.end);
            self.wal_insert = Lsn(self.wal_insert.0 + 100);
            Ok(())
        }

        fn take_commits(&mut self) -> usize {
            std::mem::take(&mut self.unreported)
        }

        async fn drain(&mut self) -> Result<()> {
            self.commits_return(self.in_flight.len());
            Ok(())
        }

        async fn wal_positions(&mut self) -> Result<(Lsn, Lsn)> {
            Ok((self.wal_insert, self.wal_flush))
        }

        async fn flush_wal(&mut self) -> Result<()> {
            self.wal_insert = Lsn(self.wal_insert.0 + 100);
            self.wal_flush = self.wal_insert;
            Ok(())
        }
    }
}
