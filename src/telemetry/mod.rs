//! Metrics, state and the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/status`).
//!
//! Every metric name lives in [`names`]; labels have bounded values (table names, operation
//! kinds, error kinds, sides, states), never error texts or row keys. The applier reports per
//! blue transaction, not per row, so the hot path only bumps local counters.
//!
//! `pgbridge_lag_seconds` means what `pgbridge lag` prints: the age of the oldest green
//! transaction with published changes that blue lacks, 0 when there is none. Two sources make
//! it exact without decoding the slot on every scrape:
//! * transactions the applier has received are tracked by commit LSN from their first row
//!   change until a blue commit passes them, whatever holds their apply up (a lock on blue,
//!   a reconnect). Delivery is in commit order, so the first of them is the oldest of all;
//! * when none is pending, the only lag can be in what green has not sent yet. The poller
//!   ([`crate::ops::run`]) checks every 2 s whether the stream has reached the position
//!   green had at its previous poll; when it has not, it decodes the slot as `lag` does and
//!   reports its [`Verdict`]. WAL without published changes sends no transaction, so it never
//!   counts.

pub mod http;
pub mod names;
pub mod rollback;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::lsn::Lsn;
use crate::protocol::replication::pg_time_to_system;
use names::*;

/// The bridge's state, as `pgbridge_state{state}` and `/status` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Streaming,
    Reconnecting,
    Stopped,
    Failed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Streaming,
        State::Reconnecting,
        State::Stopped,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Streaming => "streaming",
            State::Reconnecting => "reconnecting",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// Rows applied per table and operation since start, for `/status`.
type TableCounts = BTreeMap<String, BTreeMap<&'static str, u64>>;

