//! `pgbridge verify`: green's rows passed through the mapping, compared with blue's, keyed by
//! blue's key.
//!
//! The mapping is evaluated by blue with the very SQL the apply path uses, so what is compared
//! is exactly what streaming would have written: green's rows are COPYed (at one snapshot per
//! table, in key order) into a temporary table on blue a chunk at a time, and each chunk is
//! compared with blue's rows in the same key range by a FULL JOIN on the key. Memory and
//! blue's temporary space stay bounded by one chunk, whatever the table size. Tables without
//! a unique key on blue are compared as multisets in one piece.
//!
//! Consistency while green is written: a chunk read from green's snapshot may meet blue rows
//! that are newer or older. Chunks that differ are therefore compared again, from a fresh
//! green snapshot, after blue has applied everything green had committed (the `wait`
//! marker), up to three times, when the bridge is running. What still differs is reported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::privileges;
use crate::apply::{self, checkpoint};
use crate::config::Config;
use crate::connect::{connect_green_sql, green_err};
use crate::drift;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::Signature;
use crate::mapping::statements;
use crate::mapping::{green_catalog, GreenTable, KeyPlan, TablePlan};
use crate::sql;
use crate::transfer;

/// Rows per compared chunk.
const CHUNK_ROWS: u64 = 50_000;
/// Rows per chunk: `CHUNK_ROWS`, or PGBRIDGE_VERIFY_CHUNK_ROWS (tests use small chunks).
fn chunk_rows() -> u64 {
    std::env::var("PGBRIDGE_VERIFY_CHUNK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CHUNK_ROWS)
}
/// Rounds of re-comparing differing chunks after blue caught up.
const RECHECKS: usize = 3;
const STAGE: &str = "pgbridge_verify";

#[derive(Debug, Default, Serialize)]
struct Examples {
    missing: Vec<String>,
    extra: Vec<String>,
    different: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    green_rows: i64,
    blue_rows: i64,
    missing: i64,
    extra: i64,
    different: i64,
    examples: Examples,
}

impl Counts {
    fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0
    }

    fn add(&mut self, other: Counts, limit: usize) {
        self.green_rows += other.green_rows;
        self.blue_rows += other.blue_rows;
        self.missing += other.missing;
        self.extra += other.extra;
        self.different += other.different;
        let take = |to: &mut Vec<String>, from: Vec<String>| {
            let room = limit.saturating_sub(to.len());
            to.extend(from.into_iter().take(room));
        };
        take(&mut self.examples.missing, other.examples.missing);
        take(&mut self.examples.extra, other.examples.extra);
        take(&mut self.examples.different, other.examples.different);
    }
}

#[derive(Debug, Serialize)]
struct TableReport {
    green_table: String,
    blue_table: String,
    /// Rows, differences and examples, as top-level fields of the JSON.
    #[serde(flatten)]
    counts: Counts,
    /// Chunks compared again after blue caught up.
    rechecked_chunks: usize,
    identical: bool,
    /// What the counts cover, when not the whole blue table.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// Why blue does not follow green here, beyond the rows: the table is no longer streamed,
    /// its plan changed since it was accepted, or it cannot be compared at all.
    problems: Vec<String>,
    seconds: f64,
}

