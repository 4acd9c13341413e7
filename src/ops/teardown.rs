//! `pgbridge teardown`: drop the slot and publication on green, and the checkpoint row (with the
//! accepted plan and recorded drift) and replication origins on blue.
//! The checkpoint goes too, because it is meaningless without the slot: a later `setup` must not
//! resume from it.

use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::{blue_err, green_err};
use crate::error::{Error, Result};
use crate::sql;
use crate::state::{checkpoint, origin};

/// `teardown`: drops what `setup` created; `say` gets a line per object.
pub async fn run(config: &Config, say: &mut dyn FnMut(String)) -> Result<i32> {
    let (green, blue) = crate::connect::both(config).await?;
    let publication_owner = publication_owner(config, &green).await?;
    drop_slot(config, &green, say).await?;
    drop_publication(config, &green, publication_owner, say).await?;
    delete_checkpoint(config, &blue, say).await?;
    if let Some(base) = &config.origin {
        drop_origins(&blue, base, say).await?;
    }
    Ok(0)
}

/// The publication's owner and whether this role may act as it, when the publication exists.
/// A publication an owner created beforehand (README, "Least-privilege setup") can only be
/// dropped by its owner: teardown keeps it, and says so, rather than stop after dropping the slot.
async fn publication_owner(config: &Config, green: &Client) -> Result<Option<(String, bool)>> {
    Ok(green
        .query_opt(
            "SELECT pubowner::regrole::text, pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await
        .map_err(green_err("reading publications"))?
        .map(|r| (r.get(0), r.get(1))))
}

/// Drops the slot unless a backend streams it (then nothing further is dropped).
async fn drop_slot(config: &Config, green: &Client, say: &mut dyn FnMut(String)) -> Result<()> {
    let slot = green
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading replication slots"))?;
    match slot {
        Some(row) => {
            if let Some(pid) = row.get::<_, Option<i32>>(0) {
                return Err(Error::definite(format!(
                    "slot {} is in use by green backend pid {pid} (a running pgbridge?); stop it first",
                    config.slot
                )));
            }
            green
                .execute("SELECT pg_drop_replication_slot($1)", &[&config.slot])
                .await
                .map_err(green_err(&format!("dropping slot {}", config.slot)))?;
            say(format!("green  slot        {:<24} dropped", config.slot));
        }
        None => say(format!("green  slot        {:<24} absent", config.slot)),
    }
    Ok(())
}

async fn drop_publication(
    config: &Config,
    green: &Client,
    owner: Option<(String, bool)>,
    say: &mut dyn FnMut(String),
) -> Result<()> {
    match owner {
        Some((owner, false)) => say(format!(
            "green  publication {:<24} kept: owned by {owner}; to drop it, have {owner} or a superuser run on green: \
             DROP PUBLICATION {}",
            config.publication,
            sql::ident(&config.publication)
        )),
        None => say(format!("green  publication {:<24} absent", config.publication)),
        Some((_, true)) => {
            green
                .batch_execute(&format!(
                    "DROP PUBLICATION IF EXISTS {}",
                    sql::ident(&config.publication)
                ))
                .await
                .map_err(green_err(&format!("dropping publication {}", config.publication)))?;
            say(format!("green  publication {:<24} dropped", config.publication));
        }
    }
    Ok(())
}

/// Deletes the slot's checkpoint row, and its accepted plan and recorded drift, which belong
/// to the slot too.
async fn delete_checkpoint(config: &Config, blue: &Client, say: &mut dyn FnMut(String)) -> Result<()> {
    if checkpoint::read(blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?
        .is_some()
    {
        checkpoint::delete(blue, &config.schema, &config.slot)
            .await
            .map_err(blue_err("deleting the checkpoint"))?;
        say(format!("blue   checkpoint  {:<24} deleted", config.slot));
    } else {
        say(format!("blue   checkpoint  {:<24} absent", config.slot));
    }
    for table in ["accepted_plan", "drift"] {
        if checkpoint::table_exists(blue, &config.schema, table)
            .await
            .map_err(Error::into_definite)?
        {
            checkpoint::delete_slot_rows(blue, &config.schema, table, &config.slot)
                .await
                .map_err(blue_err(&format!("deleting from {}.{table}", config.schema)))?;
        }
    }
    Ok(())
}

/// Drops the replication origins the bridge's blue sessions used. An origin whose session is
/// still connected cannot be dropped; dropping nothing needs no privilege.
async fn drop_origins(blue: &Client, base: &str, say: &mut dyn FnMut(String)) -> Result<()> {
    for name in origin::all_names(base, crate::apply::MAX_LANES) {
        let exists = origin::exists(blue, &name)
            .await
            .map_err(blue_err(&format!("looking up replication origin {name}")))?;
        if exists {
            origin::drop(blue, &name)
                .await
                .map_err(blue_err(&format!("dropping replication origin {name}")))?;
            say(format!("blue   origin      {name:<24} dropped"));
        }
    }
    Ok(())
}
