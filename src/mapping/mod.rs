//! How a green table's rows become a blue table's rows.
//!
//! A [`TablePlan`] is resolved from green's Relation message and blue's live catalog. Planning
//! is pure: it validates that the shapes fit (every green column lands somewhere, blue's key can
//! be computed from what green sends for updates and deletes) and says exactly what does not,
//! naming table and column. Statement text is generated from the plan in [`statements`].
//!
//! A table maps through its mapping file (see [`file`]) or, with `implicit = true`, by name: the
//! same schema-qualified table, same-named columns. Blue columns that nothing feeds keep blue's
//! default on insert and are left alone on update. Expressions are SQL evaluated on blue with
//! green's columns in scope, typed as green declares them.
//!
//! - [`file`]: a mapping file as written; [`resolve`]: which file maps which table;
//! - [`catalog`], [`green_catalog`]: what blue's and green's catalogs say;
//! - `plan` (see [`plan()`]): the plan, by step: columns, key, filter;
//! - [`Value`]: how one blue column is fed; [`expression`]: which green columns an
//!   expression reads;
//! - [`lossy`]: whether a cast between two column types can lose information;
//! - [`statements`]: SQL text from a plan; [`signature`]: a plan as stored, compared and
//!   explained when it drifts; [`wire`]: whether green's values travel in binary.

pub mod catalog;
pub mod expression;
pub mod file;
pub mod green_catalog;
pub mod lossy;
pub mod on_green;
mod plan;
pub mod resolve;
pub mod signature;
pub mod statements;
mod value;
pub mod wire;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::protocol::pgoutput::{Relation, ReplicaIdentity};

pub use plan::plan;
pub use value::Value;

/// A green column as its Relation message describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenColumn {
    pub name: String,
    /// Green's type as a quoted, schema-qualified name without modifiers, as blue knows it.
    pub type_sql: String,
    /// Part of green's replica identity (every column under FULL).
    pub is_key: bool,
}

/// A green table: its Relation message with resolved type names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenTable {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<GreenColumn>,
    /// What green's catalog says beyond the Relation message; `None` for a table described
    /// by a Relation message.
    pub facts: Option<Arc<green_catalog::CatalogFacts>>,
}

