//! SQL text for applying one change to blue, generated from a [`TablePlan`].
//!
//! Every value is sent as a text parameter and cast to blue's type (`$1::"pg_catalog"."int4"`),
//! exactly as PostgreSQL's own apply worker feeds text through the type's input function. All
//! identifiers are quoted.

use super::{KeyPlan, TablePlan};
use crate::sql::ident;

/// Which tuple a parameter's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum From {
    New,
    Old,
}

/// One `$n`: a column of the plan, from the new or the old tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub column: usize,
    pub from: From,
}

/// A statement and the values it binds, in `$1..$n` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

/// The statement shapes; together with the table they key the prepared-statement cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Insert the whole new row; on a key conflict overwrite it (idempotent replay).
    Upsert,
    /// Plain insert (blue has no unique key).
    Insert,
    /// Update the listed columns of the row found by the old key.
    Update(Vec<usize>),
    /// Delete the row found by the old key.
    Delete,
    /// A key change with the whole new row known: move the row found by the old key to the
    /// new one (a row already holding the new key makes it fail loudly, never overwritten), or
    /// upsert the new row when the old one is gone (replay).
    MoveOrUpsert,
}

struct Builder<'a> {
    plan: &'a TablePlan,
    params: Vec<Param>,
}

impl Builder<'_> {
    fn bind(&mut self, column: usize, from: From) -> String {
        self.params.push(Param { column, from });
        format!("${}::{}", self.params.len(), self.plan.columns[column].blue_type)
    }

    fn column(&self, column: usize) -> String {
        ident(&self.plan.columns[column].blue_name)
    }

    /// `WHERE` clause finding the row by the old tuple's key values.
    fn locate(&mut self) -> String {
        match &self.plan.key {
            KeyPlan::Unique(cols) => {
                let conds: Vec<String> = cols
                    .iter()
                    .map(|&c| format!("{} = {}", self.column(c), self.bind(c, From::Old)))
                    .collect();
                conds.join(" AND ")
            }
            KeyPlan::Match(cols) => {
                // Types without an equality operator (json, point, ...) compare by their text
                // form, normalized through blue's type on both sides.
                let conds: Vec<String> = cols
                    .iter()
                    .map(|&c| {
                        let value = self.bind(c, From::Old);
                        if self.plan.columns[c].comparable {
                            format!("{} IS NOT DISTINCT FROM {value}", self.column(c))
                        } else {
                            format!("{}::text IS NOT DISTINCT FROM {value}::text", self.column(c))
                        }
                    })
                    .collect();
                // ctid is unique only within one partition or inheritance child: pair it with
                // tableoid so exactly one row is hit.
                format!(
                    "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {} LIMIT 1)",
                    self.plan.blue_sql,
                    conds.join(" AND ")
                )
            }
        }
    }
}

/// `INSERT INTO t (...) VALUES (...)`, or `... SELECT ... <source_tail>` when `source_tail` is
/// given, followed by the upsert clause for [`Shape::Upsert`]-like shapes on a unique key.
fn insert_text(
    plan: &TablePlan,
    b: &Builder<'_>,
    values: &[String],
    source_tail: Option<&str>,
    upsert: bool,
) -> String {
    let names: Vec<String> = (0..plan.columns.len()).map(|c| b.column(c)).collect();
    let overriding = if plan.overriding_system_value {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let source = match source_tail {
        Some(tail) => format!("SELECT {}{tail}", values.join(", ")),
        None => format!("VALUES ({})", values.join(", ")),
    };
    let mut text = format!(
        "INSERT INTO {} ({}){overriding} {source}",
        plan.blue_sql,
        names.join(", ")
    );
    if let (true, KeyPlan::Unique(key)) = (upsert, &plan.key) {
        let conflict: Vec<String> = key.iter().map(|&c| b.column(c)).collect();
        let updates: Vec<String> = (0..plan.columns.len())
            .filter(|c| !key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", b.column(c)))
            .collect();
        if updates.is_empty() {
            text.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", conflict.join(", ")));
        } else {
            text.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                conflict.join(", "),
                updates.join(", ")
            ));
        }
    }
    text
}

