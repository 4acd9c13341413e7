//! Whether green itself can compute what blue stores for a table's rows, so that `copy` can
//! move mapped rows straight into blue's table and `verify` can checksum both sides without
//! moving rows.
//!
//! Blue is the reference: the apply path evaluates every mapping on blue. Green may stand in
//! only where its result cannot differ, which is decided by asking green's catalog about the
//! exact expressions, not by reading their text:
//!
//! * a plain copy of a column whose type is blue's column type;
//! * a plain copy into another built-in type: `CAST(column AS blue_type)`. Blue's INSERT
//!   applies the assignment cast for the pair; an explicit cast to the same type (without
//!   the modifier, which blue's COPY input applies as its assignment would) takes the same
//!   conversion, because a pair of built-in types has the same casts on every server;
//! * an expression (or the filter) whose every dependency, as green records it for a
//!   temporary view over it, is built in: functions and operators that are immutable, or
//!   stable only through the TimeZone (which the evaluation environment sets alike on both
//!   sides); no other table, no user type, operator, collation or function; reading only
//!   columns of built-in types (a user enum's order or a domain's check may differ between
//!   the servers), and no session values like `current_user`;
//! * and blue resolves the same SQL to built-in objects only, asked the same way over a
//!   temporary table of green's columns (a function blue's search_path finds first, such as a
//!   `public.upper`, is blue's meaning); and both databases sort and case text alike (same
//!   collation provider, collate, ctype and locale), the columns read having the database's
//!   collation: `upper()` under a Turkish ICU locale is not `upper()` under C.
//!
//! Anything else says why not, and its callers go the way they went before (through blue).

use tokio_postgres::Client;

use super::{expression, TablePlan, Value};
use crate::error::{Error, Result};
use crate::sql;

/// How green itself produces, for each of a plan's targets, the value blue stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnGreen {
    /// Per `plan.targets` entry: SQL over green's table (its columns quoted, no table alias)
    /// yielding the value as blue's column type, without its modifier (blue's COPY input and
    /// receive functions apply the modifier, as its INSERT does).
    pub select: Vec<String>,
    /// Per target: the value travels in the binary form blue's column receives (a built-in
    /// type, the same on both servers), so `COPY ... (FORMAT binary)` can carry it.
    pub binary: Vec<bool>,
    /// The mapping's filter as SQL over green's table, when it has one.
    pub filter: Option<String>,
}

impl OnGreen {
    /// Whether every column can travel in binary.
    pub fn all_binary(&self) -> bool {
        self.binary.iter().all(|&b| b)
    }
}

/// Session values: the same expression reads one thing on green and another on blue.
const SESSION_VALUES: &[&str] = &[
    "current_user",
    "session_user",
    "user",
    "current_role",
    "system_user",
    "current_catalog",
    "current_schema",
];

