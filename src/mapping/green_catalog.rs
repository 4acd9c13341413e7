//! Green's catalog as the publication presents it, for `setup`, `check`, `verify` and the
//! schema check of `run`: the relations green will stream and, for each, the columns its
//! Relation messages will carry, plus what the stream cannot show (the publication's row
//! filter, columns it leaves out, partitions) so that copies and comparisons see exactly what
//! the stream sees and drift can be told from the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::{Client, Row};

use super::{GreenColumn, GreenTable};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::pgoutput::ReplicaIdentity;

/// Why a green column is not in the Relation messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpublished {
    /// A generated column (not published before PostgreSQL 18's publish_generated_columns).
    Generated,
    /// Left out by the publication's column list.
    ColumnList,
}

impl Unpublished {
    pub fn describe(self, publication: &str) -> String {
        match self {
            Unpublished::Generated => "a generated column, which logical replication does not carry".into(),
            Unpublished::ColumnList => format!("left out by the column list of publication {publication}"),
        }
    }
}

/// What green's catalog says about a streamed relation beyond its Relation message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogFacts {
    /// A partition streamed under its own name (publish_via_partition_root off): its
    /// top-level partitioned table, whose mapping it follows unless it has its own.
    pub root: Option<(String, String)>,
    /// A partitioned table: its leaf partitions, qualified, sorted.
    pub partitions: Vec<String>,
    /// The storage (relfilenode) of each leaf partition: a TRUNCATE of one partition gives it
    /// new storage, and is not replicated when the publication publishes through the root.
    pub partition_storage: Vec<(String, i64)>,
    pub partitioned: bool,
    /// The publication's row filter (PostgreSQL 15+), SQL over green's columns.
    pub row_filter: Option<String>,
    /// Columns of the table that the stream does not carry, with their types.
    pub unpublished: Vec<(GreenColumn, Unpublished)>,
    /// The operations the publication carries, of insert, update, delete and truncate (all
    /// four when no publication exists yet: `setup` creates one that carries them).
    pub actions: Vec<&'static str>,
    /// Every column's position and declared type (with its modifier): a column dropped and
    /// added again, or retyped in a way that rewrites its values on green, looks the same in
    /// a Relation message, but its values changed on green without a replicated change.
    pub positions: Vec<(String, i16, String)>,
}

/// Every operation blue must follow.
pub const ALL_ACTIONS: [&str; 4] = ["insert", "update", "delete", "truncate"];

/// A failed catalog query on green. Like [`publication_exists`], it keeps its kind: a dropped
/// connection stays transient, so start-up validation retries it instead of reporting it as a
/// finding about green.
fn err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::postgres(format!("{what} on green"), &e)
}

/// Whether publication `name` exists on green. A failure keeps its kind (a dropped connection
/// stays transient); callers that must fail fast make it definite.
pub async fn publication_exists(green: &Client, name: &str) -> Result<bool> {
    Ok(green
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| Error::postgres("reading publications on green", &e))?
        .is_some())
}

/// Whether any of `tables` is partitioned: a publication `setup` creates for them publishes
/// through the partition root, so changes arrive under the names blue knows.
pub fn any_partitioned(tables: &[GreenTable]) -> bool {
    tables.iter().any(|t| t.facts.as_ref().is_some_and(|f| f.partitioned))
}

/// The relations to stream: those the existing publication carries (leaf partitions or their
/// roots, as `publish_via_partition_root` says), or every user table on green that
/// `[mapping] exclude` does not list, outside the schema named by `blue.schema` (partitioned
/// tables as a whole: `setup` publishes them through their root).
pub async fn tables(green: &Client, config: &Config, publication_exists: bool) -> Result<Vec<GreenTable>> {
    let list = listed(green, config, publication_exists).await?;
    // pgbridge's own tables, there when green is also the target of a bridge in the other
    // direction: bookkeeping of that bridge, never application data.
    let list: Vec<Listed> = list
        .into_iter()
        .filter(|row| {
            !(config.is_excluded(&row.schema, &row.name) || (!publication_exists && row.schema == config.schema))
        })
        .collect();
    // A table dropped while the list was read is simply not there (the next check sees a
    // settled catalog).
    let tables = described(green, list).await?;
    if tables.is_empty() {
        return Err(Error::definite(format!(
            "no tables to stream: green has no user tables{}; create the tables first",
            if publication_exists {
                format!(" in publication {}", config.publication)
            } else {
                String::new()
            }
        )));
    }
    Ok(tables)
}

