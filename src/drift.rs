//! Schema drift: green or blue changing under the bridge in a way that alters what blue
//! receives.
//!
//! `setup` stores on blue, in `<schema>.accepted_plan`, the [`Signature`] of every table it
//! accepted. From then on three independent checks compare what green and blue say now with
//! that accepted plan:
//!
//! * `run`, on every Relation message (the stream's own description of a table);
//! * `run`, every `[mapping] schema_check_interval`, from both catalogs: a table that left the
//!   publication, was dropped and created again, or gained or lost partitions sends no Relation
//!   message at all;
//! * `check`, `status` and `verify`, from both catalogs, whether or not `run` is up.
//!
//! A change that leaves every blue value computed as before (a new green column nobody maps, an
//! index) carries on; anything else stops `run` with exit 2 naming the table, the columns and
//! the position, and is listed by `check`, `status` and `verify` until it is fixed and accepted
//! again with `pgbridge setup`.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::green_catalog;
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::{diff, Signature};
use crate::state::checkpoint::table_exists;
use crate::state::plan;

pub use crate::mapping::signature::Baseline;

/// Where `run` stops because the catalogs no longer match the accepted plan: once blue has
/// applied everything green wrote before the change was seen (a Relation message stops it
/// earlier, exactly at the change, for the tables green still streams).
#[derive(Clone, Debug)]
pub struct Stop {
    pub at: Lsn,
    pub message: String,
}

/// What `run` streams under: the mappings with the accepted plan, and where to stop.
#[derive(Clone)]
pub struct Guard {
    pub mappings: Mappings,
    pub stop: watch::Receiver<Option<Stop>>,
}

/// What to do after the accepted plan changed, for every message.
pub fn fix(config: &Config) -> String {
    format!(
        "review the change with `pgbridge check` and `pgbridge verify`; when the mapping files under {} and blue's \
         rows are right again (re-synchronize with `pgbridge setup --copy` if rows were lost), accept the new plan \
         with `pgbridge setup` and start `pgbridge run` again",
        config.mapping_dir.display()
    )
}

pub use crate::state::plan::create_sql;

/// Remembers on blue that `run` stopped for drift (best effort: the stop itself does not
/// depend on it).
pub async fn record(blue: &Client, config: &Config, at: Lsn, message: &str) {
    let result = async {
        ensure_tables(blue, config).await?;
        plan::insert_drift(blue, &config.schema, &config.slot, at, message)
            .await
            .map_err(|e| Error::postgres("recording the drift on blue", &e))
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record the drift on blue; `pgbridge status` shows it only while it lasts");
    }
}

/// A drift `run` stopped for, with where it stopped: a restart streams no further.
pub struct Recorded {
    pub at: Lsn,
    pub finding: Finding,
}

/// Drift `run` stopped for since `setup` last accepted a plan, as findings.
pub async fn recorded(blue: &Client, config: &Config) -> Result<Vec<Finding>> {
    Ok(recorded_stops(blue, config)
        .await?
        .into_iter()
        .map(|r| r.finding)
        .collect())
}

/// Drift `run` stopped for since `setup` last accepted a plan.
pub async fn recorded_stops(blue: &Client, config: &Config) -> Result<Vec<Recorded>> {
    if !table_exists(blue, &config.schema, "drift").await? {
        return Ok(Vec::new());
    }
    let rows = plan::drift_rows(blue, &config.schema, &config.slot)
        .await
        .map_err(|e| Error::postgres("reading recorded drift on blue", &e))?;
    rows.into_iter()
        .map(|(found_at, message, at)| {
            Ok(Recorded {
                at: at.parse().map_err(|_| {
                    Error::definite(format!("{}.drift holds an unreadable position {at:?}", config.schema))
                })?,
                finding: Finding {
                    green_table: "(recorded)".into(),
                    changes: vec![format!(
                        "run stopped for drift at {} before green position {at} (changes made then are not on blue \
                         even if the change was undone since): {}",
                        found_at, message
                    )],
                },
            })
        })
        .collect()
}

async fn ensure_tables(blue: &Client, config: &Config) -> Result<()> {
    let exist = table_exists(blue, &config.schema, "accepted_plan").await?
        && table_exists(blue, &config.schema, "drift").await?;
    if !exist {
        plan::create(blue, &config.schema)
            .await
            .map_err(|e| Error::postgres("creating pgbridge's tables on blue", &e))?;
    }
    Ok(())
}

