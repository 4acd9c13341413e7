//! The CopyData frames of a logical replication stream, and PostgreSQL-epoch time.
//!
//! After `START_REPLICATION` the walsender sends XLogData (`w`, one pgoutput message each)
//! and primary keepalives (`k`); we answer with standby status updates (`r`). Layouts are
//! from the "Streaming Replication Protocol" chapter of the PostgreSQL documentation.
//!
//! The LSNs in a `w` header are not progress markers: they go backwards between transactions
//! and are zero for most messages inside one. Progress comes from Commit `end_lsn` and from the
//! keepalive `wal_end` when nothing is pending.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::pgoutput::Reader;
use super::DecodeError;
use crate::lsn::Lsn;

/// Seconds from 1970-01-01 (Unix epoch) to 2000-01-01 (PostgreSQL epoch).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// One CopyData payload from the walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`: one pgoutput message (decode `data` with [`super::pgoutput::decode`]).
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        /// Server clock when sent, microseconds since 2000-01-01 UTC.
        send_time: i64,
        data: Bytes,
    },
    /// `k`: the server's WAL end; answer at once when `reply_requested`.
    Keepalive {
        wal_end: Lsn,
        /// Server clock when sent, microseconds since 2000-01-01 UTC.
        send_time: i64,
        reply_requested: bool,
    },
}

/// Decodes one CopyData payload of a logical replication stream.
pub fn decode_copy_data(data: Bytes) -> Result<ReplicationMessage, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError("empty replication CopyData message".to_string()));
    };
    match tag {
        b'w' => {
            let mut r = Reader::new(&data, "XLogData");
            r.u8("message type")?;
            let wal_start = r.lsn("wal start")?;
            let wal_end = r.lsn("wal end")?;
            let send_time = r.i64("send time")?;
            let data = r.bytes(r.remaining(), "data".into())?;
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            })
        }
        b'k' => {
            let mut r = Reader::new(&data, "primary keepalive");
            r.u8("message type")?;
            let wal_end = r.lsn("wal end")?;
            let send_time = r.i64("send time")?;
            let reply_requested = r.u8("reply requested")? != 0;
            r.finish()?;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                send_time,
                reply_requested,
            })
        }
        other => Err(DecodeError(format!(
            "unknown replication CopyData message type {:?} (0x{other:02x})",
            char::from(other)
        ))),
    }
}

/// Appends a standby status update (`r`, 34 bytes) to `out`.
///
/// Only `flush` moves the slot's confirmed position: pass nothing there that is not durably
/// applied on blue.
pub fn encode_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    client_time: i64,
    reply_requested: bool,
    out: &mut BytesMut,
) {
    out.reserve(1 + 8 * 4 + 1);
    out.put_u8(b'r');
    out.put_u64(write.0);
    out.put_u64(flush.0);
    out.put_u64(apply.0);
    out.put_i64(client_time);
    out.put_u8(u8::from(reply_requested));
}

/// Now, in microseconds since 2000-01-01 00:00:00 UTC.
pub fn pg_now() -> i64 {
    system_to_pg_time(SystemTime::now())
}

/// Converts microseconds since 2000-01-01 UTC to a [`SystemTime`]. Saturates at the Unix
/// epoch on platforms whose `SystemTime` cannot represent the value.
pub fn pg_time_to_system(t: i64) -> SystemTime {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    let offset = Duration::from_micros(t.unsigned_abs());
    let time = if t >= 0 {
        pg_epoch.checked_add(offset)
    } else {
        pg_epoch.checked_sub(offset)
    };
    time.unwrap_or(UNIX_EPOCH)
}

