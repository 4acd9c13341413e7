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

#[derive(Default)]
pub(super) struct Stages {
    /// Per shape (the stage's column definitions), its name; least recently used first.
    kept: Mutex<VecDeque<(String, String)>>,
    created: Mutex<usize>,
    /// Whether each type (as green names it) sorts by collation.
    collated: Mutex<HashMap<String, bool>>,
}

impl Stages {
    /// The stage for `plan`'s columns, created when no kept stage has them. It may hold rows
    /// of an earlier table: a pass empties it first.
    pub(super) async fn stage_for(&self, blue: &Client, plan: &TablePlan) -> Result<String, tokio_postgres::Error> {
        let shape = statements::staging_table(plan, "");
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
        if let Some((_, old)) = evicted {
            sql.push_str(&format!("DROP TABLE IF EXISTS pg_temp.{}; ", sql::ident(&old)));
        }
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS pg_temp.{}; {}",
            sql::ident(&name),
            statements::staging_table(plan, &name)
        ));
        if let Err(e) = blue.batch_execute(&sql).await {
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(_, n)| *n != name);
            return Err(e);
        }
        Ok(name)
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
