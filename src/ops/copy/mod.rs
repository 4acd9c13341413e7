//! `pgbridge setup --copy`: the initial copy of green's rows into blue, through the mapping.
//!
//! 1. Blue's checkpoint row is set to 0/0, which `run` refuses ("the copy did not finish"),
//!    so a half-copied blue is never streamed into.
//! 2. The slot is (re)created with EXPORT_SNAPSHOT; its replication connection stays open and
//!    idle, which keeps the snapshot importable.
//! 3. Tables are copied in parallel (`--jobs`), each on its own green connection that imports
//!    the snapshot and its own blue transaction: green's rows are COPYed into a temporary
//!    table on blue and written through the mapping with the same SQL the apply path uses
//!    (upsert, and removal of blue rows green does not have, so a partly filled blue
//!    converges), in the same session settings as the apply path ([`crate::evaluation`]), so
//!    a copied row equals the same row streamed. A table whose mapping changes nothing and
//!    whose blue table is empty is COPYed straight into place.
//! 4. The checkpoint is set to the slot's consistent point: streaming starts exactly after the
//!    snapshot, so rows written on green during the copy arrive once.
//!
//! On failure or Ctrl-C the slot is dropped (it would hold back green's WAL) and the
//! checkpoint stays at 0/0; running `setup --copy` again starts over.

pub mod progress;
pub mod transfer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::blue_err;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::statements;
use crate::mapping::{KeyPlan, TablePlan};
use crate::ops::slot;
use crate::sql;
use crate::state::checkpoint;
use progress::{Display, Task};

/// Name of the temporary table green's rows are loaded into on blue.
const STAGE: &str = "pgbridge_copy";
/// Queries about many tables in flight at once on one connection.
const PIPELINED: usize = 64;

/// What to copy and how.
pub struct Job {
    pub plans: Vec<Arc<TablePlan>>,
    /// The slot exists on green: it is dropped and created again, for a new snapshot.
    pub slot_exists: bool,
    /// Parts copied at once.
    pub jobs: usize,
}

/// The initial copy (`setup --copy`), in the steps the module docs list; `say` gets a line per
/// step.
pub async fn run(
    config: &Config,
    green: &Client,
    blue: &Client,
    env: &Environment,
    job: Job,
    say: &mut dyn FnMut(String),
) -> Result<i32> {
    let Job {
        plans,
        slot_exists,
        jobs,
    } = job;
    let started = Instant::now();
    if slot_exists {
        slot::drop_slot(green, &config.slot).await.map_err(|e| {
            e.hint(format!(
                "slot {} is in use: stop `pgbridge run` (or whatever streams it) before copying again",
                config.slot
            ))
        })?;
        say(format!(
            "green  slot        {:<24} dropped, to copy from a new snapshot",
            config.slot
        ));
    }
    checkpoint::mark_copy_started(blue, &config.schema, &config.slot)
        .await
        .map_err(blue_err("marking the copy as started in the checkpoint"))?;

    let (repl, consistent, snapshot) = slot::create_slot_on(config, true).await?;
    let snapshot = snapshot.ok_or_else(|| Error::definite("CREATE_REPLICATION_SLOT returned no snapshot name"))?;
    say(format!(
        "green  slot        {:<24} created at {consistent}, snapshot {snapshot}",
        config.slot
    ));

    let copied = tokio::select! {
        r = copy_all(config, green, blue, env, &snapshot, plans, jobs) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::definite("interrupted")),
    };
    // The snapshot is no longer needed once every table has imported it.
    drop(repl);
    let (tables, rows, bytes) = match copied {
        Ok(totals) => totals,
        Err(e) => {
            let dropped = slot::drop_slot(green, &config.slot).await.is_ok();
            return Err(e.hint(format!(
                "the copy did not finish and blue's checkpoint is at 0/0, so `pgbridge run` will not start; {}\
                 fix the cause and run `pgbridge setup --copy` again, which starts over",
                if dropped {
                    "the new slot was dropped; "
                } else {
                    "drop the slot on green if you give up (SELECT pg_drop_replication_slot(...)); "
                }
            )));
        }
    };
    checkpoint::set(blue, &config.schema, &config.slot, consistent)
        .await
        .map_err(blue_err("writing the checkpoint"))?;
    say(format!(
        "copied {tables} table(s), {rows} rows, {} in {:.1}s",
        progress::human_bytes(bytes),
        started.elapsed().as_secs_f64()
    ));
    say(format!(
        "blue   checkpoint  {:<24} at {consistent}, the slot's consistent point",
        format!("{}.checkpoint", config.schema)
    ));
    Ok(0)
}

