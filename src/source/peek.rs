//! The oldest green transaction blue lacks, read from the slot without consuming it.
//!
//! `lag`, `status` and `pgbridge_lag_seconds` report the age of the oldest green transaction
//! that carries published changes and ends beyond blue's checkpoint. Green's WAL position
//! cannot tell: WAL of unpublished tables, autovacuum or other databases moves it without
//! giving blue anything to do, and the age of the last applied commit says nothing about what
//! came after it. Only logical decoding with the bridge's own publication (and origin filter)
//! knows which transactions blue will receive, so the slot is decoded, without anyone
//! consuming it:
//!
//! * an idle slot is peeked (`pg_logical_slot_peek_binary_changes`), which leaves it as it was
//!   (by commands only: `run` itself decodes a copy, so as never to hold the slot its own
//!   stream is about to take);
//! * a slot a walsender holds (a running `pgbridge run`) cannot be decoded by anyone else, so a
//!   temporary copy is (`pg_copy_logical_replication_slot(src, copy, true)` copies an active
//!   slot without acquiring it, and needs the same `REPLICATION` attribute as streaming). The
//!   copy is advanced to blue's checkpoint first, so decoding starts at the first transaction
//!   blue lacks, and dropped at the end (PostgreSQL drops it with the session, or at the first
//!   error in it, if pgbridge cannot). It takes one of green's `max_replication_slots` for
//!   that moment; when none is free the answer is an error naming the setting, never a guess.
//!
//! Decoding stops at green's WAL position read when the measurement began, and after the
//! first transactions once one of them answers. Messages are aggregated per transaction on
//! green, so a large pending transaction costs one row, not its size.

use bytes::Bytes;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::protocol::pgoutput::{self, LogicalMessage};
use crate::sql;

/// Messages decoded in the first round; each further round decodes 16 times as many.
const FIRST_ROUND_MESSAGES: i32 = 64;
/// Attempts at copying a slot that moved incompatibly while being copied.
const COPY_ATTEMPTS: u32 = 3;

/// One transaction of the decoded stream, as green aggregates it: how many messages it
/// produced, whether any is a row change (Insert `I`, Update `U`, Delete `D`, Truncate `T`) or
/// an Origin (`O`), and its Commit (`C`) message.
const SCAN: &str = "SELECT count(*)::int8, \
            bool_or(get_byte(data, 0) IN (73, 85, 68, 84)), \
            bool_or(get_byte(data, 0) = 79), \
            (array_agg(data) FILTER (WHERE get_byte(data, 0) = 67))[1] \
     FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, VARIADIC $4::text[]) \
          WITH ORDINALITY AS m(lsn, xid, data, n) \
     GROUP BY m.xid::text ORDER BY min(m.n)";

/// What to look for, and where.
pub struct Peek<'a> {
    pub slot: &'a str,
    pub publication: &'a str,
    /// `green.origin = "none"`: transactions applied on green under a replication origin are
    /// not carried, so they are not lag either.
    pub skip_origins: bool,
    /// Green's `server_version_num`.
    pub server_version: u32,
    /// Blue's checkpoint: transactions ending at or before it are on blue.
    pub checkpoint: Lsn,
    /// Green's WAL position when the measurement began: decoding stops there.
    pub upto: Lsn,
}

/// A green transaction blue lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub end_lsn: Lsn,
    /// Commit time as pgoutput sends it (the applier sees the same), microseconds since
    /// 2000-01-01 UTC: green's, or for a transaction applied under a replication origin the
    /// origin's commit time that the applying session recorded.
    pub commit_time: i64,
}

impl Peek<'_> {
    /// The pgoutput options the bridge streams with, as far as they decide what is sent.
    fn options(&self) -> Vec<String> {
        let mut options = vec![
            "proto_version".to_string(),
            "1".to_string(),
            "publication_names".to_string(),
            sql::ident(self.publication),
        ];
        if self.skip_origins && self.server_version >= 160000 {
            options.extend(["origin".to_string(), "none".to_string()]);
        }
        options
    }
}

