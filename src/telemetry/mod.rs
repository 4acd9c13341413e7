//! Metrics, state and the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/status`).
//!
//! Every metric name lives in [`names`]; labels have bounded values (table names, operation
//! kinds, error kinds, sides, states), never error texts or row keys. The applier reports per
//! blue transaction, not per row, so the hot path only bumps local counters.

pub mod http;
pub mod names;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    /// Green commit time (µs since 2000) of the oldest received transaction not yet durable on
    /// blue; 0 when none.
    oldest_pending: AtomicI64,
    tables: Mutex<TableCounts>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            state: Mutex::new(State::Starting),
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            green_wal: AtomicU64::new(0),
            retained: AtomicU64::new(0),
            oldest_pending: AtomicI64::new(0),
            drift: std::sync::atomic::AtomicBool::new(false),
            tables: Mutex::new(BTreeMap::new()),
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
        "now minus the green commit time of the oldest unapplied transaction; 0 when caught up"
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
        self.oldest_pending.store(0, Ordering::Relaxed);
    }

    /// An idle position committed on blue.
    pub fn applied_idle(&self, lsn: Lsn) {
        self.applied.fetch_max(lsn.0, Ordering::Relaxed);
        metrics::gauge!(APPLIED_LSN).set(lsn.0 as f64);
    }

    /// The commit time of a received transaction that is not durable on blue yet (the first
    /// one of a group counts).
    pub fn pending_since(&self, commit_time: i64) {
        let _ = self
            .oldest_pending
            .compare_exchange(0, commit_time, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether green's or blue's catalogs no longer match the accepted plan.
    pub fn schema_drift(&self, drift: bool) {
        self.drift.store(drift, Ordering::Relaxed);
        metrics::gauge!(SCHEMA_DRIFT).set(if drift { 1.0 } else { 0.0 });
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

    fn lag_seconds(&self) -> f64 {
        match self.oldest_pending.load(Ordering::Relaxed) {
            0 => 0.0,
            t => SystemTime::now()
                .duration_since(pg_time_to_system(t))
                .map_or(0.0, |d| d.as_secs_f64()),
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
        }
    }
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
}
