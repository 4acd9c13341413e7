//! Undoing a switchover that failed: every step recorded in [`Done`] is reversed, newest first,
//! and what this run's `setup` of the reverse bridge created is removed.

use super::{set_read_only, Done, Log, Side};
use crate::config::Config;
use crate::error::Result;
use crate::sql;
use crate::state::checkpoint;

/// Undoes `done`, newest first; returns whether everything was undone.
pub(super) async fn undo(log: &Log<'_>, left: &Side, entered: &Side, reverse: &Config, done: &mut Done) -> bool {
    let mut ok = true;
    for (role, previous) in std::mem::take(&mut done.unfenced).into_iter().rev() {
        match set_read_only(entered, &role, previous.as_deref()).await {
            Ok(()) => log.say(format!("    fenced {role} on {} again", entered.address)),
            Err(e) => {
                ok = false;
                log.say(format!("    could not fence {role} on {} again: {e}", entered.address));
            }
        }
    }
    for moved in std::mem::take(&mut done.moved).into_iter().rev() {
        match moved.restore(&entered.client).await {
            Ok(()) => log.say(format!(
                "    sequence {} put back on {}",
                moved.sql_name, entered.address
            )),
            Err(e) => {
                ok = false;
                log.say(format!(
                    "    could not put sequence {} back on {}: {}",
                    moved.sql_name,
                    entered.address,
                    entered.err("setval")(e)
                ));
            }
        }
    }
    for (role, previous) in std::mem::take(&mut done.fenced).into_iter().rev() {
        match set_read_only(left, &role, previous.as_deref()).await {
            Ok(()) => log.say(format!("    un-fenced {role} on {}", left.address)),
            Err(e) => {
                ok = false;
                log.say(format!(
                    "    could not un-fence {role} on {}: {e}; run there: ALTER ROLE {} IN DATABASE ... RESET \
                     default_transaction_read_only",
                    left.address,
                    sql::ident(&role)
                ));
            }
        }
    }
    let (slot, publication) = (
        std::mem::take(&mut done.reverse_created),
        std::mem::take(&mut done.reverse_publication_created),
    );
    if slot || publication {
        match remove_reverse(entered, left, reverse, slot, publication).await {
            Ok(()) => log.say("    reverse bridge set up by this run torn down"),
            Err(e) => {
                ok = false;
                log.say(format!(
                    "    could not tear the reverse bridge down: {e}; run `pgbridge teardown -c` with its configuration"
                ));
            }
        }
    }
    ok
}

/// Drops what this run's `setup` of the reverse bridge created: the slot (also one still
/// being created), its checkpoint row, the publication.
async fn remove_reverse(entered: &Side, left: &Side, reverse: &Config, slot: bool, publication: bool) -> Result<()> {
    if slot {
        entered
            .client
            .execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                 WHERE application_name = 'pgbridge setup' AND usename = current_user AND backend_type = 'walsender'",
                &[],
            )
            .await
            .map_err(entered.err("ending the slot creation"))?;
        entered
            .client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&reverse.slot],
            )
            .await
            .map_err(entered.err("dropping the reverse bridge's slot"))?;
        let exists = checkpoint::probe_table(&left.client, &reverse.schema, "checkpoint")
            .await
            .map_err(left.err("looking for the reverse bridge's checkpoint"))?;
        if exists {
            checkpoint::delete(&left.client, &reverse.schema, &reverse.slot)
                .await
                .map_err(left.err("deleting the reverse bridge's checkpoint"))?;
        }
    }
    if publication {
        entered
            .client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                sql::ident(&reverse.publication)
            ))
            .await
            .map_err(entered.err("dropping the reverse bridge's publication"))?;
    }
    Ok(())
}
