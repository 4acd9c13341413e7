//! `pgbridge check`: validate the configuration and every mapping against both live catalogs
//! ([`crate::ops::preflight`]), print the plan and what a rollback would lose
//! ([`crate::ops::rollback`]); exit 1 when a problem was found. `--data` and `--roundtrip`
//! also pass rows through the mappings and exit 1 on a row blue would refuse or a row that
//! does not come back.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::mapping::{wire, KeyPlan, TablePlan};
use crate::ops::ha::{self, Finding};
use crate::ops::preflight::{self, Planned};
use crate::ops::rollback::{data, loses, roundtrip};

/// What `check` does besides validating.
pub struct Options {
    /// Print each table's SQL statements.
    pub sql: bool,
    /// `--data`: green's rows blue would refuse.
    pub data: bool,
    /// `--roundtrip --reverse PATH`: the other direction's configuration.
    pub roundtrip: Option<PathBuf>,
    /// At most this many rows per table for `--data` and `--roundtrip`.
    pub sample: Option<u64>,
    /// Rows shown per column (or constraint, or kind of difference) and table, by `--data`
    /// and `--roundtrip`; the rest are counted.
    pub examples: u64,
}

pub async fn run(config: &Config, options: &Options) -> Result<i32> {
    let (green, blue) = crate::connect::both(config).await?;
    let report = preflight::check(config, &green, &blue).await?;
    println!("blue evaluates mappings with {}\n", report.settings);
    for t in &report.tables {
        print_plan(t, options.sql);
    }
    let names: Vec<(String, String)> = report
        .green_tables
        .iter()
        .map(|t| (t.namespace.clone(), t.name.clone()))
        .collect();
    print_wire(&wire::review(config, &green, &blue, &names, report.publication_exists).await?);
    print_losses(
        &loses::review_with_enums(&green, &blue, &report).await?,
        &loses::tables_not_carried(config, &green, &report).await?,
    );
    print_high_availability(&ha::review(config).await?);
    let mut code = if report.problems.is_empty() {
        println!("ok: {} table(s) planned, no problems", report.tables.len());
        0
    } else {
        println!("{} problem(s):", report.problems.len());
        for p in &report.problems {
            println!("  - {p}");
        }
        1
    };
    let plans: Vec<Arc<TablePlan>> = report.tables.iter().map(|t| t.plan.clone()).collect();
    if options.data {
        code = code.max(check_data(config, &plans, options).await?);
    }
    if let Some(reverse) = &options.roundtrip {
        code = code.max(check_roundtrip(config, reverse, &plans, options).await?);
    }
    Ok(code)
}

/// The form green's values travel in, table by table, and why.
fn print_wire(decision: &wire::Decision) {
    let form = match (decision.binary, decision.forced_off) {
        (_, true) => "text (PGBRIDGE_BINARY=off)",
        (true, _) => "binary: blue receives them as green sent them, neither side converts to and from text",
        (false, _) => {
            "text: one published column cannot travel exactly in binary, and green sends one form for the whole stream"
        }
    };
    println!("values from green: {form}");
    for (table, how) in decision.by_table() {
        println!("  {table}: {how}");
    }
    println!();
}

/// What a rollback would lose, table by table (deliberate choices: the exit code does not
/// change).
/// `not_carried`: green tables nothing carries at all.
fn print_losses(tables: &[loses::TableLosses], not_carried: &[String]) {
    if tables.is_empty() && not_carried.is_empty() {
        println!("rollback loses: nothing the plan shows (check --data and --roundtrip look at the rows)\n");
        return;
    }
    println!("rollback loses (deliberate choices of the mappings; the exit code does not change):");
    for t in tables {
        println!("  {}:", arrow(&t.green_table, &t.blue_table));
        for loss in &t.losses {
            println!("    - {loss}");
        }
    }
    if !not_carried.is_empty() {
        println!("  green tables not carried:");
        for table in not_carried {
            println!("    - {table}");
        }
    }
    println!();
}

fn arrow(green: &str, blue: &str) -> String {
    if green == blue {
        blue.to_string()
    } else {
        format!("{green} -> {blue}")
    }
}

fn sampled(sample: Option<u64>) -> String {
    sample.map_or_else(
        || "every row".to_string(),
        |n| format!("a sample of up to {n} rows per table"),
    )
}

async fn check_data(config: &Config, plans: &[Arc<TablePlan>], options: &Options) -> Result<i32> {
    let sample = options.sample;
    println!(
        "\ncheck --data: green's rows ({}) through the mappings into temporary copies of blue's tables, rolled back",
        sampled(sample)
    );
    let outcomes = data::run(config, plans, sample, options.examples, &mut |event| match event {
        data::Event::Refused(r) => {
            let mut line = format!("  REFUSED {} {}: {}", r.table, r.key, r.reason);
            if let Some(c) = &r.column {
                line.push_str(&format!(" [column {c}]"));
            }
            if let Some(c) = &r.constraint {
                line.push_str(&format!(" [constraint {c}]"));
            }
            println!("{line}");
        }
        data::Event::Changed(r) => println!("  CHANGED {} {}: {}", r.table, r.key, r.reason),
        data::Event::Progress(p) => eprintln!("{p}"),
        data::Event::Table(t) => {
            for (what, n) in &t.more {
                println!("  ... and {n} more row(s) {what} of {}", t.blue_table);
            }
            println!(
                "{:<44} {:>10} row(s) checked  {} refused  {} changed  ({:.1}s)",
                arrow(&t.green_table, &t.blue_table),
                t.rows,
                t.refused,
                t.changed,
                t.seconds
            );
            for note in &t.unchecked {
                println!("    note: {note}");
            }
        }
    })
    .await?;
    let refused: u64 = outcomes.iter().map(|t| t.refused).sum();
    let changed: u64 = outcomes.iter().map(|t| t.changed).sum();
    let tables = |f: fn(&data::TableOutcome) -> u64| outcomes.iter().filter(|t| f(t) > 0).count();
    if refused > 0 {
        println!(
            "REFUSED: blue would refuse {refused} row(s) in {} of {} table(s)",
            tables(|t| t.refused),
            outcomes.len()
        );
    }
    if changed > 0 {
        println!(
            "CHANGED: blue would store {changed} row(s) changed, without an error, in {} of {} table(s)",
            tables(|t| t.changed),
            outcomes.len()
        );
    }
    if refused + changed == 0 {
        println!(
            "data: blue would accept and store unchanged every row checked ({} table(s))",
            outcomes.len()
        );
        Ok(0)
    } else {
        Ok(1)
    }
}