/// Copies every table, `jobs` at a time, biggest first, each part's blue session evaluating
/// the mapping in `env`. Returns (tables, rows, bytes).
async fn copy_all(
    config: &Config,
    green: &Client,
    blue: &Client,
    env: &Environment,
    snapshot: &str,
    plans: Vec<Arc<TablePlan>>,
    jobs: usize,
) -> Result<(usize, u64, u64)> {
    let (tasks, work) = schedule(green, blue, plans).await?;
    let n = tasks.len();
    let units = work.len();
    let queue = Mutex::new(work);
    let display = Display::start(tasks.clone());
    let workers = (0..jobs.clamp(1, units.max(1))).map(|_| async {
        // Each worker's connections serve every part it copies: two new sessions per table
        // would cost more than copying thousands of small tables.
        let mut sessions = None;
        loop {
            let next = queue.lock().expect("copy queue").pop_front();
            let Some(part) = next else { return Ok(()) };
            part.task.start_once();
            if sessions.is_none() {
                sessions = Some(Sessions::open(config, env, snapshot).await?);
            }
            let sessions = sessions.as_ref().expect("opened above");
            match copy_part(sessions, &part).await {
                Ok(note) => {
                    if part.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        part.task.done(note);
                    }
                }
                Err(e) => {
                    part.task.failed();
                    return Err(e);
                }
            }
        }
    });
    let result = futures_util::future::try_join_all(workers).await;
    display.finish().await;
    result?;
    Ok((
        n,
        tasks.iter().map(|t| t.counter.rows()).sum(),
        tasks.iter().map(|t| t.counter.bytes()).sum(),
    ))
}

/// Every table's progress task, biggest first, and the parts to copy, in that order. Queries
/// per table are sent back to back (pipelined), not one round trip at a time.
async fn schedule(
    green: &Client,
    blue: &Client,
    plans: Vec<Arc<TablePlan>>,
) -> Result<(Vec<Arc<Task>>, VecDeque<Part>)> {
    let estimates: Vec<(u64, u64)> = stream::iter(
        plans
            .iter()
            .map(|p| transfer::estimate(green, &p.green.namespace, &p.green.name)),
    )
    .buffered(PIPELINED)
    .collect()
    .await;
    let mut tables = Vec::new();
    for (plan, (rows, bytes)) in plans.into_iter().zip(estimates) {
        let name = if *plan.green_name == *plan.blue_name {
            plan.blue_name.clone()
        } else {
            format!("{} -> {}", plan.green_name, plan.blue_name)
        };
        tables.push((plan, Task::new(name, rows, bytes)));
    }
    tables.sort_by_key(|(_, t)| std::cmp::Reverse(t.bytes_estimate));
    let tasks: Vec<Arc<Task>> = tables.iter().map(|(_, t)| t.clone()).collect();
    // An empty blue table is filled in parts (block ranges of green's table, each in its own
    // blue transaction), so the work spreads over the workers; a blue table that holds rows
    // is converged in one transaction, which needs all of green's keys at once.
    let mut work = VecDeque::new();
    let empty: Vec<bool> = stream::iter(tables.iter().map(|(plan, _)| async move {
        Ok::<bool, Error>(
            blue.query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {})", plan.blue_sql), &[])
                .await
                .map_err(blue_err(&format!("reading {}", plan.blue_name)))?
                .get(0),
        )
    }))
    .buffered(PIPELINED)
    .try_collect()
    .await?;
    for ((plan, task), empty) in tables.into_iter().zip(empty) {
        let ranges = part_ranges(task.bytes_estimate, empty);
        let remaining = Arc::new(AtomicU64::new(ranges.len() as u64));
        for range in ranges {
            work.push_back(Part {
                plan: plan.clone(),
                task: task.clone(),
                range,
                empty,
                remaining: remaining.clone(),
            });
        }
    }
    Ok((tasks, work))
}

/// Whether green's rows can be COPYed straight into the blue table: every blue column is a
/// green column of the same type, no filter.
fn direct(plan: &TablePlan) -> bool {
    plan.filter.is_none() && plan.targets.iter().all(|t| t.copies_same_type(&plan.green))
}

