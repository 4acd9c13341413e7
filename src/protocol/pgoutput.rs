//! Decoder for the messages of PostgreSQL's `pgoutput` logical decoding plugin.
//!
//! Each XLogData frame carries exactly one message; [`decode`] turns its bytes into a
//! [`LogicalMessage`]. The layouts follow `src/backend/replication/logical/proto.c` for
//! protocol versions 1 to 4 (PostgreSQL 14 to 18); the tests check them against messages
//! captured from a real server in `tests/fixtures/pgoutput/`.
//!
//! The decoder trusts nothing: every length is checked against the bytes that remain before
//! anything is allocated, strings must be NUL-terminated UTF-8, and bytes left over after a
//! message are an error except where newer servers append fields. Column values are slices of
//! the input [`Bytes`], so decoding a row copies no data.
//!
//! Two-phase commit messages (`b`, `P`, `K`, `r`, `p`, protocol 3 with `two_phase`) are not
//! decoded: pgbridge never asks for them, so receiving one is reported as an error.

use std::fmt;

use bytes::Bytes;

use crate::lsn::Lsn;

pub use super::DecodeError;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalDecodingMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
}

/// `B`: a transaction starts. `final_lsn` is the LSN of its commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: i64,
    pub xid: u32,
}

/// `C`: a transaction commits. Confirm `end_lsn` once it is durably applied, never
/// `commit_lsn` (that would make the server resend the transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by PostgreSQL so far (always 0).
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: i64,
}

/// `O`: the transaction was replayed from another node through a replication origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `R`: the shape of a table, sent before its first change and again after DDL, after a
/// reconnect and within each streamed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub oid: u32,
    /// `pg_catalog` when the server sent an empty namespace (its shorthand for it).
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// Published columns in table order (dropped and, usually, generated ones are absent).
    pub columns: Vec<RelationColumn>,
}

/// `pg_class.relreplident`: which old values updates and deletes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing; updates and deletes cannot be replicated.
    Nothing,
    /// `f`: every column.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 0: the column is part of the replica identity.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    /// `pg_attribute.atttypmod`, -1 when the type has none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Whether the column is part of the replica identity (every column under FULL).
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `Y`: a non-built-in type used by a following relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub oid: u32,
    /// `pg_catalog` when the server sent an empty namespace.
    pub namespace: String,
    /// Name of the base type (for a domain, the type it is based on).
    pub name: String,
}

/// `I`: a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub new: TupleData,
}

/// `U`: a changed row. `old` is present when the key changed (`K`) or under REPLICA
/// IDENTITY FULL (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub old: Option<OldTuple>,
    pub new: TupleData,
}

/// The old values an update or delete carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: replica identity columns; the other positions are [`TupleValue::Null`] and mean
    /// "not sent", not SQL NULL.
    Key(TupleData),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

impl OldTuple {
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `D`: a removed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub old: OldTuple,
}

/// `T`: one TRUNCATE statement. Tables reached through CASCADE are listed explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Present only inside a stream block: the (sub)transaction xid (see [`StreamStart`]).
    pub xid: Option<u32>,
    pub options: u8,
    pub relation_oids: Vec<u32>,
}

impl Truncate {
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// `M`: a `pg_logical_emit_message` call (sent only with the `messages` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalDecodingMessage {
    /// Present only inside a stream block: the top-level xid (PostgreSQL 15 sends the
    /// top-level one here even for a message emitted under a savepoint).
    pub xid: Option<u32>,
    /// Transactional messages arrive between Begin and Commit; the others arrive alone, as
    /// soon as they are decoded, even if the emitting transaction later aborts.
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// `S`: the following changes, up to [`LogicalMessage::StreamStop`], belong to the
/// in-progress top-level transaction `xid`.
///
/// Inside the block, each change carries the xid of the (sub)transaction that made it, which
/// differs from this one for changes made under a savepoint: group by this xid, and use the
/// change xids only to honour a subtransaction [`StreamAbort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    pub first_segment: bool,
}

/// `c`: a streamed transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub timestamp: i64,
}

/// `A`: a streamed (sub)transaction aborts. `xid == subxid` for the top-level transaction;
/// otherwise only the changes of `subxid` (and its children) are discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    pub subxid: u32,
    /// Present only when the message carries it (protocol 4 with `streaming = parallel`).
    pub abort_lsn: Option<Lsn>,
    /// Present only when the message carries it (protocol 4 with `streaming = parallel`).
    pub abort_timestamp: Option<i64>,
}

/// The values of one row, in [`Relation::columns`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData {
    pub columns: Vec<TupleValue>,
}

/// One column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL (or, in a `K` tuple, a non-key column that was not sent).
    Null,
    /// `u`: a TOASTed value the update did not change; its value is not sent.
    UnchangedToast,
    /// `t`: the type's text output, not NUL-terminated.
    Text(Bytes),
    /// `b`: the type's binary send format (with the `binary` option).
    Binary(Bytes),
}

/// Decodes one pgoutput message.
///
/// `in_stream`: true between StreamStart and StreamStop, where change messages (Relation,
/// Type, Insert, Update, Delete, Truncate, Message) carry an Int32 xid first.
pub fn decode(data: Bytes, in_stream: bool) -> Result<LogicalMessage, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError("empty pgoutput message".to_string()));
    };
    let kind = kind_name(tag).ok_or_else(|| unknown_tag(tag))?;
    let mut r = Reader::new(&data, kind);
    r.u8("message type")?;
    let message = match tag {
        b'B' => LogicalMessage::Begin(begin(&mut r)?),
        b'C' => LogicalMessage::Commit(commit(&mut r)?),
        b'O' => LogicalMessage::Origin(origin(&mut r)?),
        b'R' => LogicalMessage::Relation(relation(&mut r, in_stream)?),
        b'Y' => LogicalMessage::Type(type_message(&mut r, in_stream)?),
        b'I' => LogicalMessage::Insert(insert(&mut r, in_stream)?),
        b'U' => LogicalMessage::Update(update(&mut r, in_stream)?),
        b'D' => LogicalMessage::Delete(delete(&mut r, in_stream)?),
        b'T' => LogicalMessage::Truncate(truncate(&mut r, in_stream)?),
        b'M' => LogicalMessage::Message(message(&mut r, in_stream)?),
        b'S' => LogicalMessage::StreamStart(stream_start(&mut r)?),
        b'E' => LogicalMessage::StreamStop,
        b'c' => LogicalMessage::StreamCommit(stream_commit(&mut r)?),
        b'A' => LogicalMessage::StreamAbort(stream_abort(&mut r)?),
        _ => return Err(unknown_tag(tag)),
    };
    r.finish()?;
    Ok(message)
}

fn kind_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        _ => return None,
    })
}

