//! The second step of a plan: how blue finds the row a green update or delete is about. With
//! a unique key on blue (the one `[key]` names, or blue's default), by that key, each column a
//! plain copy of a green replica-identity column; without one, by matching every plain copy of
//! an identity column.

use std::collections::{BTreeMap, BTreeSet};

use super::{Context, Fed};
use crate::error::{Error, Result};
use crate::mapping::{KeyColumn, KeyPlan, Target, Value};

/// The key plan; may add a target for a blue key column nothing fed yet.
pub(super) fn plan(cx: &Context, fed: &mut Fed) -> Result<KeyPlan> {
    let explicit = cx.file.map(|f| &f.key).filter(|k| !k.is_empty());
    match explicit {
        Some(named) => {
            let blue_key = named_key(cx, named)?;
            unique(cx, fed, blue_key, Some(named))
        }
        None => match &cx.blue.key {
            Some(blue_key) => unique(cx, fed, blue_key, None),
            None => matching(cx, fed),
        },
    }
}

/// `[key]` names the blue conflict key: the unique key with exactly those columns.
fn named_key<'a>(cx: &Context<'a>, named: &BTreeMap<String, String>) -> Result<&'a Vec<String>> {
    let wanted: BTreeSet<&String> = named.keys().collect();
    let found = cx
        .blue
        .unique_keys
        .iter()
        .find(|u| u.iter().collect::<BTreeSet<_>>() == wanted);
    found.ok_or_else(|| {
        let available: Vec<String> = cx
            .blue
            .unique_keys
            .iter()
            .map(|u| format!("({})", u.join(", ")))
            .collect();
        Error::definite(format!(
            "{}: [key] names {:?} but blue table {} has no primary key or unique index \
             (on NOT NULL columns, not deferrable, not partial) on exactly those columns; usable keys: {}",
            cx.where_fix,
            wanted,
            cx.blue_name,
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        ))
    })
}

/// Upsert and delete by `blue_key`, each column fed from the green column `[key]` names (or
/// the one feeding it, or the same-named one).
fn unique(
    cx: &Context,
    fed: &mut Fed,
    blue_key: &[String],
    named: Option<&BTreeMap<String, String>>,
) -> Result<KeyPlan> {
    let mut cols = Vec::new();
    for bk in blue_key {
        let green_col = match named {
            Some(k) => k.get(bk).cloned().ok_or_else(|| {
                Error::definite(format!(
                    "{}: [key] must give every column of blue's key ({}); {bk} is missing",
                    cx.where_fix,
                    blue_key.join(", ")
                ))
            })?,
            None => match fed
                .targets
                .iter()
                .find(|t| &t.blue_name == bk)
                .and_then(|t| t.value.copied())
            {
                Some(i) => cx.green.columns[i].name.clone(),
                None => bk.clone(),
            },
        };
        cols.push(unique_column(cx, fed, bk, &green_col, named.is_some())?);
    }
    Ok(KeyPlan::Unique(cols))
}

/// Blue key column `bk` fed from green column `green_col`, which must be part of green's
/// replica identity and reach `bk` as a plain copy; `named`: `[key]` says so.
fn unique_column(cx: &Context, fed: &mut Fed, bk: &str, green_col: &str, named: bool) -> Result<KeyColumn> {
    let (green, green_name, blue_name, where_fix) = (cx.green, &cx.green_name, &cx.blue_name, &cx.where_fix);
    let g = green.position(green_col).ok_or_else(|| {
        Error::definite(format!(
            "blue key column {blue_name}.{bk} needs green column {green_col}, which {green_name} does not have; \
             add it to [key] in {where_fix}"
        ))
    })?;
    if !green.columns[g].is_key {
        return Err(Error::definite(format!(
            "blue key column {blue_name}.{bk} comes from green column {green_name}.{green_col}, which is not \
             part of green's replica identity, so updates and deletes would not say which row they change; \
             run on green: ALTER TABLE {} REPLICA IDENTITY FULL (or key blue on green's key)",
            crate::sql::qualified(&green.namespace, &green.name)
        )));
    }
    let t = match fed.targets.iter().position(|t| t.blue_name == bk) {
        Some(t) if fed.targets[t].insert_only => {
            return Err(Error::definite(format!(
                "{where_fix}: blue key column {bk} cannot be on = \"insert\": a key change must move the row"
            )))
        }
        Some(t) if fed.targets[t].copies(g) => t,
        Some(_) => {
            return Err(Error::definite(format!(
                "{where_fix}: blue key column {bk} must be fed by green column {green_col} (a plain copy), \
                 not another column or an expression"
            )))
        }
        None => {
            fed.used[g] = true;
            let target = key_target(cx, bk, g);
            // `[key]` says green's column feeds it: over an ALWAYS identity, as a mapped column
            // is. A key column fed by nothing the file says (its green column ignored or the
            // blue column omitted) is still refused when blue generates it.
            fed.overriding |= named && target.identity_always;
            fed.targets.push(target);
            fed.targets.len() - 1
        }
    };
    Ok(KeyColumn { target: t, green: g })
}

/// A blue key column that nothing fed: a plain copy of green column `g`, typed as blue
/// declares it (as green does when blue's catalog does not list it).
fn key_target(cx: &Context, bk: &str, g: usize) -> Target {
    let b = cx.blue.column(bk);
    let green_type = &cx.green.columns[g].type_sql;
    Target {
        blue_name: bk.to_string(),
        blue_type: b.map_or_else(|| green_type.clone(), |c| c.type_sql.clone()),
        stored_type: b.map_or_else(|| green_type.clone(), |c| c.stored_type.clone()),
        value: Value::Green(g),
        depends: vec![g],
        insert_only: false,
        comparable: true,
        identity_always: b.is_some_and(|c| c.identity_always),
    }
}

/// No unique key on blue: match on plain copies that blue keeps in step with green (not
/// insert-only ones, not identity columns blue generates) of green's identity columns.
fn matching(cx: &Context, fed: &Fed) -> Result<KeyPlan> {
    let green = cx.green;
    let cols: Vec<KeyColumn> = fed
        .targets
        .iter()
        .enumerate()
        .filter(|(_, target)| !target.insert_only && !target.identity_always)
        .filter_map(|(t, target)| match target.value.copied() {
            Some(g) if green.columns[g].is_key => Some(KeyColumn { target: t, green: g }),
            _ => None,
        })
        .collect();
    if cols.is_empty() {
        return Err(Error::definite(format!(
            "blue table {} has no primary key and green table {} has no replica identity \
             that reaches blue, so updates and deletes cannot be matched; add a primary key on blue, or run \
             on green: ALTER TABLE {} REPLICA IDENTITY FULL",
            cx.blue_name,
            cx.green_name,
            crate::sql::qualified(&green.namespace, &green.name)
        )));
    }
    Ok(KeyPlan::Match(cols))
}
