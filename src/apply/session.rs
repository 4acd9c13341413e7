//! A blue session as the applier uses it: the settings it runs under, how its commits become
//! durable, and the checkpoint update that every group commits with.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use super::durability::Mode;
use super::exec::{Context, Pipeline, TextParam};
use super::group::Group;
use super::{checkpoint, CHECKPOINT_UPDATE};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::failpoint;
use crate::lsn::Lsn;

/// The checkpoint statements every group, idle position and WAL flush uses.
pub(super) struct CheckpointStatements {
    /// Writes a group's position, guarded by the one it replaces.
    pub advance: Statement,
    /// Writes an idle position.
    pub advance_idle: Statement,
    /// Forces blue's WAL to disk: rewrites the checkpoint row in a synchronous commit.
    pub flush: Statement,
    /// Ends a blue transaction (with the origin marker on a server before 16, see
    /// [`crate::state::origin`]).
    pub commit: String,
}

impl CheckpointStatements {
    /// `backend`: the server process the session was set up on; every statement checks it.
    pub(super) async fn prepare(client: &Client, config: &Config, backend: i32) -> Result<Self> {
        let prepare = |sql: String, params: usize| async move {
            client
                .prepare_typed(&sql, &vec![Type::TEXT; params])
                .await
                .map_err(|e| Error::postgres("preparing the checkpoint update on blue", &e))
        };
        Ok(CheckpointStatements {
            advance: prepare(
                checkpoint::advance_sql(&config.schema, config.origin.is_some(), backend),
                4,
            )
            .await?,
            advance_idle: prepare(checkpoint::advance_idle_sql(&config.schema, backend), 3).await?,
            flush: prepare(checkpoint::touch_sql(&config.schema, backend), 1).await?,
            commit: crate::state::origin::commit_sql(config.origin.as_deref(), server_version(client).await?),
        })
    }
}

/// Blue's `server_version_num`.
async fn server_version(client: &Client) -> Result<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| Error::postgres("reading blue's server version", &e))?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// Per-connection settings: no timeouts that an operator set for applications, the one
/// evaluation environment (see [`crate::evaluation`]: every path computes mapped values under
/// the same settings), and how commits become durable. Returns whether the replica role was
/// granted, the durability mode, and the server process (PID) all of it was set on: one
/// transaction sets everything, so through a pooler it all lands on one backend, which the
/// checkpoint statements then check (see [`crate::pooler`]).
pub(super) async fn prepare_session(client: &Client, env: &Environment) -> Result<(bool, Mode, i32)> {
    client
        .batch_execute(
            "BEGIN; SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;",
        )
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    env.apply(client).await?;
    // Timeouts an operator may have set for applications, where they exist (PostgreSQL 14+
    // idle_session_timeout, 17+ transaction_timeout): a large transaction must not be cut off.
    client
        .batch_execute(
            "SELECT set_config(name, '0', false) FROM pg_settings \
             WHERE name IN ('idle_session_timeout', 'transaction_timeout')",
        )
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names'), \
             pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    let (sync, standbys, backend): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
    // Without synchronous standbys, durable means flushed to blue's own WAL, which pgbridge
    // can observe; so commits need not wait for it. With them, every commit waits as
    // configured, so a failover of blue to a standby loses nothing green has forgotten.
    let durability = if standbys.trim().is_empty() {
        Mode::Async
    } else {
        Mode::Sync
    };
    let setting = match (durability, sync.as_str()) {
        (Mode::Async, _) => Some("off"),
        (Mode::Sync, "off") => Some("local"),
        (Mode::Sync, _) => None,
    };
    if let Some(setting) = setting {
        client
            .batch_execute(&format!("SET synchronous_commit = {setting}"))
            .await
            .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    }
    // What PostgreSQL's own apply worker does: triggers and foreign-key checks do not fire for
    // replicated rows. Needs superuser or GRANT SET ON PARAMETER (PostgreSQL 15+).
    let replica_role = match client
        .batch_execute("SAVEPOINT replica_role; SET session_replication_role = replica")
        .await
    {
        Ok(()) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT replica_role")
                .await
                .map_err(|e| Error::postgres("configuring the blue session", &e))?;
            false
        }
        Err(e) => return Err(Error::postgres("configuring the blue session", &e)),
    };
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e))?;
    Ok((replica_role, durability, backend))
}

/// Issues `group`'s checkpoint update, guarded by the position it replaces (`prev`), and
/// its COMMIT on `pipe`; neither is waited for.
pub(super) async fn commit_with_checkpoint(
    pipe: &mut Pipeline,
    (advance, commit): (&Statement, &str),
    slot: &str,
    group: &Group,
    prev: Lsn,
) -> Result<()> {
    failpoint::hit("before_blue_commit");
    let params = vec![
        text(slot),
        text(&group.end.to_string()),
        text(&group.commit_time.to_string()),
        text(&prev.to_string()),
    ];
    let ctx = Context {
        expect_rows: Some(1),
        ..Context::new(CHECKPOINT_UPDATE)
    };
    pipe.execute(advance, params, ctx).await?;
    let ctx = Context {
        commit: true,
        ..Context::new("COMMIT")
    };
    pipe.command(commit.to_string(), ctx).await
}

/// Forces blue's WAL to disk up to now: a synchronous commit that writes WAL flushes
/// everything before it (a commit that wrote nothing would not).
pub(super) async fn flush_wal(client: &Client, touch: &Statement, slot: &str) -> Result<()> {
    let result = async {
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = on").await?;
        client.execute(touch, &[&slot]).await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    result.map_err(|e| Error::postgres("flushing blue's WAL", &e))
}

pub(super) fn text(s: &str) -> TextParam {
    TextParam(Some(bytes::Bytes::copy_from_slice(s.as_bytes())))
}
