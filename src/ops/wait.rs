//! `pgbridge wait`: writes a marker on green (a transactional logical message) and waits until
//! blue's checkpoint passes it. When it returns 0, blue has every transaction green committed
//! before the call, also while green is under write load, and both catalogs still match the
//! accepted plan (see [`crate::drift`]): a stream that no longer carries a table cannot vouch
//! for it.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::state::checkpoint;

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

/// How a wait ended: blue's checkpoint and whether it passed the marker in time.
pub struct Waited {
    pub marker: Lsn,
    /// Blue's checkpoint when the wait ended.
    pub checkpoint: Lsn,
    /// It passed the marker (and both catalogs match the accepted plan).
    pub caught_up: bool,
    pub elapsed: Duration,
}

/// Writes a marker on green and waits up to `timeout` until blue's checkpoint passes it. A
/// drift from the accepted plan is an error once caught up: waiting longer will not help.
pub async fn wait(config: &Config, timeout: Duration) -> Result<Waited> {
    let (green, blue) = crate::connect::both(config).await?;
    let started = Instant::now();
    let marker = write_marker(&green, "pgbridge.wait").await?;
    let (checkpoint, caught_up) = match until_applied(&blue, config, marker, started + timeout, POLL).await? {
        Ok(lsn) => {
            // Caught up with the stream is not caught up with green when the stream no longer
            // carries what the plan says (a table that left the publication, say).
            let findings = crate::drift::check(config, &green, &blue)
                .await
                .map_err(Error::into_definite)?
                .unwrap_or_default();
            if !findings.is_empty() {
                // Not a timeout (exit 1, which a script may retry): waiting longer will not help.
                return Err(Error::definite(format!(
                    "blue's checkpoint {lsn} is past the marker {marker}, but green's or blue's catalog no longer \
                     matches the plan `pgbridge setup` accepted, so blue may lack changes the stream no longer \
                     carries:\n{}\n{}",
                    crate::drift::describe(&findings),
                    crate::drift::fix(config)
                )));
            }
            (lsn, true)
        }
        Err(lsn) => (lsn, false),
    };
    Ok(Waited {
        marker,
        checkpoint,
        caught_up,
        elapsed: started.elapsed(),
    })
}

/// Polls blue's checkpoint every `poll` until it passes `marker` (`Ok(Ok(checkpoint))`), or
/// until `deadline` comes first (`Ok(Err(checkpoint))`).
pub(crate) async fn until_applied(
    blue: &tokio_postgres::Client,
    config: &Config,
    marker: Lsn,
    deadline: Instant,
    poll: Duration,
) -> Result<std::result::Result<Lsn, Lsn>> {
    loop {
        let cp = checkpoint::read_required(blue, &config.schema, &config.slot)
            .await
            .map_err(Error::into_definite)?;
        if cp.lsn > marker {
            return Ok(Ok(cp.lsn));
        }
        if Instant::now() >= deadline {
            return Ok(Err(cp.lsn));
        }
        tokio::time::sleep(poll).await;
    }
}