fn unknown_tag(tag: u8) -> DecodeError {
    let what = match tag {
        b'b' | b'P' | b'K' | b'r' | b'p' => "unsupported two-phase",
        _ => "unknown",
    };
    DecodeError(format!(
        "{what} pgoutput message type {:?} (0x{tag:02x})",
        char::from(tag)
    ))
}

fn begin(r: &mut Reader<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: r.lsn("final lsn")?,
        timestamp: r.i64("timestamp")?,
        xid: r.u32("xid")?,
    })
}

fn commit(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit lsn")?,
        end_lsn: r.lsn("end lsn")?,
        timestamp: r.i64("timestamp")?,
    })
}

fn origin(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: r.lsn("commit lsn")?,
        name: r.cstr("name")?,
    })
}

fn stream_xid(r: &mut Reader<'_>, in_stream: bool) -> Result<Option<u32>, DecodeError> {
    if in_stream {
        r.u32("xid").map(Some)
    } else {
        Ok(None)
    }
}

/// An empty namespace is the server's shorthand for `pg_catalog` (`logicalrep_write_namespace`).
fn namespace(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let name = r.cstr("namespace")?;
    Ok(if name.is_empty() {
        "pg_catalog".to_string()
    } else {
        name
    })
}

fn relation(r: &mut Reader<'_>, in_stream: bool) -> Result<Relation, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let oid = r.u32("relation oid")?;
    let namespace = namespace(r)?;
    let name = r.cstr("name")?;
    let at = r.pos;
    let replica_identity = match r.u8("replica identity")? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        other => {
            return Err(r.invalid(
                at,
                "replica identity".into(),
                format!("unknown value {:?}", char::from(other)),
            ))
        }
    };
    let count = usize::from(r.u16("column count")?);
    // Smallest column: flags, empty name, type oid, typmod.
    const MIN_COLUMN: usize = 1 + 1 + 4 + 4;
    let mut columns = Vec::with_capacity(count.min(r.remaining() / MIN_COLUMN));
    for i in 1..=count {
        columns.push(RelationColumn {
            flags: r.u8(Field::column("column", i, " flags"))?,
            name: r.cstr(Field::column("column", i, " name"))?,
            type_oid: r.u32(Field::column("column", i, " type oid"))?,
            type_modifier: r.i32(Field::column("column", i, " type modifier"))?,
        });
    }
    Ok(Relation {
        xid,
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn type_message(r: &mut Reader<'_>, in_stream: bool) -> Result<TypeMessage, DecodeError> {
    Ok(TypeMessage {
        xid: stream_xid(r, in_stream)?,
        oid: r.u32("type oid")?,
        namespace: namespace(r)?,
        name: r.cstr("name")?,
    })
}

fn insert(r: &mut Reader<'_>, in_stream: bool) -> Result<Insert, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let relation_oid = r.u32("relation oid")?;
    expect_new_tuple_marker(r)?;
    let new = tuple(r, "new tuple column")?;
    Ok(Insert { xid, relation_oid, new })
}

fn update(r: &mut Reader<'_>, in_stream: bool) -> Result<Update, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let relation_oid = r.u32("relation oid")?;
    let at = r.pos;
    let old = match r.u8("tuple marker")? {
        b'N' => None,
        b'K' => Some(OldTuple::Key(tuple(r, "old tuple column")?)),
        b'O' => Some(OldTuple::Full(tuple(r, "old tuple column")?)),
        other => return Err(bad_marker(r, at, other, "'K', 'O' or 'N'")),
    };
    if old.is_some() {
        expect_new_tuple_marker(r)?;
    }
    let new = tuple(r, "new tuple column")?;
    Ok(Update {
        xid,
        relation_oid,
        old,
        new,
    })
}

fn delete(r: &mut Reader<'_>, in_stream: bool) -> Result<Delete, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let relation_oid = r.u32("relation oid")?;
    let at = r.pos;
    let old = match r.u8("tuple marker")? {
        b'K' => OldTuple::Key(tuple(r, "old tuple column")?),
        b'O' => OldTuple::Full(tuple(r, "old tuple column")?),
        other => return Err(bad_marker(r, at, other, "'K' or 'O'")),
    };
    Ok(Delete { xid, relation_oid, old })
}

fn expect_new_tuple_marker(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let at = r.pos;
    match r.u8("tuple marker")? {
        b'N' => Ok(()),
        other => Err(bad_marker(r, at, other, "'N'")),
    }
}

fn bad_marker(r: &Reader<'_>, at: usize, got: u8, expected: &str) -> DecodeError {
    r.invalid(
        at,
        "tuple marker".into(),
        format!("expected {expected}, got {:?}", char::from(got)),
    )
}

/// `TupleData`: Int16 column count, then per column a kind byte and, for `t`/`b`, an Int32
/// length and that many bytes.
fn tuple(r: &mut Reader<'_>, what: &'static str) -> Result<TupleData, DecodeError> {
    let count = usize::from(r.u16(Field::named(what).with_suffix(" count"))?);
    // Every column takes at least its kind byte.
    let mut columns = Vec::with_capacity(count.min(r.remaining()));
    for i in 1..=count {
        let at = r.pos;
        let value = match r.u8(Field::column(what, i, " kind"))? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => TupleValue::Text(counted(r, what, i)?),
            b'b' => TupleValue::Binary(counted(r, what, i)?),
            other => {
                return Err(r.invalid(
                    at,
                    Field::column(what, i, " kind"),
                    format!("unknown kind {:?}", char::from(other)),
                ))
            }
        };
        columns.push(value);
    }
    Ok(TupleData { columns })
}

fn counted(r: &mut Reader<'_>, what: &'static str, i: usize) -> Result<Bytes, DecodeError> {
    let len = r.len_i32(Field::column(what, i, " length"))?;
    r.bytes(len, Field::column(what, i, ""))
}

fn truncate(r: &mut Reader<'_>, in_stream: bool) -> Result<Truncate, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let count = r.len_i32("relation count")?;
    let options = r.u8("options")?;
    // Check the whole list fits before allocating for it.
    r.ensure(count.saturating_mul(4), "relation oids".into())?;
    let mut relation_oids = Vec::with_capacity(count);
    for i in 1..=count {
        relation_oids.push(r.u32(Field::column("relation oid", i, ""))?);
    }
    Ok(Truncate {
        xid,
        options,
        relation_oids,
    })
}

fn message(r: &mut Reader<'_>, in_stream: bool) -> Result<LogicalDecodingMessage, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let flags = r.u8("flags")?;
    let lsn = r.lsn("lsn")?;
    let prefix = r.cstr("prefix")?;
    let len = r.len_i32("content length")?;
    let content = r.bytes(len, "content".into())?;
    Ok(LogicalDecodingMessage {
        xid,
        transactional: flags & 1 != 0,
        lsn,
        prefix,
        content,
    })
}

fn stream_start(r: &mut Reader<'_>) -> Result<StreamStart, DecodeError> {
    Ok(StreamStart {
        xid: r.u32("xid")?,
        first_segment: r.u8("first segment")? == 1,
    })
}

fn stream_commit(r: &mut Reader<'_>) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: r.u32("xid")?,
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit lsn")?,
        end_lsn: r.lsn("end lsn")?,
        timestamp: r.i64("timestamp")?,
    })
}