/// The accepted plan of `config`'s slot; `None` when none was stored (a setup of an older
/// pgbridge).
pub async fn read_accepted(blue: &Client, config: &Config) -> Result<Option<BTreeMap<String, Signature>>> {
    if !table_exists(blue, &config.schema, "accepted_plan").await? {
        return Ok(None);
    }
    let rows = plan::accepted_rows(blue, &config.schema, &config.slot)
        .await
        .map_err(|e| Error::postgres("reading the accepted plan on blue", &e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut accepted = BTreeMap::new();
    for (name, text) in rows {
        let sig = Signature::from_json(&text).ok_or_else(|| {
            Error::definite(format!(
                "{}.accepted_plan on blue holds an unreadable plan for green table {name}; run `pgbridge setup` to \
                 store it again",
                config.schema
            ))
        })?;
        accepted.insert(name, sig);
    }
    Ok(Some(accepted))
}

/// Stores `signatures` as the accepted plan: all of it (`replace`), or only tables not
/// accepted yet.
pub async fn store(blue: &Client, config: &Config, signatures: &[Signature], replace: bool) -> Result<()> {
    ensure_tables(blue, config).await?;
    plan::store_accepted(blue, &config.schema, &config.slot, signatures, replace)
        .await
        .map_err(|e| Error::postgres("storing the accepted plan on blue", &e))
}

/// Writes accepted signatures as they are now, over what was stored for those tables: the
/// state they record that changes without changing the plan (partitions' storage after a
/// replicated TRUNCATE of the whole table, new empty partitions, the catalog side of a table
/// first seen in a Relation message).
pub async fn refresh(blue: &Client, config: &Config, signatures: &[Signature]) -> Result<()> {
    for s in signatures {
        plan::upsert_accepted(blue, &config.schema, &config.slot, s)
            .await
            .map_err(|e| Error::postgres("updating the accepted plan on blue", &e))?;
    }
    Ok(())
}

/// The plan both catalogs give now.
#[derive(Default)]
pub struct Current {
    pub signatures: Vec<Signature>,
    /// Tables green streams that no longer plan, with why.
    pub failures: Vec<(String, String)>,
    /// Why green streams nothing at all, when it does not.
    pub nothing_streamed: Option<String>,
}

/// Plans every table green streams now against blue's catalog now.
pub async fn current(config: &Config, green: &Client, blue: &Client) -> Result<Current> {
    current_with(config, green, blue, Mappings::load(config)?).await
}

/// [`current`] with mapping files already loaded (`run` keeps the ones it streams with, so
/// editing them while it runs is not drift of the catalogs).
pub async fn current_with(config: &Config, green: &Client, blue: &Client, mut mappings: Mappings) -> Result<Current> {
    let mut out = Current::default();
    if !green_catalog::publication_exists(green, &config.publication).await? {
        out.nothing_streamed = Some(format!("publication {} no longer exists on green", config.publication));
        return Ok(out);
    }
    let tables = match green_catalog::tables(green, config, true).await {
        Ok(t) => t,
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            out.nothing_streamed = Some(e.to_string());
            return Ok(out);
        }
    };
    mappings.learn_partitions(&tables);
    let settings = crate::evaluation::Environment::resolve(blue, config).await?.describe();
    for (t, planned) in tables.iter().zip(mappings.plan_all(blue, &tables).await?) {
        match planned {
            Ok((plan, blue_table)) => out
                .signatures
                .push(Signature::of(&plan, &blue_table).with_settings(&settings)),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => out.failures.push((t.qualified(), e.to_string())),
        }
    }
    Ok(out)
}

/// One accepted table whose plan changed, with the changes in words.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub green_table: String,
    pub changes: Vec<String>,
}

impl Finding {
    pub fn text(&self) -> String {
        self.changes.join("; ")
    }
}

