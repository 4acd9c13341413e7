//! `pgbridge status`: positions, lag and state ([`crate::ops::status`]), as aligned text or JSON.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::status::{self, Status};

pub async fn run(config: &Config, json: bool) -> Result<i32> {
    let status = status::read(config).await?;
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
            match (s.slot_active_pid, s.state) {
                (Some(pid), _) => format!("{} (active, green pid {pid})", s.slot),
                (None, "slot missing" | "not set up") if s.wal_status.is_none() => {
                    format!("{} (does not exist on green)", s.slot)
                }
                (None, _) => format!("{} (inactive)", s.slot),
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
    if let Some(problem) = &s.green_server {
        lines.push(("green_server", problem.clone()));
    }
    if let Some(standbys) = &s.blue_standbys {
        lines.push(("blue_standbys", standbys.clone()));
    }
    for (k, v) in lines {
        println!("{k:<22} {v}");
    }
    for f in &s.drift {
        println!("  {}: {}", f.green_table, f.text());
    }
    if !s.high_availability.is_empty() {
        println!();
        super::check::print_high_availability(&s.high_availability);
    }
}

/// A size for people, with the exact count when rounded.
fn human_bytes(b: u64) -> String {
    let short = crate::ops::copy::progress::human_bytes(b);
    if b < 1024 {
        short
    } else {
        format!("{short} ({b} bytes)")
    }
}
