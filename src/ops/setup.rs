//! `pgbridge setup`: validate everything first, then create what is missing, in an order that
//! leaves nothing half-made: blue's schema, green's publication, the slot, the checkpoint row.
//! Running it again changes nothing.

use std::sync::Arc;

use tokio_postgres::Client;

use super::privileges::{self, BlueSchema};
use crate::apply::{self, checkpoint};
use crate::config::Config;
use crate::connect::{blue_err, connect_green_sql, green_err};
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::lsn::Lsn;
use crate::mapping::{green_catalog, TablePlan};
use crate::source::ReplicationConn;
use crate::sql;

pub async fn run(config: &Config, copy: bool, jobs: usize) -> Result<i32> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = apply::connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    // A mapping file that does not parse is an error of its own, before any catalog work.
    crate::mapping::resolve::Mappings::load(config)?;
    // Also checks [blue] timezone before anything is created.
    let env = Environment::setup(&blue, config).await.map_err(Error::into_definite)?;
    // Exactly `check`'s validation (every statement prepared on blue, NOT NULL coverage,
    // privileges), before anything is created.
    let report = super::preflight::validate(config, &green, &blue)
        .await
        .map_err(Error::into_definite)?;
    let publication_exists = report.publication_exists;
    let tables = report.green_tables.clone();
    let plans: Vec<Arc<TablePlan>> = report.tables.iter().map(|t| t.plan.clone()).collect();
    let mut problems = report.problems.clone();
    if copy {
        problems.extend(privileges::read_problems(&green, &blue, &plans, "setup --copy").await?);
        problems.extend(privileges::copy_foreign_key_problem(&blue, &plans).await?);
    }
    refuse(problems)?;
    for finding in &report.drift {
        println!(
            "plan   {:<30} changed since it was accepted: {}",
            finding.green_table,
            finding.text()
        );
    }
    let blue_schema = privileges::blue_schema(&blue, &config.schema).await?;

    let existing_checkpoint = checkpoint::read(&blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;
    let slot = slot_state(&green, &config.slot).await?;
    if let Some(cp) = existing_checkpoint.as_ref().filter(|cp| cp.lsn.is_zero() && !copy) {
        return Err(Error::definite(format!(
            "blue's checkpoint for slot {} is at {}: an initial copy into blue did not finish; \
             run `pgbridge setup --copy` again (it starts over)",
            config.slot, cp.lsn
        )));
    }
    if let (Some(cp), None, false) = (&existing_checkpoint, &slot, copy) {
        return Err(Error::definite(format!(
            "blue has a checkpoint for slot {} at {} but green has no such slot: changes after {} can no longer be \
             streamed. If blue was re-synchronized with green, delete the old checkpoint \
             (DELETE FROM {}.checkpoint WHERE slot_name = '{}') and run setup again",
            config.slot,
            cp.lsn,
            cp.lsn,
            sql::ident(&config.schema),
            config.slot
        )));
    }
    if let Some(s) = &slot {
        if s.plugin != "pgoutput" {
            return Err(Error::definite(format!(
                "slot {} exists on green with plugin {}; drop it or choose another green.slot",
                config.slot, s.plugin
            )));
        }
        if s.lost && !copy {
            return Err(Error::definite(format!(
                "slot {} on green was invalidated (wal_status = lost); run `pgbridge teardown` and set up again with a re-synchronized blue",
                config.slot
            )));
        }
    }

    // Validation passed: create what is missing.
    let create = match blue_schema {
        BlueSchema::Create => Some(checkpoint::create_sql(&config.schema)),
        BlueSchema::CreateTables => Some(tables_sql(&config.schema)),
        BlueSchema::Ready => None,
    };
    if let Some(create) = create {
        blue.batch_execute(&create)
            .await
            .map_err(blue_err(&format!("creating schema {}", config.schema)))?;
    }

    if publication_exists {
        println!(
            "green  publication {:<24} exists, {} table(s)",
            config.publication,
            tables.len()
        );
    } else {
        let names: Vec<String> = tables.iter().map(|t| sql::qualified(&t.namespace, &t.name)).collect();
        // Changes of a partitioned table then arrive under its own name, which is what its
        // mapping names, whatever partitions green has or attaches later.
        let via_root = if green_catalog::any_partitioned(&tables) {
            " WITH (publish_via_partition_root = true)"
        } else {
            ""
        };
        green
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}{via_root}",
                sql::ident(&config.publication),
                names.join(", ")
            ))
            .await
            .map_err(green_err(&format!("creating publication {}", config.publication)))?;
        println!(
            "green  publication {:<24} created, {} table(s)",
            config.publication,
            tables.len()
        );
    }

    if copy {
        let plans = whole_partitioned_tables(config, &green, &blue, plans).await?;
        let code = super::copy::run(config, &green, &blue, &env, plans, slot.is_some(), jobs).await?;
        accept(config, &blue, &report).await?;
        return Ok(code);
    }

    let start = match &slot {
        Some(s) => {
            println!(
                "green  slot        {:<24} exists, confirmed up to {}",
                config.slot, s.confirmed
            );
            s.confirmed
        }
        None => match create_slot(config).await {
            Ok(lsn) => {
                println!("green  slot        {:<24} created at {lsn}", config.slot);
                lsn
            }
            Err(e) => {
                if !publication_exists {
                    let _ = green
                        .batch_execute(&format!(
                            "DROP PUBLICATION IF EXISTS {}",
                            sql::ident(&config.publication)
                        ))
                        .await;
                }
                return Err(e);
            }
        },
    };

    match existing_checkpoint {
        Some(cp) => println!(
            "blue   checkpoint  {:<24} exists at {}",
            format!("{}.checkpoint", config.schema),
            cp.lsn
        ),
        None => {
            blue.execute(
                &format!(
                    "INSERT INTO {} (slot_name, lsn, updated_at) VALUES ($1, $2::text::pg_lsn, now()) ON CONFLICT (slot_name) DO NOTHING",
                    sql::qualified(&config.schema, "checkpoint")
                ),
                &[&config.slot, &start.to_string()],
            )
            .await
            .map_err(blue_err("writing the checkpoint"))?;
            println!(
                "blue   checkpoint  {:<24} created at {start}",
                format!("{}.checkpoint", config.schema)
            );
        }
    }
    accept(config, &blue, &report).await?;
    println!("ready: start streaming with `pgbridge run`");
    Ok(0)
}

