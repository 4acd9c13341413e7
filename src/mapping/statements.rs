//! SQL text for applying one change to blue, generated from a [`TablePlan`].
//!
//! Green's row enters every statement as a one-row relation `g`, one text parameter per green
//! column cast to green's type (`SELECT $1::"pg_catalog"."int4" AS "id", ...`), exactly as
//! PostgreSQL's own apply worker feeds text through the type's input function. Blue columns
//! then receive `g."column"` or the mapping's expression, so expressions see green's columns
//! typed as green declares them, and assignment to blue's column applies blue's type and
//! modifiers. All identifiers are quoted.
//!
//! When green sends values in binary ([`Wire::Binary`], see [`super::wire`]) the same
//! statements take typed parameters instead: `$1::"pg_catalog"."int4"` is then an `int4`
//! parameter blue reads with its receive function, the cast a no-op; batches unnest arrays of
//! green's types instead of `text[]`; values nothing reads are passed as `bytea`, whatever
//! their form.

use super::{KeyColumn, KeyPlan, TablePlan};
use crate::sql::ident;

/// Which tuple a parameter's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum From {
    New,
    Old,
}

/// One `$n`: a green column, from the new or the old tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// Index into green's columns.
    pub green: usize,
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
    /// Update the listed targets of the row found by the old key.
    Update(Vec<usize>),
    /// Delete the row found by the old key.
    Delete,
    /// A key change with the whole new row known: move the row found by the old key to the
    /// new one (a row already holding the new key makes it fail loudly, never overwritten), or
    /// upsert the new row when the old one is gone (replay).
    MoveOrUpsert,
    /// For tables with a filter: delete the row found by the old key when the new row no
    /// longer passes the filter.
    DeleteIfFilteredOut,
    /// [`Shape::Upsert`] or [`Shape::Insert`] for many rows at once: one `text[]` parameter per
    /// green column, unnested into `g`.
    BatchInsert { upsert: bool },
    /// Delete many rows by unique key: one `text[]` parameter per key column.
    BatchDelete,
}

/// The form of the values a statement's parameters carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Wire {
    /// Text parameters cast to green's types, as PostgreSQL's own apply worker feeds text
    /// through the type's input function.
    #[default]
    Text,
    /// Parameters of green's types (as blue names them), sent in binary; the server infers
    /// their types from the casts.
    Binary,
}

const BYTEA: &str = "\"pg_catalog\".\"bytea\"";

struct Builder<'a> {
    plan: &'a TablePlan,
    params: Vec<Param>,
    wire: Wire,
}

