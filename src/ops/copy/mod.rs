//! `pgbridge setup --copy`: the initial copy of green's rows into blue, through the mapping.
//!
//! 1. Blue's checkpoint row is set to 0/0, which `run` refuses ("the copy did not finish"),
//!    so a half-copied blue is never streamed into.
//! 2. The slot is (re)created with EXPORT_SNAPSHOT; its replication connection stays open and
//!    idle, which keeps the snapshot importable.
//! 3. Tables are cut into parts ([`parts`]: block ranges, or key ranges when blue's table
//!    holds rows), copied in parallel (`--jobs`) by workers that each hold a green
//!    connection inside the snapshot and a blue connection, a blue transaction per part
//!    ([`part`]). Where blue's table is empty and green can compute what blue stores
//!    ([`evaluate`]), green's COPY of the mapped values goes straight into blue's table (in
//!    binary where the types allow); otherwise green's rows are COPYed into a temporary
//!    table on blue and written through the mapping with the same SQL the apply path uses
//!    (upsert, and removal of blue rows green does not have, so a partly filled blue
//!    converges). Either side that evaluates does so in the same session settings as the
//!    apply path ([`crate::evaluation`], rule 10), so a copied row equals the same row
//!    streamed.
//! 4. The checkpoint is set to the slot's consistent point: streaming starts exactly after the
//!    snapshot, so rows written on green during the copy arrive once.
//!
//! On failure or Ctrl-C the slot is dropped (it would hold back green's WAL) and the
//! checkpoint stays at 0/0; running `setup --copy` again starts over.

mod binary;
mod evaluate;
mod part;
mod parts;
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
use crate::mapping::TablePlan;
use crate::ops::slot;
use crate::sql;
use crate::state::checkpoint;
use part::{Part, Sessions};
use parts::Range;
use progress::{Display, Task};
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
    let tasks = match copied {
        Ok(tasks) => tasks,
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
    for line in summary(&tasks, started.elapsed()) {
        say(line);
    }
    say(format!(
        "blue   checkpoint  {:<24} at {consistent}, the slot's consistent point",
        format!("{}.checkpoint", config.schema)
    ));
    Ok(0)
}

/// Copies every table, `jobs` parts at a time, biggest tables first, each worker's green
/// session evaluating in `env` where it can and its blue session always. Returns every
/// table's task, for the summary.
async fn copy_all(
    config: &Config,
    green: &Client,
    blue: &Client,
    env: &Environment,
    snapshot: &str,
    plans: Vec<Arc<TablePlan>>,
    jobs: usize,
) -> Result<Vec<Arc<Task>>> {
    let asker = evaluate::Asker::open(config, env).await?;
    let (tasks, work) = schedule(green, blue, &asker, plans).await?;
    drop(asker);
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
            match part::copy(sessions, &part).await {
                Ok(outcome) => {
                    part.task.set_route(outcome.route);
                    part.task.deleted(outcome.deleted, outcome.replaced);
                    if part.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        part.task.done();
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
    Ok(tasks)
}

/// One table to copy, as scheduled.
struct Table {
    plan: Arc<TablePlan>,
    task: Arc<Task>,
    /// Blue's table holds no rows.
    empty: bool,
}

/// Every table's progress task, biggest first, and the parts to copy, in that order. Queries
/// per table are sent back to back (pipelined), not one round trip at a time.
async fn schedule(
    green: &Client,
    blue: &Client,
    asker: &evaluate::Asker,
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
    let empty: Vec<bool> = stream::iter(plans.iter().map(|plan| blue_empty(blue, plan)))
        .buffered(PIPELINED)
        .try_collect()
        .await?;
    let mut tables: Vec<Table> = plans
        .into_iter()
        .zip(estimates)
        .zip(empty)
        .map(|((plan, (rows, bytes)), empty)| {
            let name = if *plan.green_name == *plan.blue_name {
                plan.blue_name.clone()
            } else {
                format!("{} -> {}", plan.green_name, plan.blue_name)
            };
            Table {
                plan,
                task: Task::new(name, rows, bytes),
                empty,
            }
        })
        .collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.task.bytes_estimate));
    let tasks = tables.iter().map(|t| t.task.clone()).collect();
    let mut evaluations = Vec::with_capacity(tables.len());
    for t in &tables {
        // One at a time: each asks in a transaction of its own on the asking session.
        evaluations.push(match t.empty {
            true => Arc::new(asker.ask(&t.plan).await?),
            false => Arc::new(Err(String::new())),
        });
    }
    let ranges: Vec<Vec<Range>> = stream::iter(tables.iter().map(|t| table_ranges(green, t)))
        .buffered(PIPELINED)
        .try_collect()
        .await?;
    let routes = ranges.into_iter().zip(evaluations);
    let mut work = VecDeque::new();
    for (table, (ranges, on_green)) in tables.into_iter().zip(routes) {
        table.task.set_parts(parts::describe(&ranges));
        let remaining = Arc::new(AtomicU64::new(ranges.len() as u64));
        for range in ranges {
            work.push_back(Part {
                plan: table.plan.clone(),
                task: table.task.clone(),
                range,
                empty: table.empty,
                on_green: on_green.clone(),
                remaining: remaining.clone(),
            });
        }
    }
    Ok((tasks, work))
}

