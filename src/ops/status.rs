//! `pgbridge status`: positions, lag and state, read from the databases themselves so it works
//! whether or not a `pgbridge run` is up. Lag is measured by the same function as `pgbridge lag`
//! ([`super::lag::measure`]), so the two never disagree; when `lag` would exit 2 because it cannot
//! tell, `status` shows why in place of `lag_seconds` and still reports everything else.

use serde::Serialize;

use crate::apply::{self, checkpoint};
use crate::config::Config;
use crate::connect::{connect_green_sql, green_err};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

#[derive(Serialize)]
struct Status {
    state: &'static str,
    slot: String,
    slot_active_pid: Option<i32>,
    wal_status: Option<String>,
    green_lsn: String,
    confirmed_flush_lsn: Option<String>,
    applied_lsn: Option<String>,
    last_commit_time: Option<String>,
    checkpoint_updated_at: Option<String>,
    lag_bytes: Option<u64>,
    /// As `pgbridge lag` reports it; `None` when not set up or when it cannot be told.
    lag_seconds: Option<f64>,
    /// Why `lag_seconds` cannot be told, and how to fix that.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_seconds_unknown: Option<String>,
    slot_retained_wal_bytes: Option<u64>,
    /// Whether green's or blue's catalogs no longer match the accepted plan; `None` when no
    /// plan was accepted (not set up).
    schema_drift: Option<bool>,
    /// What changed, per table.
    drift: Vec<crate::drift::Finding>,
}

pub async fn run(config: &Config, json: bool) -> Result<i32> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = apply::connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    let green_lsn: Lsn = green
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(green_err("reading the WAL position"))?
        .get::<_, String>(0)
        .parse()
        .map_err(|e| Error::definite(format!("green WAL position: {e}")))?;
    let slot = green
        .query_opt(
            "SELECT active_pid, wal_status, confirmed_flush_lsn::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(green_err("reading replication slots"))?;
    let cp = checkpoint::read(&blue, &config.schema, &config.slot)
        .await
        .map_err(Error::into_definite)?;

    let (pid, wal_status, confirmed, retained) = match &slot {
        Some(r) => (
            r.get::<_, Option<i32>>(0),
            r.get::<_, Option<String>>(1),
            r.get::<_, Option<String>>(2),
            r.get::<_, Option<i64>>(3),
        ),
        None => (None, None, None, None),
    };
    // Status reports what it can: a drift check that cannot run (a mapping file that does not
    // parse, say) leaves schema_drift unknown.
    let findings = match crate::drift::check(config, &green, &blue).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: cannot compare the catalogs with the accepted plan: {e}");
            None
        }
    };
    let state = match (&slot, &cp) {
        (None, _) | (_, None) => "not set up",
        _ if wal_status.as_deref() == Some("lost") => "slot lost",
        _ if pid.is_some() => "streaming",
        _ => "stopped",
    };
    let mut lag_bytes = cp.as_ref().map(|c| c.lsn.bytes_until(green_lsn));
    let (mut lag_seconds, mut lag_seconds_unknown) = (None, None);
    if slot.is_some() && cp.is_some() {
        match super::lag::measure(config, &green, &blue).await {
            Ok(lag) => {
                lag_bytes = Some(lag.lag_bytes);
                lag_seconds = Some(lag.lag_seconds);
            }
            Err(e) => lag_seconds_unknown = Some(e.to_string()),
        }
    }
    let status = Status {
        state,
        slot: config.slot.clone(),
        slot_active_pid: pid,
        wal_status,
        green_lsn: green_lsn.to_string(),
        confirmed_flush_lsn: confirmed,
        applied_lsn: cp.as_ref().map(|c| c.lsn.to_string()),
        last_commit_time: cp.as_ref().and_then(|c| c.commit_time.clone()),
        checkpoint_updated_at: cp.as_ref().map(|c| c.updated_at.clone()),
        lag_bytes,
        lag_seconds,
        lag_seconds_unknown,
        slot_retained_wal_bytes: retained.map(|r| r.max(0) as u64),
        schema_drift: findings.as_ref().map(|f| !f.is_empty()),
        drift: findings.unwrap_or_default(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| Error::definite(e.to_string()))?
        );
    } else {
        print_text(&status);
    }
    Ok(0)
}

fn print_text(s: &Status) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut lines = vec![
        ("state", s.state.to_string()),
        (
            "slot",
            match s.slot_active_pid {
                Some(pid) => format!("{} (active, green pid {pid})", s.slot),
                None => format!("{} (inactive)", s.slot),
            },
        ),
        ("wal_status", or_dash(&s.wal_status)),
        ("green_lsn", s.green_lsn.clone()),
        ("confirmed_flush_lsn", or_dash(&s.confirmed_flush_lsn)),
        ("applied_lsn", or_dash(&s.applied_lsn)),
        ("last_commit_time", or_dash(&s.last_commit_time)),
        ("checkpoint_updated_at", or_dash(&s.checkpoint_updated_at)),
    ];
    lines.push(("lag_bytes", s.lag_bytes.map_or("-".into(), |b| b.to_string())));
    lines.push((
        "lag_seconds",
        match (&s.lag_seconds, &s.lag_seconds_unknown) {
            (Some(seconds), _) => format!("{seconds:.3}"),
            (None, Some(why)) => format!("unknown: {why}"),
            (None, None) => "-".into(),
        },
    ));
    lines.push((
        "slot_retained_wal",
        s.slot_retained_wal_bytes.map_or("-".into(), human_bytes),
    ));
    lines.push((
        "schema_drift",
        match s.schema_drift {
            None => "- (no accepted plan: run pgbridge setup)".into(),
            Some(false) => "no (both catalogs match the accepted plan)".into(),
            Some(true) => format!("YES, {} table(s); see below and `pgbridge check`", s.drift.len()),
        },
    ));
    for (k, v) in lines {
        println!("{k:<22} {v}");
    }
    for f in &s.drift {
        println!("  {}: {}", f.green_table, f.text());
    }
}

/// A size for people, with the exact count when rounded.
fn human_bytes(b: u64) -> String {
    let short = crate::progress::human_bytes(b);
    if b < 1024 {
        short
    } else {
        format!("{short} ({b} bytes)")
    }
}
