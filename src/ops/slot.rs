//! The bridge's replication slot on green: read its state, create it (with or without an
//! exported snapshot for the initial copy), drop it.

use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::source::ReplicationConn;
use crate::sql;

/// A replication slot on green, as `setup`, `copy` and `switchover` need it.
pub struct SlotState {
    pub plugin: String,
    pub confirmed: Lsn,
    pub lost: bool,
    /// A walsender is streaming it.
    pub active: bool,
}

/// The slot named `slot` on green, if there is one.
pub async fn slot_state(green: &Client, slot: &str) -> Result<Option<SlotState>> {
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

/// Creates the slot without exporting a snapshot; returns its consistent point.
pub async fn create_slot(config: &Config) -> Result<Lsn> {
    let (_, point, _) = create_slot_on(config, false).await?;
    Ok(point)
}

/// Creates the slot over a replication connection; returns the connection, the consistent
/// point and, with `export`, the snapshot name (importable while the connection stays open
/// and idle).
pub async fn create_slot_on(config: &Config, export: bool) -> Result<(ReplicationConn, Lsn, Option<String>)> {
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

/// Drops the slot `slot` on green.
pub async fn drop_slot(green: &Client, slot: &str) -> Result<()> {
    green
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map(|_| ())
        .map_err(green_err(&format!("dropping slot {slot}")))
}
