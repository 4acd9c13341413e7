//! `pgbridge setup`: validate everything first, then create what is missing, in an order that
//! leaves nothing half-made: blue's schema, green's publication, the slot, the checkpoint row.
//! Running it again changes nothing.

use std::sync::Arc;

use tokio_postgres::Client;

use super::preflight::{self, Report};
use super::privileges::{self, BlueSchema};
use super::slot::{self, SlotState};
use crate::config::Config;
use crate::connect::{blue_err, green_err};
use crate::error::{Error, Result};
use crate::evaluation::Environment;
use crate::lsn::Lsn;
use crate::mapping::{green_catalog, TablePlan};
use crate::sql;
use crate::state::checkpoint::{self, Checkpoint};
use crate::state::server;

/// `setup`: validates, then creates what is missing; `say` gets a line per object.
pub async fn run(config: &Config, copy: bool, jobs: usize, say: &mut dyn FnMut(String)) -> Result<i32> {
    let (green, blue) = crate::connect::both(config).await?;
    let (report, env) = validate(config, &green, &blue, copy, say).await?;
    let blue_schema = privileges::blue_schema(&blue, &config.schema).await?;
    let existing_checkpoint = checkpoint::read(&blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;
    let slot = slot::slot_state(&green, &config.slot).await?;
    // What the checkpoint's green server became says more than a slot that went with it.
    let green_server = same_green_server(config, &blue, existing_checkpoint.as_ref(), copy).await?;
    refuse_conflicts(
        &config.schema,
        &config.slot,
        existing_checkpoint.as_ref(),
        slot.as_ref(),
        copy,
    )?;

    // Validation passed: create what is missing.
    create_blue_tables(&blue, &config.schema, blue_schema).await?;
    ensure_publication(config, &green, &report, say).await?;
    if copy {
        let plans = whole_partitioned_tables(config, &green, &blue, plans_of(&report)).await?;
        let job = super::copy::Job {
            plans,
            slot_exists: slot.is_some(),
            jobs,
        };
        let code = super::copy::run(config, &green, &blue, &env, job, say).await?;
        accept(config, &blue, &report, say).await?;
        server::record(&blue, &config.schema, &config.slot, &green_server).await?;
        if code == 0 {
            say("next: start streaming with `pgbridge run`; rows written on green during the copy follow".to_string());
        }
        return Ok(code);
    }
    let start = ensure_slot(config, &green, slot.as_ref(), report.publication_exists, say).await?;
    ensure_checkpoint(config, &blue, existing_checkpoint.as_ref(), start, say).await?;
    accept(config, &blue, &report, say).await?;
    server::record(&blue, &config.schema, &config.slot, &green_server).await?;
    say("next: start streaming with `pgbridge run`".to_string());
    Ok(0)
}

fn plans_of(report: &Report) -> Vec<Arc<TablePlan>> {
    report.tables.iter().map(|t| t.plan.clone()).collect()
}

/// Exactly `check`'s validation (every statement prepared on blue, NOT NULL coverage,
/// privileges), plus what a copy needs, before anything is created. Returns the report and
/// the settings blue evaluates mappings in.
async fn validate(
    config: &Config,
    green: &Client,
    blue: &Client,
    copy: bool,
    say: &mut dyn FnMut(String),
) -> Result<(Report, Environment)> {
    // A mapping file that does not parse is an error of its own, before any catalog work.
    crate::mapping::resolve::Mappings::load(config)?;
    // Also checks [blue] timezone before anything is created.
    let env = Environment::setup(blue, config).await.map_err(Error::into_definite)?;
    let report = preflight::validate(config, green, blue)
        .await
        .map_err(Error::into_definite)?;
    let mut problems = report.problems.clone();
    if copy {
        let plans = plans_of(&report);
        problems.extend(privileges::read_problems(green, blue, &plans, "setup --copy").await?);
        problems.extend(privileges::copy_foreign_key_problem(blue, &plans).await?);
    }
    refuse(problems)?;
    for finding in &report.drift {
        say(format!(
            "plan   {:<30} changed since it was accepted: {}",
            finding.green_table,
            finding.text()
        ));
    }
    Ok((report, env))
}

/// Refuses a checkpoint and slot that do not go together: a copy that did not finish, a
/// checkpoint whose slot is gone, a slot of another plugin or one green invalidated. A copy
/// starts over, so it accepts the first, second and last.
fn refuse_conflicts(
    schema: &str,
    slot_name: &str,
    checkpoint: Option<&Checkpoint>,
    slot: Option<&SlotState>,
    copy: bool,
) -> Result<()> {
    if let Some(cp) = checkpoint.filter(|cp| cp.lsn.is_zero() && !copy) {
        return Err(Error::definite(format!(
            "blue's checkpoint for slot {slot_name} is at {}: an initial copy into blue did not finish; \
             run `pgbridge setup --copy` again (it starts over)",
            cp.lsn
        )));
    }
    if let (Some(cp), None, false) = (checkpoint, slot, copy) {
        return Err(Error::definite(format!(
            "blue has a checkpoint for slot {slot_name} at {} but green has no such slot: changes after {} can no longer be \
             streamed. If blue was re-synchronized with green, delete the old checkpoint \
             (DELETE FROM {}.checkpoint WHERE slot_name = '{slot_name}') and run setup again",
            cp.lsn,
            cp.lsn,
            sql::ident(schema),
        )));
    }
    if let Some(s) = slot {
        if s.plugin != "pgoutput" {
            return Err(Error::definite(format!(
                "slot {slot_name} exists on green with plugin {}; drop it or choose another green.slot",
                s.plugin
            )));
        }
        if s.lost && !copy {
            return Err(Error::definite(format!(
                "slot {slot_name} on green was invalidated (wal_status = lost); run `pgbridge teardown` and set up again with a re-synchronized blue"
            )));
        }
    }
    Ok(())
}

/// Green's identity, once it is safe to record it as the server blue's checkpoint belongs to:
/// `setup` without `--copy` keeps blue's checkpoint, so it refuses a server that `run` would
/// refuse (another cluster, a failover past blue's checkpoint); `--copy` starts over.
async fn same_green_server(
    config: &Config,
    blue: &Client,
    checkpoint: Option<&Checkpoint>,
    copy: bool,
) -> Result<server::GreenServer> {
    let (now, history) = slot::identify(config).await?;
    if let (Some(cp), false) = (checkpoint, copy) {
        let recorded = server::read(blue, &config.schema, &config.slot).await?;
        server::judge(recorded.as_ref(), &now, &history, cp.lsn)?;
    }
    Ok(now)
}

/// Creates `<schema>` and pgbridge's tables in it, or only the tables, as the role may.
async fn create_blue_tables(blue: &Client, schema: &str, blue_schema: BlueSchema) -> Result<()> {
    let create = match blue_schema {
        BlueSchema::Create => Some(checkpoint::create_sql(schema)),
        BlueSchema::CreateTables => Some(checkpoint::create_tables_sql(schema)),
        BlueSchema::Ready => None,
    };
    if let Some(create) = create {
        blue.batch_execute(&create)
            .await
            .map_err(blue_err(&format!("creating schema {schema}")))?;
    }
    Ok(())
}

/// Creates the publication of the streamed tables on green unless it exists.
async fn ensure_publication(
    config: &Config,
    green: &Client,
    report: &Report,
    say: &mut dyn FnMut(String),
) -> Result<()> {
    let tables = &report.green_tables;
    if report.publication_exists {
        say(format!(
            "green  publication {:<24} exists, {} table(s)",
            config.publication,
            tables.len()
        ));
        return Ok(());
    }
    let names: Vec<String> = tables.iter().map(|t| sql::qualified(&t.namespace, &t.name)).collect();
    // Changes of a partitioned table then arrive under its own name, which is what its
    // mapping names, whatever partitions green has or attaches later.
    let via_root = if green_catalog::any_partitioned(tables) {
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
    say(format!(
        "green  publication {:<24} created, {} table(s)",
        config.publication,
        tables.len()
    ));
    Ok(())
}

/// The slot's position: the existing slot's confirmed position, or a new slot's consistent
/// point. A publication this run created is dropped again when the slot cannot be created.
async fn ensure_slot(
    config: &Config,
    green: &Client,
    slot: Option<&SlotState>,
    publication_existed: bool,
    say: &mut dyn FnMut(String),
) -> Result<Lsn> {
    if let Some(s) = slot {
        say(format!(
            "green  slot        {:<24} exists, confirmed up to {}",
            config.slot, s.confirmed
        ));
        if s.failover == Some(false) {
            if s.active {
                say(format!(
                    "green  slot        {:<24} is not a failover slot and is in use: stop `pgbridge run` and run \
                     setup again to make it one",
                    config.slot
                ));
            } else {
                slot::make_failover_slot(config).await?;
                say(format!("green  slot        {:<24} made a failover slot", config.slot));
            }
        }
        return Ok(s.confirmed);
    }
    match slot::create_slot(config).await {
        Ok(lsn) => {
            say(format!("green  slot        {:<24} created at {lsn}", config.slot));
            Ok(lsn)
        }
        Err(e) => {
            if !publication_existed {
                let _ = green
                    .batch_execute(&format!(
                        "DROP PUBLICATION IF EXISTS {}",
                        sql::ident(&config.publication)
                    ))
                    .await;
            }
            Err(e)
        }
    }
}

/// Writes the checkpoint at `start` unless blue has one.
async fn ensure_checkpoint(
    config: &Config,
    blue: &Client,
    existing: Option<&Checkpoint>,
    start: Lsn,
    say: &mut dyn FnMut(String),
) -> Result<()> {
    match existing {
        Some(cp) => say(format!(
            "blue   checkpoint  {:<24} exists at {}",
            format!("{}.checkpoint", config.schema),
            cp.lsn
        )),
        None => {
            checkpoint::insert_if_missing(blue, &config.schema, &config.slot, start)
                .await
                .map_err(blue_err("writing the checkpoint"))?;
            say(format!(
                "blue   checkpoint  {:<24} created at {start}",
                format!("{}.checkpoint", config.schema)
            ));
        }
    }
    Ok(())
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
async fn accept(config: &Config, blue: &Client, report: &Report, say: &mut dyn FnMut(String)) -> Result<()> {
    crate::drift::store(blue, config, &report.current.signatures, true)
        .await
        .map_err(Error::into_definite)?;
    let verb = match (&report.accepted, report.drift.is_empty()) {
        (None, _) => "stored",
        (Some(_), true) => "unchanged",
        (Some(_), false) => "accepted as changed",
    };
    say(format!(
        "blue   plan        {:<24} {verb}, {} table(s)",
        format!("{}.accepted_plan", config.schema),
        report.current.signatures.len()
    ));
    Ok(())
}

/// Stops setup before it creates anything when there are problems, listing every one.
fn refuse(problems: Vec<String>) -> Result<()> {
    privileges::refuse(problems, "nothing was created")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lsn: &str) -> Checkpoint {
        Checkpoint {
            lsn: lsn.parse().expect("lsn"),
            commit_time: None,
            updated_at: String::new(),
        }
    }

    fn slot(plugin: &str, lost: bool) -> SlotState {
        SlotState {
            plugin: plugin.to_string(),
            confirmed: "0/10".parse().expect("lsn"),
            lost,
            active: false,
            failover: None,
        }
    }

    fn refused(cp: Option<&Checkpoint>, s: Option<&SlotState>, copy: bool) -> Option<String> {
        refuse_conflicts("pgbridge", "s1", cp, s, copy)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn an_unfinished_copy_is_refused_unless_copying_again() {
        let cp = at("0/0");
        let s = slot("pgoutput", false);
        let text = refused(Some(&cp), Some(&s), false).expect("refused");
        assert!(text.contains("an initial copy into blue did not finish"), "{text}");
        assert_eq!(refused(Some(&cp), Some(&s), true), None);
    }

    #[test]
    fn a_checkpoint_without_its_slot_is_refused_unless_copying() {
        let cp = at("0/20");
        let text = refused(Some(&cp), None, false).expect("refused");
        assert!(text.contains("green has no such slot"), "{text}");
        assert!(
            text.contains("DELETE FROM \"pgbridge\".checkpoint WHERE slot_name = 's1'"),
            "{text}"
        );
        assert_eq!(refused(Some(&cp), None, true), None);
        assert_eq!(refused(None, None, false), None);
    }

    #[test]
    fn a_slot_of_another_plugin_or_invalidated_is_refused() {
        let other = slot("wal2json", false);
        assert!(refused(None, Some(&other), true)
            .expect("refused")
            .contains("plugin wal2json"));
        let lost = slot("pgoutput", true);
        assert!(refused(None, Some(&lost), false)
            .expect("refused")
            .contains("invalidated"));
        assert_eq!(refused(None, Some(&lost), true), None);
        assert_eq!(refused(Some(&at("0/20")), Some(&slot("pgoutput", false)), false), None);
    }
}
