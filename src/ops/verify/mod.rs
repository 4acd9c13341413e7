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
pub const METHOD: &str =
    "each table is read from one green snapshot in key order and compared with blue chunk by chunk; \
                      chunks that differ are compared again from a fresh snapshot after blue has caught up, \
                      up to 3 times, while the bridge runs";

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
}

/// Connects, sets blue's session up as `run` does, and finds the tables to compare (only
/// `table` when given); refuses when the role may not read them.
pub async fn prepare<'a>(
    config: &'a Config,
    table: Option<&str>,
    examples: usize,
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
    let verification = Verification {
        config,
        green,
        snapshots: transfer::green_for_snapshots(config).await?,
        blue,
        examples,
        active,
        stages: stages::Stages::default(),
    };
    Ok((verification, subjects))
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
    let (config, green_catalog, blue, examples, active) = (v.config, &v.green, &*v.blue, v.examples, v.active);
    let started = Instant::now();
    let what = format!(
        "verifying green table {} against blue table {}",
        plan.green_name, plan.blue_name
    );
    let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
    // Blue's stage and key collations (kept from earlier tables) while green opens its snapshot.
    let prepared = v.stages.prepare(blue, plan);
    let (snapshot, prepared) = futures_util::future::join(transfer::begin_snapshot(&v.snapshots, None), prepared).await;
    let (stage, collated, loose) = prepared.map_err(on_blue)?;
    snapshot?;
    // Unknown (as if full) until this table's passes are done.
    let mut staged = v.stages.staged(&stage);
    v.stages.set_staged(&stage, u64::MAX);
    let chunk_rows = config.switches.verify_chunk_rows;
    let table = Table::new(plan, chunk_rows, (stage.clone(), loose), collated);

    let mut total = Counts::default();
    let mut differing: Vec<(Range, Counts)> = Vec::new();
    {
        let chunks = table
            .pass(&v.snapshots, blue, None, examples, &what, &mut staged)
            .await?;
        transfer::end_snapshot(&v.snapshots).await?;
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
            transfer::begin_snapshot(&v.snapshots, None).await?;
            let chunks = table
                .pass(&v.snapshots, blue, Some(&range), examples, &what, &mut staged)
                .await?;
            transfer::end_snapshot(&v.snapshots).await?;
            for (r, counts) in chunks {
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
    v.stages.set_staged(&stage, staged);
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
