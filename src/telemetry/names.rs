//! Every metric name pgbridge exports (DESIGN.md's table). Dashboards and alert rules use these
//! names; a test checks that each one they use is exported.

pub const LAG_BYTES: &str = "pgbridge_lag_bytes";
pub const LAG_SECONDS: &str = "pgbridge_lag_seconds";
pub const RECEIVED_LSN: &str = "pgbridge_received_lsn";
pub const APPLIED_LSN: &str = "pgbridge_applied_lsn";
pub const GREEN_WAL_LSN: &str = "pgbridge_green_wal_lsn";
pub const SLOT_RETAINED_WAL_BYTES: &str = "pgbridge_slot_retained_wal_bytes";
pub const TRANSACTIONS_APPLIED: &str = "pgbridge_transactions_applied_total";
pub const ROWS_APPLIED: &str = "pgbridge_rows_applied_total";
pub const APPLY_BATCH_ROWS: &str = "pgbridge_apply_batch_rows";
pub const APPLY_DURATION: &str = "pgbridge_apply_duration_seconds";
pub const REPLICATION_DELAY: &str = "pgbridge_replication_delay_seconds";
pub const ERRORS: &str = "pgbridge_errors_total";
pub const RECONNECTS: &str = "pgbridge_reconnects_total";
pub const STATE: &str = "pgbridge_state";
pub const SCHEMA_DRIFT: &str = "pgbridge_schema_drift";
pub const ROLLBACK_READY: &str = "pgbridge_rollback_ready";
pub const ROLLBACK_CONDITION: &str = "pgbridge_rollback_condition";

/// All of them, for tests and documentation.
pub const ALL: [&str; 17] = [
    LAG_BYTES,
    LAG_SECONDS,
    RECEIVED_LSN,
    APPLIED_LSN,
    GREEN_WAL_LSN,
    SLOT_RETAINED_WAL_BYTES,
    TRANSACTIONS_APPLIED,
    ROWS_APPLIED,
    APPLY_BATCH_ROWS,
    APPLY_DURATION,
    REPLICATION_DELAY,
    ERRORS,
    RECONNECTS,
    STATE,
    SCHEMA_DRIFT,
    ROLLBACK_READY,
    ROLLBACK_CONDITION,
];
