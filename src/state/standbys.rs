//! Blue's physical standbys as `[blue] standbys` requires them (rule 11 of the design): how far
//! each has flushed blue's WAL, read from `pg_stat_replication` on blue. The applier confirms a
//! green position only once the blue commit carrying it is below [`Reading::flushed`]; `check`
//! reports what would hold confirmations back ([`problems`]).
//!
//! `pg_stat_replication` shows positions only to superusers and members of
//! `pg_read_all_stats` (or `pg_monitor`); to anyone else `flush_lsn` is NULL, which would
//! hold every position back for ever, so the privilege is checked first ([`require_privilege`]).
//! Logical walsenders (they hold a logical slot) and base backups are not standbys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::{Config, Standbys};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sql;

/// How often a warning is repeated while a required standby holds confirmations back.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// Blue's physical walsenders: those of named standbys in any state but a base backup's,
/// those counted by `"all"` once they stream (a replication connection that has not started
/// streaming yet shows as `startup` without positions).
const WALSENDERS: &str = "SELECT r.application_name, r.flush_lsn::text, r.state \
     FROM pg_stat_replication r \
     WHERE r.state IS DISTINCT FROM 'backup' \
       AND NOT EXISTS (SELECT FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical')";

/// A required standby connected to blue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    /// Its `application_name`.
    pub name: String,
    /// How far it has flushed blue's WAL; `None` before it reported a position.
    pub flush: Option<Lsn>,
}

/// The required standbys as blue reported them at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Required standbys connected, with their flush positions.
    pub connected: Vec<Standby>,
    /// Named standbys not connected to blue.
    pub missing: Vec<String>,
}

impl Reading {
    /// The part of physical walsenders' rows (name, flush, state) that `required` counts.
    pub fn from_rows(required: &Standbys, rows: &[(String, Option<Lsn>, String)]) -> Reading {
        let mut reading = Reading::default();
        match required {
            Standbys::All => {
                for (name, flush, state) in rows {
                    if state == "streaming" || state == "catchup" {
                        reading.connected.push(Standby {
                            name: name.clone(),
                            flush: *flush,
                        });
                    }
                }
            }
            Standbys::Named(names) => {
                for wanted in names {
                    // Two walsenders with one name (a reconnect overlapping, or two standbys
                    // configured alike): each must have flushed.
                    let found: Vec<_> = rows.iter().filter(|(name, _, _)| name == wanted).collect();
                    if found.is_empty() {
                        reading.missing.push(wanted.clone());
                    }
                    for (name, flush, _) in found {
                        reading.connected.push(Standby {
                            name: name.clone(),
                            flush: *flush,
                        });
                    }
                }
            }
        }
        reading
    }

    /// The blue WAL position every required standby has flushed: `None` when one of them is
    /// not connected or has not reported a position, or (`"all"`) none is connected.
    pub fn flushed(&self) -> Option<Lsn> {
        if !self.missing.is_empty() || self.connected.is_empty() {
            return None;
        }
        self.connected
            .iter()
            .map(|s| s.flush)
            .try_fold(Lsn(u64::MAX), |min, flush| flush.map(|f| min.min(f)))
    }

    /// What holds confirmations back, for a log line or `check`; `None` when nothing does.
    pub fn holding_back(&self) -> Option<String> {
        if !self.missing.is_empty() {
            return Some(format!(
                "blue standby(s) {} not connected to blue (no walsender with that application_name in \
                 pg_stat_replication)",
                self.missing.join(", ")
            ));
        }
        if self.connected.is_empty() {
            return Some(
                "no physical standby is connected to blue (blue.standbys = \"all\" needs at least one)".into(),
            );
        }
        let silent: Vec<&str> = self
            .connected
            .iter()
            .filter(|s| s.flush.is_none())
            .map(|s| s.name.as_str())
            .collect();
        (!silent.is_empty()).then(|| {
            format!(
                "blue standby(s) {} have not reported a flush position yet",
                silent.join(", ")
            )
        })
    }

