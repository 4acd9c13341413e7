//! Replication origins: loop prevention between two bridges in opposite directions.
//!
//! Every blue session pgbridge applies on selects a replication origin
//! (`pg_replication_origin_session_setup`), so each of its commits, and every row change in
//! them, carries that origin in blue's WAL. A bridge streaming *from* blue asks with
//! `origin 'none'` (PostgreSQL 16+) or drops transactions that arrive with an Origin message
//! (15), so what pgbridge wrote on blue never travels back. Each blue transaction also records
//! the green position and commit time it replays (`pg_replication_origin_xact_setup`), which
//! `pg_replication_origin_status` then shows.
//!
//! PostgreSQL 15 sends no Origin message for a transaction it streams in progress (the origin
//! is known only at its commit), so a bridge streaming from a 15 server could not tell such a
//! transaction from any other. Every blue transaction on a server before 16 therefore ends
//! with a transactional logical message, prefix [`MARKER_PREFIX`] and the origin's name, just
//! before its COMMIT: the bridge reading it has then seen the marker by the Stream Commit and
//! rolls the transaction back instead of committing it ([`crate::apply`]). At the end rather
//! than first, so that the marker gives the transaction no transaction id before its first
//! write (a slot being created on that server waits for every one).
//!
//! An origin can be selected by one session at a time (PostgreSQL before 19), so the blue
//! sessions of streamed transactions (`stream`) each use an origin of their own:
//! `<origin>_lane<N>`.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::sql;

/// The prefix of the logical message that begins every transaction a bridge applies on a
/// server before PostgreSQL 16.
pub const MARKER_PREFIX: &str = "pgbridge.origin";

/// What ends a blue transaction: `COMMIT`, preceded on a server before PostgreSQL 16
/// (`version`, as `server_version_num`) by the marker naming `origin`, when there is one.
pub fn commit_sql(origin: Option<&str>, version: u32) -> String {
    match origin {
        Some(name) if version < 160000 => format!(
            "SELECT pg_logical_emit_message(true, {}, {}); COMMIT",
            sql::literal(MARKER_PREFIX),
            sql::literal(name)
        ),
        _ => "COMMIT".to_string(),
    }
}

/// The origin a lane's session selects.
pub fn lane_name(base: &str, lane: usize) -> String {
    format!("{base}_lane{lane}")
}

/// Every origin a bridge with origin `base` may have created (for teardown).
pub fn all_names(base: &str, lanes: usize) -> Vec<String> {
    std::iter::once(base.to_string())
        .chain((1..=lanes).map(|i| lane_name(base, i)))
        .collect()
}

/// The functions applying under an origin needs, as `GRANT EXECUTE` takes them.
/// (`pg_replication_origin_drop` is for `teardown`.)
pub const FUNCTIONS: [&str; 5] = [
    "pg_replication_origin_oid(text)",
    "pg_replication_origin_create(text)",
    "pg_replication_origin_session_setup(text)",
    "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
    "pg_replication_origin_drop(text)",
];

/// The statement that grants them to `role`.
pub fn grant_sql(role: &str) -> String {
    format!(
        "GRANT EXECUTE ON FUNCTION {} TO {}",
        FUNCTIONS.join(", "),
        sql::ident(role)
    )
}

/// Selects origin `name` for this blue session, creating it first if needed. Call it only
/// while holding green's slot: a session of an earlier pgbridge run of this bridge that still
/// holds the origin (its client vanished without closing the connection) is then certainly
/// stale, and is terminated.
pub async fn attach(client: &Client, name: &str, role: &str) -> Result<()> {
    let selecting =
        |e: &tokio_postgres::Error| Error::postgres(format!("selecting replication origin {name} on blue"), e);
    let denied = |e: &tokio_postgres::Error| {
        selecting(e)
            .hint(format!(
                "pgbridge tags what it writes with a replication origin so that a bridge in the other direction \
                 skips it; run on blue: {} (or set apply.origin = \"\" if no bridge ever streams from this database)",
                grant_sql(role)
            ))
            .into_definite()
    };
    for _ in 0..3 {
        match client
            .execute(
                "SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
                &[&name],
            )
            .await
        {
            Ok(_) => {}
            // Created by someone else in between.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => return Err(denied(&e)),
            Err(e) => {
                return Err(Error::postgres(
                    format!("creating replication origin {name} on blue"),
                    &e,
                ))
            }
        }
        let err = match client
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err.code() {
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => return Err(denied(&err)),
            Some(c) if *c == SqlState::OBJECT_IN_USE => {
                let Some(pid) = holder(&err) else {
                    return Err(selecting(&err));
                };
                if !terminate_stale(client, name, pid).await? {
                    return Err(selecting(&err)
                        .hint(format!(
                            "PID {pid} on blue is not a pgbridge session of this role; is another bridge configured \
                             with apply.origin = {name:?}? Give each bridge its own origin"
                        ))
                        .into_definite());
                }
            }
            // "could not find free replication state slot"
            Some(c) if *c == SqlState::CONFIGURATION_LIMIT_EXCEEDED => {
                return Err(selecting(&err)
                    .hint(
                        "each pgbridge bridge writing to this server uses up to 5 replication origins; raise \
                         max_replication_slots (PostgreSQL 15-17) or max_active_replication_origins (18) on blue and \
                         restart it",
                    )
                    .into_definite())
            }
            _ => return Err(selecting(&err)),
        }
    }
    Err(Error::transient(format!(
        "replication origin {name} on blue stayed in use by another session"
    )))
}

/// The PID in "replication origin with ID n is already active for PID m".
fn holder(err: &tokio_postgres::Error) -> Option<i32> {
    let message = err.as_db_error()?.message();
    message
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|part| !part.is_empty())
        .and_then(|pid| pid.parse().ok())
}

/// Terminates `pid` if it is a pgbridge session of this role, waiting up to 5 s for it to
/// exit. Returns whether it was one.
async fn terminate_stale(client: &Client, name: &str, pid: i32) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE pid = $1 AND usename = current_user AND application_name LIKE 'pgbridge%'",
            &[&pid],
        )
        .await
        .map_err(|e| Error::postgres("ending a stale pgbridge session on blue", &e))?;
    let Some(row) = row else { return Ok(false) };
    let ended: bool = row.get(0);
    tracing::info!(
        origin = name,
        pid,
        ended,
        "a blue session of an earlier run still held the replication origin; terminated it"
    );
    Ok(true)
}

/// Whether replication origin `name` exists on blue.
pub async fn exists(client: &Client, name: &str) -> std::result::Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_replication_origin_oid($1) IS NOT NULL", &[&name])
        .await?
        .get(0))
}

/// Drops replication origin `name` (refused while a session has it selected).
pub async fn drop(client: &Client, name: &str) -> std::result::Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_replication_origin_drop($1)", &[&name])
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            all_names("pgbridge_to_blue", 2),
            ["pgbridge_to_blue", "pgbridge_to_blue_lane1", "pgbridge_to_blue_lane2"]
        );
    }

    #[test]
    fn grant_quotes_the_role() {
        assert!(grant_sql("App User").ends_with(" TO \"App User\""));
    }

    #[test]
    fn the_marker_ends_transactions_on_servers_before_16_only() {
        assert_eq!(
            commit_sql(Some("pgbridge_to_green"), 150010),
            "SELECT pg_logical_emit_message(true, 'pgbridge.origin', 'pgbridge_to_green'); COMMIT"
        );
        assert_eq!(commit_sql(Some("pgbridge_to_green"), 160000), "COMMIT");
        assert_eq!(commit_sql(None, 150010), "COMMIT");
    }
}
