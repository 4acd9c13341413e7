//! `<schema>.dead_letter` on blue: rows blue rejected for their content, parked there under
//! `apply.on_error = "dead_letter"` so the bridge goes on. All of its SQL on the apply path.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sql;

/// `<schema>.dead_letter`: rows blue rejected under `on_error = "dead_letter"`, written in the
/// same blue transaction as the rest of their green transaction and the checkpoint.
pub fn table_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
             id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             slot_name   text NOT NULL,
             green_table text NOT NULL,
             blue_table  text NOT NULL,
             key         jsonb,
             row_data    jsonb,
             error       text NOT NULL,
             sqlstate    text,
             lsn         pg_lsn NOT NULL,
             created_at  timestamptz NOT NULL DEFAULT now()
         );",
        sql::qualified(schema, "dead_letter")
    )
}

/// A rejected row, as it is parked.
pub struct Parked<'a> {
    pub slot: &'a str,
    pub green_table: &'a str,
    pub blue_table: &'a str,
    /// The blue key, as JSON of text values.
    pub key: &'a serde_json::Value,
    /// Green's row, as JSON of text values.
    pub row: &'a serde_json::Value,
    /// Why blue rejected it.
    pub error: &'a Error,
    /// The green transaction's commit LSN.
    pub lsn: Lsn,
}

/// The prepared insert into `<schema>.dead_letter`.
pub struct DeadLetters {
    insert: Statement,
}

impl DeadLetters {
    /// Prepares the insert, creating the table if an older setup did not.
    pub async fn prepare(client: &Client, schema: &str) -> Result<Self> {
        client
            .batch_execute(&table_sql(schema))
            .await
            .map_err(|e| Error::postgres(format!("creating {schema}.dead_letter on blue"), &e))?;
        let sql = format!(
            "INSERT INTO {} (slot_name, green_table, blue_table, key, row_data, error, sqlstate, lsn) \
             VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8::pg_lsn)",
            crate::sql::qualified(schema, "dead_letter")
        );
        let insert = client
            .prepare_typed(&sql, &[Type::TEXT; 8])
            .await
            .map_err(|e| Error::postgres(format!("preparing the insert into {schema}.dead_letter on blue"), &e))?;
        Ok(DeadLetters { insert })
    }

    /// Parks `row` (in the blue transaction open on `client`).
    pub async fn park(&self, client: &Client, row: &Parked<'_>) -> Result<()> {
        let params: Vec<Option<String>> = vec![
            Some(row.slot.to_string()),
            Some(row.green_table.to_string()),
            Some(row.blue_table.to_string()),
            Some(row.key.to_string()),
            Some(row.row.to_string()),
            Some(row.error.message().to_string()),
            row.error.sqlstate().map(str::to_string),
            Some(row.lsn.to_string()),
        ];
        client
            .execute_raw(&self.insert, params)
            .await
            .map_err(|e| Error::postgres("parking a row in dead_letter on blue", &e))?;
        Ok(())
    }
}

/// Rows parked for one slot, as rollback readiness counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// How many, counted up to [`Summary::COUNT_CAP`].
    pub count: u64,
    /// When the newest was parked (blue's `created_at`), in RFC 3339 UTC: `--since` takes it back.
    pub newest: Option<String>,
}

impl Summary {
    /// Counting stops here, so that a huge table costs no more than a small one.
    pub const COUNT_CAP: i64 = 1000;
}

/// Rows parked in `<schema>.dead_letter` for `slot` at or after `since` (an RFC 3339 time;
/// `None`: any); none when the table does not exist. Cheap enough for every poll of a running
/// bridge: the count is capped and the newest row is found through the primary key.
pub async fn summary(client: &Client, schema: &str, slot: &str, since: Option<&str>) -> Result<Summary> {
    if !super::checkpoint::table_exists(client, schema, "dead_letter").await? {
        return Ok(Summary { count: 0, newest: None });
    }
    let table = sql::qualified(schema, "dead_letter");
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE slot_name = $1 AND created_at >= $2::text::timestamptz \
                         LIMIT $3) capped), \
                        (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM {table} WHERE slot_name = $1 AND created_at >= $2::text::timestamptz \
                         ORDER BY id DESC LIMIT 1)"
            ),
            &[&slot, &since.unwrap_or("-infinity"), &Summary::COUNT_CAP],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {schema}.dead_letter on blue"), &e))?;
    Ok(Summary {
        count: row.get::<_, i64>(0).max(0) as u64,
        newest: row.get(1),
    })
}
