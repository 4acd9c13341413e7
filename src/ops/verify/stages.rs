//! The temporary tables on blue that green's rows are staged in, kept for the session and
//! reused by every table with the same columns (thousands of tables share a few shapes):
//! creating and dropping a stage per table changed blue's catalog twice per table. A few
//! are kept, the least recently used dropped, so blue's temporary space holds at most a few
//! chunks.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio_postgres::Client;

use crate::mapping::statements;
use crate::mapping::TablePlan;
use crate::sql;

/// Stages kept at once.
const KEPT: usize = 8;
/// A stage that took up to this many rows since it was last truncated is emptied by DELETE.
const DELETE_UP_TO: u64 = 10_000;

/// The statement emptying stage `name` (quoted) that took `staged` rows since it was last
/// truncated, and whether it truncates: none when the stage is empty; DELETE while few rows
/// went through (TRUNCATE gives the table new storage, a change to blue's catalog per table);
/// TRUNCATE beyond, since nothing vacuums a temporary table and deleted rows would stay.
pub(super) fn emptying(name: &str, staged: u64) -> Option<(String, bool)> {
    match staged {
        0 => None,
        n if n <= DELETE_UP_TO => Some((format!("DELETE FROM {name}"), false)),
        _ => Some((format!("TRUNCATE {name}"), true)),
    }
}

#[derive(Default)]
pub(super) struct Stages {
    /// Per shape (the stage's column definitions), its name; least recently used first.
    kept: Mutex<VecDeque<(String, String)>>,
    created: Mutex<usize>,
    /// Per stage, the rows it took since it was last truncated.
    staged: Mutex<HashMap<String, u64>>,
    /// Whether each type (as green names it) sorts by collation.
    collated: Mutex<HashMap<String, bool>>,
    /// Whether each type (as green names it) is staged as text (see [`Stages::loose`]).
    loose: Mutex<HashMap<String, bool>>,
}

/// `CREATE TEMP TABLE name` for the columns `plan` reads, typed as green declares them but
/// `text` where `loose` says so (per green column).
fn definition(plan: &TablePlan, loose: &[bool], name: &str) -> String {
    let cols: Vec<String> = statements::needed_columns(plan)
        .iter()
        .map(|&g| {
            let c = &plan.green.columns[g];
            let ty = if loose[g] { "text" } else { c.type_sql.as_str() };
            format!("{} {ty}", sql::ident(&c.name))
        })
        .collect();
    format!("CREATE TEMP TABLE {} ({})", sql::ident(name), cols.join(", "))
}

impl Stages {
    /// The stage for `plan`'s columns, created when no kept stage has them. It may hold rows
    /// of an earlier table: a pass empties it first.
    pub(super) async fn stage_for(
        &self,
        blue: &Client,
        plan: &TablePlan,
        loose: &[bool],
    ) -> Result<String, tokio_postgres::Error> {
        let shape = definition(plan, loose, "");
        let (name, evicted) = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = kept.iter().position(|(s, _)| *s == shape) {
                let found = kept.remove(at).expect("position is in range");
                let name = found.1.clone();
                kept.push_back(found);
                return Ok(name);
            }
            let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            *created += 1;
            let name = format!("{}_{}", super::STAGE, *created);
            let evicted = if kept.len() >= KEPT { kept.pop_front() } else { None };
            kept.push_back((shape, name.clone()));
            (name, evicted)
        };
        let mut sql = String::new();
        if let Some((_, old)) = &evicted {
            self.staged.lock().unwrap_or_else(|e| e.into_inner()).remove(old);
            sql.push_str(&format!("DROP TABLE IF EXISTS pg_temp.{}; ", sql::ident(old)));
        }
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS pg_temp.{}; {}",
            sql::ident(&name),
            definition(plan, loose, &name)
        ));
        if let Err(e) = blue.batch_execute(&sql).await {
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(_, n)| *n != name);
            return Err(e);
        }
        self.set_staged(&name, 0);
        Ok(name)
    }

    /// The rows stage `name` took since it was last truncated (as if full when unknown).
    pub(super) fn staged(&self, name: &str) -> u64 {
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        staged.get(name).copied().unwrap_or(u64::MAX)
    }

    pub(super) fn set_staged(&self, name: &str, rows: u64) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), rows);
    }

    /// Per key column of `plan`: whether its type sorts by collation, asked of blue once per
    /// type.
    pub(super) async fn collated(&self, blue: &Client, plan: &TablePlan) -> Result<Vec<bool>, tokio_postgres::Error> {
        let mut out = Vec::new();
        for k in plan.key.columns() {
            let ty = &plan.green.columns[k.green].type_sql;
            let known = self.collated.lock().unwrap_or_else(|e| e.into_inner()).get(ty).copied();
            let collated = match known {
                Some(c) => c,
                None => {
                    let c: bool = blue
                        .query_one(
                            "SELECT coalesce((SELECT typcollation <> 0 FROM pg_type WHERE oid = to_regtype($1)), false)",
                            &[&ty],
                        )
                        .await?
                        .get(0);
                    self.collated
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ty.clone(), c);
                    c
                }
            };
            out.push(collated);
        }
        Ok(out)
    }
}

impl Stages {
    /// The stage for `plan`, which of its columns hold text ([`Stages::loose`]), and per
    /// key column whether its type sorts by collation.
    pub(super) async fn prepare(
        &self,
        blue: &Client,
        plan: &TablePlan,
    ) -> Result<(String, Vec<bool>, Vec<bool>), tokio_postgres::Error> {
        let loose = self.loose(blue, plan).await?;
        let stage = self.stage_for(blue, plan, &loose).await?;
        Ok((stage, self.collated(blue, plan).await?, loose))
    }

    /// Per green column of `plan`: whether it is staged as text and cast to its type only
    /// when compared. So are the columns of user-defined types (enums, domains, their
    /// arrays) outside the key: blue's type of that name may not hold green's value (a label
    /// blue's enum lacks), which then fails that row's comparison, not the COPY of its chunk.
    pub(super) async fn loose(&self, blue: &Client, plan: &TablePlan) -> Result<Vec<bool>, tokio_postgres::Error> {
        let key: Vec<usize> = plan.key.columns().iter().map(|k| k.green).collect();
        let mut out = vec![false; plan.green.columns.len()];
        for g in statements::needed_columns(plan) {
            if key.contains(&g) {
                continue;
            }
            let ty = &plan.green.columns[g].type_sql;
            let known = self.loose.lock().unwrap_or_else(|e| e.into_inner()).get(ty).copied();
            out[g] = match known {
                Some(l) => l,
                None => {
                    let l: bool = blue
                        .query_one(
                            "SELECT coalesce((SELECT typnamespace <> 'pg_catalog'::regnamespace FROM pg_type \
                             WHERE oid = to_regtype($1)), false)",
                            &[&ty],
                        )
                        .await?
                        .get(0);
                    self.loose
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ty.clone(), l);
                    l
                }
            };
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_emptied_by_delete_while_few_rows_went_through() {
        assert_eq!(emptying("\"s\"", 0), None);
        assert_eq!(emptying("\"s\"", 5), Some(("DELETE FROM \"s\"".into(), false)));
        assert_eq!(
            emptying("\"s\"", DELETE_UP_TO + 1),
            Some(("TRUNCATE \"s\"".into(), true))
        );
        assert_eq!(emptying("\"s\"", u64::MAX), Some(("TRUNCATE \"s\"".into(), true)));
    }
}
