//! pgbridge streams a migrated "green" PostgreSQL database back into the old "blue" one, so a
//! blue-green deployment can roll back at any moment without losing a transaction.
//!
//! ```text
//! green ──pgoutput──▶ source ──▶ protocol ──▶ pipeline ──▶ apply ──────────────▶ blue
//!  (walsender)       (socket,     (pure        (sessions,   (dispatch; groups,    (one blue tx per
//!                     feedback)    decoder)     replay,      durability, batches, group + checkpoint
//!                                               backoff)     lanes)               row in state/)
//!        ▲                                                     │ mapping: plans, statements
//!        └──── standby status: flush = last LSN durably committed on blue ◀─┘
//!
//! cli/ (one thin file per command) ──▶ ops/ (one operation each) ──▶ connect, state, mapping,
//!                                                                    source, pipeline
//! ```
//!
//! Layers, each importing only from those below it (`tests/layout.rs` checks it):
//! * [`cli`]: clap and one file per command: arguments, one call into [`ops`], printing, the
//!   exit code. No SQL; nothing imports from it.
//! * [`ops`]: the operations (preflight, setup, copy, verify, run, switchover, lag, wait, ...).
//! * [`pipeline`]: one `run`'s sessions, what a failed session does next, backoff.
//! * [`apply`]: green transactions into blue transactions; the commit and confirmation policy
//!   are pure types there, behind a narrow trait to blue.
//! * [`source`] owns the replication socket: it reads in its own task so keepalives are always
//!   answered, and reports as flushed only what [`apply`] durably committed on blue.
//! * [`protocol`] is pure: bytes in, typed messages out, never a panic.
//! * [`mapping`]: mapping files, plans against the catalogs, the SQL for blue; [`drift`]: the
//!   accepted plan and what changed since.
//! * [`state`]: everything pgbridge keeps on blue (checkpoint, dead letters, origins, accepted
//!   plan), with all its SQL; [`connect`]: every connection and the advice when one fails;
//!   [`pooler`]: refusing a transaction-mode pooler in front of blue.
//! * [`config`]: the file and environment switches, validated into one `Config`;
//!   [`evaluation`]: the session settings mapped values are computed under; [`telemetry`]:
//!   metrics, the HTTP endpoint.

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
pub mod pooler;
pub mod protocol;
pub mod source;
pub mod sql;
pub mod state;
pub mod telemetry;
pub mod tls;
