//! `<schema>.checkpoint` on blue: one row per slot holding the end LSN of the last green
//! transaction (or idle position) whose effects are committed on blue. It is updated in the
//! same blue transaction as the rows it covers, so it can never be ahead of, or behind, the data.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// A statement's outcome with the driver's error: the caller names what failed and on which side.
pub type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;
use crate::lsn::Lsn;
use crate::sql;

/// SQL that creates pgbridge's schema, checkpoint and dead-letter tables if missing.
pub fn create_sql(schema: &str) -> String {
    let table = sql::qualified(schema, "checkpoint");
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {table} (
             slot_name   text PRIMARY KEY,
             lsn         pg_lsn NOT NULL,
             commit_time timestamptz,
             updated_at  timestamptz NOT NULL DEFAULT now()
         );
         {dead_letter}
         {accepted}
         {server}",
        schema = sql::ident(schema),
        dead_letter = super::dead_letters::table_sql(schema),
        accepted = super::plan::create_sql(schema),
        server = super::server::create_sql(schema)
    )
}

/// pgbridge's tables in `<schema>`, for a schema that exists: without `CREATE SCHEMA`, which
/// PostgreSQL refuses to a role without CREATE on the database even when the schema exists.
pub fn create_tables_sql(schema: &str) -> String {
    let all = create_sql(schema);
    let create_schema = format!("CREATE SCHEMA IF NOT EXISTS {};", sql::ident(schema));
    match all.strip_prefix(&create_schema) {
        Some(rest) => rest.to_string(),
        None => all,
    }
}

/// The checkpoint row of one slot.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub lsn: Lsn,
    /// Green commit time of the last applied transaction, as text (ISO).
    pub commit_time: Option<String>,
    pub updated_at: String,
}

/// Reads the checkpoint of `slot`, which must exist (a definite error says to run `setup`).
pub async fn read_required(client: &Client, schema: &str, slot: &str) -> Result<Checkpoint> {
    read(client, schema, slot).await?.ok_or_else(|| {
        Error::definite(format!(
            "blue has no checkpoint for slot {slot} in {schema}.checkpoint; run `pgbridge setup` first"
        ))
    })
}

/// Whether pgbridge's table `<schema>.<name>` exists on blue (a setup of an older pgbridge
/// created fewer of them). A failed query keeps its kind.
pub async fn table_exists(client: &Client, schema: &str, name: &str) -> Result<bool> {
    probe_table(client, schema, name)
        .await
        .map_err(|e| Error::postgres(format!("looking for {schema}.{name} on blue"), &e))
}

/// [`table_exists`] with the driver's error, for callers that say in their own words what failed.
pub async fn probe_table(client: &Client, schema: &str, name: &str) -> PgResult<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql::qualified(schema, name)])
        .await?
        .get(0))
}

/// Reads the checkpoint of `slot`; `Ok(None)` when the table or the row is missing.
pub async fn read(client: &Client, schema: &str, slot: &str) -> Result<Option<Checkpoint>> {
    let table = sql::qualified(schema, "checkpoint");
    if !table_exists(client, schema, "checkpoint").await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT lsn::text, commit_time::text, updated_at::text FROM {table} WHERE slot_name = $1"),
            &[&slot],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {schema}.checkpoint on blue"), &e))?;
    row.map(|r| {
        let lsn: String = r.get(0);
        Ok(Checkpoint {
            lsn: lsn
                .parse()
                .map_err(|e| Error::definite(format!("{schema}.checkpoint: {e}")))?,
            commit_time: r.get(1),
            updated_at: r.get(2),
        })
    })
    .transpose()
}

/// Seconds since `slot`'s checkpoint last moved, by blue's clock; `None` without a checkpoint.
pub async fn age_seconds(client: &Client, schema: &str, slot: &str) -> Result<Option<f64>> {
    if !table_exists(client, schema, "checkpoint").await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT extract(epoch FROM clock_timestamp() - updated_at)::float8 FROM {} WHERE slot_name = $1",
                sql::qualified(schema, "checkpoint")
            ),
            &[&slot],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {schema}.checkpoint on blue"), &e))?;
    Ok(row.map(|r| r.get::<_, f64>(0).max(0.0)))
}

