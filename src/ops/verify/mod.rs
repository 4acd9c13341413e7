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
//!
//! A green row whose mapped values blue cannot hold fails its chunk's comparison; that chunk
//! is then evaluated row by row, the row reported as such and the rest compared
//! ([`unstorable`]).

mod checksum;
mod method;
mod ranges;
mod stages;
mod subjects;
mod table;
mod unstorable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use super::privileges;
use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::statements;
use crate::mapping::TablePlan;
use crate::ops::copy::transfer;
use crate::state::checkpoint;
use ranges::Found;
pub use subjects::Subject;
use table::{Range, Table};

/// Rounds of re-comparing differing chunks after blue caught up.
const RECHECKS: usize = 3;
const STAGE: &str = "pgbridge_verify";

/// Example keys per kind of difference.
#[derive(Debug, Default, Serialize)]
pub struct Examples {
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<String>,
    /// Per key of `different`, in its order: the columns that differ, each with its value
    /// mapped from green and blue's (`total: 101.50 / 102.50`), values cut at 60 characters.
    pub different_columns: Vec<String>,
    /// Keys of green rows whose mapped values blue cannot hold.
    pub unstorable: Vec<String>,
    /// Per key of `unstorable`, in its order: PostgreSQL's message on blue.
    pub unstorable_reasons: Vec<String>,
}

/// Rows and differences of a table or a chunk.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub green_rows: i64,
    pub blue_rows: i64,
    pub missing: i64,
    pub extra: i64,
    pub different: i64,
    /// Green rows whose mapped values blue cannot hold (an integer out of range, a label
    /// blue's enum lacks: rows the bridge dead-letters); counted in `green_rows`, not in the
    /// other kinds.
    pub unstorable: i64,
    pub examples: Examples,
}

impl Counts {
    fn differs(&self) -> bool {
        self.missing + self.extra + self.different + self.unstorable > 0
    }

    fn add(&mut self, other: Counts, limit: usize) {
        self.green_rows += other.green_rows;
        self.blue_rows += other.blue_rows;
        self.missing += other.missing;
        self.extra += other.extra;
        self.different += other.different;
        self.unstorable += other.unstorable;
        let take = |to: &mut Vec<String>, from: Vec<String>| {
            let room = limit.saturating_sub(to.len());
            to.extend(from.into_iter().take(room));
        };
        take(&mut self.examples.missing, other.examples.missing);
        take(&mut self.examples.extra, other.examples.extra);
        take(&mut self.examples.different, other.examples.different);
        take(&mut self.examples.different_columns, other.examples.different_columns);
        take(&mut self.examples.unstorable, other.examples.unstorable);
        take(&mut self.examples.unstorable_reasons, other.examples.unstorable_reasons);
    }
}

/// The outcome for one table.
#[derive(Debug, Serialize)]
pub struct TableReport {
    pub green_table: String,
    pub blue_table: String,
    /// Rows, differences and examples, as top-level fields of the JSON.
    #[serde(flatten)]
    pub counts: Counts,
    /// Chunks compared again after blue caught up.
    pub rechecked_chunks: usize,
    pub identical: bool,
    /// `checksums`: key ranges compared by checksum on each side, the differing ones row by
    /// row; `rows`: every row compared row by row.
    pub method: &'static str,
    /// Why the table was compared row by row throughout (`method` `rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_because: Option<String>,
    /// Key ranges whose checksums were compared (the parts of differing ones included).
    pub ranges_compared: u64,
    /// Green rows copied to blue to be compared row by row (rechecks included).
    pub rows_moved: u64,
    /// What the counts cover, when not the whole blue table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Why blue does not follow green here, beyond the rows: the table is no longer streamed,
    /// its plan changed since it was accepted, or it cannot be compared at all.
    pub problems: Vec<String>,
    pub seconds: f64,
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
            method: "none",
            rows_because: None,
            ranges_compared: 0,
            rows_moved: 0,
            scope: Some("not compared row by row".into()),
            problems: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// What `verify --json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub identical: bool,
    pub method: &'static str,
    pub tables: Vec<TableReport>,
}

