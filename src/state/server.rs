//! `<schema>.green_server`: which green server blue's checkpoint belongs to, per slot, as
//! `IDENTIFY_SYSTEM` reported it when the bridge last streamed: the cluster's system identifier
//! (shared by a primary and its physical standbys, new for a rebuilt or restored cluster) and
//! the timeline (new after every promotion). A session compares what green reports now with
//! it, so a failover or a different server is noticed before anything is streamed.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::sql;

/// The identity of a green server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenServer {
    pub system_identifier: String,
    pub timeline: u32,
}

pub fn create_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
             slot_name         text PRIMARY KEY,
             system_identifier text NOT NULL,
             timeline          integer NOT NULL,
             updated_at        timestamptz NOT NULL DEFAULT now()
         );",
        sql::qualified(schema, "green_server")
    )
}

/// What blue recorded for `slot`; `None` when nothing was (a setup of an older pgbridge, whose
/// tables lack this one, records nothing until `setup` runs again).
pub async fn read(client: &Client, schema: &str, slot: &str) -> Result<Option<GreenServer>> {
    if !super::checkpoint::table_exists(client, schema, "green_server").await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT system_identifier, timeline FROM {} WHERE slot_name = $1",
                sql::qualified(schema, "green_server")
            ),
            &[&slot],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {schema}.green_server on blue"), &e))?;
    Ok(row.map(|r| GreenServer {
        system_identifier: r.get(0),
        timeline: r.get::<_, i32>(1).max(0) as u32,
    }))
}

/// Records `server` for `slot` (when the table exists).
pub async fn record(client: &Client, schema: &str, slot: &str, server: &GreenServer) -> Result<()> {
    if !super::checkpoint::table_exists(client, schema, "green_server").await? {
        return Ok(());
    }
    client
        .execute(
            &format!(
                "INSERT INTO {} (slot_name, system_identifier, timeline) VALUES ($1, $2, $3)
                 ON CONFLICT (slot_name) DO UPDATE
                 SET system_identifier = excluded.system_identifier, timeline = excluded.timeline, updated_at = now()",
                sql::qualified(schema, "green_server")
            ),
            &[&slot, &server.system_identifier, &(server.timeline as i32)],
        )
        .await
        .map(drop)
        .map_err(|e| Error::postgres(format!("recording green's server in {schema}.green_server on blue"), &e))
}

/// What the green server a session reached means for blue's checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The server blue's checkpoint belongs to, on the same timeline (or nothing recorded).
    Same,
    /// A standby of it was promoted (maybe more than once) after the checkpoint: the history
    /// forked at `fork`, at or after blue's checkpoint, so nothing blue has was lost on green.
    FailedOver { from: u32, to: u32, fork: crate::lsn::Lsn },
}

/// Judges `now` (what `IDENTIFY_SYSTEM` says) against what blue `recorded`, given green's
/// timeline history (`(timeline, where it ended)`, from `TIMELINE_HISTORY`, empty on the
/// first timeline) and blue's checkpoint. An error is definite: streaming from this server would skip or
/// misread transactions.
pub fn judge(
    recorded: Option<&GreenServer>,
    now: &GreenServer,
    history: &[(u32, crate::lsn::Lsn)],
    checkpoint: crate::lsn::Lsn,
) -> Result<Verdict> {
    let Some(recorded) = recorded else {
        return Ok(Verdict::Same);
    };
    let resync = "re-synchronize blue with `pgbridge setup --copy` (see \"High availability\" in the README)";
    if recorded.system_identifier != now.system_identifier {
        return Err(Error::definite(format!(
            "green is a different database cluster (system identifier {}) from the one blue's checkpoint {checkpoint} \
             belongs to ({}): positions of one cluster mean nothing on another (green rebuilt, restored from a backup, \
             or upgraded with pg_upgrade?). Point green.dsn at the right server, or {resync}",
            now.system_identifier, recorded.system_identifier
        )));
    }
    if now.timeline == recorded.timeline {
        return Ok(Verdict::Same);
    }
    if now.timeline < recorded.timeline {
        return Err(Error::definite(format!(
            "green is on timeline {}, but blue's checkpoint {checkpoint} was made on timeline {} after a failover: this \
             server is from before that failover (an old primary that came back?). Point green.dsn at the current primary",
            now.timeline, recorded.timeline
        )));
    }
    let Some(&(_, fork)) = history.iter().find(|(tli, _)| *tli == recorded.timeline) else {
        return Err(Error::definite(format!(
            "green is on timeline {}, whose history does not include timeline {} that blue's checkpoint {checkpoint} was \
             made on: green's history went another way. {resync}",
            now.timeline, recorded.timeline
        )));
    };
    if checkpoint > fork {
        return Err(Error::definite(format!(
            "green failed over (timeline {} to {}) at {fork}, but blue's checkpoint is at {checkpoint}: blue applied \
             green transactions that the promoted standby never received, and positions after {fork} now belong to \
             other transactions, so streaming on would skip them. Green's primary did not hold logical replication \
             back for its standbys (synchronized_standby_slots, PostgreSQL 17+). Blue holds writes green lost; {resync}",
            recorded.timeline, now.timeline
        )));
    }
    Ok(Verdict::FailedOver {
        from: recorded.timeline,
        to: now.timeline,
        fork,
    })
}

