//! The bridge's replication slot on green: read its state, create it (with or without an
//! exported snapshot for the initial copy), drop it.

use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::source::ReplicationConn;
use crate::sql;
use crate::state::server::GreenServer;

/// A replication slot on green, as `setup`, `copy` and `switchover` need it.
pub struct SlotState {
    pub plugin: String,
    pub confirmed: Lsn,
    pub lost: bool,
    /// A walsender is streaming it.
    pub active: bool,
    /// A failover slot, synchronized to standbys that ask for it; `None` before PostgreSQL 17.
    pub failover: Option<bool>,
}

/// The slot named `slot` on green, if there is one.
pub async fn slot_state(green: &Client, slot: &str) -> Result<Option<SlotState>> {
    let row = green
        .query_opt(
            "SELECT coalesce(plugin::text, ''), coalesce(confirmed_flush_lsn::text, '0/0'), coalesce(wal_status = 'lost', false), \
                    active, (to_jsonb(s) ->> 'failover')::boolean \
             FROM pg_replication_slots AS s WHERE slot_name = $1",
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
            failover: r.get(4),
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
    let version = conn.server_version_num();
    let options = match (version >= 150000, export) {
        // A failover slot (PostgreSQL 17+) is synchronized to standbys that ask for it, so
        // that a promoted standby has it and the bridge carries on there.
        (true, _) => format!(
            "(SNAPSHOT '{}'{})",
            if export { "export" } else { "nothing" },
            if version >= 170000 { ", FAILOVER" } else { "" }
        ),
        (false, true) => "EXPORT_SNAPSHOT".into(),
        (false, false) => "NOEXPORT_SNAPSHOT".into(),
    };
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {options}",
            sql::ident(&config.slot),
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

/// Green's identity (system identifier, timeline) and timeline history, over a replication
/// connection as `run` reads them.
pub async fn identify(config: &Config) -> Result<(GreenServer, Vec<(u32, Lsn)>)> {
    let mut conn = ReplicationConn::connect(&config.green, "pgbridge setup")
        .await
        .map_err(Error::into_definite)?;
    conn.server().await.map_err(Error::into_definite)
}

/// Makes an existing slot a failover slot (PostgreSQL 17+; one created by an earlier pgbridge
/// or by hand is not). Needs the slot idle: `setup` runs while `run` is stopped.
pub async fn make_failover_slot(config: &Config) -> Result<()> {
    let mut conn = ReplicationConn::connect(&config.green, "pgbridge setup")
        .await
        .map_err(Error::into_definite)?;
    conn.simple_query(&format!(
        "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
        sql::ident(&config.slot)
    ))
    .await
    .map(drop)
    .map_err(|e| {
        e.into_definite()
            .hint("stop `pgbridge run` while `setup` makes the slot a failover slot")
    })
}

/// Drops the slot `slot` on green.
pub async fn drop_slot(green: &Client, slot: &str) -> Result<()> {
    green
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map(|_| ())
        .map_err(green_err(&format!("dropping slot {slot}")))
}
