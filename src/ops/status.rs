//! `pgbridge status`: positions, lag and state, read from the databases themselves so it works
//! whether or not a `pgbridge run` is up. Lag is measured by the same function as `pgbridge lag`
//! ([`super::lag::measure`]), so the two never disagree; when `lag` would exit 2 because it cannot
//! tell, `status` shows why in place of `lag_seconds` and still reports everything else.

use serde::Serialize;

use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::state::checkpoint;

/// What `status` shows.
#[derive(Serialize)]
pub struct Status {
    pub state: &'static str,
    pub slot: String,
    pub slot_active_pid: Option<i32>,
    pub wal_status: Option<String>,
    pub green_lsn: String,
    pub confirmed_flush_lsn: Option<String>,
    pub applied_lsn: Option<String>,
    pub last_commit_time: Option<String>,
    pub checkpoint_updated_at: Option<String>,
    pub lag_bytes: Option<u64>,
    /// As `pgbridge lag` reports it; `None` when not set up or when it cannot be told.
    pub lag_seconds: Option<f64>,
    /// Why `lag_seconds` cannot be told, and how to fix that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds_unknown: Option<String>,
    pub slot_retained_wal_bytes: Option<u64>,
    /// Whether green's or blue's catalogs no longer match the accepted plan; `None` when no
    /// plan was accepted (not set up).
    pub schema_drift: Option<bool>,
    /// What changed, per table.
    pub drift: Vec<crate::drift::Finding>,
    /// Whether the slot survives a failover of green, and what to configure ([`super::ha`]).
    pub high_availability: Vec<super::ha::Finding>,
    /// With `[blue] standbys`: each required standby and how far it has flushed blue's WAL
    /// (or that it is not connected, which holds confirmations to green back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blue_standbys: Option<String>,
    /// When green is on another timeline than blue's checkpoint was recorded on: what that
    /// means (a failover `run` has not judged yet, or a server from before one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub green_server: Option<String>,
}

/// Reads positions, lag and state from both databases.
pub async fn read(config: &Config) -> Result<Status> {
    let (green, blue) = crate::connect::both(config).await?;
    let green_lsn: Lsn = green
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(green_err("reading the WAL position"))?
        .get::<_, String>(0)
        .parse()
        .map_err(|e| Error::definite(format!("green WAL position: {e}")))?;
    let slot = slot_row(config, &green).await?;
    let cp = checkpoint::read(&blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;
    // Status reports what it can: a drift check that cannot run (a mapping file that does not
    // parse, say) leaves schema_drift unknown.
    let findings = match crate::drift::for_rollback(config, &green, &blue).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: cannot compare the catalogs with the accepted plan: {e}");
            None
        }
    };
    let (green_server, ahead) = green_server(config, &green, &blue, cp.as_ref(), green_lsn).await?;
    let state = match (&slot, &cp) {
        _ if green_server.is_some() => "green changed",
        (None, Some(_)) => "slot missing",
        (None, _) | (_, None) => "not set up",
        _ if slot.as_ref().and_then(|s| s.wal_status.as_deref()) == Some("lost") => "slot lost",
        _ if slot.as_ref().is_some_and(|s| s.pid.is_some()) => "streaming",
        _ => "stopped",
    };
    let mut lag_bytes = cp.as_ref().map(|c| c.lsn.bytes_until(green_lsn));
    let (mut lag_seconds, mut lag_seconds_unknown) = (None, None);
    if let Some(why) = &ahead {
        lag_bytes = None;
        lag_seconds_unknown = Some(why.clone());
    } else if slot.is_some() && cp.is_some() {
        match super::lag::measure(config, &green, &blue).await {
            Ok(lag) => {
                lag_bytes = Some(lag.lag_bytes);
                lag_seconds = Some(lag.lag_seconds);
            }
            Err(e) => lag_seconds_unknown = Some(e.to_string()),
        }
    }
    let slot = slot.unwrap_or_default();
    let high_availability = super::ha::review_green(config, &green).await.unwrap_or_else(|e| {
        vec![super::ha::Finding {
            ok: false,
            text: format!("cannot review green's failover readiness: {e}"),
        }]
    });
    let blue_standbys = match &config.blue_standbys {
        Some(required) => Some(match crate::state::standbys::read(&blue, required).await {
            Ok(reading) => reading.describe(),
            Err(e) => format!("unknown: {e}"),
        }),
        None => None,
    };
    Ok(Status {
        state,
        slot: config.slot.clone(),
        slot_active_pid: slot.pid,
        wal_status: slot.wal_status,
        green_lsn: green_lsn.to_string(),
        confirmed_flush_lsn: slot.confirmed,
        applied_lsn: cp.as_ref().map(|c| c.lsn.to_string()),
        last_commit_time: cp.as_ref().and_then(|c| c.commit_time.clone()),
        checkpoint_updated_at: cp.as_ref().map(|c| c.updated_at.clone()),
        lag_bytes,
        lag_seconds,
        lag_seconds_unknown,
        slot_retained_wal_bytes: slot.retained.map(|r| r.max(0) as u64),
        schema_drift: findings.as_ref().map(|f| !f.is_empty()),
        drift: findings.unwrap_or_default(),
        high_availability,
        blue_standbys,
        green_server,
    })
}

/// What green's server means for blue's checkpoint (another timeline, or green restored to
/// before it), and the latter alone: a checkpoint ahead of green's WAL is no lag of 0.
async fn green_server(
    config: &Config,
    green: &Client,
    blue: &Client,
    cp: Option<&checkpoint::Checkpoint>,
    green_lsn: Lsn,
) -> Result<(Option<String>, Option<String>)> {
    let timeline = super::lag::green_state(config, green).await?.timeline;
    let problem = super::lag::timeline_problem(config, blue, timeline).await?;
    let ahead = match cp {
        Some(c) if c.lsn > green_lsn => crate::state::server::checkpoint_ahead(green, c.lsn).await?,
        _ => None,
    };
    Ok((problem.or_else(|| ahead.clone()), ahead))
}

/// The slot's row in `pg_replication_slots`, as status shows it.
#[derive(Default)]
struct SlotRow {
    pid: Option<i32>,
    wal_status: Option<String>,
    confirmed: Option<String>,
    /// WAL the slot holds back, in bytes.
    retained: Option<i64>,
}

async fn slot_row(config: &Config, green: &Client) -> Result<Option<SlotRow>> {
    let row = green
        .query_opt(
            "SELECT active_pid, wal_status, confirmed_flush_lsn::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading replication slots"))?;
    Ok(row.map(|r| SlotRow {
        pid: r.get(0),
        wal_status: r.get(1),
        confirmed: r.get(2),
        retained: r.get(3),
    }))
}
