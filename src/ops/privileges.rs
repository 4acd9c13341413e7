//! Privilege checks for a role that is not a superuser (README, "Least-privilege setup"): each
//! names the object and the statement that fixes it, and runs before anything is created,
//! copied or streamed, so a missing GRANT never leaves work half done.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::mapping::{GreenTable, TablePlan};
use crate::sql;
use crate::state::checkpoint;

/// One error for every problem found, saying that `consequence` ("nothing was created").
pub(crate) fn refuse(problems: Vec<String>, consequence: &str) -> Result<()> {
    match problems.len() {
        0 => Ok(()),
        1 => Err(Error::definite(format!("{}; {consequence}", problems[0]))),
        n => Err(Error::definite(format!(
            "{n} problems, {consequence}; fix these first:\n  - {}",
            problems.join("\n  - ")
        ))),
    }
}

/// `current_user` and `current_database()` of a session.
async fn who(client: &Client, side: &str) -> Result<(String, String)> {
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .map_err(|e| Error::postgres(format!("checking privileges on {side}"), &e))?;
    Ok((row.get(0), row.get(1)))
}

/// Privileges to check on one table: each of `privileges` counts as held when granted on the
/// table, or on every one of `columns` (column grants; pass none for DELETE, which has no
/// column form).
struct Wanted<'a> {
    table: &'a str,
    privileges: &'a [&'a str],
    columns: Vec<String>,
}

/// For each of `wanted`, the privileges the session's role lacks, in order: one query over
/// arrays whatever the number of tables (a query per table took thousands of round trips).
async fn missing_on_tables(client: &Client, side: &str, wanted: &[Wanted<'_>]) -> Result<Vec<Vec<String>>> {
    let (mut index, mut tables, mut privileges, mut by_column) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut column_index, mut columns) = (Vec::new(), Vec::new());
    for (i, w) in wanted.iter().enumerate() {
        let i = i as i32;
        for p in w.privileges {
            index.push(i);
            tables.push(w.table);
            privileges.push(*p);
            by_column.push(!w.columns.is_empty());
        }
        for c in &w.columns {
            column_index.push(i);
            columns.push(c.as_str());
        }
    }
    let rows = client
        .query(
            "WITH c AS MATERIALIZED (SELECT * FROM unnest($5::int4[], $6::text[]) AS c(i, name)) \
             SELECT w.i, w.p FROM unnest($1::int4[], $2::text[], $3::text[], $4::bool[]) WITH ORDINALITY \
                  AS w(i, t, p, by_column, n) \
             WHERE NOT has_table_privilege(w.t, w.p) \
               AND (NOT w.by_column \
                    OR EXISTS (SELECT 1 FROM c WHERE c.i = w.i AND NOT has_column_privilege(w.t, c.name, w.p))) \
             ORDER BY w.n",
            &[&index, &tables, &privileges, &by_column, &column_index, &columns],
        )
        .await
        .map_err(|e| Error::postgres(format!("checking privileges on {side} tables"), &e))?;
    let mut missing = vec![Vec::new(); wanted.len()];
    for r in rows {
        missing[r.get::<_, i32>(0) as usize].push(r.get(1));
    }
    Ok(missing)
}

fn grant(side: &str, role: &str, what: &str, missing: &[String], table: &str, object: &str) -> String {
    format!(
        "role {role} lacks {} on {side} table {table}, which {what} needs; run on {side}: GRANT {} ON {object} TO {}",
        missing.join(", "),
        missing.join(", "),
        sql::ident(role)
    )
}

/// What the apply path needs on every blue table: SELECT (keys, upserts), INSERT, UPDATE of
/// the columns it updates, DELETE.
pub(crate) async fn blue_write_problems(blue: &Client, plans: &[Arc<TablePlan>]) -> Result<Vec<String>> {
    let (role, _) = who(blue, "blue").await?;
    let mut wanted = Vec::new();
    for plan in plans {
        let all: Vec<String> = plan.targets.iter().map(|t| t.blue_name.clone()).collect();
        let updated: Vec<String> = plan
            .targets
            .iter()
            .filter(|t| !t.insert_only && !t.identity_always)
            .map(|t| t.blue_name.clone())
            .collect();
        let table = plan.blue_sql.as_str();
        wanted.push(Wanted {
            table,
            privileges: &["SELECT", "INSERT"],
            columns: all,
        });
        // No column to update: UPDATE is not needed (an empty group has nothing to check).
        let update: &[&str] = if updated.is_empty() { &[] } else { &["UPDATE"] };
        wanted.push(Wanted {
            table,
            privileges: update,
            columns: updated,
        });
        wanted.push(Wanted {
            table,
            privileges: &["DELETE"],
            columns: Vec::new(),
        });
    }
    let missing = missing_on_tables(blue, "blue", &wanted).await?;
    Ok(plans
        .iter()
        .zip(missing.chunks(3))
        .filter_map(|(plan, missing)| {
            let missing = missing.concat();
            (!missing.is_empty()).then(|| grant("blue", &role, "streaming", &missing, &plan.blue_name, &plan.blue_sql))
        })
        .collect())
}

