//! Row-by-row apply of the green transactions a rejected row was in (the pipeline's careful
//! replay): each row in its own savepoint, so the row blue rejects is found exactly, then
//! parked in `<schema>.dead_letter` or reported with its table, key and LSN.

use std::sync::Arc;

use tokio_postgres::Statement;

use super::exec::TextParam;
use super::rows::Values;
use super::Applier;
use crate::error::{Error, Result};
use crate::mapping::TablePlan;
use crate::protocol::pgoutput::TupleValue;
use crate::state::dead_letters::Parked;

fn text_of(value: Option<&TupleValue>) -> serde_json::Value {
    match value {
        Some(TupleValue::Text(b)) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        _ => serde_json::Value::Null,
    }
}

/// The blue key of a row as JSON (`{"id": "42"}`), from the old tuple when there is one.
fn key_json(plan: &TablePlan, values: &Values<'_>) -> serde_json::Value {
    let tuple = values.old.or(values.new);
    let map = plan
        .key
        .columns()
        .iter()
        .map(|k| {
            (
                plan.targets[k.target].blue_name.clone(),
                text_of(tuple.and_then(|t| t.get(k.green))),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Green's row as JSON of text values (unchanged TOAST values left out).
fn row_json(plan: &TablePlan, values: &Values<'_>) -> serde_json::Value {
    let tuple = values.new.or(values.old).unwrap_or(&[]);
    let map = plan
        .green
        .columns
        .iter()
        .zip(tuple)
        .filter(|(_, v)| !matches!(v, TupleValue::UnchangedToast))
        .map(|(c, v)| (c.name.clone(), text_of(Some(v))))
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
        params: Vec<TextParam>,
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
        let key = key_json(plan, &values);
        let Some(dead_letter) = &self.orders.dead_letter else {
            return Err(Error::definite(format!(
                "{err}; key {key}, green transaction committed at {}. Nothing after the last good transaction was \
                 confirmed: fix blue or the mapping and restart, or set apply.on_error = \"dead_letter\" to park such rows",
                values.lsn
            )));
        };
        let row = row_json(plan, &values);
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