/// Generates the statement for `shape`.
pub fn build(plan: &TablePlan, shape: &Shape) -> Sql {
    let mut b = Builder {
        plan,
        params: Vec::new(),
    };
    let text = match shape {
        Shape::Upsert | Shape::Insert => {
            let values: Vec<String> = (0..plan.columns.len()).map(|c| b.bind(c, From::New)).collect();
            insert_text(plan, &b, &values, None, *shape == Shape::Upsert)
        }
        Shape::MoveOrUpsert => {
            let values: Vec<String> = (0..plan.columns.len()).map(|c| b.bind(c, From::New)).collect();
            let sets: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(c, v)| format!("{} = {v}", b.column(c)))
                .collect();
            let locate = b.locate();
            let insert = insert_text(plan, &b, &values, Some(" WHERE NOT EXISTS (SELECT 1 FROM moved)"), true);
            format!(
                "WITH moved AS (UPDATE {} SET {} WHERE {locate} RETURNING 1) {insert}",
                plan.blue_sql,
                sets.join(", ")
            )
        }
        Shape::Update(set) => {
            let sets: Vec<String> = set
                .iter()
                .map(|&c| format!("{} = {}", b.column(c), b.bind(c, From::New)))
                .collect();
            let locate = b.locate();
            format!("UPDATE {} SET {} WHERE {locate}", plan.blue_sql, sets.join(", "))
        }
        Shape::Delete => {
            let locate = b.locate();
            format!("DELETE FROM {} WHERE {locate}", plan.blue_sql)
        }
    };
    Sql { text, params: b.params }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::ColumnPlan;
    use crate::protocol::pgoutput::ReplicaIdentity;

    fn plan(key: KeyPlan) -> TablePlan {
        let col = |i: usize, name: &str| ColumnPlan {
            green_index: i,
            green_name: name.into(),
            blue_name: name.into(),
            blue_type: "\"pg_catalog\".\"int4\"".into(),
            comparable: true,
        };
        TablePlan {
            green_oid: 1,
            green_name: "public.t".into(),
            blue_name: "public.t".into(),
            blue_sql: "\"public\".\"t\"".into(),
            green_columns: 3,
            columns: vec![col(0, "id"), col(1, "a"), col(2, "Odd\"Name")],
            key,
            replica_identity: ReplicaIdentity::Default,
            overriding_system_value: false,
            blue_partitioned: false,
        }
    }

    #[test]
    fn upsert_overwrites_non_key_columns() {
        let sql = build(&plan(KeyPlan::Unique(vec![0])), &Shape::Upsert);
        assert_eq!(
            sql.text,
            "INSERT INTO \"public\".\"t\" (\"id\", \"a\", \"Odd\"\"Name\") VALUES ($1::\"pg_catalog\".\"int4\", \
             $2::\"pg_catalog\".\"int4\", $3::\"pg_catalog\".\"int4\") ON CONFLICT (\"id\") DO UPDATE SET \
             \"a\" = EXCLUDED.\"a\", \"Odd\"\"Name\" = EXCLUDED.\"Odd\"\"Name\""
        );
        assert_eq!(sql.params.len(), 3);
    }

    #[test]
    fn update_binds_new_values_then_old_key() {
        let sql = build(&plan(KeyPlan::Unique(vec![0])), &Shape::Update(vec![0, 1]));
        assert_eq!(
            sql.text,
            "UPDATE \"public\".\"t\" SET \"id\" = $1::\"pg_catalog\".\"int4\", \"a\" = $2::\"pg_catalog\".\"int4\" \
             WHERE \"id\" = $3::\"pg_catalog\".\"int4\""
        );
        assert_eq!(
            sql.params[2],
            Param {
                column: 0,
                from: From::Old
            }
        );
    }

    #[test]
    fn keyless_delete_removes_exactly_one_matching_row() {
        let sql = build(&plan(KeyPlan::Match(vec![0, 1])), &Shape::Delete);
        assert_eq!(
            sql.text,
            "DELETE FROM \"public\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM \"public\".\"t\" WHERE \
             \"id\" IS NOT DISTINCT FROM $1::\"pg_catalog\".\"int4\" AND \"a\" IS NOT DISTINCT FROM \
             $2::\"pg_catalog\".\"int4\" LIMIT 1)"
        );
    }

    #[test]
    fn key_change_moves_the_row_or_upserts_on_replay() {
        let sql = build(&plan(KeyPlan::Unique(vec![0])), &Shape::MoveOrUpsert);
        let t = "\"pg_catalog\".\"int4\"";
        assert_eq!(
            sql.text,
            format!(
                "WITH moved AS (UPDATE \"public\".\"t\" SET \"id\" = $1::{t}, \"a\" = $2::{t}, \"Odd\"\"Name\" = $3::{t} \
                 WHERE \"id\" = $4::{t} RETURNING 1) INSERT INTO \"public\".\"t\" (\"id\", \"a\", \"Odd\"\"Name\") \
                 SELECT $1::{t}, $2::{t}, $3::{t} WHERE NOT EXISTS (SELECT 1 FROM moved) ON CONFLICT (\"id\") DO UPDATE \
                 SET \"a\" = EXCLUDED.\"a\", \"Odd\"\"Name\" = EXCLUDED.\"Odd\"\"Name\""
            )
        );
        assert_eq!(
            sql.params[3],
            Param {
                column: 0,
                from: From::Old
            }
        );
    }

    #[test]
    fn all_key_table_upsert_does_nothing_on_conflict() {
        let mut p = plan(KeyPlan::Unique(vec![0]));
        p.columns.truncate(1);
        assert!(build(&p, &Shape::Upsert)
            .text
            .ends_with("ON CONFLICT (\"id\") DO NOTHING"));
    }
}