/// The oldest transaction with published changes that ends beyond the checkpoint, `None` when
/// there is none up to `peek.upto`, read from a copy of the slot when `copy` is set (a
/// walsender holds the slot), else from the slot itself. Errors say why it cannot be told and
/// how to fix that.
pub async fn oldest_pending(green: &Client, peek: &Peek<'_>, copy: bool) -> Result<Option<Pending>> {
    if !copy {
        match scan(green, peek.slot, peek).await {
            // A `run` took the slot since it was seen idle: decode a copy instead.
            Err(e) if e.sqlstate() == Some("55006") => {}
            other => return other.map_err(cannot_tell),
        }
    }
    let copy = copy_slot(green, peek.slot).await?;
    let found = async {
        advance(green, &copy, peek.checkpoint).await?;
        scan(green, &copy, peek).await
    }
    .await;
    drop_copy(green, &copy).await;
    found.map_err(cannot_tell)
}

/// Decodes `slot` up to `peek.upto` in rounds of growing size until a pending transaction
/// turns up or nothing is left.
async fn scan(green: &Client, slot: &str, peek: &Peek<'_>) -> Result<Option<Pending>> {
    let options = peek.options();
    let upto = peek.upto.to_string();
    let mut limit = FIRST_ROUND_MESSAGES;
    loop {
        let rows = green
            .query(SCAN, &[&slot, &upto, &limit, &options])
            .await
            .map_err(|e| Error::postgres(format!("decoding slot {slot} on green"), &e))?;
        let mut messages = 0i64;
        for row in &rows {
            messages += row.get::<_, i64>(0);
            let tx = Decoded {
                changes: row.get::<_, Option<bool>>(1).unwrap_or(false),
                origin: row.get::<_, Option<bool>>(2).unwrap_or(false),
                commit: row.get(3),
            };
            if let Some(pending) = tx.pending(peek)? {
                return Ok(Some(pending));
            }
        }
        // Green stops a round only after the transaction that reaches the limit.
        if messages < i64::from(limit) {
            return Ok(None);
        }
        limit = limit.saturating_mul(16);
    }
}

/// One decoded transaction.
struct Decoded {
    changes: bool,
    origin: bool,
    commit: Option<Vec<u8>>,
}