/// One listed relation.
struct Listed {
    oid: u32,
    schema: String,
    name: String,
    ident: String,
    /// The publication's column list (PostgreSQL 15+): `None` when there is none.
    columns: Option<Vec<String>>,
    row_filter: Option<String>,
    /// Generated columns are published (PostgreSQL 18+).
    generated_published: bool,
    actions: Vec<&'static str>,
}

async fn listed(green: &Client, config: &Config, publication_exists: bool) -> Result<Vec<Listed>> {
    // Type names and expressions printed the same whatever green's default search_path.
    // No JIT: catalog statistics make these queries look costly enough to compile, and with
    // thousands of tables compiling took longer than running (a second per schema check).
    green
        .batch_execute("SET search_path = pg_catalog; SET jit = off")
        .await
        .map_err(err("setting the search_path"))?;
    let version: i32 = green
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(err("reading the server version"))?
        .get(0);
    let rows = if publication_exists {
        green.query(&publication_tables_sql(version), &[&config.publication]).await
    } else {
        green
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, NULL::text[], NULL::text, false, \
                        NULL::bool[] \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' \
                   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
                 ORDER BY 2, 3",
                &[],
            )
            .await
    }
    .map_err(err("listing tables"))?;
    Ok(rows.iter().map(listed_row).collect())
}

/// The query listing the publication's tables on green `version`: the column list, row filter
/// and whether generated columns are published, where the version has them.
fn publication_tables_sql(version: i32) -> String {
    // attnames lists every column when there is no column list; whether there is one is
    // read from pg_publication_rel (a schema-wide or all-tables publication has none).
    let (attnames, rowfilter, has_list, gencols) = if version >= 150000 {
        (
            "ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
             AND a.attnum = ANY (gpt.attrs::int2[]) AND NOT a.attisdropped ORDER BY a.attnum)",
            "pg_get_expr(gpt.qual, gpt.relid)",
            "EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = c.oid \
             AND pr.prattrs IS NOT NULL)",
            if version >= 180000 {
                "p.pubgencols = 's'"
            } else {
                "false"
            },
        )
    } else {
        ("NULL::text[]", "NULL::text", "false", "false")
    };
    // pg_get_publication_tables directly, called once (materialized) and joined by OID: the
    // pg_publication_tables view joins back by name, and with thousands of tables the planner
    // called the function once per schema (hundreds of times) before joining by name.
    format!(
        "WITH gpt AS MATERIALIZED (SELECT * FROM pg_get_publication_tables($1::text)) \
         SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, \
                CASE WHEN {has_list} THEN {attnames} END, {rowfilter}, {gencols} OR {has_list}, \
                ARRAY[p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate] \
         FROM pg_publication p CROSS JOIN gpt \
         JOIN pg_class c ON c.oid = gpt.relid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE p.pubname = $1 ORDER BY 2, 3"
    )
}

/// One row of either listing query.
fn listed_row(r: &tokio_postgres::Row) -> Listed {
    Listed {
        oid: r.get(0),
        schema: r.get(1),
        name: r.get(2),
        ident: r.get(3),
        columns: r.get(4),
        row_filter: r.get(5),
        generated_published: r.get(6),
        actions: r
            .get::<_, Option<Vec<bool>>>(7)
            .map(|on| {
                ALL_ACTIONS
                    .iter()
                    .zip(on)
                    .filter(|(_, on)| *on)
                    .map(|(a, _)| *a)
                    .collect()
            })
            // No publication yet: `setup` creates one that carries all of them.
            .unwrap_or_else(|| ALL_ACTIONS.to_vec()),
    }
}

