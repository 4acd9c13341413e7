//! The accepted plan and the recorded drift on blue (see [`crate::drift`] for what they
//! mean): their tables and every statement on them.

use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::mapping::signature::Signature;
use crate::sql;
use crate::state::checkpoint::PgResult;

/// `<schema>.accepted_plan`: the signature of every table `setup` accepted, per slot; and
/// `<schema>.drift`: each drift `run` stopped for, kept until `setup` accepts a plan again, so
/// that undoing the change (which does not bring back what the stream missed meanwhile)
/// does not make the alarm go away by itself.
pub fn create_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
             slot_name   text NOT NULL,
             green_table text NOT NULL,
             blue_table  text NOT NULL,
             signature   text NOT NULL,
             accepted_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (slot_name, green_table)
         );
         CREATE TABLE IF NOT EXISTS {} (
             slot_name text NOT NULL,
             found_at  timestamptz NOT NULL DEFAULT now(),
             stop_lsn  pg_lsn NOT NULL,
             message   text NOT NULL
         );",
        sql::qualified(schema, "accepted_plan"),
        sql::qualified(schema, "drift")
    )
}

/// Creates both tables if missing.
pub async fn create(client: &Client, schema: &str) -> PgResult<()> {
    client.batch_execute(&create_sql(schema)).await
}

/// Records that `run` stopped for drift at `at`, once per message.
pub async fn insert_drift(client: &Client, schema: &str, slot: &str, at: Lsn, message: &str) -> PgResult<u64> {
    let table = sql::qualified(schema, "drift");
    client
        .execute(
            &format!(
                "INSERT INTO {table} (slot_name, stop_lsn, message) SELECT $1, $2::text::pg_lsn, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE slot_name = $1 AND message = $3)"
            ),
            &[&slot, &at.to_string(), &message],
        )
        .await
}

/// The drift recorded for `slot`, oldest first: when (as text), the message, and the stop
/// position (as text).
pub async fn drift_rows(client: &Client, schema: &str, slot: &str) -> PgResult<Vec<(String, String, String)>> {
    let rows = client
        .query(
            &format!(
                "SELECT to_char(found_at, 'YYYY-MM-DD HH24:MI:SS OF'), message, stop_lsn::text FROM {} \
                 WHERE slot_name = $1 ORDER BY found_at",
                sql::qualified(schema, "drift")
            ),
            &[&slot],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The accepted plan of `slot`: green table and signature (JSON text) per row.
pub async fn accepted_rows(client: &Client, schema: &str, slot: &str) -> PgResult<Vec<(String, String)>> {
    let rows = client
        .query(
            &format!(
                "SELECT green_table, signature FROM {} WHERE slot_name = $1",
                sql::qualified(schema, "accepted_plan")
            ),
            &[&slot],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Stores `signatures` as the accepted plan in one transaction: all of it (`replace`, which
/// also clears the recorded drift: accepting a plan acknowledges it), or only tables not
/// accepted yet.
pub async fn store_accepted(
    client: &Client,
    schema: &str,
    slot: &str,
    signatures: &[Signature],
    replace: bool,
) -> PgResult<()> {
    let table = sql::qualified(schema, "accepted_plan");
    client.batch_execute("BEGIN").await?;
    let result = async {
        if replace {
            client
                .execute(&format!("DELETE FROM {table} WHERE slot_name = $1"), &[&slot])
                .await?;
            client
                .execute(
                    &format!("DELETE FROM {} WHERE slot_name = $1", sql::qualified(schema, "drift")),
                    &[&slot],
                )
                .await?;
        }
        // One statement over arrays: a statement per table took thousands of round trips.
        let green: Vec<&str> = signatures.iter().map(|s| s.green_table.as_str()).collect();
        let blue: Vec<&str> = signatures.iter().map(|s| s.blue_table.as_str()).collect();
        let json: Vec<String> = signatures.iter().map(Signature::to_json).collect();
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (slot_name, green_table, blue_table, signature) \
                     SELECT $1, u.g, u.b, u.s FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
                          AS u(g, b, s, n) ORDER BY u.n \
                     ON CONFLICT (slot_name, green_table) DO NOTHING"
                ),
                &[&slot, &green, &blue, &json],
            )
            .await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Writes one accepted signature as it is now, over what was stored for its table.
pub async fn upsert_accepted(client: &Client, schema: &str, slot: &str, s: &Signature) -> PgResult<u64> {
    client
        .execute(
            &format!(
                "INSERT INTO {} (slot_name, green_table, blue_table, signature) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (slot_name, green_table) DO UPDATE SET signature = EXCLUDED.signature",
                sql::qualified(schema, "accepted_plan")
            ),
            &[&slot, &s.green_table, &s.blue_table, &s.to_json()],
        )
        .await
}