/// How verify compares, as it prints it.
pub const METHOD: &str = "each table's key ranges are checksummed on both sides (green computing what blue stores), \
                          and only ranges that differ are cut smaller and compared row by row (the whole table \
                          row by row where checksums cannot be used, or with --full), green read in key order at \
                          one snapshot per pass; what differs is compared again from a fresh snapshot after blue \
                          has caught up, up to 3 times, while the bridge runs";

/// Both connections and how to compare, for every table [`prepare`] found.
pub struct Verification<'a> {
    config: &'a Config,
    green: Client,
    /// Green tables are read here, each pass in a snapshot transaction of its own.
    snapshots: Client,
    blue: Arc<Client>,
    examples: usize,
    /// The bridge streams the slot, so differing chunks are compared again once blue caught up.
    pub active: bool,
    stages: stages::Stages,
    /// Compare every table row by row (`--full`).
    full: bool,
    /// The green session computing checksums (under the evaluation environment), or why
    /// there is none.
    checksums: std::result::Result<Client, String>,
    /// Whether green and blue store text in the same encoding (text keys order alike).
    same_encoding: bool,
    /// Whether the databases' collations differ ([`crate::mapping::on_green::text_rules`]).
    text_rules: Option<String>,
}

/// Connects, sets blue's session up as `run` does, and finds the tables to compare (only
/// `table` when given); refuses when the role may not read them.
pub async fn prepare<'a>(
    config: &'a Config,
    table: Option<&str>,
    examples: usize,
    full: bool,
) -> Result<(Verification<'a>, Vec<Subject>)> {
    let (green, blue) = crate::connect::both(config).await?;
    // The settings `run` and `setup --copy` evaluate the mapping in (crate::evaluation).
    let env = Environment::resolve(&blue, config)
        .await
        .map_err(Error::into_definite)?;
    transfer::prepare_blue(&blue, &env).await?;
    let mut subjects = subjects::subjects(config, &green, &blue, &env.describe())
        .await
        .map_err(Error::into_definite)?;
    if let Some(wanted) = table {
        subjects = subjects::select_tables(subjects, wanted)?;
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
    let same_encoding = encoding(&green).await? == encoding(&blue).await?;
    let text_rules = crate::mapping::on_green::text_rules(&green, &blue).await?;
    let checksums = if full {
        Err("--full".to_string())
    } else {
        checksum_session(config, &env).await?
    };
    let verification = Verification {
        config,
        green,
        snapshots: transfer::green_for_snapshots(config).await?,
        blue,
        examples,
        active,
        stages: stages::Stages::default(),
        full,
        checksums,
        same_encoding,
        text_rules,
    };
    Ok((verification, subjects))
}

/// A green session for checksums, in the settings blue evaluates mappings in (rule 10), or
/// why green does not take them.
async fn checksum_session(config: &Config, env: &Environment) -> Result<std::result::Result<Client, String>> {
    let green = transfer::green_for_snapshots(config).await?;
    match env.apply(&green).await {
        Ok(()) => Ok(Ok(green)),
        Err(e) if e.sqlstate().is_some() => Ok(Err(format!(
            "green does not take blue's evaluation settings ({})",
            env.describe()
        ))),
        Err(e) => Err(e.into_definite()),
    }
}

async fn encoding(client: &Client) -> Result<String> {
    let row = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await
        .map_err(|e| Error::postgres("reading the server encoding", &e).into_definite())?;
    Ok(row.get(0))
}

impl Verification<'_> {
    /// Compares one table (when it can be compared row by row) and adds what is known about
    /// it beyond its rows.
    pub async fn table(&self, subject: Subject) -> Result<TableReport> {
        let mut report = match &subject.plan {
            Some(plan) => verify_table(self, plan).await?,
            None => TableReport::uncompared(&subject),
        };
        if !subject.problems.is_empty() {
            report.identical = false;
            report.problems = subject.problems;
        }
        Ok(report)
    }
}

