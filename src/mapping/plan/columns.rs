//! The first step of a plan: the blue columns the mapping file feeds explicitly, then the
//! same-named ones that map implicitly.

use super::{target, Context, Fed};
use crate::error::{Error, Result};
use crate::mapping::file::{ColumnSpec, Feed};
use crate::mapping::{green_catalog, Value};

/// The explicitly mapped blue columns, in the file's order, then the same-named ones.
pub(super) fn plan(cx: &Context) -> Result<Fed> {
    let mut fed = Fed {
        targets: Vec::new(),
        overriding: false,
        used: vec![false; cx.green.columns.len()],
    };
    if let Some(file) = cx.file {
        for (name, spec) in &file.columns {
            explicit(cx, &mut fed, name, spec)?;
        }
    }
    implicit(cx, &mut fed);
    Ok(fed)
}

/// Blue column `name` as `[columns]` maps it.
fn explicit(cx: &Context, fed: &mut Fed, name: &str, spec: &ColumnSpec) -> Result<()> {
    let blue_name = &cx.blue_name;
    let Some(b) = cx.blue.column(name) else {
        return Err(Error::definite(format!(
            "{}columns.{name}: blue table {blue_name} has no column {name}",
            cx.at(spec.line)
        )));
    };
    if b.generated && spec.feed != Feed::Omit {
        return Err(Error::definite(format!(
            "{}columns.{name}: blue column {blue_name}.{name} is generated and cannot be written; use {{ omit = true }} or remove it",
            cx.at(spec.line)
        )));
    }
    let value = match &spec.feed {
        Feed::Omit => return Ok(()),
        Feed::From(col) => Value::Green(
            cx.green
                .position(col)
                .ok_or_else(|| no_green_column(cx, name, col, spec.line))?,
        ),
        Feed::Expr(sql) => Value::Expr(sql.clone()),
    };
    let depends = value.reads(cx.green);
    for &d in &depends {
        fed.used[d] = true;
    }
    fed.overriding |= b.identity_always;
    fed.targets.push(target(b, value, depends, spec.insert_only));
    Ok(())
}

/// `from = "col"` names a column green's stream does not carry; says why when green's
/// catalog tells (generated, or left out by the publication's column list).
fn no_green_column(cx: &Context, name: &str, col: &str, line: usize) -> Error {
    let unpublished = cx
        .green
        .facts
        .as_ref()
        .and_then(|f| f.unpublished.iter().find(|(c, _)| c.name == col))
        .map(|(_, why)| match why {
            green_catalog::Unpublished::Generated => {
                " that the stream carries: it is a generated column, which logical replication does not \
                 publish; compute it with expr over published columns"
            }
            green_catalog::Unpublished::ColumnList => {
                " that the stream carries: the publication's column list leaves it out; add it to the \
                 column list or map another column"
            }
        });
    Error::definite(format!(
        "{}columns.{name}: green table {} has no column {col}{}",
        cx.at(line),
        cx.green_name,
        unpublished.unwrap_or("")
    ))
}

/// Same-named columns map implicitly: every green column neither ignored nor mapped in
/// `[columns]` that blue has (a generated blue column counts as used, unwritten).
fn implicit(cx: &Context, fed: &mut Fed) {
    let ignored = |n: &str| cx.file.is_some_and(|f| f.ignore.iter().any(|i| i == n));
    let mapped = |n: &str| cx.file.is_some_and(|f| f.columns.contains_key(n));
    for (i, col) in cx.green.columns.iter().enumerate() {
        if ignored(&col.name) {
            fed.used[i] = true;
            continue;
        }
        if mapped(&col.name) {
            continue;
        }
        match cx.blue.column(&col.name) {
            Some(b) if b.generated => fed.used[i] = true,
            Some(b) => {
                fed.used[i] = true;
                fed.overriding |= b.identity_always;
                fed.targets.push(target(b, Value::Green(i), vec![i], false));
            }
            None => {}
        }
    }
}
