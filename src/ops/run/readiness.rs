//! Rollback readiness while the bridge runs, for `pgbridge_rollback_ready`,
//! `pgbridge_rollback_condition{condition}` and `/status`: the conditions of `pgbridge ready`
//! ([`crate::ops::ready::judge`]), judged once per lag poll from what the process knows (its
//! state, blue's applied position, lag, drift), green's state the poller has just read, and one
//! small query on blue for dead letters. Limits come from `[ready]`; there are no flags here,
//! every dead letter of the slot counts, and `reverse` is not evaluated (only
//! `pgbridge ready --reverse` does: it needs the other configuration).
//!
//! Two facts come from the running session rather than a query: green's timeline, which the
//! session judged against blue's record before streaming, and the slot's confirmed position,
//! which this process itself confirms only once blue has it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::Config;
use crate::lsn::Lsn;
use crate::ops::lag::GreenState;
use crate::ops::ready::judge::{self, Activity, Reading, SlotFacts};
use crate::state::dead_letters;
use crate::telemetry::rollback::Readiness;
use crate::telemetry::{State, Telemetry};

/// What readiness remembers between polls.
#[derive(Default)]
pub(super) struct Watch {
    blue: Option<Arc<Client>>,
    /// Blue's applied position while behind green's WAL, and when it was first seen there
    /// behind: green idle for a while and then writing is not a stall.
    behind: Option<(Lsn, Instant)>,
    green: Option<Arc<Client>>,
    /// Tables written on green that `setup` never accepted, and when that was read.
    unaccepted: Option<(Instant, Reading<Vec<String>>)>,
}

/// How often the running bridge reads the tables `setup` never accepted (two catalog queries).
const UNACCEPTED_EVERY: Duration = Duration::from_secs(10);

impl Watch {
    /// Judges every condition and publishes the verdict. `green`: what the poll read, or why
    /// it could not.
    pub(super) async fn evaluate(&mut self, config: &Config, telemetry: &Telemetry, green: Reading<&GreenState>) {
        let limits = &config.ready;
        let applied = telemetry.applied_lsn();
        let lag_bytes = match (&green, applied.is_zero()) {
            (_, true) => Err("the bridge has not read blue's checkpoint yet".to_string()),
            (Ok(g), false) => Ok(applied.bytes_until(g.wal)),
            (Err(why), false) => Err(why.clone()),
        };
        let activity = self.activity(telemetry.state(), applied, lag_bytes.as_ref().ok().copied());
        let dead = self.dead_letters(config).await;
        let table = crate::ops::ready::dead_letter_table(config);
        let drift = match self.unaccepted(config).await {
            Ok(mut found) => {
                if telemetry.drifted() {
                    found.insert(
                        0,
                        "the bridge found green's or blue's catalogs no longer matching the accepted plan (its log \
                         names the table and the change); it stops once blue has everything before the change"
                            .to_string(),
                    );
                }
                Ok(Some(found))
            }
            Err(why) => Err(why),
        };
        // Not the value kept from before green went away: unknown, as `ready` says.
        let lag_seconds = green.as_ref().map(|_| telemetry.lag_seconds()).map_err(Clone::clone);
        let slot = green.map(|g| SlotFacts {
            name: &config.slot,
            slot: g.slot.as_ref(),
            checkpoint: None,
            timeline: Ok(None),
        });
        let conditions = vec![
            judge::bridge(Ok(activity), limits),
            judge::lag_bytes(lag_bytes, limits.max_bytes),
            judge::lag_seconds(lag_seconds, limits.max_seconds),
            judge::dead_letters(dead, &table, None),
            judge::schema_drift(drift),
            judge::slot(slot, limits.max_retained_bytes),
        ];
        telemetry.set_rollback(Readiness::new(conditions));
    }

    /// Streaming, with how long blue's applied position has stood still behind green's.
    fn activity(&mut self, state: State, applied: Lsn, lag_bytes: Option<u64>) -> Activity {
        let now = Instant::now();
        let behind_for = match (lag_bytes, self.behind) {
            (Some(0), _) => {
                self.behind = None;
                None
            }
            (_, Some((at, since))) if at == applied => Some(now - since),
            _ => {
                self.behind = Some((applied, now));
                Some(Duration::ZERO)
            }
        };
        if state != State::Streaming {
            return Activity::Down(format!(
                "the bridge is {} (see its log and pgbridge_state)",
                state.as_str()
            ));
        }
        Activity::Streaming { behind_for }
    }

    /// Tables `setup` never accepted that rows are written to ([`crate::drift::unaccepted`]),
    /// read at most every [`UNACCEPTED_EVERY`].
    async fn unaccepted(&mut self, config: &Config) -> Reading<Vec<String>> {
        if let Some((at, found)) = &self.unaccepted {
            if at.elapsed() < UNACCEPTED_EVERY {
                return found.clone();
            }
        }
        let found = self.read_unaccepted(config).await;
        if found.is_err() {
            self.green = None;
        }
        self.unaccepted = Some((Instant::now(), found.clone()));
        found
    }

    async fn read_unaccepted(&mut self, config: &Config) -> Reading<Vec<String>> {
        if !matches!(&self.green, Some(c) if !c.is_closed()) {
            self.green = Some(Arc::new(
                crate::connect::connect_green_sql(config)
                    .await
                    .map_err(|e| e.to_string())?,
            ));
        }
        let blue = self.blue_client(config).await?;
        let green = self.green.clone().expect("connected above");
        crate::drift::unaccepted(config, &green, &blue)
            .await
            .map(|found| {
                found
                    .iter()
                    .map(|f| format!("{}: {}", f.green_table, f.text()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    async fn blue_client(&mut self, config: &Config) -> Reading<Arc<Client>> {
        if !matches!(&self.blue, Some(c) if !c.is_closed()) {
            self.blue = Some(
                crate::connect::connect_blue(&config.blue)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(self.blue.clone().expect("connected above"))
    }

    /// Rows parked for the slot, any time: one capped query on blue.
    async fn dead_letters(&mut self, config: &Config) -> Reading<dead_letters::Summary> {
        if !matches!(&self.blue, Some(c) if !c.is_closed()) {
            self.blue = Some(
                crate::connect::connect_blue(&config.blue)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let blue = self.blue.as_ref().expect("connected above");
        let found = dead_letters::summary(blue, &config.schema, &config.slot, None).await;
        if found.is_err() {
            self.blue = None;
        }
        found.map_err(|e| e.to_string())
    }
}