/// PostgreSQL 16+ appends the abort LSN and time when streaming in parallel (protocol 4);
/// older servers and `streaming = on` send only the two xids. Anything after the optional
/// fields is ignored, as it would be fields added by a later version.
fn stream_abort(r: &mut Reader<'_>) -> Result<StreamAbort, DecodeError> {
    let xid = r.u32("xid")?;
    let subxid = r.u32("subtransaction xid")?;
    let (abort_lsn, abort_timestamp) = if r.remaining() == 0 {
        (None, None)
    } else {
        let lsn = r.lsn("abort lsn")?;
        let timestamp = r.i64("abort timestamp")?;
        r.skip_rest();
        (Some(lsn), Some(timestamp))
    };
    Ok(StreamAbort {
        xid,
        subxid,
        abort_lsn,
        abort_timestamp,
    })
}

/// Names a field in error messages without formatting anything unless an error happens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    name: &'static str,
    index: Option<usize>,
    suffix: &'static str,
}

impl Field {
    pub(super) fn named(name: &'static str) -> Self {
        Field {
            name,
            index: None,
            suffix: "",
        }
    }

    /// `"{name} {index}{suffix}"`, e.g. "new tuple column 3 length" (1-based, like attnum).
    fn column(name: &'static str, index: usize, suffix: &'static str) -> Self {
        Field {
            name,
            index: Some(index),
            suffix,
        }
    }

    fn with_suffix(self, suffix: &'static str) -> Self {
        Field { suffix, ..self }
    }
}

impl From<&'static str> for Field {
    fn from(name: &'static str) -> Self {
        Field::named(name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(i) = self.index {
            write!(f, " {i}")?;
        }
        f.write_str(self.suffix)
    }
}