/// The new checkpoint value, guarded: when the row does not hold `$prev` (an earlier blue
/// transaction, pipelined ahead of this one, failed and rolled back) it evaluates to NULL,
/// which the NOT NULL column rejects, so this transaction fails too instead of claiming
/// positions blue does not have. First of all it must run on `backend` (see [`on_backend`]).
fn guarded(new: &str, prev: &str, backend: i32) -> String {
    format!(
        "CASE WHEN {} WHEN lsn = {prev}::pg_lsn THEN {new}::pg_lsn END",
        on_backend(backend)
    )
}

/// Starts the error a checkpoint statement raises when it runs on another backend than the
/// session's (see `crate::pooler`).
pub const SESSION_MOVED: &str = "pgbridge: blue session moved";

/// The first arm of a guarded `CASE`: unless the statement runs on `backend`, the server
/// process whose session pgbridge set up (its replica role, origin, settings), it fails with
/// an error naming [`SESSION_MOVED`] (an unknown setting, SQLSTATE 42704), and the
/// whole blue transaction rolls back. Only a pooler between pgbridge and blue moves a session
/// to another backend; `pg_backend_pid()` is stable, so the error is never raised at planning.
fn on_backend(backend: i32) -> String {
    let moved = format!("{SESSION_MOVED} from backend {backend} to backend ");
    format!(
        "pg_backend_pid() <> {backend} THEN current_setting({} || pg_backend_pid())::pg_lsn",
        sql::literal(&moved)
    )
}

/// Statement that moves the checkpoint after applying transactions: $1 slot, $2 lsn (text),
/// $3 commit time (text, microseconds since the PostgreSQL epoch), $4 the checkpoint it
/// must replace (text). `tagged`: the session applies under a replication origin, and the
/// transaction records the green position and commit time it replays
/// (`pg_replication_origin_xact_setup`, in the same statement so it costs no round trip).
/// `backend`: the session's server process (see [`on_backend`]).
pub fn advance_sql(schema: &str, tagged: bool, backend: i32) -> String {
    const COMMIT_TIME: &str = "timestamptz '2000-01-01 00:00:00+00' + $3::bigint * interval '1 microsecond'";
    let origin = if tagged {
        format!(" FROM (SELECT pg_replication_origin_xact_setup($2::pg_lsn, {COMMIT_TIME})) AS origin")
    } else {
        String::new()
    };
    format!(
        // A group of skipped transactions only (another origin's) has no commit time of its
        // own (0): the last applied one stays.
        "UPDATE {} SET lsn = {}, commit_time = CASE WHEN $3::bigint = 0 THEN commit_time ELSE {COMMIT_TIME} END, \
         updated_at = now(){origin} WHERE slot_name = $1",
        sql::qualified(schema, "checkpoint"),
        guarded("$2", "$4", backend)
    )
}

/// Statement that moves the checkpoint to an idle position (no transaction applied):
/// $1 slot, $2 lsn (text), $3 the checkpoint it must replace (text).
pub fn advance_idle_sql(schema: &str, backend: i32) -> String {
    format!(
        "UPDATE {} SET lsn = {}, updated_at = now() WHERE slot_name = $1",
        sql::qualified(schema, "checkpoint"),
        guarded("$2", "$3", backend)
    )
}

/// Statement that rewrites the checkpoint row unchanged ($1 slot): WAL to flush.
pub fn touch_sql(schema: &str, backend: i32) -> String {
    format!(
        "UPDATE {} SET lsn = CASE WHEN {} ELSE lsn END WHERE slot_name = $1",
        sql::qualified(schema, "checkpoint"),
        on_backend(backend)
    )
}

/// Writes the first checkpoint of `slot` at `lsn` (`setup`); a row already there is kept.
pub async fn insert_if_missing(client: &Client, schema: &str, slot: &str, lsn: Lsn) -> PgResult<u64> {
    client
        .execute(
            &format!(
                "INSERT INTO {} (slot_name, lsn, updated_at) VALUES ($1, $2::text::pg_lsn, now()) ON CONFLICT (slot_name) DO NOTHING",
                sql::qualified(schema, "checkpoint")
            ),
            &[&slot, &lsn.to_string()],
        )
        .await
}

/// Sets the checkpoint of `slot` to 0/0, which `run` refuses: an initial copy has started and
/// not finished (`setup --copy`).
pub async fn mark_copy_started(client: &Client, schema: &str, slot: &str) -> PgResult<u64> {
    client
        .execute(
            &format!(
                "INSERT INTO {} (slot_name, lsn, commit_time, updated_at) VALUES ($1, '0/0', NULL, now()) \
                 ON CONFLICT (slot_name) DO UPDATE SET lsn = '0/0', commit_time = NULL, updated_at = now()",
                sql::qualified(schema, "checkpoint")
            ),
            &[&slot],
        )
        .await
}

