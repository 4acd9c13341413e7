//! Streaming tasks over a replication connection; see the module docs of [`crate::source`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::conn::{server_error, Backend, Reader, ReplicationConn, Writer};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::protocol::pgoutput::{self, LogicalMessage};
use crate::protocol::replication::{self, ReplicationMessage};
use crate::sql;

/// How often a status update is sent even when nothing changed. PostgreSQL's default
/// `wal_sender_timeout` is 60 s; operators shorten it, so stay far below any sane value.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Most bytes of green's messages in one chunk handed to the applier. With the channel's
/// capacity this bounds what is held between socket and blue, whatever the row sizes.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Every this many status updates asks green to answer, so a silent connection is noticed.
const REPLY_REQUEST_EVERY: u32 = 10;
/// With replies requested every 10 s, this long without a message means the connection is
/// dead (a half-open TCP connection after a failover or partition never reports an error).
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// What the reader hands to the applier, in stream order.
#[derive(Debug)]
pub enum SourceEvent {
    Message(LogicalMessage),
    /// The server's position when it sent a keepalive: every transaction that commits before
    /// it has already been sent on this connection.
    Keepalive {
        wal_end: Lsn,
    },
    /// The stream failed; nothing after this arrives.
    Failed(Error),
}

/// Where and what to stream.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub slot: String,
    pub publication: String,
    /// The blue checkpoint. The server starts at max(this, the slot's confirmed_flush_lsn).
    pub start: Lsn,
    /// Ask for large in-progress transactions as they are decoded (`streaming 'on'`, which
    /// needs protocol 2; protocol 1 otherwise), instead of after green has decoded, spilled and
    /// re-read all of them.
    pub streaming: bool,
    /// Skip transactions applied under a replication origin (`origin 'none'`, PostgreSQL 16+).
    pub origin_none: bool,
    /// Values in their types' binary form where green has a send function (`binary 'true'`).
    pub binary: bool,
}

impl StartOptions {
    pub fn command(&self) -> String {
        // publication_names is parsed as a list of identifiers, so quote the name inside the
        // string literal.
        format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version {}, publication_names {}, messages 'true'{}{}{})",
            sql::ident(&self.slot),
            self.start,
            sql::literal(if self.streaming { "2" } else { "1" }),
            sql::literal(&sql::ident(&self.publication)),
            if self.streaming { ", streaming 'on'" } else { "" },
            if self.origin_none { ", origin 'none'" } else { "" },
            if self.binary { ", binary 'true'" } else { "" },
        )
    }
}

/// The running reader and writer tasks of one replication session.
pub struct SourceHandle {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl SourceHandle {
    /// Sends `START_REPLICATION`, then spawns the tasks. `durable` is the position committed on
    /// blue; it is the only position ever reported as flushed.
    pub async fn start(
        conn: ReplicationConn,
        options: &StartOptions,
        durable: watch::Receiver<Lsn>,
        events: mpsc::Sender<Vec<SourceEvent>>,
    ) -> Result<SourceHandle> {
        let (reader, writer) = conn.start_replication(&options.command()).await?;
        let received = Arc::new(AtomicU64::new(options.start.0));
        let reply = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(reader, events, received.clone(), reply.clone()));
        let writer = tokio::spawn(write_loop(writer, durable, received, reply, stop_rx));
        Ok(SourceHandle { reader, writer, stop })
    }

    /// Stops reading, sends a last status update with the final durable position and closes
    /// the connection.
    pub async fn close(mut self) {
        self.reader.abort();
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.writer)
            .await
            .is_err()
        {
            tracing::warn!("green did not accept the final status update within 5 s");
            // Do not keep the socket (and so the slot) busy for the next session.
            self.writer.abort();
        }
    }
}

/// Events are handed over in chunks: everything already decoded from what the socket
/// delivered, up to [`CHUNK_BYTES`]. One wake-up of the applier per chunk instead of per
/// message keeps the two tasks from spending their time switching.
async fn read_loop(
    mut reader: Reader,
    events: mpsc::Sender<Vec<SourceEvent>>,
    received: Arc<AtomicU64>,
    reply: Arc<Notify>,
) {
    let mut in_stream = false;
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    loop {
        let read = tokio::time::timeout(SILENCE_LIMIT, read_one(&mut reader, &received, &reply, &mut in_stream));
        let event = match read.await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => Some((SourceEvent::Failed(e), 0)),
            Err(_) => Some((
                SourceEvent::Failed(Error::transient(format!(
                    "no message from green for {} s although replies were requested; the connection is presumed dead",
                    SILENCE_LIMIT.as_secs()
                ))),
                0,
            )),
        };
        let failed = matches!(event, Some((SourceEvent::Failed(_), _)));
        if let Some((event, size)) = event {
            chunk_bytes += size;
            chunk.push(event);
        }
        let hand_over = failed || chunk_bytes >= CHUNK_BYTES || !reader.has_message();
        if hand_over && !chunk.is_empty() {
            chunk_bytes = 0;
            if events.send(std::mem::take(&mut chunk)).await.is_err() || failed {
                return;
            }
        }
    }
}

