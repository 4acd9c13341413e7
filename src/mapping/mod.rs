//! How a green table's rows become a blue table's rows.
//!
//! A [`TablePlan`] is resolved from green's Relation message and blue's live catalog. Planning
//! is pure: it validates that the shapes fit (every green column lands somewhere, blue's key can
//! be computed from what green sends for updates and deletes) and says exactly what does not,
//! naming table and column. Statement text is generated from the plan in [`statements`].
//!
//! Today tables map by name: the same schema-qualified table on both sides, columns matched by
//! name. Blue columns that green lacks keep blue's default on insert and are left alone on update.

pub mod catalog;
pub mod file;
pub mod statements;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::protocol::pgoutput::{Relation, ReplicaIdentity};
use catalog::BlueTable;

/// How a green column lands on blue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Position in green's Relation message (and so in every tuple).
    pub green_index: usize,
    pub green_name: String,
    pub blue_name: String,
    /// Blue's type as a quoted, schema-qualified name without modifiers, used to cast the
    /// text value; assignment to the column then applies its typmod.
    pub blue_type: String,
    /// Whether comparing values with `=`/`IS NOT DISTINCT FROM` works for this type.
    pub comparable: bool,
}

/// How blue finds the row a green update or delete is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlan {
    /// Blue has a primary key (or a unique index on NOT NULL columns): upsert and delete by it.
    /// Indexes into [`TablePlan::columns`].
    Unique(Vec<usize>),
    /// No unique key on blue: the first row whose listed columns equal the old values (all
    /// columns under REPLICA IDENTITY FULL). Indexes into [`TablePlan::columns`].
    Match(Vec<usize>),
}

/// Everything needed to write one green table's changes to blue.
#[derive(Clone, Debug)]
pub struct TablePlan {
    pub green_oid: u32,
    /// `schema.table` on green, for messages.
    pub green_name: Arc<str>,
    /// `schema.table` on blue, for messages.
    pub blue_name: String,
    /// `"schema"."table"` on blue, for SQL.
    pub blue_sql: String,
    /// Number of columns in green's tuples.
    pub green_columns: usize,
    pub columns: Vec<ColumnPlan>,
    pub key: KeyPlan,
    pub replica_identity: ReplicaIdentity,
    /// Blue has a GENERATED ALWAYS identity column that we write.
    pub overriding_system_value: bool,
    /// The blue table is partitioned.
    pub blue_partitioned: bool,
}

impl TablePlan {
    pub fn key_columns(&self) -> &[usize] {
        match &self.key {
            KeyPlan::Unique(k) | KeyPlan::Match(k) => k,
        }
    }
}

/// Plans `relation` (green) onto `blue` by column name. `strict` requires every green column
/// to exist on blue.
pub fn plan_by_name(relation: &Relation, blue: &BlueTable, strict: bool) -> Result<Arc<TablePlan>> {
    let green_name = format!("{}.{}", relation.namespace, relation.name);
    let blue_name = format!("{}.{}", blue.schema, blue.name);
    let mut columns = Vec::new();
    let mut overriding = false;
    for (index, col) in relation.columns.iter().enumerate() {
        let Some(b) = blue.column(&col.name) else {
            if strict {
                return Err(Error::definite(format!(
                    "green column {green_name}.{} has no column of that name in blue table {blue_name}; \
                     add the column on blue, or set [mapping] strict = false to drop its values",
                    col.name
                )));
            }
            continue;
        };
        if b.generated {
            // Blue computes it; writing it is an error in PostgreSQL.
            continue;
        }
        overriding |= b.identity_always;
        columns.push(ColumnPlan {
            green_index: index,
            green_name: col.name.clone(),
            blue_name: b.name.clone(),
            blue_type: b.type_sql.clone(),
            comparable: b.comparable,
        });
    }
    let position = |name: &str| columns.iter().position(|c| c.blue_name == name);
    let green_key: Vec<&str> = relation
        .columns
        .iter()
        .filter(|c| c.is_key())
        .map(|c| c.name.as_str())
        .collect();
    let full = relation.replica_identity == ReplicaIdentity::Full;

    let key = match &blue.key {
        Some(blue_key) => {
            let mut idx = Vec::new();
            for name in blue_key {
                let Some(i) = position(name) else {
                    return Err(Error::definite(format!(
                        "blue table {blue_name} has key column {name} but green table {green_name} does not send it; \
                         add the column on green or give blue a key green can fill"
                    )));
                };
                if !full && !green_key.contains(&name.as_str()) {
                    return Err(Error::definite(format!(
                        "blue key column {blue_name}.{name} is not part of green's replica identity for {green_name}, \
                         so updates and deletes would not say which row they change; run on green: \
                         ALTER TABLE {} REPLICA IDENTITY FULL (or make its primary key match blue's)",
                        crate::sql::qualified(&relation.namespace, &relation.name)
                    )));
                }
                idx.push(i);
            }
            KeyPlan::Unique(idx)
        }
        None if full => KeyPlan::Match((0..columns.len()).collect()),
        None if !green_key.is_empty() => {
            let mut idx = Vec::new();
            for name in &green_key {
                match position(name) {
                    Some(i) => idx.push(i),
                    None => {
                        return Err(Error::definite(format!(
                            "green replica identity column {green_name}.{name} has no counterpart in blue table {blue_name}"
                        )))
                    }
                }
            }
            KeyPlan::Match(idx)
        }
        None => {
            return Err(Error::definite(format!(
                "blue table {blue_name} has no primary key and green table {green_name} has no replica identity, \
                 so updates and deletes cannot be matched; add a primary key on blue, or run on green: \
                 ALTER TABLE {} REPLICA IDENTITY FULL",
                crate::sql::qualified(&relation.namespace, &relation.name)
            )))
        }
    };
    Ok(Arc::new(TablePlan {
        green_oid: relation.oid,
        green_name: green_name.into(),
        blue_name,
        blue_sql: crate::sql::qualified(&blue.schema, &blue.name),
        green_columns: relation.columns.len(),
        columns,
        key,
        replica_identity: relation.replica_identity,
        overriding_system_value: overriding,
        blue_partitioned: blue.partitioned,
    }))
}

