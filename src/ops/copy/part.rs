//! Copying one part of a table (see [`super::parts`]) in one blue transaction, by one of two
//! routes:
//!
//! * **Direct**: blue's table was empty and green can compute what blue stores
//!   ([`super::evaluate`]): green's COPY of the mapped values goes straight into blue's
//!   table's COPY, in binary where every value's binary form is what blue's column receives,
//!   in text otherwise. One write on blue.
//! * **Staged**: green's columns are COPYed into a temporary table on blue and written
//!   through the mapping with the apply path's SQL: inserted into an empty table; into one
//!   holding rows, upserted (rows that already match are left alone, so a copy into a blue
//!   that matches writes nothing) and blue's rows of the part's range that green does not
//!   have deleted; a keyless table's rows are replaced.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use super::evaluate::OnGreen;
use super::parts::Range;
use super::progress::Task;
use super::transfer::{self, Ends, Format};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::statements;
use crate::mapping::{KeyPlan, TablePlan};
use crate::sql;

/// Name of the temporary table green's rows are loaded into on blue.
const STAGE: &str = "pgbridge_copy";

/// How green can compute a table's blue values, or why it cannot (shared by its parts).
pub type Evaluation = Arc<std::result::Result<OnGreen, String>>;

/// Rows of one table, or of a range of it, copied in one blue transaction.
pub struct Part {
    pub plan: Arc<TablePlan>,
    pub task: Arc<Task>,
    pub range: Range,
    /// Blue's table was empty when the copy began.
    pub empty: bool,
    /// How green can compute the table's blue values, or why it cannot.
    pub on_green: Evaluation,
    /// Parts of this table not yet copied.
    pub remaining: Arc<AtomicU64>,
}

/// What a part did: its route, for the summary, and the blue rows it deleted.
pub struct Outcome {
    pub route: String,
    /// Blue rows green lacks, deleted (or, with `replaced`, a keyless table's old rows).
    pub deleted: u64,
    pub replaced: bool,
}

/// A copy worker's connections: green inside one transaction at the exported snapshot, blue
/// set up as the apply path's sessions are.
pub struct Sessions {
    green: Client,
    blue: Arc<Client>,
    /// Green's session carries blue's evaluation settings (rule 10), so it may compute mapped
    /// values; else why not.
    evaluates: std::result::Result<(), String>,
}

impl Sessions {
    pub async fn open(config: &Config, env: &Environment, snapshot: &str) -> Result<Sessions> {
        let green = transfer::green_for_snapshots(config).await?;
        let evaluates = super::evaluate::apply(&green, env).await;
        transfer::begin_snapshot(&green, Some(snapshot)).await?;
        let blue = crate::connect::connect_blue(&config.blue)
            .await
            .map_err(Error::into_definite)?;
        transfer::prepare_blue(&blue, env).await?;
        // Replicated rows, not application writes: no triggers or foreign-key checks, as when
        // streaming (where permitted).
        let _ = blue.batch_execute("SET session_replication_role = replica").await;
        Ok(Sessions { green, blue, evaluates })
    }
}

/// Copies one part in one blue transaction.
pub async fn copy(sessions: &Sessions, part: &Part) -> Result<Outcome> {
    let plan = &*part.plan;
    let what = format!(
        "copying green table {} to blue table {}",
        plan.green_name, plan.blue_name
    );
    let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
    sessions.blue.batch_execute("BEGIN").await.map_err(on_blue)?;
    let copy = PartCopy {
        sessions,
        part,
        what: &what,
    };
    let outcome = match copy.direct_route() {
        Ok(on_green) => copy.direct(on_green).await?,
        Err(why) => copy.through_stage(why).await?,
    };
    sessions.blue.batch_execute("COMMIT").await.map_err(on_blue)?;
    Ok(outcome)
}

/// One part's copy inside its blue transaction.
struct PartCopy<'a> {
    sessions: &'a Sessions,
    part: &'a Part,
    /// What is being copied, for error messages.
    what: &'a str,
}

