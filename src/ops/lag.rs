//! `pgbridge lag`: the cutover gate. Reads positions from the databases themselves (green's WAL
//! position and slot, blue's checkpoint), so it answers whether or not `pgbridge run` is up.
//!
//! `lag_bytes` is green's current WAL position minus blue's checkpoint. `lag_seconds` is the
//! age (now minus green commit time) of the oldest green transaction with published changes
//! whose end is beyond blue's checkpoint, 0 when there is none, whether or not a `run` holds
//! the slot: [`crate::source::peek`] decodes the slot, or a temporary copy of it. WAL that gives
//! blue nothing to do (unpublished tables, autovacuum, other databases) makes `lag_bytes` > 0
//! but never `lag_seconds`. A gate polling every 100 ms costs two small queries while
//! `lag_bytes` is 0; only then is nothing decoded.
//!
//! When the answer cannot be determined (no free replication slot for the copy, the slot gone
//! or invalidated, no `REPLICATION` attribute) the command exits 2 saying why and what to do:
//! a gate must never pass, or fail, on an estimate. `status` and the bridge's
//! `pgbridge_lag_seconds` use the same functions.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::green_err;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::source::peek::{self, Pending};
use crate::state::checkpoint;
use crate::telemetry;

/// What `lag` prints: the same keys on one line or as JSON.
#[derive(Serialize, Debug)]
pub struct Lag {
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub applied_lsn: String,
    pub green_lsn: String,
    /// The oldest green transaction blue lacks (`lag_seconds` is its age); not printed.
    #[serde(skip)]
    pub pending: Option<Pending>,
}

/// Connects to both sides and measures lag (what the `lag` command prints).
pub async fn measure_now(config: &Config) -> Result<Lag> {
    let (green, blue) = crate::connect::both(config).await?;
    measure(config, &green, &blue).await
}

/// Measures lag from the databases. Green is read before blue, so blue's checkpoint is at or
/// beyond anything the slot had confirmed.
pub async fn measure(config: &Config, green: &Client, blue: &Client) -> Result<Lag> {
    let state = green_state(config, green).await?;
    measure_at(config, green, blue, &state).await
}

/// [`measure`] with green's state already read (`ready` reads it once for several conditions).
pub async fn measure_at(config: &Config, green: &Client, blue: &Client, state: &GreenState) -> Result<Lag> {
    let cp = checkpoint::read_required(blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;
    if let Some(problem) = timeline_problem(config, blue, state.timeline).await? {
        return Err(Error::definite(format!("cannot tell lag: {problem}")));
    }
    if cp.lsn > state.wal {
        if let Some(problem) = crate::state::server::checkpoint_ahead(green, cp.lsn).await? {
            return Err(Error::definite(format!("cannot tell lag: {problem}")));
        }
    }
    let pending = oldest_pending(config, green, state, cp.lsn, Reader::Command).await?;
    Ok(Lag {
        lag_bytes: cp.lsn.bytes_until(state.wal),
        lag_seconds: pending.as_ref().map_or(0.0, |p| telemetry::age(p.commit_time)),
        applied_lsn: cp.lsn.to_string(),
        green_lsn: state.wal.to_string(),
        pending,
    })
}

/// Whether green is on another timeline than the one blue's checkpoint was recorded on
/// (`<schema>.green_server`): then blue's position may not be on green's history, which only
/// `run` judges (it reads the history), and nothing about lag can be told until it has.
pub async fn timeline_problem(config: &Config, blue: &Client, timeline: u32) -> Result<Option<String>> {
    let Some(recorded) = crate::state::server::read(blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?
    else {
        return Ok(None);
    };
    Ok(match timeline.cmp(&recorded.timeline) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(format!(
            "green ({}) is on timeline {timeline}, but blue's checkpoint was made on timeline {}: green.dsn reached \
             a server from before a failover (an old primary that came back?); stop or fence it",
            config.green.address(),
            recorded.timeline
        )),
        std::cmp::Ordering::Greater => Some(format!(
            "green failed over (timeline {} to {timeline}) since pgbridge last streamed; `pgbridge run` checks that \
             blue's checkpoint is on the new primary's history and says so",
            recorded.timeline
        )),
    })
}

/// Green's WAL position, server version and the slot, read in one query.
pub struct GreenState {
    pub wal: Lsn,
    pub server_version: u32,
    pub slot: Option<SlotState>,
    /// The timeline green writes on (a promotion starts a new one).
    pub timeline: u32,
}

impl GreenState {
    /// WAL green keeps for the slot, 0 without one.
    pub fn retained_bytes(&self) -> u64 {
        self.slot.as_ref().map_or(0, |s| s.retained_bytes)
    }
}

pub struct SlotState {
    /// A walsender (normally `pgbridge run`) holds it.
    pub active: bool,
    /// Invalidated (`wal_status = 'lost'`).
    pub lost: bool,
    pub confirmed: Option<Lsn>,
    /// Green's WAL position minus the slot's restart_lsn.
    pub retained_bytes: u64,
    /// `pg_replication_slots.wal_status`: reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
}

pub async fn green_state(config: &Config, green: &Client) -> Result<GreenState> {
    let row = green
        .query_one(
            "SELECT pg_current_wal_lsn()::text, current_setting('server_version_num')::int4, s.slot_name IS NOT NULL, \
                    coalesce(s.active_pid IS NOT NULL, false), coalesce(s.wal_status = 'lost', false), \
                    s.confirmed_flush_lsn::text, \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::int8, 0), \
                    pg_walfile_name(pg_current_wal_lsn()), s.wal_status \
             FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading the WAL position and the slot"))?;
    let parse = |text: String| -> Result<Lsn> {
        text.parse()
            .map_err(|e| Error::definite(format!("green returned an unreadable position: {e}")))
    };
    let slot = match row.get::<_, bool>(2) {
        false => None,
        true => Some(SlotState {
            active: row.get(3),
            lost: row.get(4),
            confirmed: row.get::<_, Option<String>>(5).map(parse).transpose()?,
            retained_bytes: row.get::<_, i64>(6).max(0) as u64,
            wal_status: row.get(8),
        }),
    };
    // A WAL file name starts with the timeline it was written on, in hex.
    let walfile: String = row.get(7);
    Ok(GreenState {
        wal: parse(row.get(0))?,
        server_version: row.get::<_, i32>(1).max(0) as u32,
        slot,
        timeline: walfile
            .get(..8)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .unwrap_or(0),
    })
}

