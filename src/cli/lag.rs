//! `pgbridge lag`: the cutover gate ([`crate::ops::lag`] measures); prints one key=value line
//! or JSON and exits 1 when a limit is exceeded.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::lag;

pub async fn run(config: &Config, max_bytes: Option<u64>, max_seconds: Option<f64>, json: bool) -> Result<i32> {
    let lag = lag::measure_now(config).await?;
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
