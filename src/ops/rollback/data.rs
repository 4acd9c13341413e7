//! `pgbridge check --data`: the green rows blue would refuse, or store changed without an
//! error (trailing blanks beyond a `varchar(n)`, [`stage::changed`]).
//!
//! Per table, in one blue transaction that is rolled back: green's rows (all, or a sample)
//! are COPYed out of one green snapshot and into a text stage on blue a chunk at a time, and
//! each chunk is inserted through the mapping (the apply path's statement text, in the
//! apply path's session settings, [`crate::evaluation`]) into a temporary copy of blue's
//! table that has its NOT NULL and CHECK constraints, and blue's other unique indexes on a
//! table of just their columns. A clean chunk is one statement inside a savepoint; a chunk
//! that fails is rolled back to the savepoint and inserted row by row by a temporary
//! function, which returns each refused row's key and reason in one round trip. Memory holds
//! one network buffer and one chunk's refused rows; blue's temporary space one chunk of rows
//! (stage and copy, emptied in place after each chunk) plus the unique-index columns of
//! every row checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::partitions::{self, Partition};
use super::stage::{self, UniqueIndex};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::statements;
use crate::mapping::TablePlan;
use crate::ops::copy::transfer;
use crate::ops::privileges;
use crate::sql;

/// Rows per chunk at most (fewer with `PGBRIDGE_VERIFY_CHUNK_ROWS`): a chunk that does not
/// go in whole is retried row by row, a subtransaction each.
const CHUNK_ROWS: u64 = 10_000;
/// A progress line at most this often per table.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A green row blue would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Blue's table, `schema.table`.
    pub table: String,
    /// `blue_key_column=green's value, ...`.
    pub key: String,
    /// PostgreSQL's message, with its detail.
    pub reason: String,
    pub constraint: Option<String>,
    pub column: Option<String>,
}

/// One table's outcome.
#[derive(Clone, Debug, Default)]
pub struct TableOutcome {
    pub green_table: String,
    pub blue_table: String,
    /// Green rows read (the sample, when sampling).
    pub rows: u64,
    pub refused: u64,
    /// Rows blue would accept but store changed (trailing blanks beyond `varchar(n)` cut).
    pub changed: u64,
    /// What blue would check that this does not (partial or expression unique indexes).
    pub unchecked: Vec<String>,
    /// Rows counted but not shown, past the examples per column or constraint:
    /// (`refused in column c`, `changed in column c`, ..., how many), in first-seen order.
    pub more: Vec<(String, u64)>,
    pub seconds: f64,
}