/// Compares the accepted plan with the current one. Returns what changed, and the tables
/// streamed now that were not accepted (new tables carry on: their rows stream from their
/// creation).
pub fn compare(
    config: &Config,
    accepted: &BTreeMap<String, Signature>,
    current: &Current,
) -> (Vec<Finding>, Vec<Signature>) {
    let mut findings = Vec::new();
    // By green table: a search through every table per table would grow with their square.
    let signatures: HashMap<&str, &Signature> = current
        .signatures
        .iter()
        .rev()
        .map(|s| (s.green_table.as_str(), s))
        .collect();
    let failures: HashMap<&str, &str> = current
        .failures
        .iter()
        .rev()
        .map(|(t, why)| (t.as_str(), why.as_str()))
        .collect();
    for (name, was) in accepted {
        let changes = match signatures.get(name.as_str()) {
            Some(now) => diff(was, now),
            None => match failures.get(name.as_str()) {
                Some(why) => vec![format!("green table {name} no longer maps onto blue: {why}")],
                None => vec![format!(
                    "green table {name} is no longer streamed ({}): its changes no longer reach blue table {}",
                    current.nothing_streamed.clone().unwrap_or_else(|| format!(
                        "it left publication {}, or was dropped, renamed or excluded",
                        config.publication
                    )),
                    was.blue_table
                )],
            },
        };
        if !changes.is_empty() {
            findings.push(Finding {
                green_table: name.clone(),
                changes,
            });
        }
    }
    let new = current
        .signatures
        .iter()
        .filter(|s| !accepted.contains_key(&s.green_table))
        .cloned()
        .collect();
    (findings, new)
}

/// The accepted plan against both catalogs now, for `check`, `status` and `verify`; `None`
/// when no plan was accepted yet.
pub async fn check(config: &Config, green: &Client, blue: &Client) -> Result<Option<Vec<Finding>>> {
    let Some(accepted) = read_accepted(blue, config).await? else {
        return Ok(None);
    };
    let current = current(config, green, blue).await?;
    let mut findings = recorded(blue, config).await?;
    findings.extend(compare(config, &accepted, &current).0);
    Ok(Some(findings))
}

/// One line per finding, for messages.
pub fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  - {}", f.text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a rollback to blue would lose that the accepted plan alone does not show, for `ready`,
/// `status` and the bridge's rollback gauge: [`check`], plus every table that rows are written to
/// on green without `setup` having accepted it: published tables the plan lacks (carried by
/// `run` since, or not yet: their rows from before they were published are not on blue), tables
/// published with no blue table, and user tables neither published nor in `[mapping] exclude`
/// (`setup` publishes every user table not excluded). `None` when no plan was accepted.
pub async fn for_rollback(config: &Config, green: &Client, blue: &Client) -> Result<Option<Vec<Finding>>> {
    let Some(accepted) = read_accepted(blue, config).await? else {
        return Ok(None);
    };
    let current = current(config, green, blue).await?;
    let mut findings = recorded(blue, config).await?;
    let (changed, new) = compare(config, &accepted, &current);
    findings.extend(changed);
    let mut unaccepted: Vec<&Signature> = new.iter().collect();
    let carried = carried_by_run(blue, config).await?;
    unaccepted.extend(carried.iter().filter_map(|t| accepted.get(t)));
    let by_setup: Vec<&Signature> = accepted
        .values()
        .filter(|s| !carried.contains(&s.green_table))
        .collect();
    for s in unaccepted {
        if findings.iter().any(|f| f.green_table == s.green_table) || is_partition_of_accepted(s, &by_setup) {
            continue;
        }
        findings.push(not_accepted(config, &s.green_table));
    }
    for (table, why) in &current.failures {
        if !accepted.contains_key(table) && !findings.iter().any(|f| &f.green_table == table) {
            findings.push(Finding {
                green_table: table.clone(),
                changes: vec![format!(
                    "green table {table} is published but does not map onto blue ({why}): `pgbridge run` stops on \
                     it and its rows are not on blue; create or map its blue table, then `pgbridge setup --copy`"
                )],
            });
        }
    }
    if current.nothing_streamed.is_none() {
        findings.extend(unpublished(config, green).await?);
    }
    Ok(Some(findings))
}

/// A published table `setup` never accepted.
pub fn not_accepted(config: &Config, table: &str) -> Finding {
    Finding {
        green_table: table.to_string(),
        changes: vec![format!(
            "green table {table} is in publication {} but not in the plan `pgbridge setup` accepted (added to the \
             publication since?): rows it held before it was published are not on blue; copy them with `pgbridge \
             setup --copy` (or, if it was empty then, accept it with `pgbridge setup`)",
            config.publication
        )],
    }
}

/// A new empty partition of a table `setup` accepted streams from its creation.
fn is_partition_of_accepted(s: &Signature, by_setup: &[&Signature]) -> bool {
    let root = |s: &Signature| s.catalog.as_ref().and_then(|c| c.partition_of.clone());
    root(s).is_some_and(|r| by_setup.iter().any(|a| root(a).as_ref() == Some(&r)))
}