/// The oldest green transaction with published changes ending beyond `checkpoint`, `None`
/// when there is none up to the position in `state`. Decodes nothing when `checkpoint` is
/// already there. Errors say why the answer cannot be determined. The slot itself is peeked
/// only while idle and only when `reader` allows: `run` reads a copy even then, so that it
/// never holds the slot its own stream is about to take.
pub async fn oldest_pending(
    config: &Config,
    green: &Client,
    state: &GreenState,
    checkpoint: Lsn,
    reader: Reader,
) -> Result<Option<Pending>> {
    if checkpoint >= state.wal {
        return Ok(None);
    }
    let slot = usable_slot(config, state, checkpoint)?;
    let peek = peek::Peek {
        slot: &config.slot,
        publication: &config.publication,
        skip_origins: config.skip_origins,
        server_version: state.server_version,
        checkpoint,
        upto: state.wal,
    };
    let copy = slot.active || reader == Reader::CopyOnly;
    peek::oldest_pending(green, &peek, copy).await
}

/// Who decodes the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// A command: peeks the slot while it is idle, a copy while a walsender holds it.
    Command,
    /// The running bridge: always a copy.
    CopyOnly,
}

/// The slot, if it can still show what blue lacks.
fn usable_slot<'a>(config: &Config, state: &'a GreenState, checkpoint: Lsn) -> Result<&'a SlotState> {
    if checkpoint.is_zero() {
        return Err(Error::definite(format!(
            "cannot tell lag_seconds: blue's checkpoint for slot {} is at 0/0, so the initial copy into blue \
             (`pgbridge setup --copy`) has not finished and blue is incomplete; wait for it, or run it again",
            config.slot
        )));
    }
    let slot = state.slot.as_ref().ok_or_else(|| {
        Error::definite(format!(
            "cannot tell lag_seconds: replication slot {} does not exist on green; run `pgbridge setup` (if it \
             was dropped, blue missed every change since: re-copy blue with `pgbridge setup --copy`)",
            config.slot
        ))
    })?;
    if slot.lost {
        return Err(Error::definite(format!(
            "cannot tell lag_seconds: replication slot {} on green was invalidated (wal_status = lost), so green \
             no longer has what blue lacks; re-synchronize blue with `pgbridge teardown` and `pgbridge setup --copy`",
            config.slot
        )));
    }
    if let Some(confirmed) = slot.confirmed.filter(|c| *c > checkpoint) {
        return Err(Error::definite(format!(
            "cannot tell lag_seconds: slot {} on green has confirmed {confirmed}, beyond blue's checkpoint \
             {checkpoint}, so green will not show the changes in between; re-synchronize blue with \
             `pgbridge teardown` and `pgbridge setup --copy`",
            config.slot
        )));
    }
    Ok(slot)
}
