//! `pgbridge lag`: the cutover gate. Reads positions from the databases themselves (green's WAL
//! position and slot, blue's checkpoint), so it answers whether or not `pgbridge run` is up, and
//! is cheap enough to call every 100 ms.
//!
//! `lag_bytes` is green's current WAL position minus blue's checkpoint. `lag_seconds` is the age
//! of the oldest green transaction blue does not have yet, 0 when there is none: exact while
//! the slot is idle (the first pending transaction is peeked from the slot), an upper bound
//! (age of the last applied commit) while a `run` holds the slot.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio_postgres::Client;

use super::{connect_green_sql, green_err};
use crate::apply::{self, checkpoint};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::protocol::pgoutput::{self, LogicalMessage};
use crate::protocol::replication::pg_time_to_system;
use crate::sql;

/// What `lag` prints: the same keys on one line or as JSON.
#[derive(Serialize, Debug)]
pub struct Lag {
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub applied_lsn: String,
    pub green_lsn: String,
}

pub async fn run(config: &Config, max_bytes: Option<u64>, max_seconds: Option<f64>, json: bool) -> Result<i32> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = apply::connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    let lag = measure(config, &green, &blue).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&lag).map_err(|e| Error::definite(e.to_string()))?
        );
    } else {
        println!(
            "lag_bytes={} lag_seconds={:.3} applied_lsn={} green_lsn={}",
            lag.lag_bytes, lag.lag_seconds, lag.applied_lsn, lag.green_lsn
        );
    }
    let over = max_bytes.is_some_and(|m| lag.lag_bytes > m) || max_seconds.is_some_and(|m| lag.lag_seconds > m);
    Ok(if over { 1 } else { 0 })
}

/// Measures lag from the databases.
pub async fn measure(config: &Config, green: &Client, blue: &Client) -> Result<Lag> {
    let cp = checkpoint::read_required(blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;
    let row = green
        .query_one(
            "SELECT pg_current_wal_lsn()::text, \
                    (SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = $1)",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading the WAL position"))?;
    let green_lsn: Lsn = row
        .get::<_, String>(0)
        .parse()
        .map_err(|e| Error::definite(format!("green: {e}")))?;
    let slot_active: Option<bool> = row.get(1);
    let lag_bytes = cp.lsn.bytes_until(green_lsn);
    let lag_seconds = if lag_bytes == 0 {
        0.0
    } else if slot_active == Some(false) {
        match oldest_pending_commit(config, green, cp.lsn).await {
            Ok(Some(t)) => age(t),
            Ok(None) => 0.0,
            Err(e) => {
                tracing::debug!(error = %e, "could not peek the slot; estimating lag_seconds");
                last_commit_age(blue, config).await?
            }
        }
    } else {
        last_commit_age(blue, config).await?
    };
    Ok(Lag {
        lag_bytes,
        lag_seconds,
        applied_lsn: cp.lsn.to_string(),
        green_lsn: green_lsn.to_string(),
    })
}

fn age(t: SystemTime) -> f64 {
    SystemTime::now().duration_since(t).map_or(0.0, |d| d.as_secs_f64())
}

/// Commit time of the first transaction in the (idle) slot that blue's checkpoint does not
/// cover, or `None` when only WAL without published transactions is pending.
async fn oldest_pending_commit(config: &Config, green: &Client, checkpoint: Lsn) -> Result<Option<SystemTime>> {
    let rows = green
        .query(
            &format!(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, 64, 'proto_version', '1', \
                 'publication_names', {})",
                sql::literal(&sql::ident(&config.publication))
            ),
            &[&config.slot],
        )
        .await
        .map_err(green_err("peeking the slot"))?;
    for row in rows {
        let data: Vec<u8> = row.get(0);
        if let Ok(LogicalMessage::Begin(b)) = pgoutput::decode(Bytes::from(data), false) {
            if b.final_lsn >= checkpoint {
                return Ok(Some(pg_time_to_system(b.timestamp)));
            }
        }
    }
    Ok(None)
}

/// Age of the last commit blue has applied: an upper bound of the oldest pending one's.
async fn last_commit_age(blue: &Client, config: &Config) -> Result<f64> {
    let seconds: Option<f64> = blue
        .query_one(
            &format!(
                "SELECT extract(epoch FROM now() - coalesce(commit_time, updated_at))::float8 FROM {} WHERE slot_name = $1",
                sql::qualified(&config.schema, "checkpoint")
            ),
            &[&config.slot],
        )
        .await
        .map_err(|e| Error::postgres("reading the checkpoint on blue", &e).into_definite())?
        .get(0);
    Ok(seconds.unwrap_or(0.0).max(0.0))
}
