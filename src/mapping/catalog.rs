//! Blue's live catalog, as far as planning needs it.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueColumn {
    pub name: String,
    /// `"schema"."typname"`: arrays as their `_elem` type, domains and enums by name.
    pub type_sql: String,
    /// The type as declared, with its modifier (`numeric(12,2)`), as `format_type` prints it.
    pub declared: String,
    /// Its position: a column renamed away and replaced by a new one of the same name has
    /// another.
    pub attnum: i16,
    /// The type with the column's modifier (`numeric(12,2)`, `timestamp(0) without time zone`),
    /// so that `CAST(value AS stored_type)` is the value an INSERT stores (see
    /// [`STORED_TYPE_SQL`]).
    pub stored_type: String,
    pub not_null: bool,
    pub has_default: bool,
    pub identity_always: bool,
    pub generated: bool,
    /// False for types without an equality operator (json, xml, geometric types).
    pub comparable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueTable {
    /// Changes when the table is dropped and created again.
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<BlueColumn>,
    /// A partitioned table (relkind 'p'): `TRUNCATE ONLY` does not apply to it.
    pub partitioned: bool,
    /// Primary key columns, or else those of a unique, non-partial index on NOT NULL
    /// columns; `None` when blue has neither.
    pub key: Option<Vec<String>>,
    /// Every key usable as an ON CONFLICT arbiter, the default one first.
    pub unique_keys: Vec<Vec<String>>,
}

impl BlueTable {
    pub fn column(&self, name: &str) -> Option<&BlueColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A column's type with its modifier, for casts that store what assignment stores: numbers,
/// times and intervals are rounded by the modifier under an explicit cast exactly as on
/// INSERT. Character and bit-string types are not: an explicit cast truncates a value that an
/// INSERT refuses, so for them the type without modifier compares the value as it is (blue
/// pads char(n) on INSERT, which its equality ignores). Built-in types print under SQL's own
/// names (`numeric(12,2)`), which resolve whatever the search_path; other types with a
/// modifier (extensions' `vector(3)`) get their qualified name followed by the modifier.
const STORED_TYPE_SQL: &str = "
CASE WHEN a.atttypmod < 0 OR coalesce(et.typcategory, t.typcategory) IN ('S', 'V')
       THEN quote_ident(tn.nspname) || '.' || quote_ident(t.typname)
     WHEN tn.nspname = 'pg_catalog' THEN format_type(a.atttypid, a.atttypmod)
     WHEN starts_with(format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL))
       THEN quote_ident(tn.nspname) || '.' || quote_ident(t.typname)
            || substr(format_type(a.atttypid, a.atttypmod), length(format_type(a.atttypid, NULL)) + 1)
     ELSE quote_ident(tn.nspname) || '.' || quote_ident(t.typname) END";

/// Every column of the named tables (`$1` schemas and `$2` names, pairwise), by table. The
/// names compare as `name`: compared as text, pg_class's index on (relname, relnamespace)
/// does not apply and each table costs a scan of every table's name.
const COLUMNS_SQL: &str = "
SELECT c.relkind = 'p', a.attname::text, quote_ident(tn.nspname) || '.' || quote_ident(t.typname),
       a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR (t.typtype = 'd' AND t.typdefaultbin IS NOT NULL),
       a.attidentity = 'a', a.attgenerated <> '',
       coalesce(bt.typname, et.typname, t.typname) NOT IN
         ('json', 'xml', 'point', 'line', 'lseg', 'box', 'path', 'polygon', 'circle', 'txid_snapshot', 'pg_snapshot'),
       {STORED_TYPE},
       format_type(a.atttypid, a.atttypmod), a.attnum, c.oid, n.nspname::text, c.relname::text
FROM unnest($1::text[], $2::text[]) AS w(schema, name)
JOIN pg_namespace n ON n.nspname = w.schema::name
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name::name
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype AND t.typtype = 'd'
WHERE c.relkind IN ('r', 'p')
ORDER BY c.oid, a.attnum";

/// Key columns in index order, per table of `$1` (OIDs): the primary key first, else the
/// unique index on NOT NULL columns with the fewest columns (ties by name) that has no
/// predicate or expressions. Deferrable constraints cannot arbitrate ON CONFLICT, so they do
/// not count.
const KEY_SQL: &str = "
SELECT i.indrelid, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY($1)
  AND i.indisunique AND i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indrelid, i.indexrelid, i.indisprimary, ic.relname