/// Converts a [`SystemTime`] to microseconds since 2000-01-01 UTC, saturating at the `i64`
/// range.
pub fn system_to_pg_time(t: SystemTime) -> i64 {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    match t.duration_since(pg_epoch) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros())
            .map(|us| -us)
            .unwrap_or(i64::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pgoutput::{self, LogicalMessage};

    const CAPTURED: &str = include_str!("../../tests/fixtures/pgoutput/walsender_copydata.hex");

    use crate::protocol::test_util::unhex;

    fn captured() -> Vec<Bytes> {
        CAPTURED.lines().filter(|l| !l.trim().is_empty()).map(unhex).collect()
    }

    #[test]
    fn decodes_hand_built_xlogdata() {
        let mut frame = vec![b'w'];
        frame.extend_from_slice(&0x0000_0001_0000_0010u64.to_be_bytes());
        frame.extend_from_slice(&0x0000_0001_0000_0020u64.to_be_bytes());
        frame.extend_from_slice(&(-5i64).to_be_bytes());
        frame.extend_from_slice(b"E");
        let msg = decode_copy_data(Bytes::from(frame)).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x1_0000_0010),
                wal_end: Lsn(0x1_0000_0020),
                send_time: -5,
                data: Bytes::from_static(b"E"),
            }
        );
    }

    #[test]
    fn xlogdata_may_carry_no_data() {
        let frame = Bytes::from([&b"w"[..], &[0u8; 24]].concat());
        match decode_copy_data(frame).unwrap() {
            ReplicationMessage::XLogData { data, .. } => assert!(data.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_hand_built_keepalive() {
        let mut frame = vec![b'k'];
        frame.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        frame.extend_from_slice(&789i64.to_be_bytes());
        frame.push(1);
        assert_eq!(
            decode_copy_data(Bytes::from(frame.clone())).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(0x16_B374_D848),
                send_time: 789,
                reply_requested: true,
            }
        );
        frame[17] = 0;
        assert!(matches!(
            decode_copy_data(Bytes::from(frame)).unwrap(),
            ReplicationMessage::Keepalive {
                reply_requested: false,
                ..
            }
        ));
    }

    #[test]
    fn decodes_frames_captured_from_postgres_15() {
        let frames = captured();
        let decoded: Vec<_> = frames.iter().map(|f| decode_copy_data(f.clone()).unwrap()).collect();

        // First frame: a keepalive sent right after START_REPLICATION, no reply asked.
        let ReplicationMessage::Keepalive {
            wal_end,
            send_time,
            reply_requested,
        } = decoded[0]
        else {
            panic!("expected keepalive, got {:?}", decoded[0]);
        };
        assert_eq!(wal_end.to_string(), "0/1B75768");
        assert!(!reply_requested);
        assert!(send_time > system_to_pg_time(UNIX_EPOCH + Duration::from_secs(1_600_000_000)));

        // Every XLogData frame carries one pgoutput message; the Relation message inside
        // the stream block has zero header LSNs while its neighbours do not.
        let mut in_stream = false;
        let mut kinds = String::new();
        for msg in &decoded {
            match msg {
                ReplicationMessage::Keepalive { .. } => kinds.push('k'),
                ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                    ..
                } => {
                    let m = pgoutput::decode(data.clone(), in_stream).unwrap();
                    match &m {
                        LogicalMessage::StreamStart(_) => in_stream = true,
                        LogicalMessage::StreamStop => in_stream = false,
                        _ => {}
                    }
                    let zero = wal_start.is_zero() && wal_end.is_zero();
                    kinds.push(match (&m, zero) {
                        (LogicalMessage::Relation(_), true) => 'R',
                        (LogicalMessage::StreamStart(_), false) => 'S',
                        (LogicalMessage::Insert(_), false) => 'I',
                        (LogicalMessage::StreamStop, false) => 'E',
                        (LogicalMessage::StreamAbort(_), false) => 'A',
                        other => panic!("unexpected message/header {other:?}"),
                    });
                }
            }
        }
        assert_eq!(kinds, "kSRIEkA");
    }

    #[test]
    fn truncated_headers_are_errors() {
        for frame in captured() {
            let header = if frame[0] == b'w' { 25 } else { frame.len() };
            for cut in 0..header {
                assert!(
                    decode_copy_data(frame.slice(..cut)).is_err(),
                    "cut at {cut} of {frame:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_trailing_bytes_unknown_types_and_empty_input() {
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&[0; 17]);
        keepalive.push(0);
        let err = decode_copy_data(Bytes::from(keepalive)).unwrap_err();
        assert!(err.0.contains("trailing"), "{err}");
        let err = decode_copy_data(Bytes::from_static(b"x1234")).unwrap_err();
        assert!(err.0.contains("unknown replication"), "{err}");
        assert!(decode_copy_data(Bytes::new()).is_err());
        let err = decode_copy_data(Bytes::from_static(b"w\0\0")).unwrap_err();
        assert_eq!(
            err.0,
            "truncated XLogData message: wal start needs 8 bytes at offset 1, 2 remain"
        );
    }

    #[test]
    fn encodes_status_update_exactly() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_status_update(
            Lsn(0x0102_0304_0506_0708),
            Lsn(0x1112_1314_1516_1718),
            Lsn(0x2122_2324_2526_2728),
            0x3132_3334_3536_3738,
            true,
            &mut out,
        );
        let expected: &[u8] = &[
            b'p', b'r', b'e', b'f', b'i', b'x', // untouched
            b'r', //
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // write
            0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // flush
            0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, // apply
            0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, // client clock
            0x01, // reply requested
        ];
        assert_eq!(&out[..], expected);

        let mut out = BytesMut::new();
        encode_status_update(Lsn(0), Lsn(0), Lsn(0), -1, false, &mut out);
        assert_eq!(out.len(), 34);
        assert_eq!(&out[25..33], &[0xff; 8]);
        assert_eq!(out[33], 0);
    }

    #[test]
    fn pg_epoch_conversions() {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        assert_eq!(system_to_pg_time(pg_epoch), 0);
        assert_eq!(pg_time_to_system(0), pg_epoch);
        // 2024-01-02 03:04:05 UTC, as PostgreSQL sent it in tests/fixtures/pgoutput/origin.hex.
        let t = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        assert_eq!(system_to_pg_time(t), 0x0002_b0ec_8515_f340);
        assert_eq!(pg_time_to_system(0x0002_b0ec_8515_f340), t);
        // Before 2000 and before 1970.
        let t = UNIX_EPOCH + Duration::from_micros(1_234_567);
        assert_eq!(system_to_pg_time(t), -946_684_800_000_000 + 1_234_567);
        assert_eq!(pg_time_to_system(-946_684_800_000_000 + 1_234_567), t);
        let t = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(pg_time_to_system(system_to_pg_time(t)), t);
        // Extremes never panic.
        let _ = pg_time_to_system(i64::MAX);
        let _ = pg_time_to_system(i64::MIN);
        let now = pg_now();
        let back = system_to_pg_time(pg_time_to_system(now));
        assert_eq!(back, now);
        assert!(now > 0x0002_b0ec_8515_f340, "clock before 2024?");
    }
}