/// Rows of one table or of a block range of it, copied in one blue transaction.
struct Part {
    plan: Arc<TablePlan>,
    task: Arc<Task>,
    /// Green blocks [from, to), `to` open for the last part; `None` is the whole table.
    range: Option<(u64, Option<u64>)>,
    /// Blue's table was empty when the copy began.
    empty: bool,
    /// Parts of this table not yet copied.
    remaining: Arc<AtomicU64>,
}

/// Green's block size (PostgreSQL's default); only used to cut tables into parts.
const BLOCK_SIZE: u64 = 8192;
/// About this much of green's table per part.
const PART_BYTES: u64 = 16 << 20;
const MAX_PARTS: u64 = 64;

/// The block ranges a table of about `bytes` is copied in: [from, to) with `to` open for the
/// last part, or one part for the whole table (`None`) when blue's table is not `empty` or the
/// table is small.
fn part_ranges(bytes: u64, empty: bool) -> Vec<Option<(u64, Option<u64>)>> {
    let blocks = bytes / BLOCK_SIZE;
    let parts = if empty {
        (bytes / PART_BYTES).clamp(1, MAX_PARTS)
    } else {
        1
    };
    let step = blocks.div_ceil(parts).max(1);
    (0..parts)
        .map(|i| (parts > 1).then(|| (i * step, (i + 1 < parts).then(|| (i + 1) * step))))
        .collect()
}

/// A copy worker's connections: green inside one transaction at the exported snapshot, blue
/// set up as the apply path's sessions are.
struct Sessions {
    green: Client,
    blue: Arc<Client>,
}

impl Sessions {
    async fn open(config: &Config, env: &Environment, snapshot: &str) -> Result<Sessions> {
        let green = transfer::green_at_snapshot(config, Some(snapshot)).await?;
        let blue = crate::connect::connect_blue(&config.blue)
            .await
            .map_err(Error::into_definite)?;
        transfer::prepare_blue(&blue, env).await?;
        // Replicated rows, not application writes: no triggers or foreign-key checks, as when
        // streaming (where permitted).
        let _ = blue.batch_execute("SET session_replication_role = replica").await;
        Ok(Sessions { green, blue })
    }
}

/// Copies one part in one blue transaction; returns a note for the progress line.
async fn copy_part(sessions: &Sessions, part: &Part) -> Result<String> {
    let (green, blue) = (&sessions.green, &*sessions.blue);
    let plan = &*part.plan;
    // A TID range scan: cheap, and needs no key.
    let mut conditions = match part.range {
        None => Vec::new(),
        Some((from, None)) => vec![format!("ctid >= '({from},0)'::tid")],
        Some((from, Some(to))) => vec![format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")],
    };
    // Rows the publication's row filter leaves out never stream: copying them would leave
    // rows on blue that nothing keeps current.
    conditions.extend(statements::published_rows(plan));
    let tail = statements::where_clause(&conditions);
    let what = format!(
        "copying green table {} to blue table {}",
        plan.green_name, plan.blue_name
    );
    let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
    blue.batch_execute("BEGIN").await.map_err(on_blue)?;
    let copy = PartCopy {
        green,
        blue,
        part,
        tail: &tail,
        what: &what,
    };
    let note = if part.empty && direct(plan) {
        copy.direct().await?;
        String::new()
    } else {
        copy.through_stage().await?
    };
    blue.batch_execute("COMMIT").await.map_err(on_blue)?;
    Ok(note)
}

/// One part's copy inside its blue transaction.
struct PartCopy<'a> {
    green: &'a Client,
    blue: &'a Client,
    part: &'a Part,
    /// The WHERE clause that selects the part's green rows.
    tail: &'a str,
    /// What is being copied, for error messages.
    what: &'a str,
}

