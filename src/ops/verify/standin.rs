//! Temporary stand-in for `crate::mapping::on_green` until it lands on main: only plain
//! same-type copies are evaluated on green.

use tokio_postgres::Client;

use crate::error::Result;
use crate::mapping::TablePlan;
use crate::sql;

pub struct OnGreen {
    pub select: Vec<String>,
}

pub async fn on_green(_green: &Client, plan: &TablePlan) -> Result<std::result::Result<OnGreen, String>> {
    let mut select = Vec::new();
    for t in &plan.targets {
        match t.value.copied() {
            Some(g) if t.copies_same_type(&plan.green) => select.push(sql::ident(&plan.green.columns[g].name)),
            _ => return Ok(Err(format!("blue column {} is not a plain copy", t.blue_name))),
        }
    }
    Ok(Ok(OnGreen { select }))
}