/// Whether every target and the filter of `plan` can be evaluated on green with the result
/// blue would compute. `Ok(Err(reason))` says why not; `Err` is a database error. Runs on
/// `green` and `blue` in transactions of its own that it rolls back: call it outside a
/// transaction, on sessions carrying the evaluation environment (`Environment::apply`), as
/// the sessions that then evaluate the SQL must: blue's search_path is what names resolve by.
/// `text_rules`: what [`text_rules`] said of the two databases, read once per command.
pub async fn on_green(
    green: &Client,
    blue: &Client,
    plan: &TablePlan,
    text_rules: &Option<String>,
) -> Result<std::result::Result<OnGreen, String>> {
    let on_green = match candidate(plan) {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    if !plan.computes() {
        return Ok(Ok(on_green));
    }
    if let Some(why) = ask_green(green, plan, &on_green).await? {
        return Ok(Err(why));
    }
    if let Some(why) = text_rules {
        return Ok(Err(why.clone()));
    }
    if let Some(why) = collated_column(green, plan).await? {
        return Ok(Err(why));
    }
    if let Some(why) = ask_blue(blue, plan, &on_green).await? {
        return Ok(Err(why));
    }
    Ok(Ok(on_green))
}

/// The SQL green would run, before its catalog is asked.
fn candidate(plan: &TablePlan) -> std::result::Result<OnGreen, String> {
    let mut on_green = OnGreen {
        select: Vec::with_capacity(plan.targets.len()),
        binary: Vec::with_capacity(plan.targets.len()),
        filter: plan.filter.clone(),
    };
    for t in &plan.targets {
        let built_in = is_built_in(&t.blue_type);
        if t.copies_same_type(&plan.green) {
            on_green.select.push(t.value.sql(&plan.green, None));
            on_green.binary.push(built_in);
            continue;
        }
        if !built_in {
            return Err(format!(
                "blue column {} is of type {}, which is not built in",
                t.blue_name, t.blue_type
            ));
        }
        on_green
            .select
            .push(format!("CAST({} AS {})", t.value.sql(&plan.green, None), t.blue_type));
        on_green.binary.push(true);
    }
    for t in plan.targets.iter().filter(|t| !t.copies_same_type(&plan.green)) {
        reads_built_in_only(plan, &t.value, &format!("blue column {}", t.blue_name))?;
    }
    if let Some(filter) = &plan.filter {
        reads_built_in_only(plan, &Value::Expr(filter.clone()), "the filter")?;
    }
    Ok(on_green)
}

/// A type of PostgreSQL's own (`"pg_catalog"."int4"`), apart from the `reg*` types and `oid`,
/// whose values are object identifiers of one server, and `money`, whose text follows
/// `lc_monetary`, a setting the evaluation environment leaves to each server.
fn is_built_in(type_sql: &str) -> bool {
    let unquoted = type_sql.replace('"', "");
    let Some(name) = unquoted.strip_prefix("pg_catalog.") else {
        return false;
    };
    let element = name.strip_prefix('_').unwrap_or(name);
    !(element.starts_with("reg") || element == "oid" || element == "money")
}

/// A computed value reads only green columns of built-in types, and no session value.
fn reads_built_in_only(plan: &TablePlan, value: &Value, what: &str) -> std::result::Result<(), String> {
    for g in value.reads(&plan.green) {
        let column = &plan.green.columns[g];
        if !is_built_in(&column.type_sql) {
            return Err(format!(
                "{what} reads green column {}, of type {}, which is not built in",
                column.name, column.type_sql
            ));
        }
    }
    if let Some(expr) = value.expression() {
        let words = expression::identifiers(expr);
        if let Some(word) = words.iter().find(|w| SESSION_VALUES.contains(&w.as_str())) {
            return Err(format!("{what} reads {word}, which differs between the servers"));
        }
    }
    Ok(())
}

const VIEW: &str = "pgbridge_on_green";

/// Anything the temporary view over the candidate SQL depends on, as green's catalog records
/// it, but the table it reads: PostgreSQL records no dependency on its own (pinned) objects,
/// so every one recorded is a function, operator, type, collation or relation someone
/// created, which blue may define otherwise or not at all.
const DEPENDENCIES_SQL: &str = "
SELECT format('depends on %s, which is not built in', pg_describe_object(d.refclassid, d.refobjid, 0))
FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE r.ev_class = 'pg_temp.pgbridge_on_green'::regclass
  AND d.refobjid NOT IN (r.ev_class, $1::text::regclass)
LIMIT 1";

/// PostgreSQL's own functions and relations the expressions may name (`$1`, their words) whose
/// result is not the same on both servers: volatile functions, stable ones other than those
/// that are stable through the TimeZone alone (which the evaluation environment sets alike),
/// and the system catalogs. A word may name a column as well: the check errs on the side of
/// evaluating on blue.
const BUILT_INS_SQL: &str = "
SELECT format('calls %s, which is %s', p.oid::regprocedure,
              CASE p.provolatile WHEN 'v' THEN 'volatile' ELSE 'stable' END)
FROM pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname::text = ANY ($1::text[])
  AND (p.provolatile = 'v'
       OR (p.provolatile = 's'
           AND NOT (p.proargtypes::oid[] || p.prorettype) && ARRAY['timestamptz'::regtype, 'timetz'::regtype]::oid[]))
UNION ALL
SELECT format('reads %s', c.oid::regclass)
FROM pg_class c
WHERE c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
  AND c.relname::text = ANY ($1::text[])
LIMIT 1";

/// Creates the view on green in a transaction it rolls back, and asks for its dependencies.
/// A view green refuses (no TEMP privilege, a read-only session) is a reason, not an error.
async fn ask_green(green: &Client, plan: &TablePlan, on_green: &OnGreen) -> Result<Option<String>> {
    let table = sql::qualified(&plan.green.namespace, &plan.green.name);
    let mut columns: Vec<String> = on_green
        .select
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s} AS c{i}"))
        .collect();
    if let Some(filter) = &on_green.filter {
        columns.push(format!("({filter}) AS f"));
    }
    let create = format!(
        "CREATE TEMPORARY VIEW {} AS SELECT {} FROM {table}",
        sql::ident(VIEW),
        columns.join(", ")
    );
    rolled_back(green, &format!("green: checking {}", plan.green_name), async {
        if let Err(e) = green.batch_execute(&create).await {
            return refused(e, "green cannot evaluate it");
        }
        if let Some(row) = green.query_opt(DEPENDENCIES_SQL, &[&table]).await? {
            return Ok(Some(row.get(0)));
        }
        let row = green.query_opt(BUILT_INS_SQL, &[&words(plan)]).await?;
        Ok(row.map(|r| r.get::<_, String>(0)))
    })
    .await
}