impl GreenTable {
    /// From a Relation message; `type_sql` resolves a type OID to its name on blue.
    pub fn from_relation(relation: &Relation, mut type_sql: impl FnMut(u32) -> Option<String>) -> Result<Self> {
        let full = relation.replica_identity == ReplicaIdentity::Full;
        let columns = relation
            .columns
            .iter()
            .map(|c| {
                let t = type_sql(c.type_oid).ok_or_else(|| {
                    Error::definite(format!(
                        "green column {}.{}.{} has type OID {} that blue does not know; create the type on blue",
                        relation.namespace, relation.name, c.name, c.type_oid
                    ))
                })?;
                Ok(GreenColumn {
                    name: c.name.clone(),
                    type_sql: t,
                    is_key: full || c.is_key(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GreenTable {
            oid: relation.oid,
            namespace: relation.namespace.clone(),
            name: relation.name.clone(),
            replica_identity: relation.replica_identity,
            columns,
            facts: None,
        })
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The index of green column `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A blue column pgbridge writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub blue_name: String,
    /// Blue's type, quoted and schema-qualified, for comparing with green's old values.
    pub blue_type: String,
    /// Blue's type with the column's modifier (`numeric(12,2)`): `CAST(value AS stored_type)`
    /// is what assigning `value` to the column stores (see `catalog::BlueColumn`).
    pub stored_type: String,
    pub value: Value,
    /// Green columns the value reads (for unchanged TOAST values).
    pub depends: Vec<usize>,
    /// Only written when the row is inserted.
    pub insert_only: bool,
    /// Whether blue's type has an equality operator (json, point, ... do not).
    pub comparable: bool,
    /// A GENERATED ALWAYS identity column: written on insert (OVERRIDING SYSTEM VALUE), never
    /// by UPDATE, which PostgreSQL refuses.
    pub identity_always: bool,
}

/// A blue key column and the green column its value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// Index into [`TablePlan::targets`].
    pub target: usize,
    /// Index into green's columns.
    pub green: usize,
}

/// How blue finds the row a green update or delete is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlan {
    /// Blue has a primary key (or a unique index on NOT NULL columns): upsert and delete by it.
    Unique(Vec<KeyColumn>),
    /// No unique key on blue: the first row whose listed columns equal the old values (all
    /// green-fed columns under REPLICA IDENTITY FULL).
    Match(Vec<KeyColumn>),
}

impl KeyPlan {
    pub fn columns(&self) -> &[KeyColumn] {
        match self {
            KeyPlan::Unique(k) | KeyPlan::Match(k) => k,
        }
    }
}

/// Everything needed to write one green table's changes to blue.
#[derive(Clone, Debug)]
pub struct TablePlan {
    pub green: GreenTable,
    /// `schema.table` on green, for messages.
    pub green_name: Arc<str>,
    /// `schema.table` on blue, for messages.
    pub blue_name: String,
    /// `"schema"."table"` on blue, for SQL.
    pub blue_sql: String,
    pub targets: Vec<Target>,
    pub key: KeyPlan,
    /// Rows outside this condition (over green's columns) are not carried.
    pub filter: Option<String>,
    /// Blue has a GENERATED ALWAYS identity column that we write.
    pub overriding_system_value: bool,
    /// The blue table is partitioned.
    pub blue_partitioned: bool,
    /// The mapping file, or `None` for an implicit by-name mapping.
    pub file: Option<std::path::PathBuf>,
    /// A green partition mapped through its partitioned table's mapping (publication without
    /// publish_via_partition_root): that table, qualified. Blue cannot tell which of its rows
    /// came from this partition, so a TRUNCATE of it cannot be carried.
    pub partition_of: Option<String>,
    /// Per green column: whether any blue column, the key or the filter reads it. Columns
    /// nobody reads enter statements as text, so their type need not exist on blue.
    pub read: Vec<bool>,
}

impl TablePlan {
    /// Whether the mapping computes something: a filter, or a blue column that is not a plain
    /// copy of a green column of its type (a cast or an expression). Otherwise any session
    /// reads green's values as blue stores them.
    pub fn computes(&self) -> bool {
        self.filter.is_some() || !self.targets.iter().all(|t| t.copies_same_type(&self.green))
    }

    pub fn green_columns(&self) -> usize {
        self.green.columns.len()
    }

    /// The key as `blue column <- green column`, in key order.
    pub fn key_pairs(&self) -> Vec<String> {
        self.key
            .columns()
            .iter()
            .map(|k| {
                format!(
                    "{} <- {}",
                    self.targets[k.target].blue_name, self.green.columns[k.green].name
                )
            })
            .collect()
    }

    /// Where to fix a problem with this table's mapping, for messages.
    pub fn source_of_truth(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => format!("a mapping file for {}", self.blue_name),
        }
    }
}

/// A green table `public.t` of int4 columns named `cols`, none of them in the key: the fixture
/// the mapping unit tests share.
#[cfg(test)]
pub(crate) fn int_table(cols: &[&str]) -> GreenTable {
    GreenTable {
        oid: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: crate::protocol::pgoutput::ReplicaIdentity::Default,
        columns: cols
            .iter()
            .map(|n| GreenColumn {
                name: n.to_string(),
                type_sql: "\"pg_catalog\".\"int4\"".into(),
                is_key: false,
            })
            .collect(),
        facts: None,
    }
}

/// A plan copying [`int_table`]`(cols)` by name into blue's `public.t`, keyed on the first
/// column: a fixture for tests that need a whole plan.
#[cfg(test)]
pub(crate) fn int_plan(cols: &[&str]) -> TablePlan {
    let targets = cols
        .iter()
        .enumerate()
        .map(|(g, name)| Target {
            blue_name: name.to_string(),
            blue_type: "\"pg_catalog\".\"int4\"".into(),
            stored_type: "integer".into(),
            value: Value::Green(g),
            depends: vec![g],
            insert_only: false,
            comparable: true,
            identity_always: false,
        })
        .collect();
    TablePlan {
        green: int_table(cols),
        green_name: "public.t".into(),
        blue_name: "public.t".into(),
        blue_sql: "\"public\".\"t\"".into(),
        targets,
        key: KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }]),
        filter: None,
        overriding_system_value: false,
        blue_partitioned: false,
        file: None,
        partition_of: None,
        read: vec![true; cols.len()],
    }
}
