//! Connection poolers between pgbridge and blue.
//!
//! pgbridge keeps state in its blue sessions across transactions: `session_replication_role =
//! replica`, a replication origin (`apply.origin`), the evaluation settings
//! ([`crate::evaluation`]), `synchronous_commit` and timeouts, and its prepared statements. A
//! pooler in transaction or statement mode (PgBouncer's `pool_mode = transaction` or
//! `statement`) hands each transaction to whichever server connection is free, so that state
//! would apply to some transactions and not to others: triggers that fire, values computed in
//! another time zone, commits without the origin that stops a reverse bridge from echoing them.
//! A session-mode pool, or a plain TCP proxy (HAProxy in front of Patroni), keeps one server
//! connection per client connection and is fine.
//!
//! Two defences, each definite (exit 2, slot and checkpoint untouched):
//! * [`refuse_transaction_pooling`], at the start of `check`, `setup` and `run`: a probe with a
//!   second connection. Two live client connections served by the same backend, or one client
//!   connection served by different backends in turn, can only be a pooler: through a direct
//!   connection or a TCP proxy every client connection is its own backend for its lifetime,
//!   and no two live backends share a PID, so the probe has no false positives.
//! * a guard in every checkpoint update (`state::checkpoint`): it fails unless it runs on the
//!   backend whose session pgbridge set up, rolling the whole blue transaction back, so a
//!   pooler that moves the session only under load is caught at its first move; [`explain`]
//!   turns that failure, and the other symptoms of a moved session, into [`refusal`].

use std::future::Future;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::Endpoint;
use crate::error::{Error, Result, Side};
use crate::state::checkpoint::SESSION_MOVED;

/// The session state pgbridge relies on, for messages.
const SESSION_STATE: &str = "session_replication_role = replica, its replication origin (apply.origin), the settings \
     mapped values are computed under (TimeZone, search_path, DateStyle, ...), synchronous_commit and timeouts, and \
     its prepared statements";

/// How long the probe may take before it counts as inconclusive (a pool with no free server).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The definite error for a pooler between pgbridge and blue: what showed it, what pgbridge
/// needs, and how to fix it.
pub fn refusal(blue: &Endpoint, evidence: &str) -> Error {
    Error::definite(format!(
        "{} is reached through a connection pooler in transaction or statement mode (such as PgBouncer with \
         pool_mode = transaction): {evidence}. pgbridge keeps state in its blue session across transactions \
         ({SESSION_STATE}), which such a pooler does not carry from one transaction to the next; point blue.dsn \
         at the server directly (a plain TCP proxy is fine) or at a pool with pool_mode = session",
        blue.describe()
    ))
    .with_side(Side::Blue)
}

/// Refuses a blue connection that goes through a transaction- or statement-mode pooler (see
/// the module docs); `blue` is an open connection, a second one is opened for the probe. An
/// inconclusive probe (the second connection is refused, the pool has no free server) is
/// logged and passes: the checkpoint guard still stops a session that moves.
pub async fn refuse_transaction_pooling(blue_endpoint: &Endpoint, blue: &Client) -> Result<()> {
    if crate::failpoint::active("skip_pooler_probe") {
        tracing::warn!("not probing for a connection pooler in front of blue (failpoint)");
        return Ok(());
    }
    let connect = || async {
        crate::connect::connect_blue(blue_endpoint)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe(blue, connect)).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(evidence))) => Err(refusal(blue_endpoint, &evidence)),
        Ok(Err(why)) => {
            tracing::warn!(reason = %why, "could not tell whether a connection pooler sits in front of blue");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "could not tell whether a connection pooler sits in front of blue: the probe took over 10 s"
            );
            Ok(())
        }
    }
}

/// The probe: `a` (open) reads its backend's PID; a second connection `b` (from `connect`)
/// opens a transaction and reads its own; `a` reads again while `b` holds it; `b` commits;
/// `a` reads twice more. `Ok(Some(evidence))` when that shows a pooler, `Ok(None)` when it
/// shows none, `Err` when it could not tell.
pub async fn probe<C, F>(a: &Client, connect: C) -> std::result::Result<Option<String>, String>
where
    C: Fn() -> F,
    F: Future<Output = std::result::Result<std::sync::Arc<Client>, String>>,
{
    let mut seen = vec![pid(a).await?];
    let b = match begin(connect().await?).await? {
        Begun::Open(b) => b,
        Begun::Refused(evidence) => return Ok(Some(evidence)),
        // A statement pooler closes the connection with its error, which may not arrive
        // first; a server, or a TCP proxy, does not close connections that say BEGIN.
        Begun::Closed => match begin(connect().await?).await? {
            Begun::Open(b) => b,
            Begun::Refused(evidence) => return Ok(Some(evidence)),
            Begun::Closed => {
                return Ok(Some(
                    "it closed two connections as they began a transaction block".into(),
                ))
            }
        },
    };
    let b_pid = pid(&b).await?;
    // A pool of one server: `a` would wait for the transaction `b` holds.
    if b_pid != seen[0] {
        seen.push(pid(a).await?);
    }
    b.batch_execute("COMMIT").await.map_err(|e| e.to_string())?;
    for _ in 0..2 {
        seen.push(pid(a).await?);
    }
    Ok(verdict(&seen, b_pid))
}