/// The columns of every relation of `$1` (OIDs) as their Relation messages will describe
/// them: replica-identity flags as pgoutput sets them (a deferrable primary key cannot serve
/// as replica identity), and type names (a domain is named by its base type, as green's Type
/// message names it: proto.c, logicalrep_write_typ). The identity index is looked up once
/// per table and each type's base once per type, not once per column.
const COLUMNS_SQL: &str = "WITH rel AS MATERIALIZED ( \
     SELECT c.oid, c.relreplident = 'f' AS full_identity, \
            coalesce((SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid AND \
                CASE c.relreplident WHEN 'd' THEN i.indisprimary AND i.indimmediate \
                                    WHEN 'i' THEN i.indisreplident ELSE false END), '{}') AS key \
     FROM unnest($1::oid[]) AS o(oid) JOIN pg_class c ON c.oid = o.oid), \
 att AS MATERIALIZED ( \
     SELECT a.attrelid, a.attname, a.atttypid, a.atttypmod, a.attnum, a.attgenerated \
     FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid WHERE a.attnum > 0 AND NOT a.attisdropped), \
 base AS MATERIALIZED ( \
     WITH RECURSIVE d(start, oid, typtype, base) AS ( \
         SELECT t.oid, t.oid, t.typtype, t.typbasetype FROM pg_type t \
          WHERE t.oid IN (SELECT DISTINCT att.atttypid FROM att) \
         UNION ALL SELECT d.start, p.oid, p.typtype, p.typbasetype FROM pg_type p JOIN d ON p.oid = d.base \
          WHERE d.typtype = 'd') \
     SELECT d.start, quote_ident(bn.nspname) || '.' || quote_ident(bt.typname) AS name FROM d \
     JOIN pg_type bt ON bt.oid = d.oid JOIN pg_namespace bn ON bn.oid = bt.typnamespace \
     WHERE d.typtype <> 'd') \
 SELECT a.attrelid, a.attname::text, base.name, a.attnum = ANY (rel.key) OR rel.full_identity, \
        a.attgenerated <> '', a.attnum, format_type(a.atttypid, a.atttypmod) \
 FROM att a JOIN rel ON rel.oid = a.attrelid JOIN base ON base.start = a.atttypid \
 ORDER BY a.attrelid, a.attnum";

/// Whether each relation of `$1` (OIDs) is a partition (and of which top-level table) or
/// partitioned (and into which leaves).
const PARTITIONING_SQL: &str = "SELECT c.oid, c.relkind = 'p', rn.nspname::text, r.relname::text, \
        coalesce(leaves.names, '{}'), coalesce(leaves.nodes, '{}') \
 FROM unnest($1::oid[]) AS o(oid) JOIN pg_class c ON c.oid = o.oid \
 LEFT JOIN pg_class r ON c.relispartition AND r.oid = pg_partition_root(c.oid) \
 LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace \
 LEFT JOIN LATERAL ( \
     SELECT array_agg(q.name ORDER BY q.name) AS names, array_agg(q.node ORDER BY q.name) AS nodes \
     FROM (SELECT quote_ident(ln.nspname) || '.' || quote_ident(l.relname) AS name, \
                  l.relfilenode::int8 AS node \
           FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid \
           JOIN pg_namespace ln ON ln.oid = l.relnamespace \
           WHERE c.relkind = 'p' AND t.isleaf) q) leaves ON true";

