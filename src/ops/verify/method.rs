//! How a table is compared: by key-range checksums first ([`super::checksum`],
//! [`super::ranges`]), the differing ranges then row by row, when green can compute what blue
//! stores and both sides can form the same ranges through their key index; otherwise row by
//! row throughout, with the reason.

use super::checksum::{self, Checksums, KeyFacts};
use super::ranges::{Found, Ranger};
use super::table::Table;
use super::Verification;
use crate::error::{Error, Result};
use crate::mapping::TablePlan;
use crate::sql;

/// `Ok(select)`: compared by checksums, green computing each target by `select`;
/// `Err(reason)`: row by row, because of `reason`.
pub(super) type Method = std::result::Result<Vec<String>, String>;

/// How `plan`'s table is compared.
pub(super) async fn choose(v: &Verification<'_>, plan: &TablePlan, table: &Table<'_>) -> Result<Method> {
    if v.full {
        return Ok(Err("--full".into()));
    }
    if let Some(why) = checksum::plan_refusal(plan) {
        return Ok(Err(why));
    }
    let green = match &v.checksums {
        Ok(green) => green,
        Err(why) => return Ok(Err(why.clone())),
    };
    if table.collated().contains(&true) && !v.same_encoding {
        return Ok(Err(
            "green and blue use different server encodings, so text keys order differently".into(),
        ));
    }
    let what = format!("reading the key indexes of {} and {}", plan.green_name, plan.blue_name);
    let green_names: Vec<String> = plan
        .key
        .columns()
        .iter()
        .map(|k| plan.green.columns[k.green].name.clone())
        .collect();
    let blue_names: Vec<String> = plan
        .key
        .columns()
        .iter()
        .map(|k| plan.targets[k.target].blue_name.clone())
        .collect();
    let green_table = sql::qualified(&plan.green.namespace, &plan.green.name);
    let (green_facts, blue_facts) = futures_util::future::join(
        KeyFacts::read(green, &green_table, &green_names),
        KeyFacts::read(&v.blue, &plan.blue_sql, &blue_names),
    )
    .await;
    let green_facts = green_facts.map_err(|e| Error::postgres(format!("{what}: on green"), &e))?;
    let blue_facts = blue_facts.map_err(|e| Error::postgres(format!("{what}: on blue"), &e))?;
    if let Some(why) = green_facts
        .refusal("green", &green_names)
        .or_else(|| blue_facts.refusal("blue", &blue_names))
    {
        return Ok(Err(why));
    }
    let on_green = match crate::mapping::on_green::on_green(green, &v.blue, plan, &v.text_rules).await? {
        Ok(o) => o,
        Err(why) => return Ok(Err(format!("not computable on green: {why}"))),
    };
    // Green must plan the checksum as written (blue's stored types known there, ...).
    let sums = Checksums::new(table, table.compared(), &on_green.select);
    let whole = super::table::Range { lo: None, hi: None };
    if let Err(e) = green
        .batch_execute(&format!("EXPLAIN {}", sums.green_sql(&whole)))
        .await
    {
        return match e.as_db_error() {
            Some(db) => Ok(Err(format!("green cannot compute blue's values: {}", db.message()))),
            None => Err(checksum::on("green", &what, &e)),
        };
    }
    Ok(Ok(on_green.select))
}

/// Compares `table` by checksums: returns what was found and the rows moved to blue for the
/// ranges that differ are staged by the caller.
pub(super) async fn checksums(v: &Verification<'_>, table: &Table<'_>, select: &[String], what: &str) -> Result<Found> {
    let Ok(green) = &v.checksums else {
        return Err(Error::definite(format!("{what}: no checksum session on green")));
    };
    let sums = Checksums::new(table, table.compared(), select);
    let plan = table.plan();
    Ranger {
        sums: &sums,
        green,
        blue: &v.blue,
        what,
        range_rows: v.config.switches.verify_chunk_rows,
        spot_check: plan.computes(),
    }
    .run()
    .await
}
