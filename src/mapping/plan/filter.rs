//! The third step of a plan: `[filter] where`, the condition over green's columns that decides
//! which rows blue carries. A row that enters or leaves the filter through an update is
//! inserted or deleted on blue, which needs blue's unique key to tell rows apart, and green's
//! old values of every column the condition reads (its replica identity, unless FULL).

use super::Context;
use crate::error::{Error, Result};
use crate::mapping::{expression, KeyPlan};
use crate::protocol::pgoutput::ReplicaIdentity;

/// The filter, checked against the key; marks the green columns it reads as used.
pub(super) fn plan(cx: &Context, key: &KeyPlan, used: &mut [bool]) -> Result<Option<String>> {
    let Some(condition) = cx.file.and_then(|f| f.filter.clone()) else {
        return Ok(None);
    };
    let where_fix = &cx.where_fix;
    if matches!(key, KeyPlan::Match(_)) {
        return Err(Error::definite(format!(
            "{where_fix}: a filter needs a primary key or unique index on blue table {}: without one, a row \
             entering the filter cannot be told from a row already there",
            cx.blue_name
        )));
    }
    let full = cx.green.replica_identity == ReplicaIdentity::Full;
    for g in expression::columns(&condition, cx.green) {
        used[g] = true;
        if !full && !cx.green.columns[g].is_key {
            return Err(Error::definite(format!(
                "{where_fix}: filter.where reads green column {}, which is not part of green's replica identity; \
                 filter on key columns or set REPLICA IDENTITY FULL on green",
                cx.green.columns[g].name
            )));
        }
    }
    Ok(Some(condition))
}