/// How `BEGIN` on a second connection went.
enum Begun {
    Open(std::sync::Arc<Client>),
    /// Refused by a statement pooler, with the evidence.
    Refused(String),
    /// The connection closed.
    Closed,
}

async fn begin(b: std::sync::Arc<Client>) -> std::result::Result<Begun, String> {
    match b.batch_execute("BEGIN").await {
        Ok(()) => Ok(Begun::Open(b)),
        Err(e) => match e.as_db_error().map(|d| d.message()) {
            Some(m) if m.contains("pooling mode") => {
                Ok(Begun::Refused(format!("it refused a transaction block ({m})")))
            }
            None if e.is_closed() => Ok(Begun::Closed),
            _ => Err(format!("BEGIN on a second connection failed: {e}")),
        },
    }
}

/// The PID of the backend serving `client`, by the simple query protocol: a statement
/// prepared through a pooler may be unknown to the next backend, or its name taken there.
async fn pid(client: &Client) -> std::result::Result<i32, String> {
    let messages = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .map_err(|e| format!("reading the backend PID: {e}"))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|p| p.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| "reading the backend PID: no row".to_string())
}

/// Whether the backend PIDs one client connection saw in turn (`a`) and the one a second,
/// concurrent connection saw (`b`) show a pooler: without one, each connection keeps its own
/// backend, and two live backends never share a PID.
pub fn verdict(a: &[i32], b: i32) -> Option<String> {
    if a.contains(&b) {
        return Some(format!(
            "two open connections to it were served by the same server process (PID {b})"
        ));
    }
    let mut distinct: Vec<i32> = a.to_vec();
    distinct.dedup();
    (distinct.len() > 1).then(|| {
        let pids: Vec<String> = distinct.iter().map(i32::to_string).collect();
        format!(
            "one connection to it was served by server processes {} in turn",
            pids.join(", ")
        )
    })
}

/// `err` from applying on blue, as [`refusal`] when it shows that the blue session moved to
/// another backend: the checkpoint guard fired, a statement pgbridge prepared on the session
/// is unknown (or its name taken), the replication origin it selected is not selected, or a
/// pooler refused a transaction block. Any other error is returned as it is.
pub fn explain(err: Error, blue: &Endpoint) -> Error {
    let message = err.message();
    let evidence = if message.contains(SESSION_MOVED) {
        Some("a blue transaction ran on another server process than the one pgbridge set its session up on")
    } else if matches!(err.sqlstate(), Some("26000" | "42P05")) {
        Some("a statement pgbridge had prepared on its session was unknown to the server process that ran it")
    } else if message.contains("no replication origin is configured") {
        Some("a blue transaction ran on a server process without the replication origin pgbridge had selected")
    } else if message.contains("not allowed in statement pooling mode") {
        Some("it refused a transaction block")
    } else {
        None
    };
    match evidence {
        Some(evidence) => {
            tracing::error!(error = %err, "the blue session moved between server processes");
            refusal(blue, evidence)
        }
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backend_per_connection_is_no_pooler() {
        assert_eq!(verdict(&[100, 100, 100, 100], 200), None);
    }

    #[test]
    fn a_shared_or_changing_backend_is_a_pooler() {
        let shared = verdict(&[100, 100, 100], 100).expect("shared");
        assert!(shared.contains("same server process (PID 100)"), "{shared}");
        let moved = verdict(&[100, 101, 101, 100], 200).expect("moved");
        assert!(moved.contains("processes 100, 101, 100 in turn"), "{moved}");
    }

    fn blue() -> Endpoint {
        let config = crate::config::Config::parse(
            "[green]\ndsn = \"postgres://g@green/app\"\n[blue]\ndsn = \"postgres://bridge:secret@blue:6432/app\"\n",
            std::path::Path::new("pgbridge.toml"),
            &|_| None,
        )
        .expect("config");
        config.blue
    }

    #[test]
    fn symptoms_of_a_moved_session_become_the_refusal() {
        let blue = blue();
        for err in [
            Error::from_server(
                "updating the checkpoint",
                "42704",
                format!("unrecognized configuration parameter \"{SESSION_MOVED} from backend 1 to 2\""),
            ),
            Error::from_server(
                "insert for table t on blue",
                "26000",
                "prepared statement \"s3\" does not exist",
            ),
            Error::from_server(
                "updating the checkpoint",
                "55000",
                "no replication origin is configured",
            ),
        ] {
            let e = explain(err, &blue);
            assert!(!e.is_transient());
            assert_eq!(e.side(), Some(Side::Blue));
            let text = e.to_string();
            assert!(
                text.starts_with("blue (bridge@blue:6432/app) is reached through a connection pooler"),
                "{text}"
            );
            assert!(text.contains("session_replication_role = replica"), "{text}");
            assert!(text.contains("pool_mode = session"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
        let other = explain(Error::from_server("insert", "23505", "duplicate key"), &blue);
        assert_eq!(other.sqlstate(), Some("23505"));
    }
}