/// What applying under a replication origin (`apply.origin`) needs on blue: EXECUTE on the
/// origin functions, which PostgreSQL grants to superusers only.
pub(crate) async fn origin_problem(blue: &Client, config: &crate::config::Config) -> Result<Option<String>> {
    let Some(name) = &config.origin else { return Ok(None) };
    let (role, _) = who(blue, "blue").await?;
    let functions = crate::state::origin::FUNCTIONS.map(String::from).to_vec();
    let missing: Vec<String> = blue
        .query(
            "SELECT f FROM unnest($1::text[]) WITH ORDINALITY AS u(f, i) \
             WHERE NOT has_function_privilege(f::regprocedure, 'EXECUTE') ORDER BY i",
            &[&functions],
        )
        .await
        .map_err(|e| Error::postgres("reading privileges on blue", &e).into_definite())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "role {role} may not call {} on blue, which tagging blue's commits with replication origin {name} needs (so \
         that a bridge in the other direction does not echo them); run on blue: {} (or set apply.origin = \"\" if no \
         bridge ever streams from this database)",
        missing.join(", "),
        crate::state::origin::grant_sql(&role)
    )))
}

/// What `setup --copy` and `verify` need: reading green's tables, reading blue's, and
/// temporary tables on blue (where green's rows are staged).
pub(crate) async fn read_problems(
    green: &Client,
    blue: &Client,
    plans: &[Arc<TablePlan>],
    what: &str,
) -> Result<Vec<String>> {
    let (green_role, _) = who(green, "green").await?;
    let (blue_role, blue_db) = who(blue, "blue").await?;
    let green_tables: Vec<String> = plans
        .iter()
        .map(|p| sql::qualified(&p.green.namespace, &p.green.name))
        .collect();
    let green_wanted: Vec<Wanted> = plans
        .iter()
        .zip(&green_tables)
        .map(|(plan, table)| Wanted {
            table,
            privileges: &["SELECT"],
            columns: plan.green.columns.iter().map(|c| c.name.clone()).collect(),
        })
        .collect();
    let blue_wanted: Vec<Wanted> = plans
        .iter()
        .map(|plan| Wanted {
            table: &plan.blue_sql,
            privileges: &["SELECT"],
            columns: plan.targets.iter().map(|t| t.blue_name.clone()).collect(),
        })
        .collect();
    let green_missing = missing_on_tables(green, "green", &green_wanted).await?;
    let blue_missing = missing_on_tables(blue, "blue", &blue_wanted).await?;
    let mut problems = Vec::new();
    for ((plan, table), (green_missing, blue_missing)) in plans
        .iter()
        .zip(&green_tables)
        .zip(green_missing.iter().zip(&blue_missing))
    {
        if !green_missing.is_empty() {
            problems.push(grant(
                "green",
                &green_role,
                what,
                green_missing,
                &plan.green_name,
                table,
            ));
        }
        if !blue_missing.is_empty() {
            problems.push(grant(
                "blue",
                &blue_role,
                what,
                blue_missing,
                &plan.blue_name,
                &plan.blue_sql,
            ));
        }
    }
    let temp: bool = blue
        .query_one("SELECT has_database_privilege(current_database(), 'TEMPORARY')", &[])
        .await
        .map_err(|e| Error::postgres("checking privileges on blue", &e))?
        .get(0);
    if !temp {
        problems.push(format!(
            "role {blue_role} may not create temporary tables on blue, which {what} stages green's rows in; \
             run on blue: GRANT TEMPORARY ON DATABASE {} TO {}",
            sql::ident(&blue_db),
            sql::ident(&blue_role)
        ));
    }
    Ok(problems)
}