async fn check_roundtrip(
    config: &Config,
    reverse: &std::path::Path,
    plans: &[Arc<TablePlan>],
    options: &Options,
) -> Result<i32> {
    let sample = options.sample;
    println!(
        "\ncheck --roundtrip: blue's rows ({}) through {}'s mappings on green and back through these on blue, \
         compared by key",
        sampled(sample),
        reverse.display()
    );
    let outcomes = roundtrip::run(
        config,
        reverse,
        plans,
        sample,
        options.examples,
        &mut |event| match event {
            roundtrip::Event::Difference(d) => println!("  DIFFERENT {}", difference(d)),
            roundtrip::Event::Progress(p) => eprintln!("{p}"),
            roundtrip::Event::Table(t) => match &t.not_compared {
                Some(why) => println!(
                    "{:<44} {}: {why}",
                    t.blue_table,
                    if t.unmapped {
                        "DOES NOT ROUND-TRIP"
                    } else {
                        "not compared"
                    }
                ),
                None => {
                    for (what, n) in &t.more {
                        println!("  ... and {n} more difference(s) in {what} of {}", t.blue_table);
                    }
                    println!(
                        "{:<44} {:>10} row(s) compared  {} difference(s)  ({:.1}s)",
                        t.blue_table, t.rows, t.differences, t.seconds
                    );
                    if let Some(hint) = &t.hint {
                        println!("    hint: {hint}");
                    }
                }
            },
        },
    )
    .await?;
    let differ = outcomes.iter().filter(|t| t.differences > 0 || t.unmapped).count();
    if differ == 0 {
        println!(
            "roundtrip: every row compared comes back equal ({} table(s))",
            outcomes.len()
        );
        Ok(0)
    } else {
        println!(
            "DIFFERENT: {differ} of {} table(s) do not come back equal",
            outcomes.len()
        );
        Ok(1)
    }
}

fn difference(d: &roundtrip::Difference) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".to_string());
    match d.kind {
        roundtrip::Kind::Changed => format!(
            "{} {}: column {}: blue has {}, comes back as {}",
            d.table,
            d.key,
            d.column.as_deref().unwrap_or("?"),
            show(&d.blue),
            show(&d.back)
        ),
        roundtrip::Kind::Lost => format!(
            "{} {}: does not come back (a filter leaves it out, or the pair changes its key)",
            d.table, d.key
        ),
        roundtrip::Kind::New => format!(
            "{} {}: comes back under a key blue's rows do not have (the pair changes a key)",
            d.table, d.key
        ),
        roundtrip::Kind::RefusedOnGreen => format!(
            "{} {}: refused by the reverse mapping on green: {}",
            d.table,
            d.key,
            d.reason.as_deref().unwrap_or("?")
        ),
        roundtrip::Kind::RefusedOnBlue => format!(
            "{} {}: comes back, but this mapping refuses it on blue: {}",
            d.table,
            d.key,
            d.reason.as_deref().unwrap_or("?")
        ),
    }
}

fn print_plan(t: &Planned, show_sql: bool) {
    let plan = &t.plan;
    let how = plan
        .file
        .as_ref()
        .map_or_else(|| "by name".to_string(), |f| f.display().to_string());
    println!("blue {} <- green {} ({how})", plan.blue_name, plan.green_name);
    for target in &plan.targets {
        let source = target.value.summary(&plan.green);
        let when = if target.insert_only { "  (on insert only)" } else { "" };
        println!("    {:<24} <- {source}{when}", target.blue_name);
    }
    let key = plan.key_pairs();
    let kind = match plan.key {
        KeyPlan::Unique(_) => "key",
        KeyPlan::Match(_) => "match (no unique key on blue)",
    };
    println!("    {kind}: {}", key.join(", "));
    if let Some(f) = &plan.filter {
        println!("    filter: {f}");
    }
    if show_sql {
        for (what, text) in &t.statements {
            println!("    -- {what}\n    {text};");
        }
    }
    println!();
}

/// What would happen to the bridge in a failover, and what to configure (not a problem of the
/// plan: the exit code does not change).
pub(super) fn print_high_availability(found: &[Finding]) {
    if found.is_empty() {
        return;
    }
    println!("high availability:");
    for f in found {
        println!("  {} {}", if f.ok { "ok:  " } else { "note:" }, f.text);
    }
    println!();
}