/// Blue's checkpoint beyond green's current WAL position: impossible for a healthy pair (green
/// has written at least everything blue applied from it), so green was restored to an earlier
/// state on the same timeline (a VM snapshot, a cold backup) or replaced. `None` when it is
/// not. Only noticed until green's WAL passes the checkpoint again.
pub fn ahead_of_green(checkpoint: crate::lsn::Lsn, green: crate::lsn::Lsn) -> Option<String> {
    (checkpoint > green).then(|| {
        format!(
            "blue's checkpoint {checkpoint} is ahead of green's current WAL position {green}: green was restored to an \
             earlier state (a VM snapshot, a cold backup) or replaced, so blue may hold transactions green no longer \
             has, and streaming from the checkpoint would skip green's new transactions up to {checkpoint}. Decide \
             which side's rows to keep, then re-copy blue with `pgbridge setup --copy`"
        )
    })
}

/// Refuses to stream when blue's checkpoint is ahead of green's WAL position `wal` (as text,
/// read on the replication connection): green's new transactions up to the checkpoint would be
/// skipped.
pub fn refuse_ahead(checkpoint: crate::lsn::Lsn, wal: Option<&str>) -> Result<()> {
    match wal
        .and_then(|w| w.parse().ok())
        .and_then(|wal| ahead_of_green(checkpoint, wal))
    {
        Some(why) => Err(Error::definite(format!("{why}; nothing was streamed"))),
        None => Ok(()),
    }
}

/// [`ahead_of_green`] with green's WAL position read now, after `checkpoint` was read from
/// blue: a position read before it can trail a checkpoint a streaming bridge just moved.
pub async fn checkpoint_ahead(green: &Client, checkpoint: crate::lsn::Lsn) -> Result<Option<String>> {
    let wal: crate::lsn::Lsn = green
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(crate::connect::green_err("reading the WAL position"))?
        .get::<_, String>(0)
        .parse()
        .map_err(|e| Error::definite(format!("green returned an unreadable position: {e}")))?;
    Ok(ahead_of_green(checkpoint, wal))
}

/// Parses a timeline history file (`TIMELINE_HISTORY`): one `parent-timeline<TAB>switchpoint
/// <TAB>reason` line per ancestor; comments and blank lines are skipped.
pub fn parse_history(content: &str) -> Vec<(u32, crate::lsn::Lsn)> {
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let tli = fields.next()?.parse().ok()?;
            let lsn = fields.next()?.parse().ok()?;
            Some((tli, lsn))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn server(id: &str, timeline: u32) -> GreenServer {
        GreenServer {
            system_identifier: id.into(),
            timeline,
        }
    }

    #[test]
    fn a_checkpoint_ahead_of_greens_wal_means_green_was_restored() {
        let why = ahead_of_green(Lsn(0x154CB70), Lsn(0x1547BA0)).expect("ahead");
        assert!(why.contains("0/154CB70") && why.contains("0/1547BA0"), "{why}");
        assert!(why.contains("restored") && why.contains("setup --copy"), "{why}");
        assert_eq!(ahead_of_green(Lsn(5), Lsn(5)), None);
        assert_eq!(ahead_of_green(Lsn(4), Lsn(5)), None);
    }

    #[test]
    fn a_history_file_parses() {
        let text = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(text),
            vec![(1, "0/3000148".parse().unwrap()), (2, "0/5000000".parse().unwrap())]
        );
    }

    #[test]
    fn a_promotion_after_the_checkpoint_is_carried_over() {
        let history = parse_history("1\t0/5000000\tno recovery target specified\n");
        let verdict = judge(Some(&server("7", 1)), &server("7", 2), &history, Lsn(0x4000000)).unwrap();
        assert_eq!(
            verdict,
            Verdict::FailedOver {
                from: 1,
                to: 2,
                fork: Lsn(0x5000000)
            }
        );
        assert_eq!(
            judge(Some(&server("7", 2)), &server("7", 2), &[], Lsn(1)).unwrap(),
            Verdict::Same
        );
        assert_eq!(judge(None, &server("7", 3), &[], Lsn(1)).unwrap(), Verdict::Same);
    }

    #[test]
    fn blue_beyond_the_fork_another_cluster_or_an_older_timeline_stop() {
        let history = parse_history("1\t0/5000000\tx\n2\t0/6000000\ty\n");
        let beyond = judge(Some(&server("7", 1)), &server("7", 3), &history, Lsn(0x5000001)).unwrap_err();
        assert!(!beyond.is_transient());
        assert!(beyond.message().contains("never received"), "{}", beyond.message());
        let other = judge(Some(&server("7", 1)), &server("8", 1), &[], Lsn(1)).unwrap_err();
        assert!(
            other.message().contains("different database cluster"),
            "{}",
            other.message()
        );
        let older = judge(Some(&server("7", 2)), &server("7", 1), &[], Lsn(1)).unwrap_err();
        assert!(older.message().contains("before that failover"), "{}", older.message());
        let fine = judge(Some(&server("7", 2)), &server("7", 3), &history, Lsn(0x6000000)).unwrap();
        assert!(matches!(fine, Verdict::FailedOver { from: 2, to: 3, .. }));
    }
}
