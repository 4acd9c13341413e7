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
    /// The type values of this column are read as when it is a source (a domain by its base,
    /// `"schema"."name"`, as the apply path binds them).
    pub type_sql: String,
    /// What a conversion to this column's type can cut silently.
    pub cuts: Cuts,
    /// The enum the column holds (itself, as array element, or under a domain).
    pub enum_type: Option<String>,
    /// For a domain: its base type as declared (`character varying(5)`).
    pub domain_base: Option<String>,
}

impl Column {
    /// A plain nullable column of a built-in type, for tests.
    #[cfg(test)]
    pub fn test(name: &str, declared: &str) -> Column {
        Column {
            name: name.into(),
            declared: declared.into(),
            cast_type: declared.into(),
            not_null: false,
            has_default: false,
            generated: false,
            key: false,
            type_sql: format!("pg_catalog.{declared}"),
            cuts: Cuts::Nothing,
            enum_type: None,
            domain_base: None,
        }
    }

    /// The type to compare and classify: a domain's base when it has one.
    pub fn base(&self) -> &str {
        self.domain_base.as_deref().unwrap_or(&self.declared)
    }

    /// Whether feeding this column from `source` converts values (other type, or a domain of
    /// the same name over another base).
    pub fn differs_from(&self, source: &Column) -> bool {
        self.declared != source.declared || self.domain_base != source.domain_base
    }
}

/// What converting a value to a column's type can cut without an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cuts {
    #[default]
    Nothing,
    /// A domain over a character or bit string with a length: `CAST(... AS domain)` cuts a
    /// value that assignment (a plain `from`) refuses.
    Explicit,
    /// `"char"` (keeps the first byte) or `name` (keeps 63 bytes): every conversion from
    /// another string type cuts, and no form without a length exists. The type's name.
    Always(String),
}

/// A table as a draft needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// In column order.
    pub columns: Vec<Column>,
    /// Columns of the table the stream does not carry (generated, or left out of the
    /// publication's column list), with why, in the words of [`Unpublished::describe`].
    ///
    /// [`Unpublished::describe`]: crate::mapping::green_catalog::Unpublished::describe
    pub withheld: Vec<(String, String)>,
}

impl Table {
    /// `schema.table` as output shows it (parts quoted where needed, one line).
    pub fn shown(&self) -> String {
        super::names::shown_table(&self.schema, &self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn id(&self) -> (String, String) {
        (self.schema.clone(), self.name.clone())
    }
}

/// Per type: the type a value of it is read as by the apply path (a domain by its base, as
/// `mapping::green_catalog` names it), what a cast to it can cut (a domain over a character
/// or bit string with a length; "char" and name, which cut whatever the form), the enum it
/// holds (itself, its element or its base) and, for a domain, its base as declared.
const COLUMNS_SQL: &str = "
WITH RECURSIVE chain(start, oid, typtype, base, typmod, applied) AS (
    SELECT t.oid, t.oid, t.typtype, t.typbasetype, t.typtypmod, -1 FROM pg_type t
    UNION ALL
    SELECT c.start, p.oid, p.typtype, p.typbasetype, p.typtypmod,
           CASE WHEN c.applied >= 0 THEN c.applied ELSE c.typmod END
    FROM pg_type p JOIN chain c ON p.oid = c.base WHERE c.typtype = 'd'),
base AS (
    SELECT c.start, c.oid, c.applied,
           quote_ident(n.nspname) || '.' || quote_ident(bt.typname) AS sql
    FROM chain c JOIN pg_type bt ON bt.oid = c.oid JOIN pg_namespace n ON n.oid = bt.typnamespace
    WHERE c.typtype <> 'd')
SELECT n.nspname::text, c.relname::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       format_type(a.atttypid, CASE WHEN coalesce(et.typcategory, t.typcategory) IN ('S', 'V') THEN -1
                                    ELSE a.atttypmod END),
       a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR (t.typtype = 'd' AND t.typdefaultbin IS NOT NULL),
       a.attgenerated <> '',
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey)),
       b.sql,
       CASE WHEN coalesce(eb.oid, b.oid) IN ('pg_catalog.char'::regtype, 'pg_catalog.name'::regtype)
            THEN format_type(coalesce(eb.oid, b.oid), NULL)
            WHEN coalesce(eb.applied, b.applied) >= 0 AND coalesce(et.typcategory, t.typcategory) IN ('S', 'V')
            THEN 'domain' END,
       CASE WHEN (SELECT typtype FROM pg_type WHERE oid = coalesce(eb.oid, b.oid)) = 'e'
            THEN format_type(coalesce(eb.oid, b.oid), NULL) END,
       CASE WHEN t.typtype = 'd' THEN format_type(b.oid, b.applied) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN base b ON b.start = t.oid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN base eb ON eb.start = et.oid
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
            withheld: Vec::new(),
        });
        table.columns.push(Column {
            name: r.get(2),
            declared: r.get(3),
            cast_type: r.get(4),
            not_null: r.get(5),
            has_default: r.get(6),
            generated: r.get(7),
            key: r.get(8),
            type_sql: r.get(9),
            cuts: match r.get::<_, Option<String>>(10) {
                None => Cuts::Nothing,
                Some(d) if d == "domain" => Cuts::Explicit,
                Some(t) => Cuts::Always(t),
            },
            enum_type: r.get(11),
            domain_base: r.get(12),
        });
    }
    Ok(out)
}

/// Every enum type's labels, in order, by its name as `format_type` prints it (call after
/// [`tables`], which sets the search_path that qualifies the names).
pub async fn enums(client: &Client, side: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let rows = client
        .query(
            "SELECT format_type(enumtypid, NULL), array_agg(enumlabel::text ORDER BY enumsortorder) \
             FROM pg_enum GROUP BY enumtypid",
            &[],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {side}'s enum types"), &e).into_definite())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
