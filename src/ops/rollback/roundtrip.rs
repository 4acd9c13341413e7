//! `pgbridge check --roundtrip --reverse PATH`: whether this mapping and the one of the
//! bridge in the other direction are inverse where they claim to be.
//!
//! Per table with a unique key on blue, a page of blue's rows at a time (in key order, from
//! one REPEATABLE READ snapshot of blue): the page is kept in a temporary table on blue,
//! COPYed to green and mapped there by the reverse mapping (in the reverse bridge's
//! evaluation environment, as its apply would), the result COPYed back and mapped by this
//! mapping on blue (in this bridge's), then compared with the page by key, column by column,
//! as text (as `verify` compares). Only blue columns this mapping feeds on every write are
//! compared. Both sides work in transactions that are rolled back: nothing is written to
//! either side's tables. Memory holds one network buffer and one page's differences;
//! temporary space one page on each side.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use super::pair;
use super::stage::{self, temp};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::resolve::Mappings;
use crate::mapping::{green_catalog, KeyPlan, TablePlan};
use crate::ops::copy::transfer;

/// Rows per page at most (fewer with `PGBRIDGE_VERIFY_CHUNK_ROWS`).
const PAGE_ROWS: u64 = 10_000;

/// How a row does not come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No row comes back with its key (a filter leaves it out, or the pair changes the key).
    Lost,
    /// A row comes back under a key blue's page does not have.
    New,
    /// A column comes back with another value.
    Changed,
    /// The reverse mapping cannot convert the row on green (its `reason`).
    RefusedOnGreen,
    /// This mapping cannot convert the row that came back, on blue (its `reason`).
    RefusedOnBlue,
}

/// A row or column that does not come back equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub table: String,
    pub key: String,
    pub kind: Kind,
    pub column: Option<String>,
    /// Blue's value, as text.
    pub blue: Option<String>,
    /// The value that came back, as text.
    pub back: Option<String>,
    /// PostgreSQL's message, for a row a mapping refuses.
    pub reason: Option<String>,
}

/// One table's outcome.
#[derive(Clone, Debug, Default)]
pub struct TableOutcome {
    pub blue_table: String,
    pub rows: u64,
    pub differences: u64,
    /// Why the table was not compared, when it was not.
    pub not_compared: Option<String>,
    /// The table cannot be round-tripped at all (no reverse plan for it): a finding.
    pub unmapped: bool,
    pub seconds: f64,
    /// Differences counted but not shown, past the examples per column (or per kind of
    /// row difference): `(column X` or `rows that ...`, how many)`, in first-seen order.
    pub more: Vec<(String, u64)>,
    /// Why many differences may have one cause (the sides' TimeZone), when it applies.
    pub hint: Option<String>,
}

pub enum Event<'a> {
    Difference(&'a Difference),
    Progress(String),
    Table(&'a TableOutcome),
}

/// Both sessions, each in its bridge's evaluation environment, and the reverse plans.
struct Sides {
    blue: Arc<Client>,
    green: Client,
    reverse: Mappings,
    /// Blue's tables as the reverse bridge reads them (its green side).
    blue_tables: Vec<crate::mapping::GreenTable>,
    page_rows: u64,
    sample: Option<u64>,
    /// Differences shown per column (or kind of row difference) and table.
    examples: u64,
    /// Blue's and green's TimeZone in the two bridges' evaluation settings, when they differ.
    zones: Option<(String, String)>,
}

/// A table's differences so far: how many per column (or kind), to cap what is shown.
#[derive(Default)]
struct Seen {
    per: Vec<(String, u64)>,
    /// `Changed` differences in date and time columns.
    temporal: u64,
}

impl Seen {
    /// Counts a difference under `what`; whether it is still to be shown.
    fn show(&mut self, what: String, examples: u64) -> bool {
        let n = match self.per.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => n,
            None => {
                self.per.push((what, 0));
                &mut self.per.last_mut().expect("just pushed").1
            }
        };
        *n += 1;
        *n <= examples
    }
}

