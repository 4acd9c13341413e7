//! One table's comparison: green's rows read in key order into a stage on blue a chunk at a
//! time, each chunk compared with blue's rows in the same key range.

use std::cell::Cell;

use futures_util::SinkExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::unstorable;
use super::{Counts, Examples};
use crate::error::{Error, Result};
use crate::mapping::statements;
use crate::mapping::{KeyPlan, TablePlan};
use crate::ops::copy::transfer;
use crate::sql;

/// A key range of one chunk, as green's text forms of the key columns: after `lo` (exclusive)
/// up to `hi` (inclusive); `None` is unbounded.
#[derive(Clone, Debug)]
pub(super) struct Range {
    pub(super) lo: Option<Vec<String>>,
    pub(super) hi: Option<Vec<String>>,
}

/// One table's comparison SQL.
pub(super) struct Table<'a> {
    plan: &'a TablePlan,
    keyed: bool,
    /// Rows per compared chunk (`config.switches.verify_chunk_rows`).
    chunk_rows: u64,
    /// Per key column: whether its type sorts by collation (compared in "C" order then).
    collated: Vec<bool>,
    /// Targets compared (insert-only ones keep the value of the row's first insert).
    compared: Vec<usize>,
    /// The temporary table on blue green's rows are staged in.
    stage: String,
    /// Per green column: staged as text, cast to green's type when read ([`super::stages::Stages::loose`]).
    loose: Vec<bool>,
    /// Whether this pass kept keys of rows blue cannot hold ([`unstorable::SKIP`]).
    skipping: Cell<bool>,
    /// Green rows copied into the stage so far, over every pass.
    moved: Cell<u64>,
}

