//! What `draft` reads from a live catalog: every column of a table with its declared type,
//! the type a cast to it should name, and whether a row inserted without it gets a value.
//! The same reader serves both sides (green is the target of a reverse draft).

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// One column as a draft needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: `numeric(12,2)`, `character varying(40)`; user
    /// types schema-qualified (the session's search_path is pg_catalog).
    pub declared: String,
    /// The type a `CAST(... AS type)` feeding this column names: the declared type, except
    /// that character and bit strings lose their length (an explicit cast would cut a value
    /// the column then refuses; without the length, the column's own check refuses it).
    pub cast_type: String,
    pub not_null: bool,
    /// A default, an identity, or a domain default: an insert without it still gets a value.
    pub has_default: bool,
    /// Computed by the server: never written by a bridge.
    pub generated: bool,
    /// Part of the primary key.
    pub key: bool,
}

/// A table as a draft needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// In column order.
    pub columns: Vec<Column>,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn id(&self) -> (String, String) {
        (self.schema.clone(), self.name.clone())
    }
}

const COLUMNS_SQL: &str = "
SELECT n.nspname::text, c.relname::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       format_type(a.atttypid, CASE WHEN t.typcategory IN ('S', 'V') THEN -1 ELSE a.atttypmod END),
       a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR (t.typtype = 'd' AND t.typdefaultbin IS NOT NULL),
       a.attgenerated <> '',
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> $1
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2, a.attnum";

/// Every user table of the database `client` is connected to (partitioned tables whole),
/// outside schema `skip` (pgbridge's own), by (schema, name). `side` names the database in
/// messages. Types print schema-qualified unless built in.
pub async fn tables(client: &Client, side: &str, skip: &str) -> Result<BTreeMap<(String, String), Table>> {
    let what = format!("reading {side}'s catalog");
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .map_err(|e| Error::postgres(&what, &e).into_definite())?;
    let rows = client
        .query(COLUMNS_SQL, &[&skip])
        .await
        .map_err(|e| Error::postgres(&what, &e).into_definite())?;
    let mut out: BTreeMap<(String, String), Table> = BTreeMap::new();
    for r in rows {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        let table = out.entry((schema.clone(), name.clone())).or_insert_with(|| Table {
            schema,
            name,
            columns: Vec::new(),
        });
        table.columns.push(Column {
            name: r.get(2),
            declared: r.get(3),
            cast_type: r.get(4),
            not_null: r.get(5),
            has_default: r.get(6),
            generated: r.get(7),
            key: r.get(8),
        });
    }
    Ok(out)
}

/// The words that must be quoted to be read as a column name (reserved and other non-plain
/// keywords), from the server that evaluates the expressions.
pub async fn keywords(client: &Client, side: &str) -> Result<HashSet<String>> {
    let rows = client
        .query("SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'", &[])
        .await
        .map_err(|e| Error::postgres(format!("reading {side}'s keywords"), &e).into_definite())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