/// Tables in the accepted plan that `run` carried as new rather than `setup` accepted: `setup`
/// stores the whole plan in one transaction, so they are the ones accepted later than the rest.
pub async fn carried_by_run(blue: &Client, config: &Config) -> Result<Vec<String>> {
    if !table_exists(blue, &config.schema, "accepted_plan").await? {
        return Ok(Vec::new());
    }
    let table = crate::sql::qualified(&config.schema, "accepted_plan");
    let rows = blue
        .query(
            &format!(
                "SELECT green_table FROM {table} WHERE slot_name = $1 \
                 AND accepted_at > (SELECT min(accepted_at) FROM {table} WHERE slot_name = $1) ORDER BY 1"
            ),
            &[&config.slot],
        )
        .await
        .map_err(|e| Error::postgres("reading the accepted plan on blue", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A green user table no row of which reaches blue: outside the publication (or UNLOGGED,
/// which no publication can carry) and not in `[mapping] exclude`.
pub struct NotCarried {
    /// Quoted and qualified, as SQL takes it.
    pub table: String,
    pub unlogged: bool,
}

/// Green's user tables the publication does not carry and `[mapping] exclude` does not list:
/// rows written there never reach blue.
pub async fn not_carried(config: &Config, green: &Client) -> Result<Vec<NotCarried>> {
    let rows = green
        .query(
            // Without the publication (before `setup`) only UNLOGGED tables are listed here.
            "WITH pub AS MATERIALIZED (SELECT t.relid FROM pg_catalog.pg_publication p, \
                                        LATERAL pg_catalog.pg_get_publication_tables(p.pubname::text) t \
                                      WHERE p.pubname = $1::text) \
             SELECT n.nspname::text, c.relname::text, format('%I.%I', n.nspname, c.relname), \
                    c.relpersistence = 'u' \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence IN ('p', 'u') \
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
               AND c.oid NOT IN (SELECT relid FROM pub) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) t JOIN pub ON pub.relid = t.relid) \
               AND (c.relpersistence = 'u' OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1::text)) \
             ORDER BY 1, 2",
            &[&config.publication],
        )
        .await
        .map_err(crate::connect::green_err("listing tables outside the publication"))?;
    Ok(rows
        .iter()
        .filter(|r| {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            !(config.is_excluded(&schema, &name) || schema == config.schema)
        })
        .map(|r| NotCarried {
            table: r.get(2),
            unlogged: r.get(3),
        })
        .collect())
}

/// [`not_carried`] as drift findings, each with its fix.
pub async fn unpublished(config: &Config, green: &Client) -> Result<Vec<Finding>> {
    let p = &config.publication;
    Ok(not_carried(config, green)
        .await?
        .into_iter()
        .map(|NotCarried { table, unlogged }| {
            let change = if unlogged {
                format!(
                    "green table {table} is UNLOGGED and not in [mapping] exclude: logical decoding never sees its \
                     rows, so they never reach blue. ALTER TABLE {table} SET LOGGED and add it to publication {p} \
                     (then `pgbridge setup --copy` for its rows), or list it in [mapping] exclude"
                )
            } else {
                format!(
                    "green table {table} is neither in publication {p} nor in [mapping] exclude: rows written there \
                     never reach blue. ALTER PUBLICATION {p} ADD TABLE {table} (then `pgbridge setup --copy` for its \
                     rows) or list it in [mapping] exclude"
                )
            };
            Finding {
                changes: vec![change],
                green_table: table,
            }
        })
        .collect())
}

/// The tables [`for_rollback`] lists that need no planning: carried by `run` without `setup`
/// accepting them, and user tables outside the publication not excluded. The running bridge
/// reads these for its rollback gauge (it stops by itself for everything else).
pub async fn unaccepted(config: &Config, green: &Client, blue: &Client) -> Result<Vec<Finding>> {
    let Some(accepted) = read_accepted(blue, config).await? else {
        return Ok(Vec::new());
    };
    let carried = carried_by_run(blue, config).await?;
    let by_setup: Vec<&Signature> = accepted
        .values()
        .filter(|s| !carried.contains(&s.green_table))
        .collect();
    let mut findings: Vec<Finding> = carried
        .iter()
        .filter_map(|t| accepted.get(t))
        .filter(|s| !is_partition_of_accepted(s, &by_setup))
        .map(|s| not_accepted(config, &s.green_table))
        .collect();
    if green_catalog::publication_exists(green, &config.publication).await? {
        findings.extend(unpublished(config, green).await?);
    }
    Ok(findings)
}
