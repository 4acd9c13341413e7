//! Moving green rows to blue in bulk, for the initial copy and for `verify`: COPY out of green
//! (at an exported or a fresh snapshot) streamed into COPY on blue, byte for byte, without
//! parsing rows or holding more than one network buffer. Green prints and blue reads and
//! evaluates under [`crate::evaluation`]'s settings, the same as when streaming.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_postgres::Client;

use super::binary::BinaryRows;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evaluation::Environment;

/// Settings of bulk sessions on both sides that do not change values: no timeouts an operator
/// set for applications, no chatter, room for temporary tables. How values are printed and
/// computed is [`crate::evaluation`]'s business.
const BULK: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
                    SET client_min_messages = warning; SET temp_buffers = '256MB'; SET jit = off";

/// Bytes gathered before a write to blue.
const BATCH_BYTES: usize = 256 * 1024;

/// A green connection inside a read-only REPEATABLE READ transaction: at `snapshot` (one
/// exported by CREATE_REPLICATION_SLOT) when given, else at a snapshot of its own.
pub async fn green_at_snapshot(config: &Config, snapshot: Option<&str>) -> Result<Client> {
    let green = green_for_snapshots(config).await?;
    begin_snapshot(&green, snapshot).await?;
    Ok(green)
}

/// A green connection set up for bulk reading, for one snapshot transaction after another
/// ([`begin_snapshot`], [`end_snapshot`]): one connection for many tables, not one each.
pub async fn green_for_snapshots(config: &Config) -> Result<Client> {
    let green = crate::connect::connect_green_sql(config).await?;
    green
        .batch_execute(&format!("{BULK}; {}", crate::evaluation::green_set_sql()))
        .await
        .map_err(|e| Error::postgres("configuring a snapshot session on green", &e).into_definite())?;
    Ok(green)
}

/// Opens a read-only REPEATABLE READ transaction on `green`: at `snapshot` (one exported by
/// CREATE_REPLICATION_SLOT) when given, else at a snapshot of its own.
pub async fn begin_snapshot(green: &Client, snapshot: Option<&str>) -> Result<()> {
    let mut sql = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string();
    if let Some(s) = snapshot {
        sql.push_str(&format!("; SET TRANSACTION SNAPSHOT {}", crate::sql::literal(s)));
    }
    green
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::postgres("opening a snapshot transaction on green", &e).into_definite())
}

/// Ends the transaction [`begin_snapshot`] opened.
pub async fn end_snapshot(green: &Client) -> Result<()> {
    green
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::postgres("closing a snapshot transaction on green", &e).into_definite())
}

/// Prepares a blue connection for bulk loading and for evaluating mappings in `env`.
pub async fn prepare_blue(blue: &Client, env: &Environment) -> Result<()> {
    blue.batch_execute(BULK)
        .await
        .map_err(|e| Error::postgres("configuring the blue session", &e).into_definite())?;
    env.apply(blue).await.map_err(Error::into_definite)
}

/// Rows and bytes moved so far, shared with a progress display.
#[derive(Debug, Default)]
pub struct Counter {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counter {
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// How rows travel between the two COPY statements, which must both name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    /// `(FORMAT binary)`: each value in its type's send/receive form.
    Binary,
}

impl Format {
    /// The COPY option for this format, with a leading space, or nothing for text.
    pub fn option(self) -> &'static str {
        match self {
            Format::Text => "",
            Format::Binary => " (FORMAT binary)",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Binary => "binary",
        }
    }
}

/// Streams `copy_out` (a `COPY ... TO STDOUT` on green) into `copy_in` (a `COPY ... FROM STDIN`
/// on blue), in text. Returns the rows moved.
pub async fn pump(
    green: &Client,
    copy_out: &str,
    blue: &Client,
    copy_in: &str,
    counter: &Counter,
    what: &str,
) -> Result<u64> {
    let ends = Ends {
        green,
        copy_out,
        blue,
        copy_in,
    };
    pump_as(ends, Format::Text, counter, what).await
}

/// The two COPY statements [`pump_as`] connects, and where each runs.
pub struct Ends<'a> {
    pub green: &'a Client,
    pub copy_out: &'a str,
    pub blue: &'a Client,
    pub copy_in: &'a str,
}

