//! `pgbridge verify`: compare green, passed through the mapping, with blue
//! ([`crate::ops::verify`]); a line per table or JSON; exit 1 when a table differs.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::verify::{self, Report, TableReport};

pub async fn run(config: &Config, table: Option<String>, json: bool, examples: usize, full: bool) -> Result<i32> {
    let (verification, subjects) = verify::prepare(config, table.as_deref(), examples, full).await?;
    if !json {
        println!("verify: {}", verify::METHOD);
        if !verification.active {
            println!(
                "note: the bridge is not streaming slot {}, so differences are not rechecked",
                config.slot
            );
        }
    }
    let mut reports = Vec::new();
    for subject in subjects {
        let report = verification.table(subject).await?;
        if !json {
            print_table(&report);
        }
        reports.push(report);
    }
    let identical = reports.iter().all(|r| r.identical);
    if json {
        let report = Report {
            identical,
            method: verify::METHOD,
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

fn print_table(r: &TableReport) {
    let name = if r.green_table == r.blue_table {
        r.blue_table.clone()
    } else {
        format!("{} -> {}", r.green_table, r.blue_table)
    };
    let verdict = if r.identical {
        "identical".to_string()
    } else {
        let unstorable = if r.counts.unstorable > 0 {
            format!(", cannot be stored on blue {}", r.counts.unstorable)
        } else {
            String::new()
        };
        format!(
            "missing {}, extra {}, different {}{unstorable}",
            r.counts.missing, r.counts.extra, r.counts.different
        )
    };
    let how = match r.method {
        "checksums" => format!(
            ", checksums over {} range(s), {} row(s) compared row by row",
            r.ranges_compared, r.rows_moved
        ),
        _ => String::new(),
    };
    println!(
        "{name:<44} green {:>10}  blue {:>10}  {verdict}  ({:.1}s{how}{})",
        r.counts.green_rows,
        r.counts.blue_rows,
        r.seconds,
        if r.rechecked_chunks > 0 {
            format!(", {} chunk(s) rechecked", r.rechecked_chunks)
        } else {
            String::new()
        }
    );
    if let Some(why) = &r.rows_because {
        println!("    compared row by row: {why}");
    }
    if let Some(scope) = &r.scope {
        println!("    {scope}");
    }
    for problem in &r.problems {
        println!("    DIFFERENT: {problem}");
    }
    let ex = &r.counts.examples;
    for (label, keys) in [("missing on blue", &ex.missing), ("extra on blue", &ex.extra)] {
        if !keys.is_empty() {
            println!("    {label}: {}", keys.join("; "));
        }
    }
    // One row a line: the columns that differ, with both values.
    for (label, keys, why) in [
        ("different", &ex.different, &ex.different_columns),
        ("cannot be stored on blue", &ex.unstorable, &ex.unstorable_reasons),
    ] {
        for (i, key) in keys.iter().enumerate() {
            match why.get(i).filter(|w| !w.is_empty()) {
                Some(w) => println!("    {label}: {key} ({w})"),
                None => println!("    {label}: {key}"),
            }
        }
    }
}