/// Live facts about a running bridge, shared by the pipeline, the poller and `/status`.
pub struct Telemetry {
    state: Mutex<State>,
    received: AtomicU64,
    applied: AtomicU64,
    green_wal: AtomicU64,
    retained: AtomicU64,
    /// Green's or blue's catalogs no longer match the accepted plan.
    drift: std::sync::atomic::AtomicBool,
    /// Received transactions with changes that blue has not committed yet, as (commit LSN,
    /// green commit time in µs since 2000), in commit order.
    pending: Mutex<VecDeque<(Lsn, i64)>>,
    /// What the poller found beyond the received transactions.
    verdict: Mutex<Verdict>,
    tables: Mutex<TableCounts>,
    /// Rollback readiness as the poller last evaluated it.
    rollback: Mutex<rollback::Readiness>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            state: Mutex::new(State::Starting),
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            green_wal: AtomicU64::new(0),
            retained: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
            verdict: Mutex::new(Verdict::Unknown),
            drift: std::sync::atomic::AtomicBool::new(false),
            tables: Mutex::new(BTreeMap::new()),
            rollback: Mutex::new(rollback::Readiness::default()),
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(APPLY_BATCH_ROWS.into()),
                &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
            })
            .expect("bucket lists are not empty");
        let handle = builder
            .install_recorder()
            .expect("the metrics recorder is installed once, at start");
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_gauge!(
        LAG_BYTES,
        "green's current WAL position minus the position applied on blue"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "now minus the green commit time of the oldest green transaction with published changes that blue lacks (as pgbridge lag); 0 when there is none; NaN when it cannot be told"
    );
    metrics::describe_gauge!(RECEIVED_LSN, "last position received from green");
    metrics::describe_gauge!(APPLIED_LSN, "last position durably committed on blue (the checkpoint)");
    metrics::describe_gauge!(GREEN_WAL_LSN, "green's current WAL position");
    metrics::describe_gauge!(SLOT_RETAINED_WAL_BYTES, "WAL green keeps for the slot");
    metrics::describe_counter!(TRANSACTIONS_APPLIED, "green transactions applied on blue");
    metrics::describe_counter!(ROWS_APPLIED, "rows applied on blue, by table and operation");
    metrics::describe_histogram!(APPLY_BATCH_ROWS, "rows per blue transaction");
    metrics::describe_histogram!(APPLY_DURATION, "time to apply and commit one blue transaction");
    metrics::describe_histogram!(REPLICATION_DELAY, "green commit to blue commit");
    metrics::describe_counter!(ERRORS, "errors by kind: transient, definite, dead_letter");
    metrics::describe_counter!(RECONNECTS, "reconnections by side: green, blue");
    metrics::describe_gauge!(STATE, "1 for the current state");
    metrics::describe_gauge!(
        SCHEMA_DRIFT,
        "1 while green's or blue's catalogs no longer match the accepted plan"
    );
    metrics::describe_gauge!(
        ROLLBACK_READY,
        "1 when every condition of pgbridge ready holds: a rollback to blue now would lose nothing"
    );
    metrics::describe_gauge!(
        ROLLBACK_CONDITION,
        "1 per condition of pgbridge ready that holds; 0 when it does not or cannot be told"
    );
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let t = Arc::new(Telemetry::default());
        t.publish_state(State::Starting);
        // Counters exist from the start, so dashboards and alerts see 0 rather than nothing.
        for kind in ["transient", "definite", "dead_letter"] {
            metrics::counter!(ERRORS, "kind" => kind).absolute(0);
        }
        metrics::gauge!(SCHEMA_DRIFT).set(0.0);
        for side in ["green", "blue"] {
            metrics::counter!(RECONNECTS, "side" => side).absolute(0);
        }
        metrics::counter!(TRANSACTIONS_APPLIED).absolute(0);
        // Not ready until the poller has evaluated the conditions once.
        metrics::gauge!(ROLLBACK_READY).set(0.0);
        t
    }

    fn publish_state(&self, state: State) {
        for s in State::ALL {
            metrics::gauge!(STATE, "state" => s.as_str()).set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// Moves to `state`, logging one line when it changes.
    pub fn set_state(&self, state: State) {
        let mut current = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *current != state {
            tracing::info!(from = current.as_str(), to = state.as_str(), "state changed");
            *current = state;
            self.publish_state(state);
        }
    }

    pub fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn received(&self, lsn: Lsn) {
        self.received.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// A blue commit: positions, counters and histograms for the whole group at once.
    pub fn committed(&self, commit: &Commit<'_>) {
        self.applied.fetch_max(commit.lsn.0, Ordering::Relaxed);
        metrics::gauge!(APPLIED_LSN).set(commit.lsn.0 as f64);
        metrics::counter!(TRANSACTIONS_APPLIED).increment(commit.transactions);
        metrics::histogram!(APPLY_BATCH_ROWS).record(commit.rows as f64);
        metrics::histogram!(APPLY_DURATION).record(commit.duration.as_secs_f64());
        if commit.transactions > 0 {
            let delay = SystemTime::now()
                .duration_since(pg_time_to_system(commit.last_commit_time))
                .unwrap_or_default();
            metrics::histogram!(REPLICATION_DELAY).record(delay.as_secs_f64());
        }
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        for ((table, op), n) in commit.counts {
            metrics::counter!(ROWS_APPLIED, "table" => table.to_string(), "op" => *op).increment(*n);
            *tables.entry(table.to_string()).or_default().entry(op).or_default() += n;
        }
        drop(tables);
        self.forget_applied();
    }

    /// A position committed on blue without transactions: an idle position, or the checkpoint
    /// a session starts from.
    pub fn applied_idle(&self, lsn: Lsn) {
        let applied = self.applied.fetch_max(lsn.0, Ordering::Relaxed).max(lsn.0);
        metrics::gauge!(APPLIED_LSN).set(applied as f64);
        self.forget_applied();
    }

    /// A received transaction with changes (called at its first change) that blue does not have
    /// yet; it counts until a blue commit passes its commit LSN. Sent again after a reconnect,
    /// it is counted once.
    pub fn pending_since(&self, commit_lsn: Lsn, commit_time: i64) {
        if commit_lsn.0 < self.applied.load(Ordering::Relaxed) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.back().map_or(true, |(last, _)| *last < commit_lsn) {
            pending.push_back((commit_lsn, commit_time));
        }
    }

    /// Drops the received transactions blue has committed: those that commit before the
    /// applied position (which is an end LSN).
    fn forget_applied(&self) {
        let applied = Lsn(self.applied.load(Ordering::Relaxed));
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.front().is_some_and(|(lsn, _)| *lsn < applied) {
            pending.pop_front();
        }
    }

    /// Green commit time of the oldest received transaction blue lacks.
    pub fn oldest_received(&self) -> Option<i64> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .map(|(_, t)| *t)
    }

    /// The last position received from green (a commit's end or a keepalive's).
    pub fn received_lsn(&self) -> Lsn {
        Lsn(self.received.load(Ordering::Relaxed))
    }

    /// The last position committed on blue; 0 until the first session has read the checkpoint.
    pub fn applied_lsn(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::Relaxed))
    }

    /// What the poller found about transactions not received yet.
    /// The verdict the poller set last.
    pub fn verdict(&self) -> Verdict {
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_verdict(&self, verdict: Verdict) {
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = verdict;
    }

    /// Whether green's or blue's catalogs no longer match the accepted plan.
    pub fn schema_drift(&self, drift: bool) {
        self.drift.store(drift, Ordering::Relaxed);
        metrics::gauge!(SCHEMA_DRIFT).set(if drift { 1.0 } else { 0.0 });
    }

    /// Whether the bridge found green's or blue's catalogs no longer matching the accepted plan.
    pub fn drifted(&self) -> bool {
        self.drift.load(Ordering::Relaxed)
    }

    /// Green's WAL position at the last poll; 0 before the first.
    pub fn green_wal_lsn(&self) -> Lsn {
        Lsn(self.green_wal.load(Ordering::Relaxed))
    }

    /// Rollback readiness, evaluated by the poller: the gauges and `/status` follow it.
    pub fn set_rollback(&self, readiness: rollback::Readiness) {
        readiness.publish();
        *self.rollback.lock().unwrap_or_else(|e| e.into_inner()) = readiness;
    }

    pub fn error(&self, kind: &'static str) {
        metrics::counter!(ERRORS, "kind" => kind).increment(1);
    }

    pub fn reconnect(&self, side: &'static str) {
        metrics::counter!(RECONNECTS, "side" => side).increment(1);
    }

    /// Green's position and the slot's retained WAL, read by the poller.
    pub fn green_position(&self, wal: Lsn, retained: u64) {
        self.green_wal.store(wal.0, Ordering::Relaxed);
        self.retained.store(retained, Ordering::Relaxed);
        metrics::gauge!(GREEN_WAL_LSN).set(wal.0 as f64);
        metrics::gauge!(SLOT_RETAINED_WAL_BYTES).set(retained as f64);
    }

    /// Recomputes the derived gauges (lag) from the latest facts.
    pub fn refresh(&self) {
        let applied = self.applied.load(Ordering::Relaxed);
        let green = self.green_wal.load(Ordering::Relaxed);
        metrics::gauge!(RECEIVED_LSN).set(self.received.load(Ordering::Relaxed) as f64);
        metrics::gauge!(LAG_BYTES).set(green.saturating_sub(applied) as f64);
        metrics::gauge!(LAG_SECONDS).set(self.lag_seconds());
    }

    /// The age of the oldest transaction blue lacks; NaN while it cannot be told.
    pub fn lag_seconds(&self) -> f64 {
        if let Some(t) = self.oldest_received() {
            return age(t);
        }
        // Blue has reached green's position at the last poll: whatever green committed since
        // is younger than one poll and on its way (the poller's own rule), whatever the
        // verdict taken before.
        let (applied, green) = (
            self.applied.load(Ordering::Relaxed),
            self.green_wal.load(Ordering::Relaxed),
        );
        if green != 0 && applied >= green {
            return 0.0;
        }
        match *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) {
            Verdict::Unknown => f64::NAN,
            Verdict::Pending { end_lsn, commit_time } if end_lsn.0 > self.applied.load(Ordering::Relaxed) => {
                age(commit_time)
            }
            Verdict::Pending { .. } | Verdict::Nothing => 0.0,
        }
    }

    /// What `/status` returns.
    pub fn status(&self) -> StatusDoc {
        let applied = self.applied.load(Ordering::Relaxed);
        let green = self.green_wal.load(Ordering::Relaxed);
        StatusDoc {
            state: self.state(),
            received_lsn: Lsn(self.received.load(Ordering::Relaxed)).to_string(),
            applied_lsn: Lsn(applied).to_string(),
            green_wal_lsn: Lsn(green).to_string(),
            lag_bytes: green.saturating_sub(applied),
            lag_seconds: self.lag_seconds(),
            slot_retained_wal_bytes: self.retained.load(Ordering::Relaxed),
            schema_drift: self.drift.load(Ordering::Relaxed),
            tables: self.tables.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            rollback: self.rollback.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// What the poller knows of transactions the stream has not delivered (when none it delivered
/// is pending).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Nothing older than one poll is undelivered.
    Nothing,
    /// The slot holds this transaction, which blue lacks.
    Pending { end_lsn: Lsn, commit_time: i64 },
    /// Not known yet, or it could not be told (the poller logs why).
    Unknown,
}

/// Seconds from a green commit time to now, 0 for a time ahead of this clock.
pub fn age(commit_time: i64) -> f64 {
    SystemTime::now()
        .duration_since(pg_time_to_system(commit_time))
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One blue commit, as the applier reports it.
pub struct Commit<'a> {
    pub lsn: Lsn,
    pub transactions: u64,
    pub rows: u64,
    pub duration: Duration,
    pub last_commit_time: i64,
    pub counts: &'a BTreeMap<(Arc<str>, &'static str), u64>,
}

/// `/status` document.
#[derive(Serialize, Debug)]
pub struct StatusDoc {
    pub state: State,
    pub received_lsn: String,
    pub applied_lsn: String,
    pub green_wal_lsn: String,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub slot_retained_wal_bytes: u64,
    /// Green's or blue's catalogs no longer match the accepted plan.
    pub schema_drift: bool,
    /// Rows applied since start, by green table and operation.
    pub tables: TableCounts,
    /// Whether a rollback to blue now would lose nothing, condition by condition, as
    /// `pgbridge ready` prints it (without `reverse`, which only the command evaluates).
    pub rollback: rollback::Readiness,
}