/// The tables to copy: partitions streamed under their own names but mapped through their
/// partitioned table are copied as that table, whole (one partition's copy would delete the
/// other partitions' rows from blue's table, as rows green lacks).
async fn whole_partitioned_tables(
    config: &Config,
    green: &Client,
    blue: &Client,
    plans: Vec<Arc<TablePlan>>,
) -> Result<Vec<Arc<TablePlan>>> {
    let mappings = crate::mapping::resolve::Mappings::load(config)?.lenient();
    let mut out: Vec<Arc<TablePlan>> = Vec::new();
    for plan in plans {
        let Some(root) = plan.partition_of.clone() else {
            out.push(plan);
            continue;
        };
        if out.iter().any(|p| *p.green_name == *root) {
            continue;
        }
        let table = green_catalog::partitioned_table_of(green, &plan.green)
            .await?
            .ok_or_else(|| Error::definite(format!("green table {root} disappeared during setup; run it again")))?;
        out.push(mappings.plan(blue, &table).await.map_err(Error::into_definite)?);
    }
    Ok(out)
}

/// Stores the plan just validated as the accepted one, which `run`, `check`, `status` and
/// `verify` compare both catalogs with from now on (see [`crate::drift`]).
async fn accept(config: &Config, blue: &Client, report: &super::preflight::Report) -> Result<()> {
    crate::drift::store(blue, config, &report.current.signatures, true)
        .await
        .map_err(Error::into_definite)?;
    let verb = match (&report.accepted, report.drift.is_empty()) {
        (None, _) => "stored",
        (Some(_), true) => "unchanged",
        (Some(_), false) => "accepted as changed",
    };
    println!(
        "blue   plan        {:<24} {verb}, {} table(s)",
        format!("{}.accepted_plan", config.schema),
        report.current.signatures.len()
    );
    Ok(())
}

/// Green's settings and the role's attributes, as setup needs them. A failed query keeps its
/// kind (a dropped connection stays transient); the findings themselves are definite.
pub(crate) async fn check_green_server(green: &Client) -> Result<()> {
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

/// Stops setup before it creates anything when there are problems, listing every one.
fn refuse(problems: Vec<String>) -> Result<()> {
    privileges::refuse(problems, "nothing was created")
}

/// pgbridge's tables in `<schema>`, for a schema that exists: without `CREATE SCHEMA`, which
/// PostgreSQL refuses to a role without CREATE on the database even when the schema exists.
fn tables_sql(schema: &str) -> String {
    let all = checkpoint::create_sql(schema);
    let create_schema = format!("CREATE SCHEMA IF NOT EXISTS {};", sql::ident(schema));
    match all.strip_prefix(&create_schema) {
        Some(rest) => rest.to_string(),
        None => all,
    }
}

pub(crate) struct SlotState {
    pub plugin: String,
    pub confirmed: Lsn,
    pub lost: bool,
    /// A walsender is streaming it.
    pub active: bool,
}

pub(crate) async fn slot_state(green: &Client, slot: &str) -> Result<Option<SlotState>> {
    let row = green
        .query_opt(
            "SELECT coalesce(plugin::text, ''), coalesce(confirmed_flush_lsn::text, '0/0'), coalesce(wal_status = 'lost', false), \
                    active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(green_err("reading replication slots"))?;
    row.map(|r| {
        let confirmed: String = r.get(1);
        Ok(SlotState {
            plugin: r.get(0),
            confirmed: confirmed
                .parse()
                .map_err(|e| Error::definite(format!("slot {slot}: {e}")))?,
            lost: r.get(2),
            active: r.get(3),
        })
    })
    .transpose()
}

async fn create_slot(config: &Config) -> Result<Lsn> {
    let (_, point, _) = create_slot_on(config, false).await?;
    Ok(point)
}

/// Creates the slot over a replication connection; returns the connection, the consistent
/// point and, with `export`, the snapshot name (importable while the connection stays open
/// and idle).
pub(crate) async fn create_slot_on(config: &Config, export: bool) -> Result<(ReplicationConn, Lsn, Option<String>)> {
    let mut conn = ReplicationConn::connect(&config.green, "pgbridge setup")
        .await
        .map_err(Error::into_definite)?;
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}",
            sql::ident(&config.slot),
            if export { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" }
        ))
        .await
        .map_err(|e| {
            e.into_definite()
                .hint("check max_replication_slots on green and that the role has the REPLICATION attribute")
        })?;
    let point = rows.first("consistent_point").unwrap_or("0/0");
    let lsn = point
        .parse()
        .map_err(|e| Error::definite(format!("CREATE_REPLICATION_SLOT returned {point:?}: {e}")))?;
    let snapshot = rows.first("snapshot_name").map(str::to_string);
    Ok((conn, lsn, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_sql_leaves_the_schema_alone() {
        let text = tables_sql("pg bridge");
        assert!(!text.contains("CREATE SCHEMA"), "{text}");
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS \"pg bridge\".\"checkpoint\""),
            "{text}"
        );
        assert!(checkpoint::create_sql("pg bridge").ends_with(&text));
    }
}
