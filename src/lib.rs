//! pgbridge streams a migrated "green" PostgreSQL database back into the old "blue" one, so a
//! blue-green deployment can roll back at any moment without losing a transaction.
//!
//! ```text
//! green ──pgoutput──▶ source ──▶ protocol ──▶ pipeline ──▶ mapping ──▶ apply ──▶ blue
//!  (walsender)       (socket,     (pure        (Begin..     (table      (one blue tx per
//!                     feedback)    decoder)     Commit)      plans)      group + checkpoint)
//!        ▲                                                                      │
//!        └──────── standby status: flush = last LSN durably committed on blue ◀─┘
//! ```
//!
//! * [`source`] owns the replication socket: it reads in its own task so keepalives are always
//!   answered, and reports as flushed only what [`apply`] durably committed on blue.
//! * [`protocol`] is pure: bytes in, typed messages out, never a panic.
//! * [`apply`] writes whole green transactions, plus the checkpoint row, in one blue transaction.

pub mod apply;
pub mod cli;
pub mod config;
pub mod connect;
pub mod drift;
pub mod error;
pub mod evaluation;
pub mod failpoint;
pub mod lsn;
pub mod mapping;
pub mod ops;
pub mod pipeline;
pub mod progress;
pub mod protocol;
pub mod source;
pub mod sql;
pub mod state;
pub mod telemetry;
pub mod tls;
/// Kept at its old path for the progress display.
pub use ops::copy::transfer;
