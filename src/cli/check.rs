//! `pgbridge check`: validate the configuration and every mapping against both live catalogs
//! ([`crate::ops::preflight`]) and print the plan; exit 1 when a problem was found.

use crate::config::Config;
use crate::error::Result;
use crate::mapping::KeyPlan;
use crate::ops::ha::{self, Finding};
use crate::ops::preflight::{self, Planned};

pub async fn run(config: &Config, show_sql: bool) -> Result<i32> {
    let report = preflight::check(config).await?;
    println!("blue evaluates mappings with {}\n", report.settings);
    for t in &report.tables {
        print_plan(t, show_sql);
    }
    print_high_availability(&ha::review(config).await?);
    if report.problems.is_empty() {
        println!("ok: {} table(s) planned, no problems", report.tables.len());
        Ok(0)
    } else {
        println!("{} problem(s):", report.problems.len());
        for p in &report.problems {
            println!("  - {p}");
        }
        Ok(1)
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
