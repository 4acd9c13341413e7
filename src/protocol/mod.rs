//! Pure decoding of what green's walsender sends, and encoding of what we answer.
//!
//! Nothing here touches a socket: [`replication`] splits a CopyData payload into its
//! XLogData / keepalive frame, and [`pgoutput`] turns the frame's data into a typed
//! [`pgoutput::LogicalMessage`]. Keeping this layer I/O-free lets it be tested byte for byte
//! against messages captured from a real server (`tests/fixtures/pgoutput/`), and guarantees
//! that malformed input costs an error, never a panic or an unbounded allocation.

pub mod pgoutput;
pub mod replication;

/// Bytes from the server that do not form a valid message.
///
/// The text is lowercase and names the message kind, the field and the byte offset, so a
/// report can be matched against `proto.c` without a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);