async fn read_one(
    reader: &mut Reader,
    received: &AtomicU64,
    reply: &Notify,
    in_stream: &mut bool,
) -> Result<Option<(SourceEvent, usize)>> {
    let body = match reader.next().await? {
        Backend::Message(Message::CopyData(body)) => body.into_bytes(),
        Backend::Message(Message::CopyDone) => {
            return Err(Error::transient("green ended the replication stream (CopyDone)"))
        }
        Backend::Message(Message::ErrorResponse(body)) => {
            return Err(server_error("green replication stream", body.fields()))
        }
        Backend::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => return Ok(None),
        _ => {
            return Err(Error::transient(
                "green sent an unexpected protocol message while streaming",
            ))
        }
    };
    let size = body.len();
    let message = replication::decode_copy_data(body)
        .map_err(|e| Error::definite(format!("cannot decode a replication message from green: {e}")))?;
    match message {
        ReplicationMessage::Keepalive {
            wal_end,
            reply_requested,
            ..
        } => {
            received.fetch_max(wal_end.0, Ordering::Relaxed);
            if reply_requested {
                reply.notify_one();
            }
            Ok(Some((SourceEvent::Keepalive { wal_end }, size)))
        }
        ReplicationMessage::XLogData { wal_start, data, .. } => {
            let msg = pgoutput::decode(data, *in_stream).map_err(|e| {
                Error::definite(format!(
                    "cannot decode the pgoutput message at {wal_start} from green: {e}; \
                     the slot and checkpoint are unchanged"
                ))
            })?;
            match &msg {
                LogicalMessage::StreamStart(_) => *in_stream = true,
                LogicalMessage::StreamStop => *in_stream = false,
                LogicalMessage::Commit(c) => {
                    tracing::trace!(end_lsn = %c.end_lsn, "received commit");
                    received.fetch_max(c.end_lsn.0, Ordering::Relaxed);
                }
                _ => {}
            }
            Ok(Some((SourceEvent::Message(msg), size)))
        }
    }
}

async fn write_loop(
    mut writer: Writer,
    mut durable: watch::Receiver<Lsn>,
    received: Arc<AtomicU64>,
    reply: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: u32 = 0;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = reply.notified() => false,
            changed = durable.changed() => changed.is_err(),
            _ = stop.changed() => true,
        };
        let flush = *durable.borrow_and_update();
        let write = Lsn(received.load(Ordering::Relaxed).max(flush.0));
        let mut buf = BytesMut::with_capacity(64);
        sent = sent.wrapping_add(1);
        let ask_reply = sent % REPLY_REQUEST_EVERY == 0;
        replication::encode_status_update(write, flush, flush, replication::pg_now(), ask_reply, &mut buf);
        let mut out = BytesMut::with_capacity(64);
        if let Ok(d) = frontend::CopyData::new(&buf[..]) {
            d.write(&mut out);
        }
        if stopping {
            frontend::terminate(&mut out);
            let _ = writer.send(&out).await;
            tracing::debug!(flush = %flush, "sent final status update to green");
            return;
        }
        if let Err(e) = writer.send(&out).await {
            tracing::debug!(error = %e, "status update to green failed; the reader will see the broken stream");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_command_quotes_names_and_uses_checkpoint() {
        let cmd = StartOptions {
            slot: "pgbridge_to_blue".into(),
            publication: "My \"pub\"".into(),
            start: Lsn(0x16_B374_D848),
            streaming: false,
            origin_none: false,
            binary: false,
        };
        assert_eq!(
            cmd.command(),
            "START_REPLICATION SLOT \"pgbridge_to_blue\" LOGICAL 16/B374D848 (proto_version '1', \
             publication_names '\"My \"\"pub\"\"\"', messages 'true')"
        );
        let streamed = StartOptions {
            streaming: true,
            origin_none: true,
            binary: true,
            ..cmd
        };
        assert!(streamed
            .command()
            .ends_with("(proto_version '2', publication_names '\"My \"\"pub\"\"\"', messages 'true', streaming 'on', origin 'none', binary 'true')"));
    }
}
