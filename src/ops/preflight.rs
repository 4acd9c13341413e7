//! `pgbridge check [--sql]`: validates the configuration and every mapping against both live
//! catalogs before any row moves, and prints the plan. `run` performs the same validation at
//! start and refuses to stream an invalid plan. Statements are prepared on blue in the session
//! settings the apply path runs them in ([`crate::evaluation`]), which `[blue] timezone` is
//! checked for.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::mapping::catalog::BlueTable;
use crate::mapping::resolve::{Mappings, PlanResult};
use crate::mapping::signature::Signature;
use crate::mapping::statements::{build, updatable, Shape};
use crate::mapping::{green_catalog, GreenTable, KeyPlan, TablePlan};
use crate::protocol::pgoutput::ReplicaIdentity;
use crate::sql;

/// A table that planned, with the statements that prepared on blue.
pub struct Planned {
    pub plan: Arc<TablePlan>,
    pub statements: Vec<(&'static str, String)>,
}

/// The outcome of validation: the plans, and every problem found.
#[derive(Default)]
pub struct Report {
    pub tables: Vec<Planned>,
    pub problems: Vec<String>,
    /// Green's streamed relations as read from the catalog.
    pub green_tables: Vec<GreenTable>,
    /// The plan both catalogs give now (see [`crate::drift`]).
    pub current: drift::Current,
    /// The plan `setup` accepted, when one was stored.
    pub accepted: Option<BTreeMap<String, Signature>>,
    /// How the current plan differs from the accepted one.
    pub drift: Vec<drift::Finding>,
    /// The problems that are about green's or blue's catalog as it is now (a table that no
    /// longer plans, a column the stream does not carry): with an accepted plan, `run` streams
    /// what was written before such a change and stops at it.
    pub catalog_problems: Vec<String>,
    pub publication_exists: bool,
    /// The session settings taken from blue (TimeZone, search_path, ...), for the plan.
    pub settings: String,
}

/// What `check` reports, on connections to green and blue: validates, and counts a drift from the plan
/// `setup` accepted as a problem too.
pub async fn check(config: &Config, green: &Client, blue: &Client) -> Result<Report> {
    let report = validate(config, green, blue).await?;
    let mut problems = report.problems.clone();
    // Only `check`: `run` starts without them and warns until they are connected.
    problems.extend(crate::state::standbys::problems(blue, config).await?);
    for f in &report.drift {
        problems.push(format!(
            "green table {} changed since `pgbridge setup` accepted its plan: {}; {}",
            f.green_table,
            f.text(),
            drift::fix(config)
        ));
    }
    Ok(Report { problems, ..report })
}

/// Validates everything `run` will rely on. Connection failures are errors; everything about
/// the configuration, the mappings or the schemas is a problem in the report.
pub async fn validate(config: &Config, green: &Client, blue: &Client) -> Result<Report> {
    crate::pooler::refuse_transaction_pooling(&config.blue, blue).await?;
    let mut report = Report::default();
    evaluation_settings(config, blue, &mut report).await?;
    let mut mappings = match Mappings::load(config) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
    };
    let tables = streamed_tables(config, green, &mut report).await?;
    let publication_exists = report.publication_exists;
    mappings.learn_partitions(&tables);
    report
        .problems
        .extend(unmatched_sources(config, &mappings, &tables, publication_exists));
    let planned = plan_tables(&mappings, blue, &tables).await?;
    for (green_table, planned) in tables.iter().zip(planned) {
        plan_table(config, &mappings, green_table, planned, &mut report)?;
    }
    let plans: Vec<Arc<TablePlan>> = report.tables.iter().map(|t| t.plan.clone()).collect();
    report
        .problems
        .extend(super::privileges::blue_write_problems(blue, &plans).await?);
    report
        .problems
        .extend(super::privileges::origin_problem(blue, config).await?);
    if !publication_exists && !tables.is_empty() {
        report
            .problems
            .extend(super::privileges::publication_problem(green, &config.publication, &tables).await?);
    }
    if !publication_exists {
        report.current.nothing_streamed = Some(format!("publication {} does not exist on green", config.publication));
    }
    report.accepted = drift::read_accepted(blue, config).await?;
    if let Some(accepted) = &report.accepted {
        report.drift = drift::recorded(blue, config).await?;
        report.drift.extend(drift::compare(config, accepted, &report.current).0);
    }
    report.green_tables = tables;
    Ok(report)
}