/// Streams green's COPY into blue's, both in `format`, byte for byte: one COPY out to one
/// COPY in, so a binary stream's header and trailer pass through as they are. Rows are
/// counted as they pass (text COPY ends every row with a newline and escapes newlines inside
/// values; binary is followed through its framing). Returns the rows moved.
pub async fn pump_as(ends: Ends<'_>, format: Format, counter: &Counter, what: &str) -> Result<u64> {
    let read_err = |e: tokio_postgres::Error| Error::postgres(format!("{what}: reading green"), &e).into_definite();
    let write_err = |e: tokio_postgres::Error| Error::postgres(format!("{what}: writing blue"), &e).into_definite();
    let stream = ends.green.copy_out(ends.copy_out).await.map_err(read_err)?;
    let sink = ends.blue.copy_in::<_, Bytes>(ends.copy_in).await.map_err(write_err)?;
    futures_util::pin_mut!(sink);
    let mut rows = 0u64;
    let mut binary = BinaryRows::default();
    let mut reader = Gathered::new(stream);
    while let Some(chunk) = reader.next().await.map_err(read_err)? {
        let n = match format {
            Format::Text => memchr::memchr_iter(b'\n', &chunk).count() as u64,
            Format::Binary => binary.feed(&chunk),
        };
        rows += n;
        counter.add(n, chunk.len() as u64);
        sink.send(chunk).await.map_err(write_err)?;
    }
    sink.finish().await.map_err(write_err)?;
    Ok(rows)
}

/// A COPY TO STDOUT stream read in large pieces: green sends a message per row, so what has
/// already arrived is gathered into one buffer, and blue gets large messages while the
/// per-row cost here stays small.
pub struct Gathered {
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    buf: BytesMut,
    /// The stream has ended (a finished stream must not be polled again).
    ended: bool,
}

impl Gathered {
    pub fn new(stream: tokio_postgres::CopyOutStream) -> Gathered {
        Gathered {
            stream: Box::pin(stream),
            buf: BytesMut::with_capacity(BATCH_BYTES),
            ended: false,
        }
    }

    /// Whole messages (so whole rows) up to about `BATCH_BYTES`; `None` at the end.
    pub async fn next(&mut self) -> std::result::Result<Option<Bytes>, tokio_postgres::Error> {
        if self.ended {
            return Ok(None);
        }
        match self.stream.next().await {
            Some(first) => self.buf.extend_from_slice(&first?),
            None => {
                self.ended = true;
                return Ok(None);
            }
        }
        while self.buf.len() < BATCH_BYTES {
            match self.stream.next().now_or_never() {
                Some(Some(more)) => self.buf.extend_from_slice(&more?),
                Some(None) => {
                    self.ended = true;
                    break;
                }
                None => break,
            }
        }
        Ok(Some(self.buf.split().freeze()))
    }
}

/// Green's estimate of a table's rows and bytes (from the last VACUUM/ANALYZE), for progress.
pub async fn estimate(green: &Client, schema: &str, table: &str) -> (u64, u64) {
    let q = "SELECT greatest(c.reltuples, 0)::int8, pg_table_size(c.oid)::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";
    match green.query_opt(q, &[&schema, &table]).await {
        Ok(Some(r)) => (r.get::<_, i64>(0).max(0) as u64, r.get::<_, i64>(1).max(0) as u64),
        _ => (0, 0),
    }
}

/// Where the `need`th row of COPY text `data` ends (one past its newline), if it is in
/// `data`, and how many rows end in `data` up to there: for cutting a COPY stream into chunks
/// of whole rows (`verify`, `check --data`).
pub fn cut_after_rows(data: &[u8], need: u64) -> (Option<usize>, u64) {
    let mut seen = 0u64;
    for at in memchr::memchr_iter(b'\n', data) {
        seen += 1;
        if seen == need {
            return (Some(at + 1), seen);
        }
    }
    (None, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_cut_after_its_last_row() {
        assert_eq!(cut_after_rows(b"a\nb\nc\n", 2), (Some(4), 2));
        assert_eq!(cut_after_rows(b"a\nb\nc\n", 3), (Some(6), 3));
        // Not enough rows: all of them are counted, nothing is cut.
        assert_eq!(cut_after_rows(b"a\nb\nc", 5), (None, 2));
        assert_eq!(cut_after_rows(b"", 1), (None, 0));
    }
}