/// Round-trips every blue table of `plans`; `sample`: at most this many rows per table.
pub async fn run(
    config: &Config,
    reverse_path: &Path,
    plans: &[Arc<TablePlan>],
    sample: Option<u64>,
    examples: u64,
    out: &mut dyn FnMut(Event),
) -> Result<Vec<TableOutcome>> {
    let reverse = Config::load(reverse_path)?;
    crate::ops::switchover::check_pairing(config, &reverse).await?;
    let blue = crate::connect::connect_blue(&config.blue)
        .await
        .map_err(Error::into_definite)?;
    let green = crate::connect::connect_green_sql(config)
        .await
        .map_err(Error::into_definite)?;
    let env = Environment::resolve(&blue, config)
        .await
        .map_err(Error::into_definite)?;
    transfer::prepare_blue(&blue, &env).await?;
    // A repeatable sample (see `data::run`).
    blue.batch_execute("SET synchronize_seqscans = off")
        .await
        .map_err(|e| Error::postgres("setting up blue's session", &e).into_definite())?;
    // Green evaluates the reverse mapping as the reverse bridge's apply would.
    let reverse_env = Environment::resolve(&green, &reverse)
        .await
        .map_err(Error::into_definite)?;
    transfer::prepare_blue(&green, &reverse_env).await?;
    let published = green_catalog::publication_exists(&blue, &reverse.publication).await?;
    let sides = Sides {
        blue_tables: green_catalog::tables(&blue, &reverse, published)
            .await
            .map_err(Error::into_definite)?,
        reverse: Mappings::load(&reverse)?,
        blue,
        green,
        page_rows: config.switches.verify_chunk_rows.min(PAGE_ROWS),
        sample,
        examples,
        zones: match (env.get("TimeZone"), reverse_env.get("TimeZone")) {
            (Some(b), Some(g)) if b != g => Some((b.to_string(), g.to_string())),
            _ => None,
        },
    };
    let mut outcomes: Vec<TableOutcome> = Vec::new();
    for plan in plans {
        // A green table streamed as partitions has a plan per partition, one blue table.
        if outcomes.iter().any(|o| o.blue_table == plan.blue_name) {
            continue;
        }
        let outcome = sides.table(plan, out).await;
        let rolled_back = futures_util::future::join(
            sides.blue.batch_execute("ROLLBACK"),
            sides.green.batch_execute("ROLLBACK"),
        )
        .await;
        let outcome = outcome?;
        for (side, r) in [("blue", rolled_back.0), ("green", rolled_back.1)] {
            r.map_err(|e| Error::postgres(format!("rolling back the round trip on {side}"), &e).into_definite())?;
        }
        out(Event::Table(&outcome));
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

impl Sides {
    /// The reverse plan for `plan`'s blue table, or why there is none.
    async fn reverse_plan(&self, plan: &TablePlan) -> std::result::Result<Arc<TablePlan>, String> {
        let green_table = plan.partition_of.clone().unwrap_or_else(|| plan.green_name.to_string());
        let Some(b) = self.blue_tables.iter().find(|t| t.qualified() == plan.blue_name) else {
            return Err(format!(
                "the reverse bridge does not stream blue table {} (not in its publication, or excluded)",
                plan.blue_name
            ));
        };
        let reverse = match self.reverse.plan(&self.green, b).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Err(e.to_string()),
            Err(e) => return Err(format!("the reverse mapping does not plan: {e}")),
        };
        if reverse.blue_name != green_table {
            return Err(format!(
                "the reverse mapping writes blue table {} to green table {}, not to {green_table}",
                plan.blue_name, reverse.blue_name
            ));
        }
        Ok(reverse)
    }

    async fn table(&self, plan: &TablePlan, out: &mut dyn FnMut(Event)) -> Result<TableOutcome> {
        let started = Instant::now();
        let mut outcome = TableOutcome {
            blue_table: plan.blue_name.clone(),
            ..TableOutcome::default()
        };
        if matches!(plan.key, KeyPlan::Match(_)) {
            outcome.not_compared = Some("blue has no unique key to match rows by".into());
            return Ok(outcome);
        }
        let reverse = match self.reverse_plan(plan).await {
            Ok(r) => r,
            Err(why) => {
                outcome.not_compared = Some(why);
                outcome.unmapped = true;
                return Ok(outcome);
            }
        };
        let what = format!("round-tripping blue table {} through green", plan.blue_name);
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let on_green = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on green"), &e).into_definite();
        self.blue
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; {}",
                pair::blue_setup(plan)
            ))
            .await
            .map_err(on_blue)?;
        self.green
            .batch_execute(&format!("BEGIN; {}", pair::green_setup(&reverse)))
            .await
            .map_err(on_green)?;
        let (schema, name) = blue_parts(plan);
        let (estimated, _) = transfer::estimate(&self.blue, &schema, &name).await;
        let (sampling, _) = stage::sample_clauses(estimated, self.sample);
        out(Event::Progress(format!(
            "check --roundtrip: {}{}",
            plan.blue_name,
            super::data::about(estimated)
        )));
        let mut after: Option<Vec<String>> = None;
        let mut seen = Seen::default();
        loop {
            let wanted = match self.sample {
                Some(n) => self.page_rows.min(n - outcome.rows),
                None => self.page_rows,
            };
            if wanted == 0 {
                break;
            }
            let page = pair::next_page(plan, &sampling, after.as_deref(), wanted);
            self.blue
                .batch_execute(&format!("TRUNCATE {}", temp(pair::ORIGINAL)))
                .await
                .map_err(on_blue)?;
            let rows = self.blue.execute(&page, &[]).await.map_err(on_blue)?;
            if rows == 0 {
                break;
            }
            outcome.rows += rows;
            let last = self.blue.query_one(&pair::last_key(plan), &[]).await.map_err(on_blue)?;
            after = Some((0..plan.key.columns().len()).map(|i| last.get(i)).collect());
            outcome.differences += self.page(plan, &reverse, &what, &mut seen, out).await?;
            if rows < wanted {
                break;
            }
        }
        self.summarize(&mut outcome, seen);
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// The differences not shown, and a hint when many may have one cause.
    fn summarize(&self, outcome: &mut TableOutcome, seen: Seen) {
        outcome.more = seen
            .per
            .into_iter()
            .filter(|(_, n)| *n > self.examples)
            .map(|(what, n)| (what, n - self.examples))
            .collect();
        if let Some((blue, green)) = self.zones.as_ref().filter(|_| seen.temporal > 0) {
            outcome.hint = Some(format!(
                "{} difference(s) in date or time columns, and blue and green evaluate with different TimeZone \
                 ({blue} here, {green} in the reverse bridge): set [blue] timezone to one zone in both configurations",
                seen.temporal
            ));
        }
    }

    /// One page there and back; returns its differences.
    async fn page(
        &self,
        plan: &TablePlan,
        reverse: &TablePlan,
        what: &str,
        seen: &mut Seen,
        out: &mut dyn FnMut(Event),
    ) -> Result<u64> {
        let on_blue = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on blue"), &e).into_definite();
        let on_green = |e: tokio_postgres::Error| Error::postgres(format!("{what}: on green"), &e).into_definite();
        let counter = transfer::Counter::default();
        self.green
            .batch_execute(&format!(
                "TRUNCATE {}, {}",
                temp(pair::REVERSE_STAGE),
                temp(pair::ON_GREEN)
            ))
            .await
            .map_err(on_green)?;
        let into_green = format!("COPY {} FROM STDIN", temp(pair::REVERSE_STAGE));
        transfer::pump(
            &self.blue,
            &pair::page_out(plan, reverse),
            &self.green,
            &into_green,
            &counter,
            what,
        )
        .await?;
        let mut refused = guarded(&self.green, &pair::map_on_green(reverse, None), &on_green).await?;
        let mut found = report_refused(plan, &refused, Kind::RefusedOnGreen, self.examples, seen, out);
        self.blue
            .batch_execute(&format!("TRUNCATE {}, {}", temp(pair::BACK_STAGE), temp(pair::MAPPED)))
            .await
            .map_err(on_blue)?;
        let into_blue = format!("COPY {} FROM STDIN", temp(pair::BACK_STAGE));
        transfer::pump(
            &self.green,
            &pair::back_out(plan, reverse),
            &self.blue,
            &into_blue,
            &counter,
            what,
        )
        .await?;
        let on_blue_refused = guarded(&self.blue, &pair::fill_mapped(plan, None), &on_blue).await?;
        found += report_refused(plan, &on_blue_refused, Kind::RefusedOnBlue, self.examples, seen, out);
        refused.extend(on_blue_refused);
        let rows = self.blue.query(&pair::compare(plan), &[]).await.map_err(on_blue)?;
        Ok(found + self.report_compared(plan, &rows, &refused, seen, out))
    }

    /// Reports the comparison's `rows` (those of the first `examples` per column or kind),
    /// but not rows already named as `refused`; returns how many differences there are.
    fn report_compared(
        &self,
        plan: &TablePlan,
        rows: &[tokio_postgres::Row],
        refused: &[(String, String)],
        seen: &mut Seen,
        out: &mut dyn FnMut(Event),
    ) -> u64 {
        let refused_keys: std::collections::HashSet<&str> = refused.iter().map(|(k, _)| k.as_str()).collect();
        let mut found = 0;
        for r in rows {
            let kind = match r.get::<_, &str>(0) {
                "lost" => Kind::Lost,
                "new" => Kind::New,
                _ => Kind::Changed,
            };
            let key: String = r.get(1);
            // Already named with the reason it does not come back.
            if kind == Kind::Lost && refused_keys.contains(key.as_str()) {
                continue;
            }
            found += 1;
            let column: Option<String> = r.get(2);
            if let Some(c) = &column {
                let temporal = plan
                    .targets
                    .iter()
                    .any(|t| t.blue_name == *c && is_temporal(&t.stored_type));
                seen.temporal += u64::from(temporal);
            }
            let under = column
                .as_ref()
                .map_or_else(|| kind_label(kind), |c| format!("column {c}"));
            if !seen.show(under, self.examples) {
                continue;
            }
            out(Event::Difference(&Difference {
                table: plan.blue_name.clone(),
                key,
                kind,
                column,
                blue: r.get(3),
                back: r.get(4),
                reason: None,
            }));
        }
        found
    }
}

