//! `pgbridge wait`: writes a marker on green (a transactional logical message) and waits until
//! blue's checkpoint passes it. When it returns 0, blue has every transaction green committed
//! before the call, also while green is under write load.

use std::time::{Duration, Instant};

use super::{connect_green_sql, green_err};
use crate::apply::{self, checkpoint};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

const POLL: Duration = Duration::from_millis(20);

/// Writes a transactional logical message on green and returns its LSN. The message commits
/// in its own transaction, after every transaction that committed before the call, so a
/// checkpoint past it covers them all.
pub(crate) async fn write_marker(green: &tokio_postgres::Client, prefix: &str) -> Result<Lsn> {
    green
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, now()::text)::text",
            &[&prefix],
        )
        .await
        .map_err(green_err("writing a marker"))?
        .get::<_, String>(0)
        .parse()
        .map_err(|e| Error::definite(format!("green: {e}")))
}

pub async fn run(config: &Config, timeout: Duration) -> Result<i32> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = apply::connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    let started = Instant::now();
    let marker = write_marker(&green, "pgbridge.wait").await?;
    loop {
        let cp = checkpoint::read(&blue, &config.schema, &config.slot)
            .await
            .map_err(Error::into_definite)?
            .ok_or_else(|| Error::definite("blue has no checkpoint for this slot; run `pgbridge setup` first"))?;
        if cp.lsn > marker {
            println!(
                "caught up in {:.3}s: blue's checkpoint {} is past the marker {marker}",
                started.elapsed().as_secs_f64(),
                cp.lsn
            );
            return Ok(0);
        }
        if started.elapsed() >= timeout {
            println!(
                "timed out after {:.3}s: blue's checkpoint {} has not reached the marker {marker} ({} bytes behind)",
                started.elapsed().as_secs_f64(),
                cp.lsn,
                cp.lsn.bytes_until(marker)
            );
            return Ok(1);
        }
        tokio::time::sleep(POLL).await;
    }
}