impl Decoded {
    /// The transaction, if blue lacks it and would receive changes from it.
    fn pending(&self, peek: &Peek<'_>) -> Result<Option<Pending>> {
        if !self.changes || (self.origin && peek.skip_origins) {
            return Ok(None);
        }
        let Some(commit) = &self.commit else {
            return Ok(None);
        };
        match pgoutput::decode(Bytes::copy_from_slice(commit), false) {
            Ok(LogicalMessage::Commit(c)) if c.end_lsn > peek.checkpoint => Ok(Some(Pending {
                end_lsn: c.end_lsn,
                commit_time: c.timestamp,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(Error::definite(format!(
                "green's slot {} decoded an unreadable Commit message: {e}",
                peek.slot
            ))),
        }
    }
}

/// Creates a temporary copy of `slot` in this session and returns its name.
async fn copy_slot(green: &Client, slot: &str) -> Result<String> {
    let name = format!("pgbridge_lag_{}_{:08x}", std::process::id(), rand::random::<u32>());
    let mut attempt = 1;
    loop {
        let copied = green
            .execute("SELECT pg_copy_logical_replication_slot($1, $2, true)", &[&slot, &name])
            .await;
        match copied {
            Ok(_) => return Ok(name),
            // The source's restart_lsn went back while it was copied: copy again.
            Err(e) if attempt < COPY_ATTEMPTS && is_copy_race(&e) => attempt += 1,
            Err(e) => return Err(copy_error(green, slot, &e).await),
        }
    }
}

fn is_copy_race(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .and_then(|d| d.detail())
        .is_some_and(|d| d.contains("modified incompatibly"))
}

/// Why a slot could not be copied, with what to do about it.
async fn copy_error(green: &Client, slot: &str, e: &tokio_postgres::Error) -> Error {
    let err = Error::postgres(format!("copying slot {slot} on green"), e).into_definite();
    let reason = match err.sqlstate() {
        Some("53400") => {
            let max = green
                .query_one("SELECT current_setting('max_replication_slots')", &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|_| "?".into());
            return Error::definite(format!(
                "cannot tell lag_seconds: slot {slot} is held by a walsender (pgbridge run), so it is read through \
                 a temporary copy, and all {max} of green's max_replication_slots are in use; raise \
                 max_replication_slots on green (takes a restart) or drop a slot nothing uses (see \
                 pg_replication_slots)"
            ));
        }
        Some("42501") => "the role needs the REPLICATION attribute on green (ALTER ROLE ... REPLICATION)",
        _ => "a slot held by a walsender (pgbridge run) is read through a temporary copy of it",
    };
    Error::definite(format!("cannot tell lag_seconds: {err}; {reason}"))
}

/// Moves the copy to blue's checkpoint (or its own confirmed position, if later: a commit
/// confirmed to green is on blue), so decoding starts at the first transaction blue lacks.
async fn advance(green: &Client, copy: &str, checkpoint: Lsn) -> Result<()> {
    green
        .execute(
            "SELECT pg_replication_slot_advance(slot_name, greatest($2::text::pg_lsn, confirmed_flush_lsn)) \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&copy, &checkpoint.to_string()],
        )
        .await
        .map_err(|e| Error::postgres(format!("advancing the temporary slot copy {copy} on green"), &e))?;
    Ok(())
}

/// Drops the copy. Failing is harmless: a temporary slot goes with its session, and an error
/// in the session has already dropped it.
async fn drop_copy(green: &Client, copy: &str) {
    if let Err(e) = green
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid = pg_backend_pid()",
            &[&copy],
        )
        .await
    {
        tracing::debug!(slot = copy, error = %e, "dropping the temporary slot copy failed; it goes with the session");
    }
}

/// A failure to decode, as the "cannot tell" error the caller reports.
fn cannot_tell(e: Error) -> Error {
    let fix = match e.sqlstate() {
        Some("42501") => "; the role needs the REPLICATION attribute on green (ALTER ROLE ... REPLICATION)",
        _ => "",
    };
    Error::definite(format!("cannot tell lag_seconds: {e}{fix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(skip_origins: bool, version: u32) -> Peek<'static> {
        Peek {
            slot: "s",
            publication: "Pub",
            skip_origins,
            server_version: version,
            checkpoint: Lsn(0x100),
            upto: Lsn(0x1000),
        }
    }

    fn commit(end: u64, ts: i64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend_from_slice(&(end - 8).to_be_bytes());
        b.extend_from_slice(&end.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b
    }

    fn tx(changes: bool, origin: bool, end: u64) -> Decoded {
        Decoded {
            changes,
            origin,
            commit: Some(commit(end, 42)),
        }
    }

    #[test]
    fn options_follow_the_bridge() {
        assert_eq!(
            peek(false, 150000).options(),
            ["proto_version", "1", "publication_names", "\"Pub\""]
        );
        assert_eq!(peek(true, 150000).options().len(), 4, "no origin option before 16");
        assert_eq!(&peek(true, 170000).options()[4..], ["origin", "none"]);
    }

    #[test]
    fn only_carried_transactions_beyond_the_checkpoint_are_pending() {
        let p = peek(true, 150000);
        assert_eq!(
            tx(true, false, 0x200).pending(&p).unwrap(),
            Some(Pending {
                end_lsn: Lsn(0x200),
                commit_time: 42
            })
        );
        assert_eq!(tx(true, false, 0x100).pending(&p).unwrap(), None, "at the checkpoint");
        assert_eq!(tx(false, false, 0x200).pending(&p).unwrap(), None, "no row changes");
        assert_eq!(
            tx(true, true, 0x200).pending(&p).unwrap(),
            None,
            "applied under an origin"
        );
        assert!(tx(true, true, 0x200).pending(&peek(false, 150000)).unwrap().is_some());
    }
}
