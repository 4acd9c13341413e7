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

/// Helpers shared by the decoders' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use bytes::Bytes;

    /// One fixture line of lowercase hex as bytes.
    pub fn unhex(line: &str) -> Bytes {
        let digits = line.trim().as_bytes();
        let value = |c: u8| char::from(c).to_digit(16).expect("fixture is hex") as u8;
        Bytes::from(
            digits
                .chunks_exact(2)
                .map(|pair| value(pair[0]) << 4 | value(pair[1]))
                .collect::<Vec<u8>>(),
        )
    }
}
