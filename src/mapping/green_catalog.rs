//! Green's catalog as the publication will present it, for `setup` and `check`: the tables to
//! stream and, for each, the columns its Relation messages will carry.

use tokio_postgres::Client;

use super::{GreenColumn, GreenTable};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::pgoutput::ReplicaIdentity;

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

/// The tables to stream: those of the existing publication, or every user table on green that
/// `[mapping] exclude` does not list, outside the schema named by `blue.schema`.
pub async fn tables(green: &Client, config: &Config, publication_exists: bool) -> Result<Vec<GreenTable>> {
    let list = if publication_exists {
        green
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text \
                 FROM pg_publication_tables pt \
                 JOIN pg_namespace n ON n.nspname = pt.schemaname \
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                 WHERE pt.pubname = $1 ORDER BY 2, 3",
                &[&config.publication],
            )
            .await
    } else {
        green
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text \
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
    let mut tables = Vec::new();
    for row in list {
        let (oid, schema, name, ident): (u32, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // pgbridge's own tables, there when green is also the target of a bridge in the other
        // direction: bookkeeping of that bridge, never application data.
        if config.is_excluded(&schema, &name) || (!publication_exists && schema == config.schema) {
            continue;
        }
        tables.push(table(green, oid, schema, name, &ident).await?);
    }
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

/// One table as its Relation message will describe it: published (non-generated) columns,
/// replica-identity flags as pgoutput sets them, and type names.
async fn table(green: &Client, oid: u32, namespace: String, name: String, ident: &str) -> Result<GreenTable> {
    // A deferrable primary key cannot serve as replica identity.
    let rows = green
        .query(
            "SELECT a.attname::text, quote_ident(tn.nspname) || '.' || quote_ident(t.typname), \
                    a.attnum = ANY (coalesce((SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid AND \
                        CASE c.relreplident WHEN 'd' THEN i.indisprimary AND i.indimmediate \
                                            WHEN 'i' THEN i.indisreplident ELSE false END), '{}')) \
                    OR c.relreplident = 'f' \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(err(&format!("reading columns of {namespace}.{name}")))?;
    let columns = rows
        .iter()
        .map(|r| GreenColumn {
            name: r.get(0),
            type_sql: r.get(1),
            is_key: r.get(2),
        })
        .collect();
    let replica_identity = match ident {
        "f" => ReplicaIdentity::Full,
        "n" => ReplicaIdentity::Nothing,
        "i" => ReplicaIdentity::Index,
        _ => ReplicaIdentity::Default,
    };
    Ok(GreenTable {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}
