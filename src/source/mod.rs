//! The green side: a replication connection and the two tasks that own its socket while it
//! streams.
//!
//! The reader decodes CopyData into pgoutput messages and pushes them, in order, into a
//! bounded channel for the applier. The writer sends standby status updates: at least once a
//! second, whenever the durable position moves, and at once when the server asks. Because the
//! writer never waits on the applier, a slow blue (a held lock, a long transaction) cannot make
//! green's `wal_sender_timeout` fire: the walsender reads our replies even while its own send
//! buffer is full.

pub mod conn;
pub mod peek;
pub mod stream;

pub use conn::ReplicationConn;
pub use stream::{SourceEvent, SourceHandle, StartOptions};