impl<'a> Table<'a> {
    /// `stage`: its name, and per green column whether it holds text; `collated`: per key
    /// column, whether its type sorts by collation.
    pub(super) fn new(
        plan: &'a TablePlan,
        chunk_rows: u64,
        (stage, loose): (String, Vec<bool>),
        collated: Vec<bool>,
    ) -> Table<'a> {
        let compared = (0..plan.targets.len())
            .filter(|&t| !plan.targets[t].insert_only)
            .collect();
        Table {
            plan,
            keyed: matches!(plan.key, KeyPlan::Unique(_)),
            chunk_rows,
            collated,
            compared,
            stage,
            loose,
            skipping: Cell::new(false),
            moved: Cell::new(0),
        }
    }

    /// Green rows copied to blue for comparing row by row so far.
    pub(super) fn rows_moved(&self) -> u64 {
        self.moved.get()
    }

    /// Targets compared (all but insert-only ones).
    pub(super) fn compared(&self) -> &[usize] {
        &self.compared
    }

    /// Per key column: whether its type sorts by collation.
    pub(super) fn collated(&self) -> &[bool] {
        &self.collated
    }

    pub(super) fn plan(&self) -> &TablePlan {
        self.plan
    }

    /// ` COLLATE "C"` after key column `i` when its type sorts by collation.
    pub(super) fn c(&self, i: usize) -> &'static str {
        if self.collated[i] {
            " COLLATE \"C\""
        } else {
            ""
        }
    }

    /// Green's key columns in order, for ORDER BY on green or on the stage.
    pub(super) fn green_order(&self, prefix: &str, desc: bool) -> String {
        let cols: Vec<String> = self
            .plan
            .key
            .columns()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "{prefix}{}{}{}",
                    sql::ident(&self.plan.green.columns[k.green].name),
                    self.c(i),
                    if desc { " DESC" } else { "" }
                )
            })
            .collect();
        cols.join(", ")
    }

    /// `(a COLLATE "C", b) <op> (CAST(lit AS green type) ...)` over green's key columns
    /// (`blue_side` false) or blue's (`blue_side` true, values cast on to blue's types).
    fn bound(&self, blue_side: bool, op: &str, values: &[String]) -> String {
        let key = self.plan.key.columns();
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (i, k) in key.iter().enumerate() {
            let green_type = &self.plan.green.columns[k.green].type_sql;
            let value = format!("CAST({} AS {green_type})", sql::literal(&values[i]));
            if blue_side {
                // As blue stores it (see mapped_value).
                let blue_type = &self.plan.targets[k.target].stored_type;
                cols.push(format!(
                    "b.{}{}",
                    sql::ident(&self.plan.targets[k.target].blue_name),
                    self.c(i)
                ));
                vals.push(format!("CAST({value} AS {blue_type}){}", self.c(i)));
            } else {
                cols.push(format!(
                    "{}{}",
                    sql::ident(&self.plan.green.columns[k.green].name),
                    self.c(i)
                ));
                vals.push(format!("{value}{}", self.c(i)));
            }
        }
        format!("({}) {op} ({})", cols.join(", "), vals.join(", "))
    }

    /// The rows of `range`, over green's key columns (unqualified) or blue's (`b.`).
    pub(super) fn range_condition(&self, blue_side: bool, range: &Range) -> String {
        let mut conds = vec!["true".to_string()];
        if let Some(lo) = &range.lo {
            conds.push(self.bound(blue_side, ">", lo));
        }
        if let Some(hi) = &range.hi {
            conds.push(self.bound(blue_side, "<=", hi));
        }
        conds.join(" AND ")
    }

    /// Reads green (all of the table, or one range) into the stage chunk by chunk and compares
    /// each chunk; returns every chunk's range and counts. `staged`: the rows the stage took
    /// since it was last truncated, kept up to date.
    pub(super) async fn pass(
        &self,
        green: &Client,
        blue: &Client,
        only: Option<&Range>,
        examples: usize,
        what: &str,
        staged: &mut u64,
    ) -> Result<Vec<(Range, Counts)>> {
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let on_green = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on green"), &e).into_definite();
        let chunk_rows = if self.keyed { self.chunk_rows } else { u64::MAX };
        let stage = sql::ident(&self.stage);
        let copy_in = format!("COPY {stage} FROM STDIN");
        // Both at once: the stage emptied on blue while green starts reading.
        let copy_out = self.copy_out(only);
        let empty = super::stages::emptying(&stage, *staged);
        let (stream, emptied) = futures_util::future::join(green.copy_out(&copy_out), async {
            match &empty {
                Some((sql, _)) => blue.batch_execute(sql).await,
                None => Ok(()),
            }
        })
        .await;
        let stream = stream.map_err(on_green)?;
        emptied.map_err(on_blue)?;
        if let Some((_, true)) = empty {
            *staged = 0;
        }
        if self.skipping.replace(false) {
            unstorable::forget(blue).await.map_err(on_blue)?;
        }
        let mut results = Vec::new();
        let mut lo = only.and_then(|r| r.lo.clone());
        let mut in_chunk = 0u64;
        let mut sink = Box::pin(blue.copy_in::<_, bytes::Bytes>(&copy_in).await.map_err(on_blue)?);
        let mut reader = transfer::Gathered::new(stream);
        while let Some(mut data) = reader.next().await.map_err(on_green)? {
            while !data.is_empty() {
                let (cut, seen) = transfer::cut_after_rows(&data, chunk_rows - in_chunk);
                match cut {
                    Some(at) => {
                        let head = data.split_to(at);
                        self.moved.set(self.moved.get() + (chunk_rows - in_chunk));
                        sink.send(head).await.map_err(on_blue)?;
                        sink.as_mut().finish().await.map_err(on_blue)?;
                        let hi = self.stage_max(blue).await.map_err(on_blue)?;
                        let range = Range { lo: lo.clone(), hi };
                        let counts = self.compare(blue, &range, examples, what).await?;
                        results.push((range.clone(), counts));
                        lo = range.hi;
                        in_chunk = 0;
                        blue.batch_execute(&format!("TRUNCATE {stage}"))
                            .await
                            .map_err(on_blue)?;
                        *staged = 0;
                        sink = Box::pin(blue.copy_in(&copy_in).await.map_err(on_blue)?);
                    }
                    None => {
                        in_chunk += seen;
                        self.moved.set(self.moved.get() + seen);
                        *staged = staged.saturating_add(seen);
                        sink.send(std::mem::take(&mut data)).await.map_err(on_blue)?;
                    }
                }
            }
        }
        sink.as_mut().finish().await.map_err(on_blue)?;
        // The last chunk reaches up to the end of the range (or of the table), so blue rows
        // past green's last key are seen too.
        let range = Range {
            lo,
            hi: only.and_then(|r| r.hi.clone()),
        };
        let counts = self.compare(blue, &range, examples, what).await?;
        results.push((range, counts));
        Ok(results)
    }

    /// Green's rows (all of the table, or one range) in key order, as COPY out of green.
    fn copy_out(&self, only: Option<&Range>) -> String {
        // Only the rows the publication carries, as the stream does.
        let mut conditions: Vec<String> = statements::published_rows(self.plan).into_iter().collect();
        if self.keyed {
            conditions.extend(only.map(|r| self.range_condition(false, r)));
        }
        let mut tail = statements::where_clause(&conditions);
        if self.keyed {
            tail.push_str(&format!(" ORDER BY {}", self.green_order("", false)));
        }
        statements::copy_out(self.plan, &tail)
    }

    /// The highest key in the stage, as text of green's types.
    async fn stage_max(&self, blue: &Client) -> std::result::Result<Option<Vec<String>>, tokio_postgres::Error> {
        let cols: Vec<String> = self
            .plan
            .key
            .columns()
            .iter()
            .map(|k| format!("s.{}::text", sql::ident(&self.plan.green.columns[k.green].name)))
            .collect();
        let row = blue
            .query_opt(
                &format!(
                    "SELECT {} FROM {} AS s ORDER BY {} LIMIT 1",
                    cols.join(", "),
                    sql::ident(&self.stage),
                    // Qualified: a bare name would sort by the text output column.
                    self.green_order("s.", true)
                ),
                &[],
            )
            .await?;
        Ok(row.map(|r| (0..cols.len()).map(|i| r.get::<_, String>(i)).collect()))
    }

    /// The staged rows as green types them, as `g` (with their `ctid`): the stage itself, or
    /// over it the loose columns cast to green's types.
    fn source(&self) -> String {
        let stage = unstorable::temp(&self.stage);
        if !self.loose.contains(&true) {
            return format!("{stage} AS g");
        }
        let cols: Vec<String> = statements::needed_columns(self.plan)
            .iter()
            .map(|&g| {
                let c = &self.plan.green.columns[g];
                if self.loose[g] {
                    format!("CAST(g.{0} AS {1}) AS {0}", sql::ident(&c.name), c.type_sql)
                } else {
                    format!("g.{}", sql::ident(&c.name))
                }
            })
            .collect();
        format!("(SELECT g.ctid AS ctid, {} FROM {stage} AS g) AS g", cols.join(", "))
    }

    fn target_col(&self, t: usize) -> String {
        sql::ident(&format!("m{t}"))
    }

    /// Whether compared target `t` differs between the mapped row `m` and blue's `b`. By
    /// text: equality is coarser than what blue holds for some types (interval '1 mon' =
    /// '30 days', numeric 1.5 = 1.5000, case-insensitive collations), and an exact bridge
    /// prints the same text on both sides.
    fn differs(&self, t: usize) -> String {
        let c = self.target_col(t);
        format!("m.{c}::text IS DISTINCT FROM b.{c}::text")
    }

    /// The columns of a different row that differ, each with both values:
    /// `total: green 101.50 / blue 102.50, ...`.
    fn detail_sql(&self) -> String {
        let parts: Vec<String> = self
            .compared
            .iter()
            .map(|&t| {
                let c = self.target_col(t);
                format!(
                    "CASE WHEN {} THEN {} || ': green ' || {} || ' / blue ' || {} END",
                    self.differs(t),
                    sql::literal(&self.plan.targets[t].blue_name),
                    shown(&format!("m.{c}")),
                    shown(&format!("b.{c}"))
                )
            })
            .collect();
        if parts.is_empty() {
            return "''".to_string();
        }
        format!("concat_ws(', ', {})", parts.join(", "))
    }

    /// Compares the stage with blue's rows in `range`. When blue cannot evaluate the mapping
    /// for some staged rows (values it cannot hold), those are taken out of the stage and
    /// counted as such ([`unstorable`]), and the rest is compared.
    async fn compare(&self, blue: &Client, range: &Range, examples: usize, what: &str) -> Result<Counts> {
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let failed = match self.compare_once(blue, range, examples).await {
            Ok(rows) => return counts(&rows, what),
            Err(e) if e.as_db_error().is_some() => e,
            Err(e) => return Err(on_blue(e)),
        };
        let stage = unstorable::temp(&self.stage);
        let out = unstorable::take_out(blue, self.plan, (&stage, &self.source()), &self.compared, examples)
            .await
            .map_err(on_blue)?;
        if out.rows == 0 {
            // Not the rows' values: the comparison itself failed.
            return Err(on_blue(failed));
        }
        self.skipping.set(true);
        let rows = self.compare_once(blue, range, examples).await.map_err(on_blue)?;
        let mut counts = counts(&rows, what)?;
        counts.green_rows += out.rows;
        counts.unstorable = out.rows;
        counts.examples.unstorable = out.keys;
        counts.examples.unstorable_reasons = out.reasons;
        Ok(counts)
    }

    async fn compare_once(
        &self,
        blue: &Client,
        range: &Range,
        examples: usize,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let sql_text = self.compare_sql(range);
        let limit = examples as i64;
        // Parsed, bound and run in one round trip: each comparison's text is new.
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&limit, Type::INT8)];
        blue.query_typed(&sql_text, &params).await
    }

    /// The comparison of the stage with blue's rows in `range`: counts, then up to `$1`
    /// example keys per kind of difference.
    fn compare_sql(&self, range: &Range) -> String {
        let plan = self.plan;
        let filter = plan.filter.as_ref().map_or(String::new(), |f| format!(" WHERE ({f})"));
        let key_targets: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
        let mut cols = key_targets.clone();
        cols.extend(self.compared.iter().copied().filter(|t| !key_targets.contains(t)));
        let comparable = |t: usize| plan.targets[t].comparable;
        // Tables without a key are compared as multisets of rows, by text (see `diff` below).
        let as_text = |t: usize, v: String| {
            if comparable(t) && self.keyed {
                v
            } else {
                format!("({v})::text")
            }
        };
        let m_cols: Vec<String> = cols
            .iter()
            .map(|&t| {
                format!(
                    "{} AS {}",
                    as_text(t, statements::mapped_value(plan, t)),
                    self.target_col(t)
                )
            })
            .collect();
        let b_cols: Vec<String> = cols
            .iter()
            .map(|&t| {
                format!(
                    "{} AS {}",
                    as_text(t, format!("b.{}", sql::ident(&plan.targets[t].blue_name))),
                    self.target_col(t)
                )
            })
            .collect();
        let m = format!("SELECT {} FROM {}{filter}", m_cols.join(", "), self.source());
        if self.keyed {
            self.keyed_sql(range, &m, &b_cols)
        } else {
            let b = format!("SELECT {} FROM {} AS b", b_cols.join(", "), plan.blue_sql);
            format!(
                "WITH m AS MATERIALIZED ({m}), b AS MATERIALIZED ({b}), \
                 missing AS MATERIALIZED (SELECT * FROM m EXCEPT ALL SELECT * FROM b), \
                 extra AS MATERIALIZED (SELECT * FROM b EXCEPT ALL SELECT * FROM m) \
                 SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM b), \
                   (SELECT count(*) FROM missing), (SELECT count(*) FROM extra), 0::int8, \
                   ARRAY(SELECT x::text FROM missing x LIMIT $1), ARRAY(SELECT x::text FROM extra x LIMIT $1), \
                   ARRAY[]::text[], ARRAY[]::text[]"
            )
        }
    }

    /// [`Self::compare_sql`] for a table with a unique key on blue: mapped green rows `m`
    /// and blue's rows in `range` joined on the key.
    fn keyed_sql(&self, range: &Range, m: &str, b_cols: &[String]) -> String {
        let plan = self.plan;
        let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
        let mut b_where = self.range_condition(true, range);
        if plan.filter.is_some() {
            let bk: Vec<String> = key
                .iter()
                .map(|&t| format!("b.{}", sql::ident(&plan.targets[t].blue_name)))
                .collect();
            let gk: Vec<String> = key.iter().map(|&t| statements::mapped_value(plan, t)).collect();
            b_where.push_str(&format!(
                " AND ({}) IN (SELECT {} FROM {})",
                bk.join(", "),
                gk.join(", "),
                self.source()
            ));
        }
        let b = format!(
            "SELECT {} FROM {} AS b WHERE {b_where}",
            b_cols.join(", "),
            plan.blue_sql
        );
        let on: Vec<String> = key
            .iter()
            .map(|&t| format!("m.{0} = b.{0}", self.target_col(t)))
            .collect();
        let k0 = self.target_col(key[0]);
        let diff: Vec<String> = self
            .compared
            .iter()
            .map(|&t| self.differs(t))
            .chain(std::iter::once("false".to_string()))
            .collect();
        let key_text: Vec<String> = key
            .iter()
            .map(|&t| {
                let c = self.target_col(t);
                format!(
                    "{} || '=' || coalesce(m.{c}, b.{c})::text",
                    sql::literal(&plan.targets[t].blue_name)
                )
            })
            .collect();
        // Blue's rows whose green row blue cannot hold are not extra (see `unstorable`).
        let skip = if self.skipping.get() {
            format!(
                " AND (m.{k0} IS NOT NULL OR concat_ws(', ', {}) NOT IN (SELECT key FROM {}))",
                key_text.join(", "),
                unstorable::temp(unstorable::SKIP)
            )
        } else {
            String::new()
        };
        format!(
            "WITH m AS MATERIALIZED ({m}), b AS MATERIALIZED ({b}), \
             d AS MATERIALIZED (SELECT CASE WHEN b.{k0} IS NULL THEN 'missing' WHEN m.{k0} IS NULL THEN 'extra' ELSE 'different' END AS kind, \
                    concat_ws(', ', {key}) AS key, \
                    CASE WHEN m.{k0} IS NOT NULL AND b.{k0} IS NOT NULL THEN {detail} END AS detail \
               FROM m FULL JOIN b ON {on} \
               WHERE (m.{k0} IS NULL OR b.{k0} IS NULL OR {diff}){skip}) \
             SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM b), \
               (SELECT count(*) FROM d WHERE kind = 'missing'), (SELECT count(*) FROM d WHERE kind = 'extra'), \
               (SELECT count(*) FROM d WHERE kind = 'different'), \
               ARRAY(SELECT key FROM d WHERE kind = 'missing' ORDER BY key LIMIT $1), \
               ARRAY(SELECT key FROM d WHERE kind = 'extra' ORDER BY key LIMIT $1), \
               ARRAY(SELECT key FROM d WHERE kind = 'different' ORDER BY key LIMIT $1), \
               ARRAY(SELECT detail FROM d WHERE kind = 'different' ORDER BY key LIMIT $1)",
            key = key_text.join(", "),
            detail = self.detail_sql(),
            on = on.join(" AND "),
            diff = diff.join(" OR "),
        )
    }
}

/// A comparison's counts and examples, from blue's one row.
fn counts(rows: &[Row], what: &str) -> Result<Counts> {
    let Some(row) = rows.first() else {
        return Err(Error::definite(format!("{what}: blue returned no comparison")));
    };
    Ok(Counts {
        green_rows: row.get(0),
        blue_rows: row.get(1),
        missing: row.get(2),
        extra: row.get(3),
        different: row.get(4),
        unstorable: 0,
        examples: Examples {
            missing: row.get(5),
            extra: row.get(6),
            different: row.get(7),
            different_columns: row.get(8),
            ..Examples::default()
        },
    })
}

/// `v`, as text cut at 60 characters (`...` marks a cut), or `NULL`.
fn shown(v: &str) -> String {
    format!("coalesce(CASE WHEN length({v}::text) > 60 THEN left({v}::text, 60) || '...' ELSE {v}::text END, 'NULL')")
}