impl PartCopy<'_> {
    fn on_blue(&self) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        move |e| Error::postgres(format!("{}: on blue", self.what), &e).into_definite()
    }

    /// Green's conditions for the part's rows: its range, and the publication's row filter
    /// (rows it leaves out never stream: copying them would leave rows on blue that nothing
    /// keeps current).
    fn green_conditions(&self) -> Vec<String> {
        let plan = &*self.part.plan;
        let mut conditions: Vec<String> = self.part.range.on_green(plan).into_iter().collect();
        conditions.extend(statements::published_rows(plan));
        conditions
    }

    /// Green's computation of the blue values, when the direct route may be taken; else why
    /// the part goes through the stage.
    fn direct_route(&self) -> std::result::Result<&OnGreen, String> {
        let part = self.part;
        if !part.empty {
            return Err("blue's table holds rows".into());
        }
        let on_green = part.on_green.as_ref().as_ref().map_err(|why| why.clone())?;
        // A mapping that computes nothing reads the same in any session.
        match &self.sessions.evaluates {
            Err(why) if part.plan.computes() => Err(why.clone()),
            _ => Ok(on_green),
        }
    }

    /// Green's mapped values straight into blue's table, COPY to COPY.
    async fn direct(&self, on_green: &OnGreen) -> Result<Outcome> {
        let (plan, task) = (&*self.part.plan, &*self.part.task);
        let format = if on_green.all_binary() {
            Format::Binary
        } else {
            Format::Text
        };
        let mut conditions = self.green_conditions();
        conditions.extend(on_green.filter.iter().map(|f| format!("({f})")));
        let out = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT{}",
            on_green.select.join(", "),
            sql::qualified(&plan.green.namespace, &plan.green.name),
            statements::where_clause(&conditions),
            format.option()
        );
        let blue_cols: Vec<String> = plan.targets.iter().map(|t| sql::ident(&t.blue_name)).collect();
        let into = format!(
            "COPY {} ({}) FROM STDIN{}",
            plan.blue_sql,
            blue_cols.join(", "),
            format.option()
        );
        let ends = Ends {
            green: &self.sessions.green,
            copy_out: &out,
            blue: &self.sessions.blue,
            copy_in: &into,
        };
        transfer::pump_as(ends, format, &task.counter, self.what).await?;
        if self.part.range == Range::Whole {
            task.finishing();
        }
        Ok(Outcome {
            route: format!("straight into blue's table, {}", format.name()),
            deleted: 0,
            replaced: false,
        })
    }

    /// Green's rows into a stage on blue, then through the mapping into blue's table, which
    /// is made to match green's rows in the part's range.
    async fn through_stage(&self, why: String) -> Result<Outcome> {
        let (plan, task, blue) = (&*self.part.plan, &*self.part.task, &self.sessions.blue);
        blue.batch_execute(&format!("{} ON COMMIT DROP", statements::staging_table(plan, STAGE)))
            .await
            .map_err(self.on_blue())?;
        let into = format!("COPY {} FROM STDIN", sql::ident(STAGE));
        let loading = Instant::now();
        let tail = statements::where_clause(&self.green_conditions());
        let ends = Ends {
            green: &self.sessions.green,
            copy_out: &statements::copy_out(plan, &tail),
            blue,
            copy_in: &into,
        };
        transfer::pump_as(ends, Format::Text, &task.counter, self.what).await?;
        tracing::debug!(table = %plan.blue_name, seconds = loading.elapsed().as_secs_f64(), "loaded into the stage");
        if self.part.range == Range::Whole {
            task.finishing();
        }
        let applying = Instant::now();
        let (deleted, replaced) = self.write_from_stage().await?;
        tracing::debug!(table = %plan.blue_name, seconds = applying.elapsed().as_secs_f64(), "written through the mapping");
        Ok(Outcome {
            route: format!("through a stage on blue: {why}"),
            deleted,
            replaced,
        })
    }

    /// Writes the stage through the mapping; returns the blue rows deleted, and whether they
    /// were a keyless table's rows, replaced.
    async fn write_from_stage(&self) -> Result<(u64, bool)> {
        let (plan, blue, empty) = (&*self.part.plan, &self.sessions.blue, self.part.empty);
        let stage = sql::ident(STAGE);
        if empty {
            blue.execute(&statements::insert_from(plan, &stage, false), &[])
                .await
                .map_err(self.on_blue())?;
            return Ok((0, false));
        }
        if !matches!(plan.key, KeyPlan::Unique(_)) {
            // No key to match rows by: blue's rows are replaced (such a table is one part).
            let n = blue
                .execute(&format!("DELETE FROM {}", plan.blue_sql), &[])
                .await
                .map_err(self.on_blue())?;
            blue.execute(&statements::insert_from(plan, &stage, false), &[])
                .await
                .map_err(self.on_blue())?;
            return Ok((n, true));
        }
        blue.execute(&upsert_changed(plan), &[]).await.map_err(self.on_blue())?;
        let n = delete_extra(blue, plan, self.part.range.on_blue(plan, "b"))
            .await
            .map_err(self.on_blue())?;
        Ok((n, false))
    }
}

/// The stage upserted into blue's table, leaving alone rows that already hold every value
/// (compared as text, so 1.0 and 1.00, or 0 and -0, count as different): copying into a blue
/// that matches writes nothing.
fn upsert_changed(plan: &TablePlan) -> String {
    let text = statements::insert_from(plan, &sql::ident(STAGE), true);
    let key = plan.key.columns();
    let updated: Vec<&str> = (0..plan.targets.len())
        .filter(|&t| !key.iter().any(|k| k.target == t) && statements::can_update(plan, t))
        .map(|t| plan.targets[t].blue_name.as_str())
        .collect();
    if updated.is_empty() {
        return text;
    }
    let side = |of: &str| {
        let values: Vec<String> = updated
            .iter()
            .map(|c| format!("{of}.{}::text", sql::ident(c)))
            .collect();
        format!("ROW({})", values.join(", "))
    };
    format!(
        "{text} WHERE {} IS DISTINCT FROM {}",
        side(&plan.blue_sql),
        side("EXCLUDED")
    )
}

/// Deletes blue rows (within `range`, a condition over blue's table as `b`) that green (at the
/// snapshot) does not have: without a filter, every blue row whose key is not among the
/// stage's; with one, the rows whose green row the filter excludes (other blue rows are
/// outside the mapping's reach).
async fn delete_extra(
    blue: &Client,
    plan: &TablePlan,
    range: Option<String>,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let matches: Vec<String> = plan
        .key
        .columns()
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
    let within = range.map_or(String::new(), |r| format!(" AND {r}"));
    let text = match &plan.filter {
        None => format!(
            "DELETE FROM {} AS b WHERE NOT EXISTS (SELECT 1 FROM {stage} AS g WHERE {}){within}",
            plan.blue_sql,
            matches.join(" AND ")
        ),
        Some(f) => format!(
            "DELETE FROM {} AS b USING {stage} AS g WHERE {} AND NOT coalesce(({f}), false){within}",
            plan.blue_sql,
            matches.join(" AND ")
        ),
    };
    blue.execute(&text, &[]).await
}