/// Sets blue's session up as `run` does, so statements prepare in the settings they are
/// applied in (search_path, ...), and records them in the report.
async fn evaluation_settings(config: &Config, blue: &Client, report: &mut Report) -> Result<()> {
    let env = match Environment::resolve(blue, config).await {
        Ok(env) => env,
        Err(e) if e.is_transient() || e.sqlstate().is_some() => return Err(e),
        // [blue] timezone names a zone blue does not know: a problem; go on in blue's default.
        Err(e) => {
            report.problems.push(e.to_string());
            Environment::blue_defaults(blue).await?
        }
    };
    env.apply(blue).await?;
    report.settings = env.describe();
    Ok(())
}

/// Green's server settings and the tables to stream; what is wrong with them is a problem in
/// the report, a dropped connection an error.
async fn streamed_tables(config: &Config, green: &Client, report: &mut Report) -> Result<Vec<GreenTable>> {
    match check_green_server(green).await {
        // The connection dropped: a network problem, not a finding about green.
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => report.problems.push(e.to_string()),
        Ok(()) => {}
    }
    let publication_exists = green_catalog::publication_exists(green, &config.publication).await?;
    report.publication_exists = publication_exists;
    match green_catalog::tables(green, config, publication_exists).await {
        Ok(t) => Ok(t),
        // The connection dropped: not a finding, and no table list to check the mappings by.
        Err(e) if e.is_transient() => Err(e),
        Err(e) if e.sqlstate().is_none() => {
            report.problems.push(e.to_string());
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// What planning one green table found on blue: the plan (or why there is none), the green
/// types it reads that blue lacks, and its statements that prepared and those that did not.
struct Outcome {
    planned: PlanResult,
    missing_types: Vec<String>,
    statements: Vec<(&'static str, String)>,
    failures: Vec<PrepareFailure>,
}

/// Statements prepared on blue at once: blue receives them back to back instead of one round
/// trip each.
const PIPELINED: usize = 64;

/// Plans every table against blue, reading blue's tables in one go, looking every green type
/// up in one query, and preparing the statements pipelined; a dropped connection is an error.
async fn plan_tables(mappings: &Mappings, blue: &Client, tables: &[GreenTable]) -> Result<Vec<Outcome>> {
    let planned = mappings.plan_all(blue, tables).await?;
    let mut types: Vec<&str> = Vec::new();
    for (plan, _) in planned.iter().flatten() {
        for (g, column) in plan.green.columns.iter().enumerate() {
            if plan.read[g] {
                types.push(&column.type_sql);
            }
        }
    }
    let missing = missing_types(blue, types).await?;
    let prepared: Vec<_> = futures_util::stream::iter(planned.iter().map(|p| async move {
        match p {
            Ok((plan, _)) => prepare_statements(blue, plan).await,
            Err(_) => (Vec::new(), Vec::new()),
        }
    }))
    .buffered(PIPELINED)
    .collect()
    .await;
    Ok(planned
        .into_iter()
        .zip(prepared)
        .map(|(planned, (statements, failures))| Outcome {
            missing_types: match &planned {
                Ok((plan, _)) => missing_in(plan, &missing),
                Err(_) => Vec::new(),
            },
            planned,
            statements,
            failures,
        })
        .collect())
}

/// Records one streamed green table's plan, its signature and every problem found with it.
fn plan_table(
    config: &Config,
    mappings: &Mappings,
    green_table: &GreenTable,
    outcome: Outcome,
    report: &mut Report,
) -> Result<()> {
    let has_identity =
        green_table.replica_identity == ReplicaIdentity::Full || green_table.columns.iter().any(|c| c.is_key);
    if !has_identity {
        let problem = format!(
            "green table {} has no primary key or replica identity; add a primary key or run on green: \
             ALTER TABLE {} REPLICA IDENTITY FULL",
            green_table.qualified(),
            sql::qualified(&green_table.namespace, &green_table.name)
        );
        report.current.failures.push((green_table.qualified(), problem.clone()));
        report.catalog_problems.push(problem.clone());
        report.problems.push(problem);
        return Ok(());
    }
    let Outcome {
        planned,
        missing_types,
        statements,
        failures,
    } = outcome;
    let (plan, blue_table) = match planned {
        Ok(p) => p,
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            report.problems.push(e.to_string());
            report.catalog_problems.push(e.to_string());
            report.current.failures.push((green_table.qualified(), e.to_string()));
            return Ok(());
        }
    };
    report
        .current
        .signatures
        .push(Signature::of(&plan, &blue_table).with_settings(&report.settings));
    report.problems.extend(unfed_columns(&plan, &blue_table));
    let catalog: Vec<String> = unpublished_namesakes(config, mappings, &plan, &blue_table)
        .into_iter()
        .chain(unpublished_actions(config, &plan))
        .collect();
    report.problems.extend(catalog.iter().cloned());
    report.catalog_problems.extend(catalog);
    report.problems.extend(unknown_ignored(mappings, green_table));
    let types_ok = missing_types.is_empty();
    report.problems.extend(missing_types);
    if types_ok {
        for (db, whats) in failures {
            report.problems.push(format!(
                "{}: the {} statement(s) for blue table {} do not prepare on blue: {db}; check the types and \
                 expressions feeding it (pgbridge check --sql shows the statements that do)",
                plan.source_of_truth(),
                whats.join(", "),
                plan.blue_name
            ));
        }
    }
    report.tables.push(Planned { plan, statements });
    Ok(())
}

/// Columns a mapping file ignores that the green table does not have, as problems.
fn unknown_ignored(mappings: &Mappings, green_table: &GreenTable) -> Vec<String> {
    let Some(f) = mappings.file_for(&green_table.namespace, &green_table.name) else {
        return Vec::new();
    };
    f.ignore
        .iter()
        .filter(|n| !green_table.columns.iter().any(|c| &c.name == *n))
        .map(|name| {
            format!(
                "{}: ignore lists {name}, which green table {} does not have (dropped?); remove it",
                f.path.display(),
                green_table.qualified()
            )
        })
        .collect()
}

/// A statement that does not prepare: blue's message and the statements it hit.
type PrepareFailure = (String, Vec<&'static str>);

/// Prepares every statement of `plan` on blue: those that prepare, and the failures, each
/// reported once naming every statement it hit.
async fn prepare_statements(blue: &Client, plan: &TablePlan) -> (Vec<(&'static str, String)>, Vec<PrepareFailure>) {
    let mut statements = Vec::new();
    let mut failures: Vec<PrepareFailure> = Vec::new();
    for (what, shape) in shapes(plan) {
        let sql = build(plan, &shape);
        let types = vec![Type::TEXT; sql.params.len()];
        match blue.prepare_typed(&sql.text, &types).await {
            Ok(_) => statements.push((what, sql.text)),
            Err(e) => {
                let db = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                match failures.iter_mut().find(|(m, _)| *m == db) {
                    Some((_, whats)) => whats.push(what),
                    None => failures.push((db, vec![what])),
                }
            }
        }
    }
    (statements, failures)
}

/// Operations an existing publication does not carry: blue would silently keep rows green
/// deleted or truncated, or miss rows green inserted.
fn unpublished_actions(config: &Config, plan: &TablePlan) -> Option<String> {
    let facts = plan.green.facts.as_ref()?;
    let missing: Vec<&str> = green_catalog::ALL_ACTIONS
        .iter()
        .copied()
        .filter(|a| !facts.actions.contains(a))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "publication {} does not carry {} for green table {}, so blue would not follow those changes; run on green: \
         ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')",
        config.publication,
        missing.join(", "),
        plan.green_name,
        sql::ident(&config.publication)
    ))
}

/// Blue columns that a same-named green column would feed, were it streamed: a generated
/// column, or one the publication's column list leaves out. Nothing feeds them, so they would
/// keep blue's default, or go stale, without a word.
fn unpublished_namesakes(config: &Config, mappings: &Mappings, plan: &TablePlan, blue: &BlueTable) -> Vec<String> {
    let Some(facts) = &plan.green.facts else {
        return Vec::new();
    };
    let file = mappings.file_for(&plan.green.namespace, &plan.green.name);
    let ignored = |c: &str| file.is_some_and(|f| f.ignore.iter().any(|i| i == c));
    let omitted = |c: &str| file.is_some_and(|f| f.columns.contains_key(c));
    facts
        .unpublished
        .iter()
        .filter(|(g, _)| blue.column(&g.name).is_some_and(|b| !b.generated))
        .filter(|(g, _)| !plan.targets.iter().any(|t| t.blue_name == g.name))
        .filter(|(g, _)| !ignored(&g.name) && !omitted(&g.name))
        .map(|(g, why)| {
            format!(
                "{}: blue column {}.{} has a same-named green column {}.{}, but that is {}, so nothing would feed blue's column; compute it in [columns] ({} = {{ expr = \"...\" }} over published columns), publish the column, or write {} = {{ omit = true }} to leave it to blue",
                plan.source_of_truth(),
                plan.blue_name,
                g.name,
                plan.green_name,
                g.name,
                why.describe(&config.publication),
                g.name,
                g.name
            )
        })
        .collect()
}

/// Of `types` (green's, as quoted names), those blue does not have, in one query.
async fn missing_types(blue: &Client, mut types: Vec<&str>) -> Result<HashSet<String>> {
    types.sort_unstable();
    types.dedup();
    Ok(blue
        .query(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regtype(t) IS NULL",
            &[&types],
        )
        .await
        .map_err(|e| Error::postgres("looking up types on blue", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Green types the plan reads that blue does not have (of `missing`), as problems.
fn missing_in(plan: &TablePlan, missing: &HashSet<String>) -> Vec<String> {
    plan.green
        .columns
        .iter()
        .enumerate()
        .filter(|(g, column)| plan.read[*g] && missing.contains(&column.type_sql))
        .map(|(_, column)| {
            format!(
                "green column {}.{} has type {}, which does not exist on blue; create the type on blue, or map the \
                 column through an expression that blue can evaluate",
                plan.green_name, column.name, column.type_sql
            )
        })
        .collect()
}

/// The statements `run` can issue for this table.
fn shapes(plan: &TablePlan) -> Vec<(&'static str, Shape)> {
    let mut out = Vec::new();
    match plan.key {
        KeyPlan::Unique(_) => {
            out.push(("insert", Shape::Upsert));
            // With a GENERATED ALWAYS identity, key changes are a delete and an insert instead.
            if !plan.overriding_system_value {
                out.push(("key change", Shape::MoveOrUpsert));
            }
        }
        KeyPlan::Match(_) => out.push(("insert", Shape::Insert)),
    }
    let set = updatable(plan);
    if !set.is_empty() {
        out.push(("update", Shape::Update(set)));
    }
    out.push(("delete", Shape::Delete));
    if plan.filter.is_some() {
        out.push(("filter exit", Shape::DeleteIfFilteredOut));
    }
    out
}

/// Blue NOT NULL columns without a default that nothing feeds: every insert would fail.
fn unfed_columns(plan: &TablePlan, blue: &BlueTable) -> Vec<String> {
    blue.columns
        .iter()
        .filter(|c| c.not_null && !c.has_default && !c.generated && !c.identity_always)
        .filter(|c| !plan.targets.iter().any(|t| t.blue_name == c.name))
        .map(|c| {
            format!(
                "{}: blue column {}.{} is NOT NULL without a default and nothing feeds it, so every insert would fail; \
                 map it in [columns] (from or expr) or give it a default on blue",
                plan.source_of_truth(),
                plan.blue_name,
                c.name
            )
        })
        .collect()
}

/// Green's settings and the role's attributes, as setup needs them. A failed query keeps its
/// kind (a dropped connection stays transient); the findings themselves are definite.
async fn check_green_server(green: &Client) -> Result<()> {
    let row = green
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("checking the server on green", &e))?;
    let wal_level: String = row.get(0);
    let version: i32 = row.get(1);
    let can_replicate: bool = row.get::<_, Option<bool>>(2).unwrap_or(false);
    let user: String = row.get(3);
    if version < 140000 {
        return Err(Error::definite(format!(
            "green runs PostgreSQL {version}; pgbridge needs 14 or later"
        )));
    }
    if wal_level != "logical" {
        return Err(Error::definite(format!(
            "green has wal_level = {wal_level}; logical decoding needs wal_level = logical: \
             run ALTER SYSTEM SET wal_level = logical on green and restart it"
        )));
    }
    if !can_replicate {
        return Err(Error::definite(format!(
            "role {user} on green may not use replication; run on green: ALTER ROLE {} REPLICATION",
            sql::ident(&user)
        )));
    }
    Ok(())
}

/// Mapping files whose source is not among the green tables to stream, as problems.
pub(super) fn unmatched_sources(
    config: &Config,
    mappings: &Mappings,
    tables: &[GreenTable],
    publication_exists: bool,
) -> Vec<String> {
    // A partitioned table streamed as its partitions counts as streamed. A set, not a search
    // through every table per file, which would grow with their product.
    let names: HashSet<(&str, &str)> = tables
        .iter()
        .flat_map(|t| {
            let root = t.facts.as_ref().and_then(|x| x.root.as_ref());
            std::iter::once((t.namespace.as_str(), t.name.as_str())).chain(root.map(|(s, n)| (s.as_str(), n.as_str())))
        })
        .collect();
    let streamed = |f: &&crate::mapping::file::MappingFile| names.contains(&(f.source.0.as_str(), f.source.1.as_str()));
    mappings
        .files
        .iter()
        .filter(|f| !streamed(f))
        .map(|f| {
            format!(
                "{}: source {}.{} is not among the green tables to stream{}; fix source, create the table, or delete the file",
                f.path.display(),
                f.source.0,
                f.source.1,
                if publication_exists { format!(" (publication {})", config.publication) } else { String::new() }
            )
        })
        .collect()
}