impl TableReport {
    /// A table that could not be compared row by row.
    fn uncompared(subject: &Subject) -> TableReport {
        TableReport {
            green_table: subject.green_table.clone(),
            blue_table: subject.blue_table.clone(),
            counts: Counts::default(),
            rechecked_chunks: 0,
            identical: false,
            scope: Some("not compared row by row".into()),
            problems: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// A table verify looks at: every table green streams, every table the accepted plan holds
/// and every mapping file's source, whether or not the publication still carries it.
struct Subject {
    green_table: String,
    blue_table: String,
    /// Schema and name, for `--table`.
    green_name: (String, String),
    blue_name: (String, String),
    /// What the mapping says, planned over green's table as it is (generated columns
    /// included, so a column that stopped being streamed is still compared); `None` when it
    /// cannot be planned.
    plan: Option<Arc<TablePlan>>,
    problems: Vec<String>,
}

async fn subjects(config: &Config, green: &Client, blue: &Client, settings: &str) -> Result<Vec<Subject>> {
    let mut mappings = Mappings::load(config)?;
    let streamed = if green_catalog::publication_exists(green, &config.publication).await? {
        match green_catalog::tables(green, config, true).await {
            Ok(t) => t,
            Err(e) if e.sqlstate().is_none() && !e.is_transient() => Vec::new(),
            Err(e) => return Err(e),
        }
    } else {
        Vec::new()
    };
    mappings.learn_partitions(&streamed);
    // The plan as `run` would hold it, for the drift against the accepted one.
    let mut current = drift::Current::default();
    let mut by_root: BTreeMap<String, GreenTable> = BTreeMap::new();
    for t in &streamed {
        match mappings.plan_with_blue(blue, t).await {
            Ok((plan, blue_table)) => {
                current
                    .signatures
                    .push(Signature::of(&plan, &blue_table).with_settings(settings));
                if let Some(root) = &plan.partition_of {
                    // Partitions are compared through the table they belong to, as a whole.
                    if let Some(r) = green_catalog::partitioned_table_of(green, t).await? {
                        by_root.insert(root.clone(), r);
                    }
                    continue;
                }
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => current.failures.push((t.qualified(), e.to_string())),
        }
        by_root.insert(t.qualified(), t.clone());
    }
    let accepted = drift::read_accepted(blue, config).await?.unwrap_or_default();
    let (findings, _) = drift::compare(config, &accepted, &current);
    let lenient = mappings.lenient();
    let mut names: Vec<(String, String)> = by_root
        .values()
        .map(|t| (t.namespace.clone(), t.name.clone()))
        .collect();
    let leaves: Vec<String> = streamed.iter().map(|t| t.qualified()).collect();
    let mut extra: Vec<(String, String)> = accepted
        .keys()
        .filter(|k| !leaves.contains(k))
        .filter_map(|k| k.split_once('.').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    extra.extend(lenient.files.iter().map(|f| f.source.clone()));
    for n in extra {
        let qualified = format!("{}.{}", n.0, n.1);
        if !names.contains(&n) && !by_root.contains_key(&qualified) && !config.is_excluded(&n.0, &n.1) {
            names.push(n);
        }
    }
    let mut out = Vec::new();
    for (schema, name) in names {
        let qualified = format!("{schema}.{name}");
        let mut problems: Vec<String> = findings
            .iter()
            .filter(|f| f.green_table == qualified)
            .flat_map(|f| f.changes.clone())
            .collect();
        let green_table = match by_root.get(&qualified) {
            Some(t) => Some(t.clone()),
            None => {
                if problems.is_empty() {
                    problems.push(format!(
                        "green table {qualified} is not streamed (publication {} does not carry it), so its changes do \
                         not reach blue",
                        config.publication
                    ));
                }
                green_catalog::table_directly(green, &schema, &name).await?
            }
        };
        let target = lenient.target_of(&schema, &name);
        let target_text = format!("{}.{}", target.0, target.1);
        let Some(green_table) = green_table else {
            problems.push(format!("green table {qualified} does not exist on green"));
            out.push(Subject {
                green_table: qualified,
                blue_table: target_text,
                green_name: (schema, name),
                blue_name: target,
                plan: None,
                problems,
            });
            continue;
        };
        let planned = lenient
            .plan_with_blue(blue, &with_unstreamed_generated(&green_table))
            .await;
        let (plan, blue_name) = match planned {
            Ok((p, b)) => (Some(p), (b.schema, b.name)),
            Err(e) if e.is_transient() => return Err(e),
            // A mapping that does not plan is a configuration error, not a difference; a blue
            // table that is missing is a difference.
            Err(e) if blue_table_exists(blue, &target).await? => return Err(e.into_definite()),
            Err(e) => {
                problems.push(e.to_string());
                (None, target)
            }
        };
        out.push(Subject {
            green_table: qualified,
            blue_table: format!("{}.{}", blue_name.0, blue_name.1),
            green_name: (schema, name),
            blue_name,
            plan,
            problems,
        });
    }
    Ok(out)
}

/// Whether blue table `schema.name` exists.
async fn blue_table_exists(blue: &Client, (schema, name): &(String, String)) -> Result<bool> {
    Ok(crate::mapping::catalog::load_table(blue, schema, name).await?.is_some())
}

/// Green's table with its generated columns as if streamed: blue columns fed by their names
/// are compared with them even though the stream does not carry them.
fn with_unstreamed_generated(t: &GreenTable) -> GreenTable {
    let mut t = t.clone();
    if let Some(facts) = &t.facts {
        for (column, why) in &facts.unpublished {
            if *why == green_catalog::Unpublished::Generated && !t.columns.iter().any(|c| c.name == column.name) {
                t.columns.push(column.clone());
            }
        }
    }
    t
}

#[derive(Debug, Serialize)]
struct Report {
    identical: bool,
    method: &'static str,
    tables: Vec<TableReport>,
}

const METHOD: &str = "each table is read from one green snapshot in key order and compared with blue chunk by chunk; \
                      chunks that differ are compared again from a fresh snapshot after blue has caught up, \
                      up to 3 times, while the bridge runs";

/// A key range of one chunk, as green's text forms of the key columns: after `lo` (exclusive)
/// up to `hi` (inclusive); `None` is unbounded.
#[derive(Clone, Debug)]
struct Range {
    lo: Option<Vec<String>>,
    hi: Option<Vec<String>>,
}

pub async fn run(config: &Config, table: Option<String>, json: bool, examples: usize) -> Result<i32> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = apply::connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    // The settings `run` and `setup --copy` evaluate the mapping in (crate::evaluation).
    let env = Environment::resolve(&blue, config)
        .await
        .map_err(Error::into_definite)?;
    transfer::prepare_blue(&blue, &env).await?;
    let mut subjects = subjects(config, &green, &blue, &env.describe())
        .await
        .map_err(Error::into_definite)?;
    if let Some(wanted) = &table {
        subjects = select_tables(subjects, wanted)?;
    }
    let plans: Vec<Arc<TablePlan>> = subjects.iter().filter_map(|s| s.plan.clone()).collect();
    privileges::refuse(
        privileges::read_problems(&green, &blue, &plans, "verify").await?,
        "nothing was compared",
    )?;
    let active = green
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading replication slots"))?
        .is_some_and(|r| r.get::<_, bool>(0));
    if !json {
        println!("verify: {METHOD}");
        if !active {
            println!(
                "note: the bridge is not streaming slot {}, so differences are not rechecked",
                config.slot
            );
        }
    }
    let mut reports = Vec::new();
    for subject in subjects {
        let mut report = match &subject.plan {
            Some(plan) => verify_table(config, &green, &blue, plan, examples, active).await?,
            None => TableReport::uncompared(&subject),
        };
        if !subject.problems.is_empty() {
            report.identical = false;
            report.problems = subject.problems;
        }
        if !json {
            print_table(&report);
        }
        reports.push(report);
    }
    let identical = reports.iter().all(|r| r.identical);
    if json {
        let report = Report {
            identical,
            method: METHOD,
            tables: reports,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Error::definite(e.to_string()))?
        );
    } else {
        let differ = reports.iter().filter(|r| !r.identical).count();
        if differ == 0 {
            println!("identical: {} table(s)", reports.len());
        } else {
            println!("DIFFERENT: {differ} of {} table(s) differ", reports.len());
        }
    }
    Ok(if identical { 0 } else { 1 })
}

/// The plans `--table wanted` names: a green or a blue table, written as mapping files write
/// `target` and `source` (`schema.table` or `table`, unquoted parts folded to lower case,
/// quoted ones as written: `"Sales Dept"."Order"`); a name without schema matches in any
/// schema. The unquoted text verify prints (`Sales Dept.Order`) is taken too, when it names
/// nothing the other way.
fn select_tables(subjects: Vec<Subject>, wanted: &str) -> Result<Vec<Subject>> {
    let parsed = crate::config::parse_table_name(wanted);
    let is_named = |(schema, table): &(String, String)| {
        parsed
            .as_ref()
            .is_some_and(|(s, t)| t == table && s.as_deref().map_or(true, |s| s == schema))
    };
    let shown = |name: &str| name == wanted || name.rsplit('.').next() == Some(wanted);
    let (named, rest): (Vec<_>, Vec<_>) = subjects
        .into_iter()
        .partition(|s| is_named(&s.green_name) || is_named(&s.blue_name));
    if !named.is_empty() {
        return Ok(named);
    }
    let shown: Vec<_> = rest
        .into_iter()
        .filter(|s| shown(&s.green_table) || shown(&s.blue_table))
        .collect();
    if !shown.is_empty() {
        return Ok(shown);
    }
    Err(Error::definite(match parsed {
        Some(_) => format!(
            "no mapped table is called {wanted}; name a green or blue table as schema.table, quoting names as \
             mapping files do (\"Sales Dept\".\"Order\"; see `pgbridge check` for the mapped tables)"
        ),
        None => format!(
            "--table {wanted:?} is not a table name; write schema.table or table, quoting names as mapping files \
             do: '\"Sales Dept\".\"Order\"'"
        ),
    }))
}

fn print_table(r: &TableReport) {
    let name = if r.green_table == r.blue_table {
        r.blue_table.clone()
    } else {
        format!("{} -> {}", r.green_table, r.blue_table)
    };
    let verdict = if r.identical {
        "identical".to_string()
    } else {
        format!(
            "missing {}, extra {}, different {}",
            r.counts.missing, r.counts.extra, r.counts.different
        )
    };
    println!(
        "{name:<44} green {:>10}  blue {:>10}  {verdict}  ({:.1}s{})",
        r.counts.green_rows,
        r.counts.blue_rows,
        r.seconds,
        if r.rechecked_chunks > 0 {
            format!(", {} chunk(s) rechecked", r.rechecked_chunks)
        } else {
            String::new()
        }
    );
    if let Some(scope) = &r.scope {
        println!("    {scope}");
    }
    for problem in &r.problems {
        println!("    DIFFERENT: {problem}");
    }
    for (label, keys) in [
        ("missing on blue", &r.counts.examples.missing),
        ("extra on blue", &r.counts.examples.extra),
        ("different", &r.counts.examples.different),
    ] {
        if !keys.is_empty() {
            println!("    {label}: {}", keys.join("; "));
        }
    }
}

async fn verify_table(
    config: &Config,
    green_catalog: &Client,
    blue: &Client,
    plan: &TablePlan,
    examples: usize,
    active: bool,
) -> Result<TableReport> {
    let started = Instant::now();
    let what = format!(
        "verifying green table {} against blue table {}",
        plan.green_name, plan.blue_name
    );
    let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
    blue.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.{stage}; {}",
        statements::staging_table(plan, STAGE),
        stage = sql::ident(STAGE)
    ))
    .await
    .map_err(on_blue)?;
    let table = Table::new(blue, plan).await.map_err(on_blue)?;

    let mut total = Counts::default();
    let mut differing: Vec<(Range, Counts)> = Vec::new();
    {
        let green = transfer::green_at_snapshot(config, None).await?;
        let chunks = table.pass(&green, blue, None, examples, &what).await?;
        for (range, counts) in chunks {
            if counts.differs() {
                differing.push((range, counts));
            } else {
                total.add(counts, examples);
            }
        }
    }
    let mut rechecked = 0;
    for _ in 0..RECHECKS {
        if differing.is_empty() || !active {
            break;
        }
        caught_up(green_catalog, blue, config).await?;
        let mut still = Vec::new();
        for (range, _) in differing {
            rechecked += 1;
            let green = transfer::green_at_snapshot(config, None).await?;
            for (r, counts) in table.pass(&green, blue, Some(&range), examples, &what).await? {
                if counts.differs() {
                    still.push((r, counts));
                } else {
                    total.add(counts, examples);
                }
            }
        }
        differing = still;
    }
    for (_, counts) in differing {
        total.add(counts, examples);
    }
    blue.batch_execute(&format!("DROP TABLE IF EXISTS pg_temp.{}", sql::ident(STAGE)))
        .await
        .map_err(on_blue)?;
    let identical = !total.differs();
    Ok(TableReport {
        green_table: plan.green_name.to_string(),
        blue_table: plan.blue_name.clone(),
        counts: total,
        rechecked_chunks: rechecked,
        identical,
        problems: Vec::new(),
        scope: scope(blue, plan).await.map_err(on_blue)?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a filtered table's counts cover, with how many rows blue's table holds in all, so
/// that rows outside the comparison (a delete that never arrived, say) do not go unseen.
async fn scope(blue: &Client, plan: &TablePlan) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    let filters: Vec<String> = plan
        .filter
        .iter()
        .map(|f| format!("mapping filter ({f})"))
        .chain(statements::published_rows(plan).map(|f| format!("publication row filter {f}")))
        .collect();
    if filters.is_empty() {
        return Ok(None);
    }
    let all: i64 = blue
        .query_one(&format!("SELECT count(*) FROM {}", plan.blue_sql), &[])
        .await?
        .get(0);
    Ok(Some(format!(
        "filtered by {}: blue rows count only when green has a row with their key; blue's table holds {all} row(s) \
         in all, the others are not compared",
        filters.join(" and ")
    )))
}

/// Waits until blue's checkpoint passes a marker written on green now (as `wait` does).
async fn caught_up(green: &Client, blue: &Client, config: &Config) -> Result<()> {
    let marker = super::wait::write_marker(green, "pgbridge.verify").await?;
    let started = Instant::now();
    loop {
        let cp = checkpoint::read(blue, &config.schema, &config.slot)
            .await
            .map_err(Error::into_definite)?;
        if cp.is_some_and(|c| c.lsn > marker) || started.elapsed() > Duration::from_secs(60) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One table's comparison SQL.
struct Table<'a> {
    plan: &'a TablePlan,
    keyed: bool,
    /// Per key column: whether its type sorts by collation (compared in "C" order then).
    collated: Vec<bool>,
    /// Targets compared (insert-only ones keep the value of the row's first insert).
    compared: Vec<usize>,
}

impl<'a> Table<'a> {
    async fn new(blue: &Client, plan: &'a TablePlan) -> std::result::Result<Table<'a>, tokio_postgres::Error> {
        let mut collated = Vec::new();
        for k in plan.key.columns() {
            let ty = &plan.green.columns[k.green].type_sql;
            let row = blue
                .query_one(
                    "SELECT coalesce((SELECT typcollation <> 0 FROM pg_type WHERE oid = to_regtype($1)), false)",
                    &[&ty],
                )
                .await?;
            collated.push(row.get(0));
        }
        let compared = (0..plan.targets.len())
            .filter(|&t| !plan.targets[t].insert_only)
            .collect();
        Ok(Table {
            plan,
            keyed: matches!(plan.key, KeyPlan::Unique(_)),
            collated,
            compared,
        })
    }

    fn c(&self, i: usize) -> &'static str {
        if self.collated[i] {
            " COLLATE \"C\""
        } else {
            ""
        }
    }

    /// Green's key columns in order, for ORDER BY on green or on the stage.
    fn green_order(&self, prefix: &str, desc: bool) -> String {
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

    fn range_condition(&self, blue_side: bool, range: &Range) -> String {
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
    /// each chunk; returns every chunk's range and counts.
    async fn pass(
        &self,
        green: &Client,
        blue: &Client,
        only: Option<&Range>,
        examples: usize,
        what: &str,
    ) -> Result<Vec<(Range, Counts)>> {
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let on_green = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on green"), &e).into_definite();
        // Only the rows the publication carries, as the stream does.
        let mut conditions: Vec<String> = statements::published_rows(self.plan).into_iter().collect();
        if self.keyed {
            conditions.extend(only.map(|r| self.range_condition(false, r)));
        }
        let mut tail = statements::where_clause(&conditions);
        if self.keyed {
            tail.push_str(&format!(" ORDER BY {}", self.green_order("", false)));
        }
        let chunk_rows = if self.keyed { chunk_rows() } else { u64::MAX };
        let stage = sql::ident(STAGE);
        let copy_in = format!("COPY {stage} FROM STDIN");
        let stream = green
            .copy_out(&statements::copy_out(self.plan, &tail))
            .await
            .map_err(on_green)?;
        let mut results = Vec::new();
        let mut lo = only.and_then(|r| r.lo.clone());
        let mut in_chunk = 0u64;
        blue.batch_execute(&format!("TRUNCATE {stage}"))
            .await
            .map_err(on_blue)?;
        let mut sink = Box::pin(blue.copy_in::<_, bytes::Bytes>(&copy_in).await.map_err(on_blue)?);
        let mut reader = transfer::Gathered::new(stream);
        while let Some(mut data) = reader.next().await.map_err(on_green)? {
            while !data.is_empty() {
                let need = chunk_rows - in_chunk;
                let mut seen = 0u64;
                let mut cut = None;
                for (i, b) in data.iter().enumerate() {
                    if *b == b'\n' {
                        seen += 1;
                        if seen == need {
                            cut = Some(i + 1);
                            break;
                        }
                    }
                }
                match cut {
                    Some(at) => {
                        let head = data.split_to(at);
                        sink.send(head).await.map_err(on_blue)?;
                        sink.as_mut().finish().await.map_err(on_blue)?;
                        let hi = self.stage_max(blue).await.map_err(on_blue)?;
                        let range = Range { lo: lo.clone(), hi };
                        let counts = self.compare(blue, &range, examples).await.map_err(on_blue)?;
                        results.push((range.clone(), counts));
                        lo = range.hi;
                        in_chunk = 0;
                        blue.batch_execute(&format!("TRUNCATE {stage}"))
                            .await
                            .map_err(on_blue)?;
                        sink = Box::pin(blue.copy_in(&copy_in).await.map_err(on_blue)?);
                    }
                    None => {
                        in_chunk += seen;
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
        let counts = self.compare(blue, &range, examples).await.map_err(on_blue)?;
        results.push((range, counts));
        Ok(results)
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
                    sql::ident(STAGE),
                    // Qualified: a bare name would sort by the text output column.
                    self.green_order("s.", true)
                ),
                &[],
            )
            .await?;
        Ok(row.map(|r| (0..cols.len()).map(|i| r.get::<_, String>(i)).collect()))
    }

    fn target_col(&self, t: usize) -> String {
        sql::ident(&format!("m{t}"))
    }

    /// Compares the stage with blue's rows in `range`.
    async fn compare(
        &self,
        blue: &Client,
        range: &Range,
        examples: usize,
    ) -> std::result::Result<Counts, tokio_postgres::Error> {
        let plan = self.plan;
        let stage = sql::ident(STAGE);
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
        let m = format!("SELECT {} FROM {stage} AS g{filter}", m_cols.join(", "));
        let sql_text = if self.keyed {
            let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
            let mut b_where = self.range_condition(true, range);
            if plan.filter.is_some() {
                let bk: Vec<String> = key
                    .iter()
                    .map(|&t| format!("b.{}", sql::ident(&plan.targets[t].blue_name)))
                    .collect();
                let gk: Vec<String> = key.iter().map(|&t| statements::mapped_value(plan, t)).collect();
                b_where.push_str(&format!(
                    " AND ({}) IN (SELECT {} FROM {stage} AS g)",
                    bk.join(", "),
                    gk.join(", ")
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
                .map(|&t| {
                    let c = self.target_col(t);
                    // By text: equality is coarser than what blue holds for some types
                    // (interval '1 mon' = '30 days', numeric 1.5 = 1.5000, case-insensitive
                    // collations), and an exact bridge prints the same text on both sides.
                    format!("m.{c}::text IS DISTINCT FROM b.{c}::text")
                })
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
            format!(
                "WITH m AS MATERIALIZED ({m}), b AS MATERIALIZED ({b}), \
                 d AS MATERIALIZED (SELECT CASE WHEN b.{k0} IS NULL THEN 'missing' WHEN m.{k0} IS NULL THEN 'extra' ELSE 'different' END AS kind, \
                        concat_ws(', ', {key}) AS key \
                   FROM m FULL JOIN b ON {on} \
                   WHERE m.{k0} IS NULL OR b.{k0} IS NULL OR {diff}) \
                 SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM b), \
                   (SELECT count(*) FROM d WHERE kind = 'missing'), (SELECT count(*) FROM d WHERE kind = 'extra'), \
                   (SELECT count(*) FROM d WHERE kind = 'different'), \
                   ARRAY(SELECT key FROM d WHERE kind = 'missing' ORDER BY key LIMIT $1), \
                   ARRAY(SELECT key FROM d WHERE kind = 'extra' ORDER BY key LIMIT $1), \
                   ARRAY(SELECT key FROM d WHERE kind = 'different' ORDER BY key LIMIT $1)",
                key = key_text.join(", "),
                on = on.join(" AND "),
                diff = diff.join(" OR "),
            )
        } else {
            let b = format!("SELECT {} FROM {} AS b", b_cols.join(", "), plan.blue_sql);
            format!(
                "WITH m AS MATERIALIZED ({m}), b AS MATERIALIZED ({b}), \
                 missing AS MATERIALIZED (SELECT * FROM m EXCEPT ALL SELECT * FROM b), \
                 extra AS MATERIALIZED (SELECT * FROM b EXCEPT ALL SELECT * FROM m) \
                 SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM b), \
                   (SELECT count(*) FROM missing), (SELECT count(*) FROM extra), 0::int8, \
                   ARRAY(SELECT x::text FROM missing x LIMIT $1), ARRAY(SELECT x::text FROM extra x LIMIT $1), \
                   ARRAY[]::text[]"
            )
        };
        let limit = examples as i64;
        let params: [&(dyn ToSql + Sync); 1] = [&limit];
        let row = blue.query_one(&sql_text, &params).await?;
        Ok(Counts {
            green_rows: row.get(0),
            blue_rows: row.get(1),
            missing: row.get(2),
            extra: row.get(3),
            different: row.get(4),
            examples: Examples {
                missing: row.get(5),
                extra: row.get(6),
                different: row.get(7),
            },
        })
    }
}