/// Moves the checkpoint of `slot` to `lsn` unconditionally (the end of an initial copy).
pub async fn set(client: &Client, schema: &str, slot: &str, lsn: Lsn) -> PgResult<u64> {
    client
        .execute(
            &format!(
                "UPDATE {} SET lsn = $2::text::pg_lsn, updated_at = now() WHERE slot_name = $1",
                sql::qualified(schema, "checkpoint")
            ),
            &[&slot, &lsn.to_string()],
        )
        .await
}

/// Deletes the checkpoint row of `slot` (`teardown`, an undone switchover).
pub async fn delete(client: &Client, schema: &str, slot: &str) -> PgResult<u64> {
    delete_slot_rows(client, schema, "checkpoint", slot).await
}

/// Deletes `slot`'s rows from pgbridge's table `<schema>.<table>` (checkpoint, accepted plan,
/// drift: every one of them is keyed by slot name).
pub async fn delete_slot_rows(client: &Client, schema: &str, table: &str, slot: &str) -> PgResult<u64> {
    client
        .execute(
            &format!("DELETE FROM {} WHERE slot_name = $1", sql::qualified(schema, table)),
            &[&slot],
        )
        .await
}

/// What the role may do about `<schema>` on blue, and whether pgbridge's tables are there.
pub struct SchemaAccess {
    /// The schema exists.
    pub exists: bool,
    /// The role may create schemas in the database.
    pub create_db: bool,
    /// The role may create tables in the schema (`None`: no such schema).
    pub create_in: Option<bool>,
    /// The checkpoint and dead-letter tables exist.
    pub tables_exist: bool,
}

/// Reads [`SchemaAccess`] for `<schema>`.
pub async fn schema_access(client: &Client, schema: &str) -> PgResult<SchemaAccess> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    has_database_privilege(current_database(), 'CREATE'), \
                    (SELECT has_schema_privilege(oid, 'CREATE') AND has_schema_privilege(oid, 'USAGE') \
                     FROM pg_namespace WHERE nspname = $1), \
                    to_regclass(quote_ident($1) || '.checkpoint') IS NOT NULL \
                      AND to_regclass(quote_ident($1) || '.dead_letter') IS NOT NULL",
            &[&schema],
        )
        .await?;
    Ok(SchemaAccess {
        exists: row.get(0),
        create_db: row.get(1),
        create_in: row.get(2),
        tables_exist: row.get(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_tables_sql_leaves_the_schema_alone() {
        let text = create_tables_sql("pg bridge");
        assert!(!text.contains("CREATE SCHEMA"), "{text}");
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS \"pg bridge\".\"checkpoint\""),
            "{text}"
        );
        assert!(create_sql("pg bridge").ends_with(&text));
    }

    #[test]
    fn advances_are_guarded_by_the_previous_position() {
        let text = advance_sql("pgbridge", false, 42);
        assert!(text.contains("WHEN lsn = $4::pg_lsn THEN $2::pg_lsn END"), "{text}");
        assert!(!text.contains("pg_replication_origin_xact_setup"), "{text}");
        assert!(
            text.contains("commit_time = CASE WHEN $3::bigint = 0 THEN commit_time ELSE"),
            "{text}"
        );
        assert!(advance_sql("pgbridge", true, 42).contains("pg_replication_origin_xact_setup($2::pg_lsn"));
        let idle = advance_idle_sql("pgbridge", 42);
        assert!(idle.contains("WHEN lsn = $3::pg_lsn THEN $2::pg_lsn END"), "{idle}");
    }

    #[test]
    fn every_checkpoint_write_of_a_session_first_checks_its_backend() {
        let guard =
            "CASE WHEN pg_backend_pid() <> 42 THEN current_setting('pgbridge: blue session moved from backend 42 \
                     to backend ' || pg_backend_pid())::pg_lsn ";
        for text in [
            advance_sql("pgbridge", true, 42),
            advance_idle_sql("pgbridge", 42),
            touch_sql("pgbridge", 42),
        ] {
            assert!(text.contains(guard), "{text}");
        }
        assert!(touch_sql("pgbridge", 42).contains("ELSE lsn END WHERE slot_name = $1"));
    }
}