    /// The standbys and their positions, for a log line.
    pub fn describe(&self) -> String {
        let connected = self.connected.iter().map(|s| match s.flush {
            Some(lsn) => format!("{} flushed {lsn}", s.name),
            None => format!("{} (no position yet)", s.name),
        });
        let missing = self.missing.iter().map(|name| format!("{name} not connected"));
        let all: Vec<String> = connected.chain(missing).collect();
        if all.is_empty() {
            "no standby connected".into()
        } else {
            all.join(", ")
        }
    }
}

/// Reads the required standbys from `pg_stat_replication` on blue.
pub async fn read(client: &Client, required: &Standbys) -> Result<Reading> {
    let rows = client
        .query(WALSENDERS, &[])
        .await
        .map_err(|e| Error::postgres("reading blue's standbys from pg_stat_replication", &e))?;
    let mut walsenders = Vec::with_capacity(rows.len());
    for row in rows {
        let name: Option<String> = row.get(0);
        let flush: Option<String> = row.get(1);
        let state: Option<String> = row.get(2);
        let flush = match flush {
            Some(text) => Some(text.parse::<Lsn>().map_err(|_| {
                Error::transient(format!("blue returned an unreadable standby flush position {text:?}"))
            })?),
            None => None,
        };
        walsenders.push((name.unwrap_or_default(), flush, state.unwrap_or_default()));
    }
    Ok(Reading::from_rows(required, &walsenders))
}

/// Refuses a blue role that cannot see the standbys' positions (a definite error naming the
/// grant).
pub async fn require_privilege(client: &Client, config: &Config) -> Result<()> {
    match privilege_problem(client, config).await? {
        Some(problem) => Err(Error::definite(problem)),
        None => Ok(()),
    }
}

async fn privilege_problem(client: &Client, config: &Config) -> Result<Option<String>> {
    let row = client
        .query_one("SELECT pg_has_role('pg_read_all_stats', 'USAGE')", &[])
        .await
        .map_err(|e| Error::postgres("checking blue's privileges for blue.standbys", &e))?;
    if row.get::<_, bool>(0) {
        return Ok(None);
    }
    Ok(Some(format!(
        "blue.standbys in {}: pgbridge must read the standbys' flush positions in pg_stat_replication on blue, which \
         PostgreSQL shows only to superusers and members of pg_read_all_stats; run on blue: GRANT pg_read_all_stats \
         TO {}",
        config.path.display(),
        sql::ident(&config.blue.user())
    )))
}

/// What `check` reports about `[blue] standbys`: a missing privilege, or standbys that would
/// hold every confirmation back.
pub async fn problems(client: &Client, config: &Config) -> Result<Vec<String>> {
    let Some(required) = &config.blue_standbys else {
        return Ok(Vec::new());
    };
    if let Some(problem) = privilege_problem(client, config).await? {
        return Ok(vec![problem]);
    }
    let reading = read(client, required).await?;
    Ok(reading
        .holding_back()
        .map(|why| {
            format!(
                "blue.standbys in {}: {why}; `pgbridge run` applies but confirms nothing to green until they are, \
                 so green keeps its WAL",
                config.path.display()
            )
        })
        .into_iter()
        .collect())
}

/// The applier's view of the required standbys: reads them, and says so loudly while they hold
/// confirmations back.
pub struct Watch {
    client: Arc<Client>,
    required: Standbys,
    /// What held confirmations back at the last reading, and when it was last logged.
    warned: Option<(String, Instant)>,
    /// When a stall was last logged.
    stall_warned: Option<Instant>,
    /// The last reading.
    last: Reading,
}

impl Watch {
    pub fn new(client: Arc<Client>, required: Standbys) -> Watch {
        Watch {
            client,
            required,
            warned: None,
            stall_warned: None,
            last: Reading::default(),
        }
    }

