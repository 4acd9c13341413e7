//! Row-by-row apply of the green transactions a rejected row was in (the pipeline's careful
//! replay): each row in its own savepoint, so the row blue rejects is found exactly, then
//! parked in `<schema>.dead_letter` or reported with its table, key and LSN.

use std::sync::Arc;

use tokio_postgres::Statement;

use super::params::WireParam;
use super::rows::Values;
use super::Applier;
use crate::error::{Error, Result};
use crate::mapping::TablePlan;
use crate::protocol::pgoutput::TupleValue;
use crate::state::dead_letters::Parked;

fn text_of(value: Option<&TupleValue>, type_oid: u32) -> serde_json::Value {
    match value {
        Some(TupleValue::Text(b)) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Some(TupleValue::Binary(b)) => serde_json::Value::String(binary_text(b, type_oid)),
        _ => serde_json::Value::Null,
    }
}

/// A binary value as its type's output function would write it, for the types keys are
/// commonly made of; for others an honest description (the key still identifies the row
/// by the columns that can be shown).
fn binary_text(b: &[u8], type_oid: u32) -> String {
    use postgres_protocol::types as t;
    let shown = match type_oid {
        16 => t::bool_from_sql(b).ok().map(|v| if v { "t" } else { "f" }.to_string()),
        21 => t::int2_from_sql(b).ok().map(|v| v.to_string()),
        23 => t::int4_from_sql(b).ok().map(|v| v.to_string()),
        20 => t::int8_from_sql(b).ok().map(|v| v.to_string()),
        19 | 25 | 1042 | 1043 => t::text_from_sql(b).ok().map(str::to_string),
        2950 => t::uuid_from_sql(b).ok().map(|u| {
            let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }),
        _ => None,
    };
    shown.unwrap_or_else(|| format!("binary value, {} bytes", b.len()))
}

/// The blue key of a row as JSON (`{"id": "42"}`), from the old tuple when there is one.
/// `oids`: green's column types.
fn key_json(plan: &TablePlan, values: &Values<'_>, oids: &[u32]) -> serde_json::Value {
    let tuple = values.old.or(values.new);
    let map = plan
        .key
        .columns()
        .iter()
        .map(|k| {
            (
                plan.targets[k.target].blue_name.clone(),
                text_of(
                    tuple.and_then(|t| t.get(k.green)),
                    oids.get(k.green).copied().unwrap_or(0),
                ),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Green's row as JSON of text values (unchanged TOAST values left out).
fn row_json(plan: &TablePlan, values: &Values<'_>, oids: &[u32]) -> serde_json::Value {
    let tuple = values.new.or(values.old).unwrap_or(&[]);
    let map = plan
        .green
        .columns
        .iter()
        .zip(tuple)
        .enumerate()
        .filter(|(_, (_, v))| !matches!(v, TupleValue::UnchangedToast))
        .map(|(g, (c, v))| (c.name.clone(), text_of(Some(v), oids.get(g).copied().unwrap_or(0))))
        .collect();
    serde_json::Value::Object(map)
}

impl Applier {
    /// Applies one row in its own savepoint and waits for the answer. A row blue rejects for
    /// its content is parked in `<schema>.dead_letter` (policy `dead_letter`) or stops the
    /// bridge with the table, key, LSN and error (policy `stop`).
    pub(super) async fn apply_one_row(
        &mut self,
        plan: &Arc<TablePlan>,
        statement: &Statement,
        params: Vec<WireParam>,
        action: &'static str,
        values: Values<'_>,
    ) -> Result<()> {
        self.pipe.drain().await?;
        let client = self.pipe.client().clone();
        fn on_blue(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
            move |e| Error::postgres(format!("{what} on blue"), &e)
        }
        client
            .batch_execute("SAVEPOINT pgbridge_row")
            .await
            .map_err(on_blue("SAVEPOINT"))?;
        let err = match client.execute_raw(statement, params).await {
            Ok(_) => {
                return client
                    .batch_execute("RELEASE SAVEPOINT pgbridge_row")
                    .await
                    .map_err(on_blue("RELEASE SAVEPOINT"))
            }
            Err(e) => Error::postgres(
                format!("{action} for green table {} (blue {})", plan.green_name, plan.blue_name),
                &e,
            ),
        };
        if !err.is_row_rejection() {
            return Err(err.at_lsn(values.lsn));
        }
        client
            .batch_execute("ROLLBACK TO SAVEPOINT pgbridge_row")
            .await
            .map_err(on_blue("ROLLBACK TO SAVEPOINT"))?;
        let oids: Vec<u32> = self
            .cache
            .relations
            .get(&plan.green.oid)
            .map_or_else(Vec::new, |r| r.relation.columns.iter().map(|c| c.type_oid).collect());
        let key = key_json(plan, &values, &oids);
        let Some(dead_letter) = &self.orders.dead_letter else {
            return Err(Error::definite(format!(
                "{err}; key {key}, green transaction committed at {}. Nothing after the last good transaction was \
                 confirmed: fix blue or the mapping and restart, or set apply.on_error = \"dead_letter\" to park such rows",
                values.lsn
            )));
        };
        let row = row_json(plan, &values, &oids);
        let parked = Parked {
            slot: &self.cx.config.slot,
            green_table: &plan.green_name,
            blue_table: &plan.blue_name,
            key: &key,
            row: &row,
            error: &err,
            lsn: values.lsn,
        };
        dead_letter.park(&client, &parked).await?;
        self.cx.telemetry.error("dead_letter");
        tracing::warn!(table = %plan.green_name, key = %key, lsn = %values.lsn, error = %err.message(), "row parked in dead_letter");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::binary_text;

    #[test]
    fn binary_keys_are_shown_as_text_where_the_type_is_known() {
        assert_eq!(binary_text(&[0, 0, 0, 42], 23), "42");
        assert_eq!(binary_text(&[0xff, 0xfe], 21), "-2");
        assert_eq!(binary_text(b"abc", 25), "abc");
        assert_eq!(
            binary_text(
                &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7],
                2950
            ),
            "12345678-9abc-def0-0001-020304050607"
        );
        assert_eq!(binary_text(&[0, 0, 0], 23), "binary value, 3 bytes");
        assert_eq!(binary_text(&[1, 2], 1700), "binary value, 2 bytes");
    }
}