/// The listed relations as their Relation messages will describe them, with the catalog
/// facts around them, in two queries whatever their number (a query per table would make
/// thousands of tables take thousands of round trips); a relation dropped meanwhile is left
/// out.
async fn described(green: &Client, listed: Vec<Listed>) -> Result<Vec<GreenTable>> {
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let oids: Vec<u32> = listed.iter().map(|l| l.oid).collect();
    let mut columns: HashMap<u32, Vec<Row>> = HashMap::new();
    for r in green
        .query(COLUMNS_SQL, &[&oids])
        .await
        .map_err(err("reading columns of the published tables"))?
    {
        columns.entry(r.get(0)).or_default().push(r);
    }
    let mut facts: HashMap<u32, CatalogFacts> = green
        .query(PARTITIONING_SQL, &[&oids])
        .await
        .map_err(err("reading partitions"))?
        .iter()
        .map(|r| (r.get(0), partitioning(r)))
        .collect();
    Ok(listed
        .into_iter()
        .filter_map(|l| {
            let rows = columns.remove(&l.oid)?;
            let facts = facts.remove(&l.oid)?;
            Some(table(l, &rows, facts))
        })
        .collect())
}

/// One relation from its rows of [`COLUMNS_SQL`] (at least one) and its partitioning.
fn table(listed: Listed, rows: &[Row], mut facts: CatalogFacts) -> GreenTable {
    let mut columns = Vec::new();
    let mut unpublished = Vec::new();
    let mut positions = Vec::new();
    for r in rows {
        let column = GreenColumn {
            name: r.get(1),
            type_sql: r.get(2),
            is_key: r.get(3),
        };
        let generated: bool = r.get(4);
        positions.push((column.name.clone(), r.get::<_, i16>(5), r.get::<_, String>(6)));
        let listed_out = listed.columns.as_ref().is_some_and(|list| !list.contains(&column.name));
        if listed_out {
            unpublished.push((column, Unpublished::ColumnList));
        } else if generated && !listed.generated_published {
            unpublished.push((column, Unpublished::Generated));
        } else {
            columns.push(column);
        }
    }
    let replica_identity = match listed.ident.as_str() {
        "f" => ReplicaIdentity::Full,
        "n" => ReplicaIdentity::Nothing,
        "i" => ReplicaIdentity::Index,
        _ => ReplicaIdentity::Default,
    };
    facts.row_filter = listed.row_filter;
    facts.actions = listed.actions;
    facts.positions = positions;
    facts.unpublished = unpublished;
    GreenTable {
        oid: listed.oid,
        namespace: listed.schema,
        name: listed.name,
        replica_identity,
        columns,
        facts: Some(Arc::new(facts)),
    }
}

/// A relation's row of [`PARTITIONING_SQL`] as catalog facts.
fn partitioning(row: &Row) -> CatalogFacts {
    let root = match (row.get::<_, Option<String>>(2), row.get::<_, Option<String>>(3)) {
        (Some(s), Some(n)) => Some((s, n)),
        _ => None,
    };
    let partitions: Vec<String> = row.get(4);
    let storage: Vec<i64> = row.get(5);
    CatalogFacts {
        partitioned: row.get(1),
        root,
        partition_storage: partitions.iter().cloned().zip(storage).collect(),
        partitions,
        ..CatalogFacts::default()
    }
}

/// The partitioned table a partition streamed under its own name belongs to, read directly:
/// copies and comparisons take such a table whole. `None` for any other table (or when the
/// partitioned table is gone).
pub async fn partitioned_table_of(green: &Client, table: &GreenTable) -> Result<Option<GreenTable>> {
    match table.facts.as_ref().and_then(|f| f.root.as_ref()) {
        Some((schema, name)) => table_directly(green, schema, name).await,
        None => Ok(None),
    }
}

/// Green table `schema.name` read directly (not through the publication), as `verify` reads
/// a table the publication no longer carries: every column, generated ones included.
pub async fn table_directly(green: &Client, schema: &str, name: &str) -> Result<Option<GreenTable>> {
    let row = green
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(err("looking up a table"))?;
    let Some(row) = row else { return Ok(None) };
    let listed = Listed {
        oid: row.get(0),
        schema: schema.to_string(),
        name: name.to_string(),
        ident: row.get(1),
        columns: None,
        row_filter: None,
        generated_published: true,
        actions: Vec::new(),
    };
    Ok(described(green, vec![listed]).await?.pop())
}