#[cfg(test)]
mod tests {
    use super::catalog::BlueColumn;
    use super::*;
    use crate::protocol::pgoutput::RelationColumn;

    fn relation(identity: ReplicaIdentity, cols: &[(&str, bool)]) -> Relation {
        Relation {
            xid: None,
            oid: 16384,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: identity,
            columns: cols
                .iter()
                .map(|(n, key)| RelationColumn {
                    flags: u8::from(*key),
                    name: n.to_string(),
                    type_oid: 23,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn blue(cols: &[&str], key: Option<&[&str]>) -> BlueTable {
        BlueTable {
            schema: "public".into(),
            name: "orders".into(),
            columns: cols
                .iter()
                .map(|n| BlueColumn {
                    name: n.to_string(),
                    type_sql: "\"pg_catalog\".\"int4\"".into(),
                    not_null: false,
                    has_default: false,
                    identity_always: false,
                    generated: false,
                    comparable: true,
                })
                .collect(),
            key: key.map(|k| k.iter().map(|s| s.to_string()).collect()),
            partitioned: false,
        }
    }

    #[test]
    fn same_shape_maps_by_name_and_key() {
        let plan = plan_by_name(
            &relation(ReplicaIdentity::Default, &[("id", true), ("qty", false)]),
            &blue(&["qty", "id", "note"], Some(&["id"])),
            true,
        )
        .unwrap();
        assert_eq!(plan.columns.len(), 2);
        assert_eq!(plan.key, KeyPlan::Unique(vec![0]));
        assert_eq!(plan.blue_sql, "\"public\".\"orders\"");
    }

    #[test]
    fn missing_blue_column_is_named_under_strict() {
        let err = plan_by_name(
            &relation(ReplicaIdentity::Default, &[("id", true), ("extra", false)]),
            &blue(&["id"], Some(&["id"])),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("public.orders.extra"), "{err}");
    }

    #[test]
    fn blue_key_outside_green_identity_needs_full() {
        let rel = relation(ReplicaIdentity::Default, &[("id", true), ("code", false)]);
        let err = plan_by_name(&rel, &blue(&["id", "code"], Some(&["code"])), true).unwrap_err();
        assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
        let full = relation(ReplicaIdentity::Full, &[("id", false), ("code", false)]);
        assert!(plan_by_name(&full, &blue(&["id", "code"], Some(&["code"])), true).is_ok());
    }

    #[test]
    fn keyless_tables_match_on_all_columns_under_full() {
        let plan = plan_by_name(
            &relation(ReplicaIdentity::Full, &[("a", false), ("b", false)]),
            &blue(&["a", "b"], None),
            true,
        )
        .unwrap();
        assert_eq!(plan.key, KeyPlan::Match(vec![0, 1]));
        let err = plan_by_name(
            &relation(ReplicaIdentity::Nothing, &[("a", false)]),
            &blue(&["a"], None),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no primary key"), "{err}");
    }
}