/// A bounds-checked cursor over one message; every read fails cleanly past the end.
pub(super) struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    kind: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a Bytes, kind: &'static str) -> Self {
        Reader { data, pos: 0, kind }
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Errs unless `n` more bytes are available.
    pub(super) fn ensure(&self, n: usize, field: Field) -> Result<(), DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(n, field));
        }
        Ok(())
    }

    fn truncated(&self, n: usize, field: Field) -> DecodeError {
        DecodeError(format!(
            "truncated {} message: {field} needs {n} bytes at offset {}, {} remain",
            self.kind,
            self.pos,
            self.remaining()
        ))
    }

    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], DecodeError> {
        self.ensure(n, field)?;
        let data: &'a [u8] = self.data;
        let end = self.pos.saturating_add(n);
        let bytes = data.get(self.pos..end).ok_or_else(|| self.truncated(n, field))?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], DecodeError> {
        let at = self.pos;
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.invalid(at, field, format!("expected {N} bytes")))
    }

    pub(super) fn u8(&mut self, field: impl Into<Field>) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field.into())?[0])
    }

    pub(super) fn u16(&mut self, field: impl Into<Field>) -> Result<u16, DecodeError> {
        self.array(field.into()).map(u16::from_be_bytes)
    }

    pub(super) fn i32(&mut self, field: impl Into<Field>) -> Result<i32, DecodeError> {
        self.array(field.into()).map(i32::from_be_bytes)
    }

    pub(super) fn u32(&mut self, field: impl Into<Field>) -> Result<u32, DecodeError> {
        self.array(field.into()).map(u32::from_be_bytes)
    }

    pub(super) fn i64(&mut self, field: impl Into<Field>) -> Result<i64, DecodeError> {
        self.array(field.into()).map(i64::from_be_bytes)
    }

    pub(super) fn lsn(&mut self, field: impl Into<Field>) -> Result<Lsn, DecodeError> {
        self.array(field.into()).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// An Int32 length; negative values are an error.
    fn len_i32(&mut self, field: impl Into<Field>) -> Result<usize, DecodeError> {
        let field = field.into();
        let at = self.pos;
        let len = self.i32(field)?;
        usize::try_from(len).map_err(|_| self.invalid(at, field, format!("negative length {len}")))
    }

    /// The next `n` bytes as a zero-copy slice of the input.
    pub(super) fn bytes(&mut self, n: usize, field: Field) -> Result<Bytes, DecodeError> {
        self.ensure(n, field)?;
        let end = self.pos + n;
        let out = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, field: impl Into<Field>) -> Result<String, DecodeError> {
        let field = field.into();
        let at = self.pos;
        let rest = self.data.get(at..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError(format!(
                "truncated {} message: {field} at offset {at} has no NUL terminator",
                self.kind
            )));
        };
        let text =
            std::str::from_utf8(&rest[..len]).map_err(|_| self.invalid(at, field, "not valid UTF-8".to_string()))?;
        self.pos += len + 1;
        Ok(text.to_string())
    }

    pub(super) fn skip_rest(&mut self) {
        self.pos = self.data.len();
    }

    /// Errs if bytes are left over.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError(format!(
                "invalid {} message: {n} unexpected trailing bytes at offset {}",
                self.kind, self.pos
            ))),
        }
    }

    pub(super) fn invalid(&self, at: usize, field: Field, detail: String) -> DecodeError {
        DecodeError(format!(
            "invalid {} message: {field} at offset {at}: {detail}",
            self.kind
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::replication::decode_copy_data;
    use proptest::prelude::*;

    const INSERT_UPDATE_DELETE: &str = include_str!("../../tests/fixtures/pgoutput/insert_update_delete.hex");
    const NULL_VALUES: &str = include_str!("../../tests/fixtures/pgoutput/null_values.hex");
    const KEY_CHANGE: &str = include_str!("../../tests/fixtures/pgoutput/key_change.hex");
    const REPLICA_FULL: &str = include_str!("../../tests/fixtures/pgoutput/replica_full.hex");
    const TOAST_UNCHANGED: &str = include_str!("../../tests/fixtures/pgoutput/toast_unchanged.hex");
    const TRUNCATE: &str = include_str!("../../tests/fixtures/pgoutput/truncate.hex");
    const MESSAGES: &str = include_str!("../../tests/fixtures/pgoutput/messages.hex");
    const ENUM_TYPE: &str = include_str!("../../tests/fixtures/pgoutput/enum_type.hex");
    const ORIGIN: &str = include_str!("../../tests/fixtures/pgoutput/origin.hex");
    const BINARY: &str = include_str!("../../tests/fixtures/pgoutput/binary.hex");
    const STREAM_COMMIT: &str = include_str!("../../tests/fixtures/pgoutput/stream_commit.hex");
    const STREAM_ABORT: &str = include_str!("../../tests/fixtures/pgoutput/stream_abort.hex");

    const ALL_CAPTURED: [(&str, &str); 12] = [
        ("insert_update_delete", INSERT_UPDATE_DELETE),
        ("null_values", NULL_VALUES),
        ("key_change", KEY_CHANGE),
        ("replica_full", REPLICA_FULL),
        ("toast_unchanged", TOAST_UNCHANGED),
        ("truncate", TRUNCATE),
        ("messages", MESSAGES),
        ("enum_type", ENUM_TYPE),
        ("origin", ORIGIN),
        ("binary", BINARY),
        ("stream_commit", STREAM_COMMIT),
        ("stream_abort", STREAM_ABORT),
    ];

    // ---- helpers -------------------------------------------------------------------------

    use crate::protocol::test_util::unhex;

    /// Each fixture line with the `in_stream` flag a consumer would pass for it.
    fn frames(fixture: &str) -> Vec<(Bytes, bool)> {
        let mut in_stream = false;
        let mut out = Vec::new();
        for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
            let bytes = unhex(line);
            match bytes[0] {
                b'S' => in_stream = true,
                b'E' => in_stream = false,
                _ => {}
            }
            let flag = in_stream && !matches!(bytes[0], b'S' | b'E');
            out.push((bytes, flag));
        }
        out
    }

    fn decode_all(fixture: &str) -> Vec<LogicalMessage> {
        frames(fixture)
            .into_iter()
            .map(|(bytes, in_stream)| {
                decode(bytes.clone(), in_stream).unwrap_or_else(|e| panic!("{e} in {:02x?}", &bytes[..]))
            })
            .collect()
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn row(values: Vec<TupleValue>) -> TupleData {
        TupleData { columns: values }
    }

    fn begin_commit(msgs: &[LogicalMessage]) -> (Begin, Commit) {
        let (Some(LogicalMessage::Begin(b)), Some(LogicalMessage::Commit(c))) = (msgs.first(), msgs.last()) else {
            panic!("expected Begin..Commit, got {msgs:?}");
        };
        // Begin announces the commit record's LSN; the transaction ends after it.
        assert_eq!(b.final_lsn, c.commit_lsn);
        assert!(c.commit_lsn < c.end_lsn);
        assert_eq!(b.timestamp, c.timestamp);
        assert_eq!(c.flags, 0);
        (*b, *c)
    }

    fn relation(msg: &LogicalMessage) -> &Relation {
        match msg {
            LogicalMessage::Relation(r) => r,
            other => panic!("expected Relation, got {other:?}"),
        }
    }

    /// The `items` table of the fixtures: id int PK, name text, price numeric(10,2), note text.
    fn assert_items_relation(rel: &Relation) {
        assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "items"));
        assert_eq!(rel.xid, None);
        assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
        let cols: Vec<_> = rel
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.is_key(), c.type_oid, c.type_modifier))
            .collect();
        assert_eq!(
            cols,
            [
                ("id", true, 23, -1),
                ("name", false, 25, -1),
                // numeric(10,2): ((10 << 16) | 2) + VARHDRSZ
                ("price", false, 1700, (10 << 16 | 2) + 4),
                ("note", false, 25, -1),
            ]
        );
    }

    /// Hand-built message bytes.
    #[derive(Default)]
    struct B(Vec<u8>);

    impl B {
        fn new(tag: u8) -> Self {
            B(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        fn cstr(self, s: &str) -> Self {
            self.raw(s.as_bytes()).u8(0)
        }
        fn text(self, s: &str) -> Self {
            self.u8(b't').i32(s.len() as i32).raw(s.as_bytes())
        }
        fn bytes(&self) -> Bytes {
            Bytes::from(self.0.clone())
        }
    }

    /// Every hand-built message, with the `in_stream` flag it is decoded with.
    fn hand_built() -> Vec<(&'static str, Bytes, bool)> {
        vec![
            ("begin", B::new(b'B').u64(0x10).u64(7).u32(42).bytes(), false),
            ("commit", B::new(b'C').u8(0).u64(0x10).u64(0x40).u64(7).bytes(), false),
            ("origin", B::new(b'O').u64(0x99).cstr("node_a").bytes(), false),
            (
                "relation",
                B::new(b'R')
                    .u32(16384)
                    .cstr("")
                    .cstr("t")
                    .u8(b'i')
                    .u16(2)
                    .u8(1)
                    .cstr("k")
                    .u32(23)
                    .i32(-1)
                    .u8(0)
                    .cstr("v")
                    .u32(1043)
                    .i32(14)
                    .bytes(),
                false,
            ),
            (
                "relation in stream",
                B::new(b'R')
                    .u32(900)
                    .u32(16384)
                    .cstr("s")
                    .cstr("t")
                    .u8(b'n')
                    .u16(0)
                    .bytes(),
                true,
            ),
            (
                "type",
                B::new(b'Y').u32(900).u32(70000).cstr("public").cstr("mood").bytes(),
                true,
            ),
            (
                "insert",
                B::new(b'I')
                    .u32(16384)
                    .u8(b'N')
                    .u16(4)
                    .text("1")
                    .u8(b'n')
                    .u8(b'u')
                    .u8(b'b')
                    .i32(2)
                    .raw(&[0, 1])
                    .bytes(),
                false,
            ),
            (
                "update with old key",
                B::new(b'U')
                    .u32(16384)
                    .u8(b'K')
                    .u16(2)
                    .text("1")
                    .u8(b'n')
                    .u8(b'N')
                    .u16(2)
                    .text("2")
                    .text("")
                    .bytes(),
                false,
            ),
            (
                "update in stream with full old row",
                B::new(b'U')
                    .u32(900)
                    .u32(16384)
                    .u8(b'O')
                    .u16(1)
                    .text("a")
                    .u8(b'N')
                    .u16(1)
                    .text("b")
                    .bytes(),
                true,
            ),
            (
                "delete",
                B::new(b'D').u32(16384).u8(b'K').u16(1).text("1").bytes(),
                false,
            ),
            (
                "truncate",
                B::new(b'T').i32(2).u8(1).u32(16384).u32(16390).bytes(),
                false,
            ),
            (
                "message",
                B::new(b'M').u8(0).u64(0x20).cstr("p").i32(3).raw(&[0, 0xff, 0]).bytes(),
                false,
            ),
            (
                "message in stream",
                B::new(b'M').u32(900).u8(1).u64(0x20).cstr("p").i32(0).bytes(),
                true,
            ),
            ("stream start", B::new(b'S').u32(900).u8(0).bytes(), false),
            ("stream stop", B::new(b'E').bytes(), false),
            (
                "stream commit",
                B::new(b'c').u32(900).u8(0).u64(0x50).u64(0x80).u64(9).bytes(),
                false,
            ),
            ("stream abort", B::new(b'A').u32(900).u32(901).bytes(), false),
            (
                "stream abort with abort info",
                B::new(b'A').u32(900).u32(900).u64(0x70).u64(11).bytes(),
                false,
            ),
        ]
    }

    fn err(data: Bytes, in_stream: bool) -> String {
        match decode(data, in_stream) {
            Err(e) => e.0,
            Ok(m) => panic!("expected an error, decoded {m:?}"),
        }
    }

    // ---- captured from PostgreSQL 15 -------------------------------------------------

    #[test]
    fn captured_insert_update_delete() {
        let msgs = decode_all(INSERT_UPDATE_DELETE);
        let (begin, _) = begin_commit(&msgs);
        assert!(begin.xid > 0);
        let rel = relation(&msgs[1]);
        assert_items_relation(rel);
        let expected = [
            LogicalMessage::Insert(Insert {
                xid: None,
                relation_oid: rel.oid,
                new: row(vec![text("1"), text("apple"), text("1.50"), text("fresh")]),
            }),
            LogicalMessage::Insert(Insert {
                xid: None,
                relation_oid: rel.oid,
                new: row(vec![text("2"), text("pear"), text("2.25"), text("ripe")]),
            }),
            // The key did not change: no old tuple.
            LogicalMessage::Update(Update {
                xid: None,
                relation_oid: rel.oid,
                old: None,
                new: row(vec![text("1"), text("apple"), text("1.75"), text("fresh")]),
            }),
            // Non-key columns of a 'K' tuple are sent as 'n'.
            LogicalMessage::Delete(Delete {
                xid: None,
                relation_oid: rel.oid,
                old: OldTuple::Key(row(vec![
                    text("2"),
                    TupleValue::Null,
                    TupleValue::Null,
                    TupleValue::Null,
                ])),
            }),
        ];
        assert_eq!(&msgs[2..6], &expected);
    }

    #[test]
    fn captured_null_values() {
        let msgs = decode_all(NULL_VALUES);
        begin_commit(&msgs);
        let LogicalMessage::Insert(insert) = &msgs[2] else {
            panic!("{:?}", msgs[2]);
        };
        assert_eq!(
            insert.new,
            row(vec![text("10"), text("ghost"), TupleValue::Null, TupleValue::Null])
        );
        let LogicalMessage::Update(update) = &msgs[3] else {
            panic!("{:?}", msgs[3]);
        };
        assert_eq!(update.old, None);
        assert_eq!(
            update.new,
            row(vec![text("1"), text("apple"), TupleValue::Null, TupleValue::Null])
        );
    }

    #[test]
    fn captured_key_change_carries_old_key() {
        let msgs = decode_all(KEY_CHANGE);
        begin_commit(&msgs);
        let rel = relation(&msgs[1]);
        assert_items_relation(rel);
        assert_eq!(
            msgs[2],
            LogicalMessage::Update(Update {
                xid: None,
                relation_oid: rel.oid,
                old: Some(OldTuple::Key(row(vec![
                    text("1"),
                    TupleValue::Null,
                    TupleValue::Null,
                    TupleValue::Null
                ]))),
                new: row(vec![text("100"), text("apple"), TupleValue::Null, TupleValue::Null]),
            })
        );
    }

    #[test]
    fn captured_replica_identity_full() {
        let msgs = decode_all(REPLICA_FULL);
        begin_commit(&msgs);
        let rel = relation(&msgs[1]);
        assert_eq!(rel.name, "full_items");
        assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
        // Under FULL every column is flagged as part of the key.
        assert!(rel.columns.iter().all(RelationColumn::is_key));
        assert_eq!(
            msgs[2],
            LogicalMessage::Update(Update {
                xid: None,
                relation_oid: rel.oid,
                old: Some(OldTuple::Full(row(vec![text("1"), text("one"), text("10")]))),
                new: row(vec![text("1"), text("one"), text("11")]),
            })
        );
        assert_eq!(
            msgs[3],
            LogicalMessage::Delete(Delete {
                xid: None,
                relation_oid: rel.oid,
                old: OldTuple::Full(row(vec![text("2"), text("two"), TupleValue::Null])),
            })
        );
    }

    #[test]
    fn captured_unchanged_toast_column() {
        let msgs = decode_all(TOAST_UNCHANGED);
        begin_commit(&msgs);
        let rel = relation(&msgs[1]);
        assert_eq!(rel.name, "docs");
        assert_eq!(
            msgs[2],
            LogicalMessage::Update(Update {
                xid: None,
                relation_oid: rel.oid,
                old: None,
                new: row(vec![text("1"), text("final"), TupleValue::UnchangedToast]),
            })
        );
    }

    #[test]
    fn captured_truncate_cascade_restart_identity() {
        let msgs = decode_all(TRUNCATE);
        begin_commit(&msgs);
        let parents = relation(&msgs[1]);
        let children = relation(&msgs[2]);
        assert_eq!((parents.name.as_str(), children.name.as_str()), ("parents", "children"));
        let LogicalMessage::Truncate(t) = &msgs[3] else {
            panic!("{:?}", msgs[3]);
        };
        assert!(t.cascade());
        assert!(t.restart_identity());
        assert_eq!(t.xid, None);
        // The table reached through CASCADE is listed explicitly.
        assert_eq!(t.relation_oids, [parents.oid, children.oid]);
    }

    #[test]
    fn captured_logical_decoding_messages() {
        let msgs = decode_all(MESSAGES);
        let (_, commit) = begin_commit(&msgs[..5]);
        let LogicalMessage::Message(m) = &msgs[1] else {
            panic!("{:?}", msgs[1]);
        };
        assert!(m.transactional);
        assert_eq!(m.xid, None);
        assert_eq!(m.prefix, "pgbridge");
        assert_eq!(&m.content[..], b"hello");
        assert!(m.lsn < commit.commit_lsn);
        // The non-transactional message arrives alone, outside Begin..Commit.
        let LogicalMessage::Message(m) = &msgs[5] else {
            panic!("{:?}", msgs[5]);
        };
        assert!(!m.transactional);
        assert_eq!(&m.content[..], b"not in a transaction");
        assert!(m.lsn > commit.end_lsn);
    }

    #[test]
    fn captured_enum_type() {
        let msgs = decode_all(ENUM_TYPE);
        begin_commit(&msgs);
        let LogicalMessage::Type(ty) = &msgs[1] else {
            panic!("{:?}", msgs[1]);
        };
        assert_eq!((ty.namespace.as_str(), ty.name.as_str()), ("public", "mood"));
        assert_eq!(ty.xid, None);
        let rel = relation(&msgs[2]);
        assert_eq!(rel.name, "people");
        assert_eq!(rel.columns[2].name, "current_mood");
        assert_eq!(rel.columns[2].type_oid, ty.oid);
        let news: Vec<_> = msgs[3..5]
            .iter()
            .map(|m| match m {
                LogicalMessage::Insert(i) => i.new.columns[2].clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(news, [text("happy"), TupleValue::Null]);
    }

    #[test]
    fn captured_origin() {
        let msgs = decode_all(ORIGIN);
        let (begin, _) = begin_commit(&msgs);
        // pg_replication_origin_xact_setup('0/AB12CD34', '2024-01-02 03:04:05+00')
        assert_eq!(
            msgs[1],
            LogicalMessage::Origin(Origin {
                commit_lsn: Lsn(0xAB12_CD34),
                name: "blue".to_string(),
            })
        );
        assert_eq!(begin.timestamp, (1_704_164_645 - 946_684_800) * 1_000_000);
    }

    #[test]
    fn captured_binary_values() {
        let msgs = decode_all(BINARY);
        begin_commit(&msgs);
        let LogicalMessage::Insert(i) = &msgs[2] else {
            panic!("{:?}", msgs[2]);
        };
        assert_eq!(i.new.columns[0], TupleValue::Binary(Bytes::from_static(&[0, 0, 0, 30])));
        assert_eq!(i.new.columns[1], TupleValue::Binary(Bytes::from_static(b"bin")));
        // numeric send format: ndigits 2, weight 0, sign +, dscale 2, digits 12 and 3400.
        assert_eq!(
            i.new.columns[2],
            TupleValue::Binary(Bytes::from_static(&[0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 13, 72]))
        );
        assert_eq!(i.new.columns[3], TupleValue::Null);
        let LogicalMessage::Insert(i) = &msgs[5] else {
            panic!("{:?}", msgs[5]);
        };
        assert_eq!(i.new.columns[2], TupleValue::Binary(Bytes::from_static(b"ok")));
    }

    #[test]
    fn values_slice_the_input_without_copying() {
        let data = unhex(INSERT_UPDATE_DELETE.lines().nth(2).unwrap());
        let LogicalMessage::Insert(i) = decode(data.clone(), false).unwrap() else {
            panic!();
        };
        let TupleValue::Text(name) = &i.new.columns[1] else {
            panic!();
        };
        let start = data.as_ptr() as usize;
        let at = name.as_ptr() as usize;
        assert!(at > start && at < start + data.len(), "value was copied");
    }

    #[test]
    fn captured_streamed_transaction_with_subtransaction_abort() {
        // BEGIN; 600 inserts; SAVEPOINT a; 600 inserts; ROLLBACK TO a; message;
        // 3 updates; 1 delete; COMMIT -- streamed in 64 kB blocks.
        let msgs = decode_all(STREAM_COMMIT);
        let LogicalMessage::StreamStart(first) = msgs[0] else {
            panic!("{:?}", msgs[0]);
        };
        assert!(first.first_segment);
        let top = first.xid;

        // (message kind, xid it carries) -> count, for changes inside stream blocks.
        let mut changes = std::collections::BTreeMap::<(char, u32), usize>::new();
        let mut starts = 0;
        let mut aborts = Vec::new();
        let mut in_block = false;
        for m in &msgs {
            let change = match m {
                LogicalMessage::StreamStart(s) => {
                    assert!(!in_block);
                    assert_eq!(s.xid, top);
                    assert_eq!(s.first_segment, starts == 0);
                    starts += 1;
                    in_block = true;
                    None
                }
                LogicalMessage::StreamStop => {
                    assert!(in_block);
                    in_block = false;
                    None
                }
                LogicalMessage::StreamAbort(a) => {
                    assert!(!in_block, "abort is sent outside a stream block");
                    aborts.push(*a);
                    None
                }
                LogicalMessage::StreamCommit(_) => {
                    assert!(!in_block, "commit is sent outside a stream block");
                    None
                }
                LogicalMessage::Relation(r) => Some(('R', r.xid)),
                LogicalMessage::Insert(i) => Some(('I', i.xid)),
                LogicalMessage::Update(u) => {
                    assert_eq!(u.old, None);
                    Some(('U', u.xid))
                }
                LogicalMessage::Delete(d) => Some(('D', d.xid)),
                LogicalMessage::Message(m) => {
                    assert!(m.transactional);
                    assert_eq!(&m.content[..], b"in stream");
                    Some(('M', m.xid))
                }
                other => panic!("unexpected {other:?}"),
            };
            if let Some((kind, xid)) = change {
                assert!(in_block, "{kind} outside a stream block");
                let xid = xid.expect("changes in a stream block carry an xid");
                *changes.entry((kind, xid)).or_default() += 1;
            }
        }
        assert_eq!(starts, 3);

        // The subtransaction abort: only the savepoint's changes are to be dropped.
        assert_eq!(aborts.len(), 1);
        let abort = aborts[0];
        assert_eq!(abort.xid, top);
        assert_ne!(abort.subxid, top);
        assert_eq!((abort.abort_lsn, abort.abort_timestamp), (None, None));

        // Changes carry the xid of the *sub*transaction that made them, not the StreamStart
        // xid: 340 of the savepoint's 600 rows were streamed before its rollback, and the
        // statements after ROLLBACK TO run in the re-established savepoint (a new subxid).
        // The transactional message carries the top-level xid. The Relation message is sent
        // again after the subtransaction abort.
        let sub = abort.subxid;
        let after = top + 2;
        let expected = std::collections::BTreeMap::from([
            (('D', after), 1),
            (('I', top), 600),
            (('I', sub), 340),
            (('M', top), 1),
            (('R', top), 1),
            (('R', after), 1),
            (('U', after), 3),
        ]);
        assert_eq!(changes, expected);

        let Some(LogicalMessage::StreamCommit(c)) = msgs.last() else {
            panic!("{:?}", msgs.last());
        };
        assert_eq!(c.xid, top);
        assert_eq!(c.flags, 0);
        assert!(c.commit_lsn < c.end_lsn);
    }

    #[test]
    fn captured_streamed_transaction_abort() {
        let msgs = decode_all(STREAM_ABORT);
        let LogicalMessage::StreamStart(start) = msgs[0] else {
            panic!("{:?}", msgs[0]);
        };
        assert!(start.first_segment);
        assert_eq!(relation(&msgs[1]).xid, Some(start.xid));
        let inserts = msgs
            .iter()
            .filter(|m| matches!(m, LogicalMessage::Insert(i) if i.xid == Some(start.xid)))
            .count();
        assert_eq!(inserts, msgs.len() - 4);
        assert_eq!(msgs[msgs.len() - 2], LogicalMessage::StreamStop);
        assert_eq!(
            msgs[msgs.len() - 1],
            LogicalMessage::StreamAbort(StreamAbort {
                xid: start.xid,
                subxid: start.xid,
                abort_lsn: None,
                abort_timestamp: None,
            })
        );
    }

    #[test]
    fn stream_changes_decoded_without_the_stream_flag_are_errors() {
        // Reading the xid as the relation OID leaves the tuple marker misaligned.
        let frames = frames(STREAM_ABORT);
        let (insert, in_stream) = &frames[2];
        assert!(in_stream);
        let e = err(insert.clone(), false);
        assert!(e.starts_with("invalid Insert message: tuple marker at offset 5"), "{e}");
    }

    #[test]
    fn every_captured_message_truncated_anywhere_is_an_error() {
        for (name, fixture) in ALL_CAPTURED {
            for (data, in_stream) in frames(fixture) {
                for cut in 0..data.len() {
                    assert!(
                        decode(data.slice(..cut), in_stream).is_err(),
                        "{name}: cut at {cut} of {:02x?} decoded",
                        &data[..]
                    );
                }
            }
        }
    }

    #[test]
    fn captured_messages_with_trailing_bytes_are_errors() {
        for (name, fixture) in ALL_CAPTURED {
            for (data, in_stream) in frames(fixture) {
                let mut longer = data.to_vec();
                longer.push(0);
                let result = decode(Bytes::from(longer), in_stream);
                if data[0] == b'A' {
                    // Protocol 4 may append fields: 1 byte is a truncated abort LSN.
                    assert!(result.unwrap_err().0.contains("abort lsn"));
                } else {
                    let e = result.expect_err(name).0;
                    assert!(e.contains("unexpected trailing bytes"), "{name}: {e}");
                }
            }
        }
    }

    // ---- hand-built ----------------------------------------------------------------------

    #[test]
    fn hand_built_messages_decode() {
        let decoded: Vec<_> = hand_built()
            .into_iter()
            .map(|(name, data, in_stream)| decode(data, in_stream).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        let expected = vec![
            LogicalMessage::Begin(Begin {
                final_lsn: Lsn(0x10),
                timestamp: 7,
                xid: 42,
            }),
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(0x10),
                end_lsn: Lsn(0x40),
                timestamp: 7,
            }),
            LogicalMessage::Origin(Origin {
                commit_lsn: Lsn(0x99),
                name: "node_a".into(),
            }),
            LogicalMessage::Relation(Relation {
                xid: None,
                oid: 16384,
                namespace: "pg_catalog".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Index,
                columns: vec![
                    RelationColumn {
                        flags: 1,
                        name: "k".into(),
                        type_oid: 23,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        flags: 0,
                        name: "v".into(),
                        type_oid: 1043,
                        type_modifier: 14,
                    },
                ],
            }),
            LogicalMessage::Relation(Relation {
                xid: Some(900),
                oid: 16384,
                namespace: "s".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Nothing,
                columns: vec![],
            }),
            LogicalMessage::Type(TypeMessage {
                xid: Some(900),
                oid: 70000,
                namespace: "public".into(),
                name: "mood".into(),
            }),
            LogicalMessage::Insert(Insert {
                xid: None,
                relation_oid: 16384,
                new: row(vec![
                    text("1"),
                    TupleValue::Null,
                    TupleValue::UnchangedToast,
                    TupleValue::Binary(Bytes::from_static(&[0, 1])),
                ]),
            }),
            LogicalMessage::Update(Update {
                xid: None,
                relation_oid: 16384,
                old: Some(OldTuple::Key(row(vec![text("1"), TupleValue::Null]))),
                new: row(vec![text("2"), text("")]),
            }),
            LogicalMessage::Update(Update {
                xid: Some(900),
                relation_oid: 16384,
                old: Some(OldTuple::Full(row(vec![text("a")]))),
                new: row(vec![text("b")]),
            }),
            LogicalMessage::Delete(Delete {
                xid: None,
                relation_oid: 16384,
                old: OldTuple::Key(row(vec![text("1")])),
            }),
            LogicalMessage::Truncate(Truncate {
                xid: None,
                options: 1,
                relation_oids: vec![16384, 16390],
            }),
            LogicalMessage::Message(LogicalDecodingMessage {
                xid: None,
                transactional: false,
                lsn: Lsn(0x20),
                prefix: "p".into(),
                content: Bytes::from_static(&[0, 0xff, 0]),
            }),
            LogicalMessage::Message(LogicalDecodingMessage {
                xid: Some(900),
                transactional: true,
                lsn: Lsn(0x20),
                prefix: "p".into(),
                content: Bytes::new(),
            }),
            LogicalMessage::StreamStart(StreamStart {
                xid: 900,
                first_segment: false,
            }),
            LogicalMessage::StreamStop,
            LogicalMessage::StreamCommit(StreamCommit {
                xid: 900,
                flags: 0,
                commit_lsn: Lsn(0x50),
                end_lsn: Lsn(0x80),
                timestamp: 9,
            }),
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 900,
                subxid: 901,
                abort_lsn: None,
                abort_timestamp: None,
            }),
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 900,
                subxid: 900,
                abort_lsn: Some(Lsn(0x70)),
                abort_timestamp: Some(11),
            }),
        ];
        assert_eq!(decoded, expected);
        let LogicalMessage::Truncate(t) = &decoded[10] else {
            panic!();
        };
        assert!(t.cascade() && !t.restart_identity());
    }

    #[test]
    fn hand_built_messages_truncated_anywhere_are_errors() {
        for (name, data, in_stream) in hand_built() {
            for cut in 0..data.len() {
                let result = decode(data.slice(..cut), in_stream);
                // A Stream Abort without the optional protocol 4 fields is complete.
                if name == "stream abort with abort info" && cut == 9 {
                    assert!(result.is_ok());
                    continue;
                }
                assert!(result.is_err(), "{name}: cut at {cut} decoded");
            }
        }
    }

    #[test]
    fn stream_abort_ignores_fields_after_the_abort_info() {
        let data = B::new(b'A').u32(1).u32(2).u64(3).u64(4).u32(5).bytes();
        assert!(matches!(
            decode(data, false),
            Ok(LogicalMessage::StreamAbort(StreamAbort {
                abort_lsn: Some(Lsn(3)),
                ..
            }))
        ));
    }

    #[test]
    fn error_messages_name_kind_field_and_offset() {
        let cases: Vec<(Bytes, bool, &str)> = vec![
            (Bytes::new(), false, "empty pgoutput message"),
            (B::new(b'Z').bytes(), false, "unknown pgoutput message type 'Z' (0x5a)"),
            (
                B::new(b'P').bytes(),
                false,
                "unsupported two-phase pgoutput message type 'P' (0x50)",
            ),
            (
                B::new(b'B').u64(1).bytes(),
                false,
                "truncated Begin message: timestamp needs 8 bytes at offset 9, 0 remain",
            ),
            (
                B::new(b'I')
                    .u32(1)
                    .u8(b'N')
                    .u16(3)
                    .text("a")
                    .u8(b't')
                    .i32(120)
                    .raw(&[0; 12])
                    .bytes(),
                false,
                "truncated Insert message: new tuple column 2 needs 120 bytes at offset 19, 12 remain",
            ),
            (
                B::new(b'I').u32(1).u8(b'N').u16(1).u8(b't').i32(-1).bytes(),
                false,
                "invalid Insert message: new tuple column 1 length at offset 9: negative length -1",
            ),
            (
                B::new(b'I').u32(1).u8(b'N').u16(1).u8(b'x').bytes(),
                false,
                "invalid Insert message: new tuple column 1 kind at offset 8: unknown kind 'x'",
            ),
            (
                B::new(b'I').u32(1).u8(b'K').u16(0).bytes(),
                false,
                "invalid Insert message: tuple marker at offset 5: expected 'N', got 'K'",
            ),
            (
                B::new(b'U').u32(1).u8(b'K').u16(0).u8(b'K').u16(0).bytes(),
                false,
                "invalid Update message: tuple marker at offset 8: expected 'N', got 'K'",
            ),
            (
                B::new(b'U').u32(1).u8(b'X').bytes(),
                false,
                "invalid Update message: tuple marker at offset 5: expected 'K', 'O' or 'N', got 'X'",
            ),
            (
                B::new(b'D').u32(1).u8(b'N').u16(0).bytes(),
                false,
                "invalid Delete message: tuple marker at offset 5: expected 'K' or 'O', got 'N'",
            ),
            (
                B::new(b'R').u32(1).cstr("s").cstr("t").u8(b'x').u16(0).bytes(),
                false,
                "invalid Relation message: replica identity at offset 9: unknown value 'x'",
            ),
            (
                B::new(b'R').u32(1).cstr("s").raw(b"tab").bytes(),
                false,
                "truncated Relation message: name at offset 7 has no NUL terminator",
            ),
            (
                B::new(b'O').u64(1).raw(&[0xff, 0xfe, 0]).bytes(),
                false,
                "invalid Origin message: name at offset 9: not valid UTF-8",
            ),
            (
                B::new(b'R')
                    .u32(1)
                    .cstr("s")
                    .cstr("t")
                    .u8(b'd')
                    .u16(1)
                    .u8(1)
                    .cstr("c")
                    .u32(23)
                    .bytes(),
                false,
                "truncated Relation message: column 1 type modifier needs 4 bytes at offset 19, 0 remain",
            ),
            (
                B::new(b'E').u8(0).bytes(),
                false,
                "invalid Stream Stop message: 1 unexpected trailing bytes at offset 1",
            ),
            (
                B::new(b'A').u32(1).u32(1).u32(0).bytes(),
                false,
                "truncated Stream Abort message: abort lsn needs 8 bytes at offset 9, 4 remain",
            ),
            (
                B::new(b'T').i32(-3).u8(0).bytes(),
                false,
                "invalid Truncate message: relation count at offset 1: negative length -3",
            ),
            (
                B::new(b'T').i32(3).u8(0).u32(1).bytes(),
                false,
                "truncated Truncate message: relation oids needs 12 bytes at offset 6, 4 remain",
            ),
            (
                B::new(b'M').u32(7).u8(1).u64(0).cstr("p").i32(5).raw(b"ab").bytes(),
                true,
                "truncated Message message: content needs 5 bytes at offset 20, 2 remain",
            ),
            (
                B::new(b'I').u16(1).bytes(),
                true,
                "truncated Insert message: xid needs 4 bytes at offset 1, 2 remain",
            ),
        ];
        for (data, in_stream, expected) in cases {
            assert_eq!(err(data, in_stream), expected);
        }
    }

    #[test]
    fn huge_and_negative_lengths_are_rejected_before_allocating() {
        // Each claims far more than it carries; none may allocate for the claim.
        let cases = [
            B::new(b'I').u32(1).u8(b'N').u16(1).u8(b't').i32(i32::MAX).bytes(),
            B::new(b'I').u32(1).u8(b'N').u16(1).u8(b'b').i32(i32::MIN).bytes(),
            B::new(b'I').u32(1).u8(b'N').u16(u16::MAX).bytes(),
            B::new(b'U').u32(1).u8(b'O').u16(u16::MAX).u8(b'n').bytes(),
            B::new(b'R').u32(1).cstr("").cstr("t").u8(b'd').u16(u16::MAX).bytes(),
            B::new(b'T').i32(i32::MAX).u8(0).u32(1).bytes(),
            B::new(b'T').i32(-1).u8(0).bytes(),
            B::new(b'M').u8(1).u64(0).cstr("p").i32(i32::MAX).bytes(),
            B::new(b'M').u8(1).u64(0).cstr("p").i32(-1).bytes(),
        ];
        for data in cases {
            assert!(decode(data, false).is_err());
        }
    }

    // ---- fuzzing -----------------------------------------------------------------------

    fn all_fixture_frames() -> Vec<(Bytes, bool)> {
        let mut out: Vec<_> = ALL_CAPTURED
            .iter()
            .flat_map(|(_, f)| frames(f).into_iter().take(12))
            .collect();
        out.extend(hand_built().into_iter().map(|(_, b, s)| (b, s)));
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), in_stream: bool) {
            let data = Bytes::from(data);
            let _ = decode(data.clone(), in_stream);
            let _ = decode_copy_data(data);
        }

        #[test]
        fn arbitrary_bodies_after_a_known_tag_never_panic(
            tag in prop::sample::select(b"BCORYIUDTMSEcA".to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..128),
            in_stream: bool,
        ) {
            let mut data = vec![tag];
            data.extend(body);
            let _ = decode(Bytes::from(data.clone()), in_stream);
            data[0] = if tag % 2 == 0 { b'w' } else { b'k' };
            let _ = decode_copy_data(Bytes::from(data));
        }

        #[test]
        fn mutated_fixtures_never_panic(
            pick in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            flip_stream: bool,
        ) {
            let frames = all_fixture_frames();
            let (data, in_stream) = &frames[pick.index(frames.len())];
            let mut bytes = data.to_vec();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = decode(Bytes::from(bytes.clone()), *in_stream ^ flip_stream);
            let mut framed = vec![b'w'];
            framed.extend_from_slice(&[0; 24]);
            framed.extend(bytes);
            let _ = decode_copy_data(Bytes::from(framed));
        }
    }
}