/// What the check reports as it goes: refused rows and tables to stdout, progress to stderr.
pub enum Event<'a> {
    Refused(&'a Refused),
    /// A row blue would accept but store changed; `reason` says how, column by column.
    Changed(&'a Refused),
    Progress(String),
    Table(&'a TableOutcome),
}

/// Checks every table of `plans`; `sample`: at most this many rows per table.
pub async fn run(
    config: &Config,
    plans: &[Arc<TablePlan>],
    sample: Option<u64>,
    examples: u64,
    out: &mut dyn FnMut(Event),
) -> Result<Vec<TableOutcome>> {
    let green = transfer::green_for_snapshots(config).await?;
    // A repeatable sample: TABLESAMPLE ... REPEATABLE cut by LIMIT reads the same rows only
    // when the scan starts at the table's first page.
    green
        .batch_execute("SET synchronize_seqscans = off")
        .await
        .map_err(|e| Error::postgres("setting up green's session", &e).into_definite())?;
    let blue = crate::connect::connect_blue(&config.blue)
        .await
        .map_err(Error::into_definite)?;
    let env = Environment::resolve(&blue, config)
        .await
        .map_err(Error::into_definite)?;
    transfer::prepare_blue(&blue, &env).await?;
    privileges::refuse(
        privileges::read_problems(&green, &blue, plans, "check --data").await?,
        "nothing was checked",
    )?;
    let cx = Checker {
        green: &green,
        blue: &blue,
        chunk_rows: config.switches.verify_chunk_rows.min(CHUNK_ROWS),
        sample,
        examples,
    };
    let mut outcomes = Vec::new();
    for plan in plans {
        let outcome = cx.table(plan, out).await;
        // Whatever happened, nothing of this table's check stays on blue.
        let rolled_back = blue.batch_execute("ROLLBACK").await;
        let outcome = outcome?;
        rolled_back.map_err(|e| Error::postgres("rolling back the check on blue", &e).into_definite())?;
        out(Event::Table(&outcome));
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Both sessions and how much to read.
struct Checker<'a> {
    green: &'a Client,
    blue: &'a Client,
    chunk_rows: u64,
    sample: Option<u64>,
    /// Rows shown per column (or constraint) and table; the rest are counted.
    examples: u64,
}

/// One table's check in progress.
struct Run<'a> {
    plan: &'a TablePlan,
    unique: Vec<UniqueIndex>,
    /// [`stage::changed`] for this table.
    changed: String,
    /// Blue's partition tree (just the root when not partitioned).
    tree: Vec<Partition>,
    what: String,
    outcome: TableOutcome,
    last_progress: Instant,
}

impl Checker<'_> {
    /// One table, inside a blue transaction the caller rolls back.
    async fn table(&self, plan: &TablePlan, out: &mut dyn FnMut(Event)) -> Result<TableOutcome> {
        let started = Instant::now();
        let what = format!(
            "checking green table {}'s rows against blue table {}",
            plan.green_name, plan.blue_name
        );
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        self.blue.batch_execute("BEGIN").await.map_err(on_blue)?;
        let (unique, unchecked) = unique_indexes(self.blue, plan).await.map_err(on_blue)?;
        let (columns, trigger) = blue_columns(self.blue, plan).await.map_err(on_blue)?;
        let tree = partitions::read(self.blue, plan).await.map_err(on_blue)?;
        self.blue
            .batch_execute(&stage::setup(plan, &columns, &unique, trigger, &tree))
            .await
            .map_err(on_blue)?;
        let (estimated, _) = transfer::estimate(self.green, &plan.green.namespace, &plan.green.name).await;
        out(Event::Progress(format!(
            "check --data: {}{}{}",
            plan.green_name,
            about(estimated),
            self.sample
                .map_or(String::new(), |n| format!(", a sample of up to {n} rows"))
        )));
        let others = not_reproduced(self.blue, plan).await.map_err(on_blue)?;
        let unchecked = [unchecked, partitions::unchecked(&tree), others].concat();
        let mut run = Run {
            plan,
            changed: stage::changed(plan, &columns),
            unique,
            tree,
            what,
            outcome: TableOutcome {
                green_table: plan.green_name.to_string(),
                blue_table: plan.blue_name.clone(),
                unchecked,
                ..TableOutcome::default()
            },
            last_progress: Instant::now(),
        };
        transfer::begin_snapshot(self.green, None).await?;
        let streamed = self.stream(&mut run, estimated, out).await;
        let ended = transfer::end_snapshot(self.green).await;
        streamed?;
        ended?;
        run.outcome.seconds = started.elapsed().as_secs_f64();
        let examples = self.examples;
        run.outcome.more = std::mem::take(&mut run.outcome.more)
            .into_iter()
            .filter(|(_, n)| *n > examples)
            .map(|(what, n)| (what, n - examples))
            .collect();
        Ok(run.outcome)
    }

    /// Green's rows out of one COPY, cut into chunks, each checked once it is staged.
    async fn stream(&self, run: &mut Run<'_>, estimated: u64, out: &mut dyn FnMut(Event)) -> Result<()> {
        let what = run.what.clone();
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let on_green = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on green"), &e).into_definite();
        let (sampling, limit) = stage::sample_clauses(estimated, self.sample);
        let published: Vec<String> = statements::published_rows(run.plan).into_iter().collect();
        let tail = format!("{sampling}{}{limit}", statements::where_clause(&published));
        let stream = self
            .green
            .copy_out(&statements::copy_out(run.plan, &tail))
            .await
            .map_err(on_green)?;
        let copy_in = format!("COPY {} FROM STDIN", stage::temp(stage::STAGE));
        let mut sink = Box::pin(self.blue.copy_in::<_, Bytes>(&copy_in).await.map_err(on_blue)?);
        let mut reader = transfer::Gathered::new(stream);
        let mut in_chunk = 0u64;
        while let Some(mut data) = reader.next().await.map_err(on_green)? {
            while !data.is_empty() {
                let (cut, seen) = transfer::cut_after_rows(&data, self.chunk_rows - in_chunk);
                match cut {
                    Some(at) => {
                        sink.send(data.split_to(at)).await.map_err(on_blue)?;
                        sink.as_mut().finish().await.map_err(on_blue)?;
                        self.chunk(run, self.chunk_rows, out).await?;
                        in_chunk = 0;
                        sink = Box::pin(self.blue.copy_in(&copy_in).await.map_err(on_blue)?);
                    }
                    None => {
                        in_chunk += seen;
                        sink.send(std::mem::take(&mut data)).await.map_err(on_blue)?;
                    }
                }
            }
        }
        sink.as_mut().finish().await.map_err(on_blue)?;
        if in_chunk > 0 {
            self.chunk(run, in_chunk, out).await?;
        }
        Ok(())
    }

    /// Checks the staged chunk of `rows` rows, then empties the stage and the copies.
    async fn chunk(&self, run: &mut Run<'_>, rows: u64, out: &mut dyn FnMut(Event)) -> Result<()> {
        let blue = self.blue;
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{}: on blue", run.what), &e).into_definite();
        blue.batch_execute("SAVEPOINT pgbridge_chunk").await.map_err(on_blue)?;
        let whole = blue
            .batch_execute(&stage::insert_checked(run.plan, &run.unique, &run.changed, None))
            .await;
        match whole {
            Ok(()) => blue
                .batch_execute("RELEASE SAVEPOINT pgbridge_chunk")
                .await
                .map_err(on_blue)?,
            Err(e) if e.as_db_error().is_some() => {
                blue.batch_execute("ROLLBACK TO SAVEPOINT pgbridge_chunk; RELEASE SAVEPOINT pgbridge_chunk")
                    .await
                    .map_err(on_blue)?;
                let refused = blue
                    .query(&format!("SELECT * FROM {}()", stage::temp(stage::ROWS_FN)), &[])
                    .await
                    .map_err(on_blue)?;
                for r in refused {
                    let refused = Refused {
                        table: run.plan.blue_name.clone(),
                        key: r.get(0),
                        reason: partitions::readable(readable(r.get(1), &run.plan.blue_name), &run.tree),
                        constraint: r.get(2),
                        column: r.get(3),
                    };
                    run.outcome.refused += 1;
                    let under = match (&refused.column, &refused.constraint) {
                        (Some(c), _) => format!("refused in column {c}"),
                        (None, Some(c)) => format!("refused by constraint {c}"),
                        (None, None) => "refused otherwise".to_string(),
                    };
                    if shown(&mut run.outcome.more, under, self.examples) {
                        out(Event::Refused(&refused));
                    }
                }
            }
            Err(e) => return Err(on_blue(e)),
        }
        let found = self.changed(run, out).await;
        found.map_err(|e| Error::postgres(format!("{}: on blue", run.what), &e).into_definite())?;
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{}: on blue", run.what), &e).into_definite();
        let tables = [stage::STAGE, stage::TARGET, stage::PROBE].map(stage::temp).join(", ");
        // In place: the tables were created in this transaction, so their storage is reused.
        blue.batch_execute(&format!("TRUNCATE {tables}"))
            .await
            .map_err(on_blue)?;
        run.outcome.rows += rows;
        if run.last_progress.elapsed() >= PROGRESS_EVERY {
            run.last_progress = Instant::now();
            out(Event::Progress(format!(
                "check --data: {}: {} rows checked, {} refused so far",
                run.plan.green_name, run.outcome.rows, run.outcome.refused
            )));
        }
        Ok(())
    }
}

impl Checker<'_> {
    /// The rows of the chunk blue accepted but would store changed (see [`stage::changed`]).
    async fn changed(
        &self,
        run: &mut Run<'_>,
        out: &mut dyn FnMut(Event),
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let rows = self
            .blue
            .query(
                &format!(
                    "SELECT {0}, array_to_string({1}, '; ') FROM {2} WHERE cardinality({1}) > 0",
                    sql::ident(stage::GREEN_KEY),
                    sql::ident(stage::CHANGED),
                    stage::temp(stage::TARGET)
                ),
                &[],
            )
            .await?;
        for r in rows {
            let changed = Refused {
                table: run.plan.blue_name.clone(),
                key: r.get(0),
                reason: format!("blue would store {}", r.get::<_, String>(1)),
                constraint: None,
                column: None,
            };
            run.outcome.changed += 1;
            if shown(&mut run.outcome.more, "changed".to_string(), self.examples) {
                out(Event::Changed(&changed));
            }
        }
        Ok(())
    }
}