/// Runs `asked` in a transaction on `client` that is rolled back whatever it did.
async fn rolled_back(
    client: &Client,
    what: &str,
    asked: impl std::future::Future<Output = std::result::Result<Option<String>, tokio_postgres::Error>>,
) -> Result<Option<String>> {
    let on_err = |e: tokio_postgres::Error| Error::postgres(what, &e);
    client.batch_execute("BEGIN").await.map_err(on_err)?;
    let asked = asked.await;
    client.batch_execute("ROLLBACK").await.map_err(on_err)?;
    asked.map_err(on_err)
}

/// A statement the server refused is the reason, prefixed with `prefix`; anything else (the
/// connection) an error.
fn refused(e: tokio_postgres::Error, prefix: &str) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    match e.as_db_error() {
        Some(db) => Ok(Some(format!("{prefix}: {}", db.message()))),
        None => Err(e),
    }
}

/// A database's collation: provider, collate, ctype, locale and ICU rules (the columns vary
/// with the version, hence the row as JSON).
const LOCALE_SQL: &str = "SELECT concat_ws(' / ', d.datlocprovider::text, d.datcollate, d.datctype, \
     coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'), to_jsonb(d) ->> 'daticurules') \
     FROM pg_catalog.pg_database d WHERE d.datname = current_database()";

/// A column read (`$2`) of green table `$1` whose collation is not the database's.
const COLLATED_SQL: &str = "SELECT format('green column %s has collation %s', a.attname, c.collname) \
     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
     WHERE a.attrelid = $1::text::regclass AND a.attname = ANY ($2::text[]) AND a.attcollation <> 100 LIMIT 1";

/// Why text would not sort or change case alike on both servers (their databases' collations
/// differ), if it would not: the same for every table, so read once per command.
pub async fn text_rules(green: &Client, blue: &Client) -> Result<Option<String>> {
    let on = |side: &'static str| {
        move |e: tokio_postgres::Error| Error::postgres(format!("{side}: reading the database's collation"), &e)
    };
    let green_locale: String = green.query_one(LOCALE_SQL, &[]).await.map_err(on("green"))?.get(0);
    let blue_locale: String = blue.query_one(LOCALE_SQL, &[]).await.map_err(on("blue"))?.get(0);
    Ok((green_locale != blue_locale)
        .then(|| format!("the databases' collations differ (green {green_locale}, blue {blue_locale})")))
}