impl PartCopy<'_> {
    fn on_blue(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        move |e| Error::postgres(format!("{}: on blue", self.what), &e).into_definite()
    }

    /// Green's columns straight into blue's, COPY to COPY: an empty blue table fed by green
    /// columns only.
    async fn direct(&self) -> Result<()> {
        let (plan, task) = (&*self.part.plan, &*self.part.task);
        let green_cols: Vec<String> = plan
            .targets
            .iter()
            // direct() admits only plain copies: each is its green column's quoted name.
            .map(|t| t.value.sql(&plan.green, None))
            .collect();
        let blue_cols: Vec<String> = plan.targets.iter().map(|t| sql::ident(&t.blue_name)).collect();
        let out = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT",
            green_cols.join(", "),
            sql::qualified(&plan.green.namespace, &plan.green.name),
            self.tail
        );
        let into = format!("COPY {} ({}) FROM STDIN", plan.blue_sql, blue_cols.join(", "));
        transfer::pump(self.green, &out, self.blue, &into, &task.counter, self.what).await?;
        if self.part.range.is_none() {
            task.finishing();
        }
        Ok(())
    }

    /// Green's rows into a stage on blue, then through the mapping into blue's table, which
    /// is made to match green's rows; returns a note for the progress line.
    async fn through_stage(&self) -> Result<String> {
        let (plan, task, empty, blue) = (&*self.part.plan, &*self.part.task, self.part.empty, self.blue);
        blue.batch_execute(&format!("{} ON COMMIT DROP", statements::staging_table(plan, STAGE)))
            .await
            .map_err(self.on_blue())?;
        let into = format!("COPY {} FROM STDIN", sql::ident(STAGE));
        let loading = Instant::now();
        transfer::pump(
            self.green,
            &statements::copy_out(plan, self.tail),
            blue,
            &into,
            &task.counter,
            self.what,
        )
        .await?;
        tracing::debug!(table = %plan.blue_name, seconds = loading.elapsed().as_secs_f64(), "loaded into the stage");
        if self.part.range.is_none() {
            task.finishing();
        }
        let applying = Instant::now();
        let mut note = String::new();
        let unique = matches!(plan.key, KeyPlan::Unique(_));
        if !empty && !unique {
            // No key to match rows by: blue's rows are replaced.
            let n = blue
                .execute(&format!("DELETE FROM {}", plan.blue_sql), &[])
                .await
                .map_err(self.on_blue())?;
            note = format!("{n} old blue rows replaced");
        }
        let insert = statements::insert_from(plan, &sql::ident(STAGE), !empty && unique);
        blue.execute(&insert, &[]).await.map_err(self.on_blue())?;
        if !empty && unique {
            let n = delete_extra(blue, plan).await.map_err(self.on_blue())?;
            if n > 0 {
                note = format!("{n} blue rows not on green deleted");
            }
        }
        tracing::debug!(table = %plan.blue_name, seconds = applying.elapsed().as_secs_f64(), "written through the mapping");
        Ok(note)
    }
}

/// Deletes blue rows that green (at the snapshot) does not have: without a filter, every blue
/// row whose key is not among green's; with one, the rows whose green row the filter
/// excludes (other blue rows are outside the mapping's reach).
async fn delete_extra(blue: &Client, plan: &TablePlan) -> std::result::Result<u64, tokio_postgres::Error> {
    let key = plan.key.columns();
    let matches: Vec<String> = key
        .iter()
        .map(|k| {
            format!(
                "b.{} = {}",
                sql::ident(&plan.targets[k.target].blue_name),
                statements::mapped_value(plan, k.target)
            )
        })
        .collect();
    let stage = sql::ident(STAGE);
    let text = match &plan.filter {
        None => format!(
            "DELETE FROM {} AS b WHERE NOT EXISTS (SELECT 1 FROM {stage} AS g WHERE {})",
            plan.blue_sql,
            matches.join(" AND ")
        ),
        Some(f) => format!(
            "DELETE FROM {} AS b USING {stage} AS g WHERE {} AND NOT coalesce(({f}), false)",
            plan.blue_sql,
            matches.join(" AND ")
        ),
    };
    blue.execute(&text, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_blue_holds_rows_of_is_copied_whole() {
        assert_eq!(part_ranges(10 * PART_BYTES, false), vec![None]);
    }

    #[test]
    fn a_small_table_is_one_part() {
        assert_eq!(part_ranges(0, true), vec![None]);
        assert_eq!(part_ranges(PART_BYTES, true), vec![None]);
    }

    #[test]
    fn an_empty_blue_table_is_filled_in_block_ranges_the_last_one_open() {
        let step = PART_BYTES / BLOCK_SIZE;
        assert_eq!(
            part_ranges(3 * PART_BYTES, true),
            vec![
                Some((0, Some(step))),
                Some((step, Some(2 * step))),
                Some((2 * step, None))
            ]
        );
        assert_eq!(part_ranges(1000 * PART_BYTES, true).len() as u64, MAX_PARTS);
    }
}