/// Runs a mapping `statement` over a whole page inside a savepoint; when PostgreSQL refuses
/// it, the page is mapped again row by row ([`pair::ROWS_FN`]) and the refused rows (blue's
/// key, PostgreSQL's message) are returned, the others mapped.
async fn guarded(
    client: &Client,
    statement: &str,
    err: &dyn Fn(tokio_postgres::Error) -> Error,
) -> Result<Vec<(String, String)>> {
    client.batch_execute("SAVEPOINT pgbridge_page").await.map_err(err)?;
    match client.batch_execute(statement).await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT pgbridge_page")
                .await
                .map_err(err)?;
            Ok(Vec::new())
        }
        Err(e) if e.as_db_error().is_some() => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT pgbridge_page; RELEASE SAVEPOINT pgbridge_page")
                .await
                .map_err(err)?;
            let rows = client.query(&pair::refused_rows(), &[]).await.map_err(err)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        }
        Err(e) => Err(err(e)),
    }
}

/// Reports each of `refused` (key, message) as a difference of `kind`, the first `examples`
/// of the table's; returns how many.
fn report_refused(
    plan: &TablePlan,
    refused: &[(String, String)],
    kind: Kind,
    examples: u64,
    seen: &mut Seen,
    out: &mut dyn FnMut(Event),
) -> u64 {
    for (key, reason) in refused {
        if !seen.show(kind_label(kind), examples) {
            continue;
        }
        out(Event::Difference(&Difference {
            table: plan.blue_name.clone(),
            key: key.clone(),
            kind,
            column: None,
            blue: None,
            back: None,
            reason: Some(reason.clone()),
        }));
    }
    refused.len() as u64
}

/// How the "... and N more" line names row differences of `kind`.
fn kind_label(kind: Kind) -> String {
    match kind {
        Kind::Lost => "rows that do not come back",
        Kind::New => "rows that come back under a new key",
        Kind::Changed => "columns",
        Kind::RefusedOnGreen => "rows the reverse mapping refuses on green",
        Kind::RefusedOnBlue => "rows this mapping refuses on blue",
    }
    .to_string()
}

/// Whether blue's type `stored` (as `format_type` writes it) is a date or time type, whose
/// text depends on the session's TimeZone (or whose value does, through a conversion).
fn is_temporal(stored: &str) -> bool {
    let t = stored.trim_start_matches("pg_catalog.").trim_matches('"');
    ["timestamp", "date", "time", "abstime"]
        .iter()
        .any(|p| t.starts_with(p))
}

/// Blue's schema and table name of `plan`, unquoted (for green's statistics query).
fn blue_parts(plan: &TablePlan) -> (String, String) {
    match plan.blue_name.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => ("public".to_string(), plan.blue_name.clone()),
    }
}
