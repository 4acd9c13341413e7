//! Where a table's mapping is evaluated during the copy: on green, when green can compute
//! exactly what blue would store (then rows go from green's COPY straight into blue's table),
//! or on blue, through a stage.
//!
//! TEMPORARY stand-in for `crate::mapping::on_green` (same API), until it lands on main: it
//! admits plain same-type copies only.

use tokio_postgres::Client;

use crate::mapping::TablePlan;

/// How green itself can produce, for each of a plan's targets, the value blue stores.
pub struct OnGreen {
    pub select: Vec<String>,
    pub binary: Vec<bool>,
    pub filter: Option<String>,
}

impl OnGreen {
    pub fn all_binary(&self) -> bool {
        self.binary.iter().all(|b| *b)
    }
}

const BUILT_IN: [&str; 8] = [
    "smallint",
    "integer",
    "bigint",
    "text",
    "boolean",
    "timestamp with time zone",
    "date",
    "uuid",
];

pub async fn on_green(_green: &Client, plan: &TablePlan) -> crate::error::Result<std::result::Result<OnGreen, String>> {
    if plan.filter.is_some() || !plan.targets.iter().all(|t| t.copies_same_type(&plan.green)) {
        return Ok(Err("an expression or a cast".into()));
    }
    let green = |t: &crate::mapping::Target| &plan.green.columns[t.value.copied().unwrap_or(0)];
    Ok(Ok(OnGreen {
        select: plan.targets.iter().map(|t| crate::sql::ident(&green(t).name)).collect(),
        binary: plan
            .targets
            .iter()
            .map(|t| BUILT_IN.contains(&green(t).type_sql.as_str()))
            .collect(),
        filter: None,
    }))
}