impl Builder<'_> {
    fn bind(&mut self, green: usize, from: From) -> String {
        self.params.push(Param { green, from });
        format!("${}::{}", self.params.len(), self.plan.green.columns[green].type_sql)
    }

    /// `SELECT $1::type AS "col", ...` over every green column of the new tuple (as text when
    /// nothing reads it).
    fn new_row(&mut self) -> String {
        let cols: Vec<String> = (0..self.plan.green.columns.len())
            .map(|g| {
                let value = if self.plan.read[g] {
                    self.bind(g, From::New)
                } else {
                    self.params.push(Param {
                        green: g,
                        from: From::New,
                    });
                    let unread = match self.wire {
                        Wire::Text => "text",
                        Wire::Binary => BYTEA,
                    };
                    format!("${}::{unread}", self.params.len())
                };
                format!("{value} AS {}", ident(&self.plan.green.columns[g].name))
            })
            .collect();
        format!("SELECT {}", cols.join(", "))
    }

    fn column(&self, target: usize) -> String {
        ident(&self.plan.targets[target].blue_name)
    }

    /// What target `t` receives, in a query over `g`.
    fn value(&self, t: usize) -> String {
        self.plan.targets[t].value.sql(&self.plan.green, Some("g"))
    }

    /// Green's old value of a key column as blue stores it: cast through green's type to
    /// blue's with the column's modifier, as assignment did when the row was written (green's
    /// 1.005 is blue's `numeric(12,2)` 1.01, and only that finds the row).
    fn old_key_value(&mut self, k: super::KeyColumn) -> String {
        let value = self.bind(k.green, From::Old);
        let stored = &self.plan.targets[k.target].stored_type;
        if *stored == self.plan.green.columns[k.green].type_sql {
            value
        } else {
            format!("CAST({value} AS {stored})")
        }
    }

    /// The condition finding the row by the old tuple's key values.
    fn locate(&mut self) -> String {
        match &self.plan.key {
            KeyPlan::Unique(cols) => {
                let conds: Vec<String> = cols
                    .iter()
                    .map(|k| format!("{} = {}", self.column(k.target), self.old_key_value(*k)))
                    .collect();
                conds.join(" AND ")
            }
            KeyPlan::Match(cols) => {
                // Types without an equality operator (json, point, ...) compare by their text
                // form.
                let conds: Vec<String> = cols
                    .iter()
                    .map(|k| {
                        let value = self.old_key_value(*k);
                        if self.plan.targets[k.target].comparable {
                            format!("{} IS NOT DISTINCT FROM {value}", self.column(k.target))
                        } else {
                            format!("{}::text IS NOT DISTINCT FROM ({value})::text", self.column(k.target))
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

    /// `SELECT u.c1::type AS "col1", ... FROM unnest($1::text[], ...) AS u(c1, ...)`: many new
    /// rows, as [`Builder::new_row`] makes one.
    fn new_rows(&mut self) -> String {
        let n = self.plan.green.columns.len();
        let mut arrays = Vec::with_capacity(n);
        let mut cols = Vec::with_capacity(n);
        for g in 0..n {
            self.params.push(Param {
                green: g,
                from: From::New,
            });
            arrays.push(format!(
                "${}::{}[]",
                self.params.len(),
                self.element(g, self.plan.read[g])
            ));
            let cast = if self.plan.read[g] {
                format!("::{}", self.plan.green.columns[g].type_sql)
            } else {
                String::new()
            };
            cols.push(format!("u.c{g}{cast} AS {}", ident(&self.plan.green.columns[g].name)));
        }
        let names: Vec<String> = (0..n).map(|g| format!("c{g}")).collect();
        format!(
            "SELECT {} FROM unnest({}) AS u({})",
            cols.join(", "),
            arrays.join(", "),
            names.join(", ")
        )
    }

    /// The element type of a batch's array for green column `g`: `text`, or in binary green's
    /// type (`bytea` when nothing reads the column).
    fn element(&self, g: usize, read: bool) -> &str {
        match (self.wire, read) {
            (Wire::Text, _) => "text",
            (Wire::Binary, true) => &self.plan.green.columns[g].type_sql,
            (Wire::Binary, false) => BYTEA,
        }
    }

    /// ` AND (filter)` / ` WHERE (filter)` over `g`, or nothing.
    fn filter(&self, joiner: &str) -> String {
        self.plan
            .filter
            .as_ref()
            .map_or(String::new(), |f| format!(" {joiner} ({f})"))
    }

    /// ` AND EXISTS (SELECT 1 FROM g WHERE filter)`, or nothing.
    fn filter_exists(&self) -> String {
        self.plan
            .filter
            .as_ref()
            .map_or(String::new(), |f| format!(" AND EXISTS (SELECT 1 FROM g WHERE ({f}))"))
    }

    /// `INSERT INTO t (...) SELECT ... FROM <from><tail>`, plus the upsert clause when asked
    /// and blue has a unique key.
    fn insert(&self, from: &str, tail: &str, upsert: bool) -> String {
        let all: Vec<usize> = (0..self.plan.targets.len()).collect();
        let names: Vec<String> = all.iter().map(|&t| self.column(t)).collect();
        let values: Vec<String> = all.iter().map(|&t| self.value(t)).collect();
        let overriding = if self.plan.overriding_system_value {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let mut text = format!(
            "INSERT INTO {} ({}){overriding} SELECT {} FROM {from}{tail}",
            self.plan.blue_sql,
            names.join(", "),
            values.join(", ")
        );
        if let (true, KeyPlan::Unique(key)) = (upsert, &self.plan.key) {
            let conflict: Vec<String> = key.iter().map(|k| self.column(k.target)).collect();
            let updates: Vec<String> = all
                .iter()
                .filter(|&&t| !key.iter().any(|k| k.target == t) && can_update(self.plan, t))
                .map(|&t| format!("{0} = EXCLUDED.{0}", self.column(t)))
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

    /// `SET (a, b) = (SELECT <a>, <b> FROM g)`.
    fn set(&self, targets: &[usize]) -> String {
        let names: Vec<String> = targets.iter().map(|&t| self.column(t)).collect();
        let values: Vec<String> = targets.iter().map(|&t| self.value(t)).collect();
        format!("SET ({}) = (SELECT {} FROM g)", names.join(", "), values.join(", "))
    }

    /// [`Shape::MoveOrUpsert`]: move the row found by the old key, or upsert the new one.
    fn move_or_upsert(&mut self) -> String {
        let row = self.new_row();
        let locate = self.locate();
        let moved = format!(
            "moved AS (UPDATE {} {} WHERE {locate}{} RETURNING 1)",
            self.plan.blue_sql,
            self.set(&updatable(self.plan)),
            self.filter_exists()
        );
        let insert = self.insert(
            "g",
            &format!(" WHERE NOT EXISTS (SELECT 1 FROM moved){}", self.filter("AND")),
            true,
        );
        format!("WITH g AS ({row}), {moved} {insert}")
    }

    /// [`Shape::BatchDelete`]: one `text[]` parameter per key column, unnested.
    fn batch_delete(&mut self) -> String {
        let key = self.plan.key.columns();
        let mut arrays = Vec::new();
        let mut values = Vec::new();
        for (i, k) in key.iter().enumerate() {
            self.params.push(Param {
                green: k.green,
                from: From::Old,
            });
            arrays.push(format!("${}::{}[]", self.params.len(), self.element(k.green, true)));
            let green_type = &self.plan.green.columns[k.green].type_sql;
            let stored = &self.plan.targets[k.target].stored_type;
            values.push(format!("CAST(u.k{i}::{green_type} AS {stored})"));
        }
        let columns: Vec<String> = key.iter().map(|k| self.column(k.target)).collect();
        let names: Vec<String> = (0..key.len()).map(|i| format!("k{i}")).collect();
        format!(
            "DELETE FROM {} WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
            self.plan.blue_sql,
            columns.join(", "),
            values.join(", "),
            arrays.join(", "),
            names.join(", ")
        )
    }
}

/// Whether UPDATE may write target `t`: not insert-only, not a GENERATED ALWAYS identity.
pub fn can_update(plan: &TablePlan, t: usize) -> bool {
    !plan.targets[t].insert_only && !plan.targets[t].identity_always
}

/// Targets written when a row is moved or updated in full.
pub fn updatable(plan: &TablePlan) -> Vec<usize> {
    (0..plan.targets.len()).filter(|&t| can_update(plan, t)).collect()
}

/// Generates the statement for `shape`, for text values.
pub fn build(plan: &TablePlan, shape: &Shape) -> Sql {
    build_for(plan, shape, Wire::Text)
}

/// Generates the statement for `shape`, for values in `wire`'s form.
pub fn build_for(plan: &TablePlan, shape: &Shape, wire: Wire) -> Sql {
    let mut b = Builder {
        plan,
        params: Vec::new(),
        wire,
    };
    let text = match shape {
        Shape::Upsert | Shape::Insert => {
            let row = b.new_row();
            b.insert(&format!("({row}) AS g"), &b.filter("WHERE"), *shape == Shape::Upsert)
        }
        Shape::Update(set) => {
            let row = b.new_row();
            let locate = b.locate();
            format!(
                "WITH g AS ({row}) UPDATE {} {} WHERE {locate}{}",
                plan.blue_sql,
                b.set(set),
                b.filter_exists()
            )
        }
        Shape::MoveOrUpsert => b.move_or_upsert(),
        Shape::Delete => {
            let locate = b.locate();
            format!("DELETE FROM {} WHERE {locate}", plan.blue_sql)
        }
        Shape::BatchInsert { upsert } => {
            let rows = b.new_rows();
            b.insert(&format!("({rows}) AS g"), &b.filter("WHERE"), *upsert)
        }
        Shape::BatchDelete => b.batch_delete(),
        Shape::DeleteIfFilteredOut => {
            let row = b.new_row();
            let locate = b.locate();
            let filter = plan.filter.as_deref().unwrap_or("true");
            format!(
                "WITH g AS ({row}) DELETE FROM {} WHERE {locate} AND NOT EXISTS (SELECT 1 FROM g WHERE ({filter}))",
                plan.blue_sql
            )
        }
    };
    Sql { text, params: b.params }
}

/// Green columns a relation of green rows must carry for `plan` (the ones anything reads),
/// as indexes into green's columns. The initial copy and `verify` move only these.
pub fn needed_columns(plan: &TablePlan) -> Vec<usize> {
    (0..plan.green.columns.len()).filter(|&g| plan.read[g]).collect()
}

/// `CREATE TEMP TABLE` for green rows on blue: the needed columns, named and typed as green
/// declares them (so expressions see them exactly as in the apply statements).
pub fn staging_table(plan: &TablePlan, name: &str) -> String {
    let cols: Vec<String> = needed_columns(plan)
        .iter()
        .map(|&g| {
            let c = &plan.green.columns[g];
            format!("{} {}", ident(&c.name), c.type_sql)
        })
        .collect();
    format!("CREATE TEMP TABLE {} ({})", ident(name), cols.join(", "))
}

/// `COPY (SELECT <needed columns> FROM green table <tail>) TO STDOUT`, run on green.
pub fn copy_out(plan: &TablePlan, tail: &str) -> String {
    let cols: Vec<String> = needed_columns(plan)
        .iter()
        .map(|&g| ident(&plan.green.columns[g].name))
        .collect();
    format!(
        "COPY (SELECT {} FROM {}{tail}) TO STDOUT",
        cols.join(", "),
        crate::sql::qualified(&plan.green.namespace, &plan.green.name)
    )
}

/// The publication's row filter, as a condition over green's table, when it has one: the rows
/// the stream carries, which a copy or a comparison must read too.
pub fn published_rows(plan: &TablePlan) -> Option<String> {
    let filter = plan.green.facts.as_ref()?.row_filter.as_ref()?;
    Some(format!("({filter})"))
}

/// ` WHERE a AND b`, or nothing without conditions.
pub fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// `INSERT INTO blue (...) SELECT <mapped> FROM <from> AS g [WHERE filter]`, with the upsert
/// clause when asked and blue has a unique key: green rows already on blue (as a relation,
/// for example a staging table) written through the mapping.
pub fn insert_from(plan: &TablePlan, from: &str, upsert: bool) -> String {
    let b = Builder {
        plan,
        params: Vec::new(),
        wire: Wire::Text,
    };
    b.insert(&format!("{from} AS g"), &b.filter("WHERE"), upsert)
}

/// A green row's key as `blue_col=value, ...` (NULL as `NULL`), each green key column's text
/// given by `text` from its name (`s."id"` over a text stage, `g."id"::text` over a typed one):
/// how the row-by-row checks name a row.
pub fn green_key_text(plan: &TablePlan, text: impl Fn(&str) -> String) -> String {
    key_text(plan, |k| {
        format!(
            "{} || coalesce({}, 'NULL')",
            crate::sql::literal(&format!("{}=", plan.targets[k.target].blue_name)),
            text(&plan.green.columns[k.green].name)
        )
    })
}

/// `concat_ws(', ', ...)` of `part` for each key column, in key order.
pub fn key_text(plan: &TablePlan, part: impl Fn(&KeyColumn) -> String) -> String {
    let parts: Vec<String> = plan.key.columns().iter().map(part).collect();
    format!("concat_ws(', ', {})", parts.join(", "))
}

/// What blue column `t` receives, over a green row `g`, cast to blue's type with the column's
/// modifier (`numeric(12,2)` rounds as assignment does): the value the apply path stores.
pub fn mapped_value(plan: &TablePlan, t: usize) -> String {
    let b = Builder {
        plan,
        params: Vec::new(),
        wire: Wire::Text,
    };
    format!("CAST({} AS {})", b.value(t), plan.targets[t].stored_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{GreenColumn, GreenTable, KeyColumn, Target, Value};
    use crate::protocol::pgoutput::ReplicaIdentity;

    const INT: &str = "\"pg_catalog\".\"int4\"";

    fn plan(key: KeyPlan) -> TablePlan {
        let green = GreenTable {
            oid: 1,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: ["id", "a", "Odd\"Name"]
                .iter()
                .map(|n| GreenColumn {
                    name: n.to_string(),
                    type_sql: INT.into(),
                    is_key: *n == "id",
                })
                .collect(),
            facts: None,
        };
        let target = |g: usize, name: &str| Target {
            blue_name: name.into(),
            blue_type: INT.into(),
            stored_type: INT.into(),
            value: Value::Green(g),
            depends: vec![g],
            insert_only: false,
            comparable: true,
            identity_always: false,
        };
        TablePlan {
            green,
            green_name: "public.t".into(),
            blue_name: "public.t".into(),
            blue_sql: "\"public\".\"t\"".into(),
            targets: vec![target(0, "id"), target(1, "a"), target(2, "Odd\"Name")],
            key,
            filter: None,
            overriding_system_value: false,
            blue_partitioned: false,
            file: None,
            partition_of: None,
            read: vec![true; 3],
        }
    }

    fn unique() -> KeyPlan {
        KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }])
    }

    #[test]
    fn upsert_reads_green_row_and_overwrites_non_key_columns() {
        let sql = build(&plan(unique()), &Shape::Upsert);
        assert_eq!(
            sql.text,
            format!(
                "INSERT INTO \"public\".\"t\" (\"id\", \"a\", \"Odd\"\"Name\") SELECT g.\"id\", g.\"a\", g.\"Odd\"\"Name\" \
                 FROM (SELECT $1::{INT} AS \"id\", $2::{INT} AS \"a\", $3::{INT} AS \"Odd\"\"Name\") AS g \
                 ON CONFLICT (\"id\") DO UPDATE SET \"a\" = EXCLUDED.\"a\", \"Odd\"\"Name\" = EXCLUDED.\"Odd\"\"Name\""
            )
        );
        assert_eq!(sql.params.len(), 3);
    }

    #[test]
    fn update_binds_new_row_then_old_key() {
        let sql = build(&plan(unique()), &Shape::Update(vec![1]));
        assert_eq!(
            sql.text,
            format!(
                "WITH g AS (SELECT $1::{INT} AS \"id\", $2::{INT} AS \"a\", $3::{INT} AS \"Odd\"\"Name\") \
                 UPDATE \"public\".\"t\" SET (\"a\") = (SELECT g.\"a\" FROM g) WHERE \"id\" = $4::{INT}"
            )
        );
        assert_eq!(
            sql.params[3],
            Param {
                green: 0,
                from: From::Old
            }
        );
    }

    #[test]
    fn keyless_delete_removes_exactly_one_matching_row() {
        let sql = build(
            &plan(KeyPlan::Match(vec![
                KeyColumn { target: 0, green: 0 },
                KeyColumn { target: 1, green: 1 },
            ])),
            &Shape::Delete,
        );
        assert_eq!(
            sql.text,
            format!(
                "DELETE FROM \"public\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM \"public\".\"t\" \
                 WHERE \"id\" IS NOT DISTINCT FROM $1::{INT} AND \"a\" IS NOT DISTINCT FROM $2::{INT} LIMIT 1)"
            )
        );
    }

    #[test]
    fn key_change_moves_the_row_or_upserts_on_replay() {
        let sql = build(&plan(unique()), &Shape::MoveOrUpsert);
        assert!(sql.text.starts_with("WITH g AS (SELECT $1::"), "{}", sql.text);
        assert!(sql.text.contains(
            "moved AS (UPDATE \"public\".\"t\" SET (\"id\", \"a\", \"Odd\"\"Name\") = (SELECT g.\"id\", g.\"a\", \
             g.\"Odd\"\"Name\" FROM g) WHERE \"id\" = $4::\"pg_catalog\".\"int4\" RETURNING 1)"
        ));
        assert!(sql
            .text
            .contains("FROM g WHERE NOT EXISTS (SELECT 1 FROM moved) ON CONFLICT (\"id\") DO UPDATE"));
    }

    #[test]
    fn expressions_filters_and_insert_only_columns() {
        let mut p = plan(unique());
        p.targets[1].value = Value::Expr("a * 2".into());
        p.targets[2].insert_only = true;
        p.filter = Some("id > 10".into());
        let sql = build(&p, &Shape::Upsert).text;
        assert!(
            sql.contains("SELECT g.\"id\", (a * 2), g.\"Odd\"\"Name\" FROM (SELECT"),
            "{sql}"
        );
        assert!(
            sql.contains(") AS g WHERE (id > 10) ON CONFLICT (\"id\") DO UPDATE SET \"a\" = EXCLUDED.\"a\""),
            "{sql}"
        );
        assert!(
            !sql.contains("EXCLUDED.\"Odd"),
            "insert-only columns are not updated: {sql}"
        );
        let out = build(&p, &Shape::DeleteIfFilteredOut).text;
        assert!(
            out.ends_with("AND NOT EXISTS (SELECT 1 FROM g WHERE (id > 10))"),
            "{out}"
        );
    }

    #[test]
    fn binary_statements_take_green_types_and_unread_values_as_bytea() {
        let mut p = plan(unique());
        p.read[2] = false;
        let one = build_for(&p, &Shape::Upsert, Wire::Binary).text;
        assert!(
            one.contains(&format!(
                "$1::{INT} AS \"id\", $2::{INT} AS \"a\", $3::{BYTEA} AS \"Odd"
            )),
            "{one}"
        );
        let many = build_for(&p, &Shape::BatchInsert { upsert: true }, Wire::Binary).text;
        assert!(
            many.contains(&format!(
                "FROM unnest($1::{INT}[], $2::{INT}[], $3::{BYTEA}[]) AS u(c0, c1, c2)"
            )),
            "{many}"
        );
        let delete = build_for(&p, &Shape::BatchDelete, Wire::Binary).text;
        assert!(delete.contains(&format!("unnest($1::{INT}[])")), "{delete}");
        assert!(build(&p, &Shape::BatchDelete).text.contains("unnest($1::text[])"));
    }

    #[test]
    fn all_key_table_upsert_does_nothing_on_conflict() {
        let mut p = plan(unique());
        p.targets.truncate(1);
        assert!(build(&p, &Shape::Upsert)
            .text
            .ends_with("ON CONFLICT (\"id\") DO NOTHING"));
    }
}