    /// The blue WAL position every required standby has flushed; `Lsn(0)` when one is not
    /// connected (nothing is safe beyond it). Warns at once when that changes, and again every
    /// [`WARN_EVERY`] while it lasts.
    pub async fn flushed(&mut self) -> Result<Lsn> {
        let reading = read(&self.client, &self.required).await?;
        match (reading.holding_back(), &self.warned) {
            (Some(why), Some((last, at))) if *last == why && at.elapsed() < WARN_EVERY => {}
            (Some(why), _) => {
                tracing::warn!(
                    standbys = %reading.describe(),
                    "{why}: nothing more is confirmed to green until they are, so green keeps its WAL"
                );
                self.warned = Some((why, Instant::now()));
            }
            (None, Some(_)) => {
                tracing::info!(standbys = %reading.describe(), "blue's required standbys are connected again");
                self.warned = None;
            }
            (None, None) => {}
        }
        let flushed = reading.flushed().unwrap_or(Lsn(0));
        self.last = reading;
        Ok(flushed)
    }

    /// Nothing was confirmed to green for `waited` while positions waited, the oldest for
    /// blue's WAL to be flushed up to `needed`: said every [`WARN_EVERY`] (connected standbys
    /// that fall behind; those not connected are warned about by [`Watch::flushed`]).
    pub fn stalled(&mut self, waited: Duration, needed: Lsn) {
        if waited < WARN_EVERY || self.stall_warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        self.stall_warned = Some(Instant::now());
        tracing::warn!(
            waited = ?waited,
            needed = %needed,
            standbys = %self.last.describe(),
            "nothing confirmed to green for a while: waiting for blue's standbys to flush blue's WAL"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, Option<u64>, &str)]) -> Vec<(String, Option<Lsn>, String)> {
        list.iter()
            .map(|(n, f, s)| (n.to_string(), f.map(Lsn), s.to_string()))
            .collect()
    }

    #[test]
    fn named_standbys_must_all_be_connected_and_the_slowest_counts() {
        let named = Standbys::Named(vec!["a".into(), "b".into()]);
        let both = rows(&[
            ("a", Some(500), "streaming"),
            ("b", Some(300), "catchup"),
            ("x", Some(10), "streaming"),
        ]);
        let r = Reading::from_rows(&named, &both);
        assert_eq!(r.flushed(), Some(Lsn(300)), "x is not required");
        assert_eq!(r.holding_back(), None);
        let r = Reading::from_rows(&named, &rows(&[("a", Some(500), "streaming")]));
        assert_eq!(r.flushed(), None);
        assert_eq!(r.missing, ["b"]);
        assert!(r
            .holding_back()
            .expect("held back")
            .contains("standby(s) b not connected"));
        let r = Reading::from_rows(&named, &rows(&[("a", Some(500), "streaming"), ("b", None, "startup")]));
        assert_eq!(r.flushed(), None, "b has not said how far it flushed");
        let twice = rows(&[
            ("a", Some(500), "streaming"),
            ("b", Some(400), "streaming"),
            ("b", Some(200), "streaming"),
        ]);
        assert_eq!(Reading::from_rows(&named, &twice).flushed(), Some(Lsn(200)));
    }

    #[test]
    fn all_means_every_streaming_standby_and_at_least_one() {
        let r = Reading::from_rows(
            &Standbys::All,
            &rows(&[("a", Some(500), "streaming"), ("b", Some(700), "catchup")]),
        );
        assert_eq!(r.flushed(), Some(Lsn(500)));
        // A replication connection that has not started streaming is not a standby yet.
        let r = Reading::from_rows(
            &Standbys::All,
            &rows(&[("a", Some(500), "streaming"), ("tool", None, "startup")]),
        );
        assert_eq!(r.flushed(), Some(Lsn(500)));
        let r = Reading::from_rows(&Standbys::All, &[]);
        assert_eq!(r.flushed(), None);
        assert!(r.holding_back().expect("held back").contains("no physical standby"));
    }
}