/// Counts a row under `what` in `seen` (every kind's count so far); whether it is among the
/// first `examples`, to be shown.
fn shown(seen: &mut Vec<(String, u64)>, what: String, examples: u64) -> bool {
    let n = match seen.iter().position(|(w, _)| *w == what) {
        Some(i) => &mut seen[i].1,
        None => {
            seen.push((what, 0));
            &mut seen.last_mut().expect("just pushed").1
        }
    };
    *n += 1;
    *n <= examples
}

/// ` (about N rows)` from green's statistics, or nothing when they do not say.
pub(super) fn about(estimated: u64) -> String {
    if estimated == 0 {
        String::new()
    } else {
        format!(" (about {estimated} rows)")
    }
}

/// PostgreSQL's message with the temporary copies' names replaced by blue's table.
fn readable(reason: String, blue_table: &str) -> String {
    [stage::TARGET, stage::UNIQUE, stage::PROBE]
        .iter()
        .fold(reason, |r, temp| {
            r.replace(
                &format!("relation {}", sql::ident(temp)),
                &format!("blue table {blue_table}"),
            )
        })
}

/// What blue enforces on the plan's table that the temporary copy does not reproduce, one
/// "not checked" note each: exclusion constraints, and triggers that fire under the bridge's
/// replica role (ENABLE ALWAYS or REPLICA), which may refuse or change a row.
async fn not_reproduced(blue: &Client, plan: &TablePlan) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let rows = blue
        .query(
            "SELECT format('exclusion constraint %I is not checked', conname) FROM pg_catalog.pg_constraint \
             WHERE conrelid = to_regclass($1) AND contype = 'x' \
             UNION ALL \
             SELECT format('trigger %I is not run (it fires under the bridge: ENABLE %s)', tgname, \
                           CASE tgenabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END) \
             FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgenabled IN ('A', 'R') \
             ORDER BY 1",
            &[&plan.blue_sql],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Blue's unique indexes, the conflict key's among them, each with its definition
/// (`pg_get_indexdef`: collation, operator class, expressions, predicate, NULLS NOT DISTINCT),
/// to recreate on the unique-key table; those whose definition does not read back are named
/// as not checked.
async fn unique_indexes(
    blue: &Client,
    plan: &TablePlan,
) -> std::result::Result<(Vec<UniqueIndex>, Vec<String>), tokio_postgres::Error> {
    let rows = blue
        .query(
            "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid), quote_ident(ic.relname), \
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          WHERE k.ord <= i.indnkeyatts ORDER BY k.ord), \
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) AS k(attnum) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum), \
                    i.indpred IS NOT NULL OR i.indexprs IS NOT NULL \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
               JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique ORDER BY ic.relname",
            &[&plan.blue_sql],
        )
        .await?;
    let mut conflict: Vec<&str> = match &plan.key {
        crate::mapping::KeyPlan::Unique(cols) => {
            cols.iter().map(|k| plan.targets[k.target].blue_name.as_str()).collect()
        }
        crate::mapping::KeyPlan::Match(_) => Vec::new(),
    };
    conflict.sort_unstable();
    let mut checked = Vec::new();
    let mut unchecked = Vec::new();
    let mut conflict_found = false;
    for r in rows {
        let name: String = r.get(0);
        let def: String = r.get(1);
        let (quoted, table): (String, String) = (r.get(2), r.get(3));
        let key_columns: Vec<String> = r.get(4);
        let columns: Vec<String> = r.get(5);
        let odd: bool = r.get(6);
        let definition = def
            .strip_prefix(&format!("CREATE UNIQUE INDEX {quoted} ON "))
            .map(|rest| rest.strip_prefix("ONLY ").unwrap_or(rest))
            .and_then(|rest| rest.strip_prefix(&table))
            .filter(|rest| rest.starts_with(" USING "));
        let Some(definition) = definition else {
            unchecked.push(format!(
                "unique index {name} is not checked: its definition does not read back ({def})"
            ));
            continue;
        };
        let mut sorted: Vec<&str> = key_columns.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let is_conflict = !odd && !conflict_found && !conflict.is_empty() && sorted == conflict;
        conflict_found |= is_conflict;
        checked.push(UniqueIndex {
            name,
            definition: definition.to_string(),
            columns: (!odd).then_some(columns),
            conflict: is_conflict,
        });
    }
    Ok((checked, unchecked))
}

/// Blue's columns of the plan's table (not generated ones), and whether an enabled BEFORE
/// INSERT row trigger may fill the columns the mapping does not feed.
async fn blue_columns(
    blue: &Client,
    plan: &TablePlan,
) -> std::result::Result<(Vec<stage::BlueColumn>, bool), tokio_postgres::Error> {
    let columns = blue
        .query(
            "SELECT a.attname::text, a.attnotnull, format_type(a.atttypid, a.atttypmod), \
                    a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) ~ 'nextval\\(', false), \
                    coalesce((SELECT b.typcategory = 'N' FROM pg_type b \
                              WHERE b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END), false), \
                    CASE WHEN m.typmod >= 4 AND (CASE WHEN bt.typcategory = 'A' THEN bt.typelem ELSE bt.oid END) \
                              IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype) THEN m.typmod - 4 END, \
                    bt.typcategory = 'A' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
               CROSS JOIN LATERAL (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS oid, \
                                          CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod) m \
               JOIN pg_type bt ON bt.oid = m.oid \
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&plan.blue_sql],
        )
        .await?
        .iter()
        .map(|r| stage::BlueColumn {
            name: r.get(0),
            not_null: r.get(1),
            type_sql: r.get(2),
            sequence: r.get(3),
            numeric: r.get(4),
            bound: r.get(5),
            array: r.get(6),
        })
        .collect();
    let trigger: bool = blue
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal \
               AND tgenabled <> 'D' AND tgtype::int & 7 = 7)",
            &[&plan.blue_sql],
        )
        .await?
        .get(0);
    Ok((columns, trigger))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_blue_table_not_the_temporary_copy() {
        assert_eq!(
            readable(
                "new row for relation \"pgbridge_check_target\" violates check constraint \"c\"".into(),
                "public.t"
            ),
            "new row for blue table public.t violates check constraint \"c\""
        );
    }
}