async fn verify_table(v: &Verification<'_>, plan: &TablePlan) -> Result<TableReport> {
    let blue = &*v.blue;
    let started = Instant::now();
    let what = format!(
        "verifying green table {} against blue table {}",
        plan.green_name, plan.blue_name
    );
    let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
    // Blue's stage and key collations (kept from earlier tables).
    let (stage, collated, loose) = v.stages.prepare(blue, plan).await.map_err(on_blue)?;
    // Unknown (as if full) until this table's passes are done.
    let mut staged = v.stages.staged(&stage);
    v.stages.set_staged(&stage, u64::MAX);
    let table = Table::new(
        plan,
        v.config.switches.verify_chunk_rows,
        (stage.clone(), loose),
        collated,
    );
    let method = method::choose(v, plan, &table).await?;
    let (first, found) = match &method {
        Ok(select) => {
            let found = method::checksums(v, &table, select, &what).await?;
            (
                row_by_row(v, &table, Some(&found.differing), &what, &mut staged).await?,
                found,
            )
        }
        Err(_) => (row_by_row(v, &table, None, &what, &mut staged).await?, Found::default()),
    };
    let mut total = Counts {
        green_rows: found.matched_rows,
        blue_rows: found.matched_rows,
        ..Counts::default()
    };
    let rechecked = settle(v, &table, first, &mut total, &what, &mut staged).await?;
    v.stages.set_staged(&stage, staged);
    let identical = !total.differs();
    Ok(TableReport {
        green_table: plan.green_name.to_string(),
        blue_table: plan.blue_name.clone(),
        counts: total,
        rechecked_chunks: rechecked,
        identical,
        method: if method.is_ok() { "checksums" } else { "rows" },
        rows_because: method.err(),
        ranges_compared: found.ranges_compared,
        rows_moved: table.rows_moved(),
        problems: Vec::new(),
        scope: scope(blue, plan).await.map_err(on_blue)?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Compares `ranges` of the table (all of it when `None`) row by row, from one green snapshot.
async fn row_by_row(
    v: &Verification<'_>,
    table: &Table<'_>,
    ranges: Option<&[Range]>,
    what: &str,
    staged: &mut u64,
) -> Result<Vec<(Range, Counts)>> {
    if ranges.is_some_and(|r| r.is_empty()) {
        return Ok(Vec::new());
    }
    transfer::begin_snapshot(&v.snapshots, None).await?;
    let mut out = Vec::new();
    match ranges {
        None => {
            out = table
                .pass(&v.snapshots, &v.blue, None, v.examples, what, staged)
                .await?
        }
        Some(ranges) => {
            for range in ranges {
                out.extend(
                    table
                        .pass(&v.snapshots, &v.blue, Some(range), v.examples, what, staged)
                        .await?,
                );
            }
        }
    }
    transfer::end_snapshot(&v.snapshots).await?;
    Ok(out)
}

/// Adds the ranges compared row by row to `total`: those that differ compared again, while the
/// bridge runs, after blue caught up (up to [`RECHECKS`] times). Returns the ranges rechecked.
async fn settle(
    v: &Verification<'_>,
    table: &Table<'_>,
    first: Vec<(Range, Counts)>,
    total: &mut Counts,
    what: &str,
    staged: &mut u64,
) -> Result<usize> {
    let mut differing: Vec<(Range, Counts)> = Vec::new();
    for (range, counts) in first {
        if counts.differs() {
            differing.push((range, counts));
        } else {
            total.add(counts, v.examples);
        }
    }
    let mut rechecked = 0;
    for _ in 0..RECHECKS {
        if differing.is_empty() || !v.active {
            break;
        }
        caught_up(&v.green, &v.blue, v.config).await?;
        let mut still = Vec::new();
        for (range, _) in differing {
            rechecked += 1;
            for (r, counts) in row_by_row(v, table, Some(std::slice::from_ref(&range)), what, staged).await? {
                if counts.differs() {
                    still.push((r, counts));
                } else {
                    total.add(counts, v.examples);
                }
            }
        }
        differing = still;
    }
    for (_, counts) in differing {
        total.add(counts, v.examples);
    }
    Ok(rechecked)
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
    let marker = crate::ops::wait::write_marker(green, "pgbridge.verify").await?;
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