async fn blue_empty(blue: &Client, plan: &TablePlan) -> Result<bool> {
    Ok(blue
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {})", plan.blue_sql), &[])
        .await
        .map_err(blue_err(&format!("reading {}", plan.blue_name)))?
        .get(0))
}

/// A table's parts ([`parts`]).
async fn table_ranges(green: &Client, table: &Table) -> Result<Vec<Range>> {
    let bytes = table.task.bytes_estimate;
    if table.empty {
        return Ok(parts::blocks(bytes));
    }
    let n = parts::count(bytes);
    let Some(key) = parts::range_key(&table.plan).filter(|_| n > 1) else {
        return Ok(vec![Range::Whole]);
    };
    let plan = &table.plan;
    let column = &plan.green.columns[key.green].name;
    let table_sql = sql::qualified(&plan.green.namespace, &plan.green.name);
    let on_green = |e: tokio_postgres::Error| Error::postgres(format!("reading green table {}", plan.green_name), &e);
    // Ranges of a column green does not index would read green's whole table once per part.
    let indexed: bool = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = i.indkey[0] WHERE i.indrelid = ($1::text)::regclass AND a.attname = $2 AND i.indisvalid)",
            &[&table_sql, column],
        )
        .await
        .map_err(on_green)?
        .get(0);
    if !indexed {
        return Ok(vec![Range::Whole]);
    }
    // Outside the snapshot: the ranges' ends are open, so any bounds cover every row.
    let c = sql::ident(column);
    let row = green
        .query_one(&format!("SELECT min({c})::int8, max({c})::int8 FROM {table_sql}"), &[])
        .await
        .map_err(on_green)?;
    let ranges = match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
        (Some(min), Some(max)) => parts::keys(min, max, n),
        _ => vec![Range::Whole],
    };
    Ok(ranges)
}

/// The summary's lines: one per table (rows, bytes, time, rates, route), then the total.
fn summary(tasks: &[Arc<Task>], elapsed: std::time::Duration) -> Vec<String> {
    let width = tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut lines: Vec<String> = tasks.iter().map(|t| format!("copied {}", t.summary(width))).collect();
    let rows: u64 = tasks.iter().map(|t| t.counter.rows()).sum();
    let bytes: u64 = tasks.iter().map(|t| t.counter.bytes()).sum();
    lines.push(format!(
        "copied {} table(s), {rows} rows, {} in {:.1}s, {}",
        tasks.len(),
        progress::human_bytes(bytes),
        elapsed.as_secs_f64(),
        progress::rates(rows, bytes, elapsed)
    ));
    lines
}
