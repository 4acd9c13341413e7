//! Green rows whose mapped values blue cannot hold (an integer out of range, a label blue's
//! enum lacks: rows the bridge dead-letters). One such row makes the comparison of its whole
//! chunk fail on blue, so that chunk is evaluated again row by row, server-side, by a
//! temporary function (a subtransaction per row, as `check --data` does): each row whose
//! mapping fails is taken out of the stage and returned with its key and PostgreSQL's
//! message, and the rest of the chunk is compared as usual. The blue key such a row maps to,
//! when it maps to one, is kept in a temporary table for the rest of the pass, so that blue's
//! row with that key (the row before the change blue could not take) is not also reported as
//! extra.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::mapping::statements;
use crate::mapping::{KeyPlan, TablePlan};
use crate::sql;

/// The temporary function evaluating the stage row by row.
const ROWS_FN: &str = "pgbridge_verify_rows";
/// The temporary table of blue keys whose green rows cannot be stored on blue.
pub(super) const SKIP: &str = "pgbridge_verify_skip";

/// The rows of one chunk that cannot be stored on blue: how many, and up to the examples
/// limit of them, their keys and reasons (in key order).
#[derive(Debug, Default)]
pub(super) struct Unstorable {
    pub(super) rows: i64,
    pub(super) keys: Vec<String>,
    pub(super) reasons: Vec<String>,
}

/// `pg_temp.name`, quoted.
pub(super) fn temp(name: &str) -> String {
    format!("pg_temp.{}", sql::ident(name))
}

/// Blue's key of the mapped row as the comparison prints it, `blue_col=value, ...`, over the
/// stage alias `g`.
fn blue_key_text(plan: &TablePlan) -> String {
    statements::key_text(plan, |k| {
        format!(
            "{} || '=' || ({})::text",
            sql::literal(&plan.targets[k.target].blue_name),
            statements::mapped_value(plan, k.target)
        )
    })
}

/// Green's key of a stage row, `blue_col=green's value, ...`, over the stage alias `g`: what
/// names a row whose blue key cannot be computed.
fn green_key_text(plan: &TablePlan) -> String {
    if plan.key.columns().is_empty() {
        // A table without a key on blue: the row itself names it.
        return "g::text".to_string();
    }
    statements::green_key_text(plan, |column| format!("g.{}::text", sql::ident(column)))
}

/// The temporary function: every row of `stage` (quoted, qualified; read as `source`, the
/// stage as green types it, alias `g`, with its `ctid`) evaluated through the mapping (the `compared` targets and the key, under the mapping's filter) on its own; a row
/// whose evaluation fails is deleted from the stage, its blue key (when that much maps) kept
/// in the skip table, and it is returned with its key and PostgreSQL's message.
pub(super) fn row_function(plan: &TablePlan, (stage, source): (&str, &str), compared: &[usize]) -> String {
    let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    let mut targets = key.clone();
    targets.extend(compared.iter().copied().filter(|t| !key.contains(t)));
    let values: Vec<String> = targets.iter().map(|&t| statements::mapped_value(plan, t)).collect();
    let one_row = "g.ctid = pgbridge_r.row_id";
    let filter = plan.filter.as_ref().map_or(String::new(), |f| format!(" AND ({f})"));
    let blue_key = if matches!(plan.key, KeyPlan::Unique(_)) {
        format!(
            "BEGIN SELECT {} INTO v_key FROM {source} WHERE {one_row}; \
             EXCEPTION WHEN OTHERS THEN v_key := NULL; END;\n\
             IF v_key IS NOT NULL THEN INSERT INTO {} VALUES (v_key); END IF;\n",
            blue_key_text(plan),
            temp(SKIP)
        )
    } else {
        String::new()
    };
    let body = format!(
        "#variable_conflict use_column\n\
         DECLARE pgbridge_r record; v_message text; v_detail text; v_key text;\n\
         BEGIN\n\
         FOR pgbridge_r IN SELECT g.ctid AS row_id, {green_key} AS row_key FROM {source} LOOP\n\
           BEGIN\n\
             PERFORM {values} FROM {source} WHERE {one_row}{filter};\n\
           EXCEPTION WHEN OTHERS THEN\n\
             GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;\n\
             v_key := NULL;\n\
             {blue_key}\
             DELETE FROM {stage} AS g WHERE {one_row};\n\
             pgbridge_key := coalesce(v_key, pgbridge_r.row_key);\n\
             pgbridge_reason := {error_text};\n\
             RETURN NEXT;\n\
           END;\n\
         END LOOP;\n\
         END",
        green_key = green_key_text(plan),
        values = values.join(", "),
        error_text = crate::sql::ERROR_TEXT,
    );
    format!(
        "CREATE OR REPLACE FUNCTION {}() RETURNS TABLE (pgbridge_key text, pgbridge_reason text) \
         LANGUAGE plpgsql AS {}",
        temp(ROWS_FN),
        crate::sql::dollar_quoted(&body)
    )
}

/// Evaluates the staged chunk row by row (see [`row_function`]): takes the rows blue cannot
/// hold out of the stage and returns them; `examples`: keys and reasons kept at most.
pub(super) async fn take_out(
    blue: &Client,
    plan: &TablePlan,
    stage: (&str, &str),
    compared: &[usize],
    examples: usize,
) -> Result<Unstorable, tokio_postgres::Error> {
    blue.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} (key text); {}",
        sql::ident(SKIP),
        row_function(plan, stage, compared)
    ))
    .await?;
    let limit = examples as i64;
    let params: [(&(dyn ToSql + Sync), Type); 1] = [(&limit, Type::INT8)];
    let rows = blue
        .query_typed(
            &format!(
                "WITH f AS MATERIALIZED (SELECT * FROM {}()) \
                 SELECT (SELECT count(*) FROM f), \
                   ARRAY(SELECT pgbridge_key FROM f ORDER BY pgbridge_key, pgbridge_reason LIMIT $1), \
                   ARRAY(SELECT pgbridge_reason FROM f ORDER BY pgbridge_key, pgbridge_reason LIMIT $1)",
                temp(ROWS_FN)
            ),
            &params,
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Unstorable::default());
    };
    Ok(Unstorable {
        rows: row.get(0),
        keys: row.get(1),
        reasons: row.get(2),
    })
}

/// Empties the skip table at the start of a pass, when it may hold keys.
pub(super) async fn forget(blue: &Client) -> Result<(), tokio_postgres::Error> {
    blue.batch_execute(&format!("DELETE FROM {}", temp(SKIP))).await
}