HAVING bool_and(a.attnotnull)
ORDER BY i.indrelid, i.indisprimary DESC, count(*), ic.relname";

/// Loads `schema.name` from blue; `Ok(None)` when there is no such table.
pub async fn load_table(client: &Client, schema: &str, name: &str) -> Result<Option<BlueTable>> {
    let wanted = [(schema.to_string(), name.to_string())];
    Ok(load_tables(client, &wanted).await?.remove(&wanted[0]))
}

/// Loads the named tables from blue in two queries, whatever their number; a name without a
/// table is absent from the map.
pub async fn load_tables(client: &Client, names: &[(String, String)]) -> Result<HashMap<(String, String), BlueTable>> {
    let what = match names {
        [(schema, name)] => format!("reading blue's catalog for {schema}.{name}"),
        _ => format!("reading blue's catalog for {} tables", names.len()),
    };
    let (schemas, tables): (Vec<&str>, Vec<&str>) = names.iter().map(|(s, n)| (s.as_str(), n.as_str())).unzip();
    let rows = client
        .query(
            &COLUMNS_SQL.replace("{STORED_TYPE}", STORED_TYPE_SQL),
            &[&schemas, &tables],
        )
        .await
        .map_err(|e| Error::postgres(&what, &e))?;
    let mut out: HashMap<u32, BlueTable> = HashMap::new();
    for r in &rows {
        let table = out.entry(r.get(11)).or_insert_with(|| BlueTable {
            oid: r.get(11),
            schema: r.get(12),
            name: r.get(13),
            partitioned: r.get(0),
            columns: Vec::new(),
            key: None,
            unique_keys: Vec::new(),
        });
        table.columns.push(BlueColumn {
            name: r.get(1),
            type_sql: r.get(2),
            not_null: r.get(3),
            has_default: r.get(4),
            identity_always: r.get(5),
            generated: r.get(6),
            comparable: r.get(7),
            stored_type: r.get(8),
            declared: r.get(9),
            attnum: r.get(10),
        });
    }
    if out.is_empty() {
        return Ok(HashMap::new());
    }
    let oids: Vec<u32> = out.keys().copied().collect();
    for r in client
        .query(KEY_SQL, &[&oids])
        .await
        .map_err(|e| Error::postgres(&what, &e))?
    {
        if let Some(t) = out.get_mut(&r.get::<_, u32>(0)) {
            t.unique_keys.push(r.get(1));
        }
    }
    Ok(out
        .into_values()
        .map(|mut t| {
            t.key = t.unique_keys.first().cloned();
            ((t.schema.clone(), t.name.clone()), t)
        })
        .collect())
}

/// Blue tables read at once for planning many green tables; a table not read up front is
/// read from blue when asked for.
pub struct BlueTables<'a> {
    client: &'a Client,
    /// Tables read up front, `None` where blue has no such table.
    read: HashMap<(String, String), Option<BlueTable>>,
}

impl<'a> BlueTables<'a> {
    /// Nothing read up front: every table is read when asked for.
    pub fn live(client: &'a Client) -> Self {
        BlueTables {
            client,
            read: HashMap::new(),
        }
    }

    /// `names` read up front, in two queries.
    pub async fn read(client: &'a Client, names: Vec<(String, String)>) -> Result<Self> {
        let mut tables = BlueTables::live(client);
        tables.read_more(names).await?;
        Ok(tables)
    }

    /// Reads those of `names` not read yet, in two queries.
    pub async fn read_more(&mut self, mut names: Vec<(String, String)>) -> Result<()> {
        names.retain(|n| !self.read.contains_key(n));
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let mut found = load_tables(self.client, &names).await?;
        for n in names {
            let t = found.remove(&n);
            self.read.insert(n, t);
        }
        Ok(())
    }

    /// Blue table `schema.name`; `Ok(None)` when there is no such table.
    pub async fn get(&self, schema: &str, name: &str) -> Result<Option<BlueTable>> {
        match self.read.get(&(schema.to_string(), name.to_string())) {
            Some(t) => Ok(t.clone()),
            None => load_table(self.client, schema, name).await,
        }
    }
}