/// A green column the computed targets or the filter read whose collation is not the
/// database's, if there is one.
async fn collated_column(green: &Client, plan: &TablePlan) -> Result<Option<String>> {
    let table = sql::qualified(&plan.green.namespace, &plan.green.name);
    let read: Vec<String> = computed_reads(plan)
        .iter()
        .map(|&g| plan.green.columns[g].name.clone())
        .collect();
    let row = green
        .query_opt(COLLATED_SQL, &[&table, &read])
        .await
        .map_err(|e| Error::postgres("green: reading the collations of the columns read", &e))?;
    Ok(row.map(|r| r.get(0)))
}

/// Green columns that computed targets and the filter read, in green's order.
fn computed_reads(plan: &TablePlan) -> Vec<usize> {
    let mut read = vec![false; plan.green.columns.len()];
    for t in plan.targets.iter().filter(|t| !t.copies_same_type(&plan.green)) {
        for g in t.value.reads(&plan.green) {
            read[g] = true;
        }
    }
    if let Some(filter) = &plan.filter {
        for g in expression::columns(filter, &plan.green) {
            read[g] = true;
        }
    }
    (0..read.len()).filter(|&g| read[g]).collect()
}

/// Asks blue for the dependencies of the same SQL over a temporary table of the green
/// columns it reads: what blue resolves a name to is what streaming computes.
async fn ask_blue(blue: &Client, plan: &TablePlan, on_green: &OnGreen) -> Result<Option<String>> {
    let source = "pgbridge_on_green_source";
    let columns: Vec<String> = computed_reads(plan)
        .iter()
        .map(|&g| {
            let c = &plan.green.columns[g];
            format!("{} {}", sql::ident(&c.name), c.type_sql)
        })
        .collect();
    let mut computed: Vec<String> = plan
        .targets
        .iter()
        .zip(&on_green.select)
        .enumerate()
        .filter(|(_, (t, _))| !t.copies_same_type(&plan.green))
        .map(|(i, (_, s))| format!("{s} AS c{i}"))
        .collect();
    if let Some(filter) = &on_green.filter {
        computed.push(format!("({filter}) AS f"));
    }
    let create = format!(
        "CREATE TEMPORARY TABLE {src} ({}); CREATE TEMPORARY VIEW {} AS SELECT {} FROM pg_temp.{src}",
        columns.join(", "),
        sql::ident(VIEW),
        computed.join(", "),
        src = sql::ident(source),
    );
    rolled_back(blue, &format!("blue: checking {}", plan.blue_name), async {
        if let Err(e) = blue.batch_execute(&create).await {
            return refused(e, "blue reads it otherwise");
        }
        let row = blue
            .query_opt(DEPENDENCIES_SQL, &[&format!("pg_temp.{source}")])
            .await?;
        Ok(row.map(|r| format!("on blue, {}", r.get::<_, String>(0))))
    })
    .await
}

/// Every word of the mapping's expressions and filter.
fn words(plan: &TablePlan) -> Vec<String> {
    let expressions = plan.targets.iter().filter_map(|t| t.value.expression());
    let mut words: Vec<String> = expressions
        .chain(plan.filter.as_deref())
        .flat_map(expression::identifiers)
        .collect();
    words.sort();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_are_those_of_pg_catalog_but_object_identifiers() {
        assert!(is_built_in("\"pg_catalog\".\"int4\""));
        assert!(is_built_in("\"pg_catalog\".\"_numeric\""));
        assert!(!is_built_in("\"public\".\"mood\""));
        assert!(!is_built_in("\"pg_catalog\".\"regclass\""));
        assert!(!is_built_in("\"pg_catalog\".\"_oid\""));
        assert!(!is_built_in("\"pg_catalog\".\"money\""));
    }
}