/// When the publication does not exist yet: whether this role may create it (PostgreSQL 15
/// wants CREATE on the database and ownership of every table for `CREATE PUBLICATION ... FOR
/// TABLE`). `None` when it may; otherwise the problem, with the statement to have an owner run.
pub(crate) async fn publication_problem(
    green: &Client,
    publication: &str,
    tables: &[GreenTable],
) -> Result<Option<String>> {
    let (role, db) = who(green, "green").await?;
    let err = |e: tokio_postgres::Error| Error::postgres("checking privileges on green", &e);
    let may_create: bool = green
        .query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[])
        .await
        .map_err(err)?
        .get(0);
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let not_owned: Vec<String> = green
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = ANY($1::oid[]) AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1",
            &[&oids],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if may_create && not_owned.is_empty() {
        return Ok(None);
    }
    let mut why = Vec::new();
    if !not_owned.is_empty() {
        why.push(format!("it does not own {}", not_owned.join(", ")));
    }
    if !may_create {
        why.push(format!("it lacks CREATE on database {db}"));
    }
    let names: Vec<String> = tables.iter().map(|t| sql::qualified(&t.namespace, &t.name)).collect();
    Ok(Some(format!(
        "publication {publication} does not exist on green and role {role} may not create it ({}); have a superuser \
         or the tables' owner run on green: CREATE PUBLICATION {} FOR TABLE {}; then run setup again",
        why.join(", and "),
        sql::ident(publication),
        names.join(", ")
    )))
}

/// What `setup` does about `<schema>` on blue.
pub(crate) enum BlueSchema {
    /// Create the schema and pgbridge's tables in it.
    Create,
    /// The schema exists and the role may create tables in it.
    CreateTables,
    /// The schema and pgbridge's tables exist; the role may not create anything there.
    Ready,
}

/// Whether the role can set up `<schema>` on blue: CREATE on the database (to create the
/// schema), or a schema that exists and where it may create tables (its own, say).
pub(crate) async fn blue_schema(blue: &Client, schema: &str) -> Result<BlueSchema> {
    let (role, db) = who(blue, "blue").await?;
    let checkpoint::SchemaAccess {
        exists,
        create_db,
        create_in,
        tables_exist,
    } = checkpoint::schema_access(blue, schema)
        .await
        .map_err(|e| Error::postgres("checking privileges on blue", &e))?;
    match (exists, create_in.unwrap_or(false)) {
        (true, true) => Ok(BlueSchema::CreateTables),
        (true, false) if tables_exist => Ok(BlueSchema::Ready),
        (true, false) => Err(Error::definite(format!(
            "role {role} may not create tables in schema {schema} on blue, where pgbridge keeps its checkpoint; \
             run on blue: ALTER SCHEMA {} OWNER TO {}; nothing was created",
            sql::ident(schema),
            sql::ident(&role)
        ))),
        (false, _) if create_db => Ok(BlueSchema::Create),
        (false, _) => Err(Error::definite(format!(
            "schema {schema} does not exist on blue and role {role} may not create it (no CREATE on database {db}); \
             run on blue: CREATE SCHEMA {} AUTHORIZATION {} (or GRANT CREATE ON DATABASE {} TO {}); nothing was created",
            sql::ident(schema),
            sql::ident(&role),
            sql::ident(&db),
            sql::ident(&role)
        ))),
    }
}

/// `setup --copy` writes tables in parallel, each part in its own blue transaction. Unless blue
/// lets the session set `session_replication_role = replica`, foreign keys between the copied
/// tables would reject rows whose parent is not copied yet: the problem, naming one such key.
pub(crate) async fn copy_foreign_key_problem(blue: &Client, plans: &[Arc<TablePlan>]) -> Result<Option<String>> {
    let err = |e: tokio_postgres::Error| Error::postgres("checking privileges on blue", &e);
    match blue.batch_execute("SET session_replication_role = replica").await {
        Ok(()) => {
            blue.batch_execute("RESET session_replication_role")
                .await
                .map_err(err)?;
            return Ok(None);
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {}
        Err(e) => return Err(err(e)),
    }
    let (role, _) = who(blue, "blue").await?;
    let tables: Vec<String> = plans.iter().map(|p| p.blue_sql.clone()).collect();
    let key = blue
        .query_opt(
            "SELECT k.conname::text, cn.nspname || '.' || c.relname, pn.nspname || '.' || p.relname \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f' AND k.conrelid = ANY($1::text[]::regclass[]) \
               AND k.confrelid = ANY($1::text[]::regclass[]) \
             ORDER BY 2, 1 LIMIT 1",
            &[&tables],
        )
        .await
        .map_err(err)?;
    Ok(key.map(|r| {
        let (name, child, parent): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        format!(
            "blue refused session_replication_role = replica to role {role}, so setup --copy, which writes tables in \
             parallel, would have blue check foreign key {name} of {child} (to {parent}) before the rows it refers to \
             are copied; run on blue: GRANT SET ON PARAMETER session_replication_role TO {} (PostgreSQL 15 and later; \
             before, only a superuser may set it), or fill blue's tables another way and run setup without --copy",
            sql::ident(&role)
        )
    }))
}
