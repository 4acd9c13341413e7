//! One error type for the whole bridge, classified by consequence.
//!
//! Every failure is either *transient* (the connection dropped, a server restarted, blue refused
//! writes for a while: reconnect with backoff and resume from the checkpoint) or *definite* (a
//! mapping, data or configuration problem: stop with exit code 2, leaving slot and checkpoint
//! where they were, and tell the operator how to fix it). The decision is made in one place,
//! [`classify_sqlstate`], so retries are consistent across the source and apply sides.
//!
//! An error states facts: its kind, the side it came from ([`Side`], set where it is made or
//! where it crosses from the source or the applier into the pipeline), the server's SQLSTATE,
//! the green transactions involved and, when the applier knows more, a [`Cause`]. What a
//! session does next about it (reconnect, replay row by row, upsert, stream without
//! in-progress transactions, stop before a transaction) is decided from these facts by the
//! pipeline (`pipeline::replay`), not stored here.

use std::fmt;

use crate::lsn::Lsn;

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Reconnect with backoff and resume from the checkpoint.
    Transient,
    /// Stop; a human has to change something first.
    Definite,
}

/// The database an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The source: its replication stream and catalogs.
    Green,
    /// The target: the applier's statements, checkpoint and catalogs.
    Blue,
}

impl Side {
    /// The value of the `side` label of `pgbridge_reconnects_total`.
    pub fn label(self) -> &'static str {
        match self {
            Side::Green => "green",
            Side::Blue => "blue",
        }
    }
}

/// What the applier knows about a failure beyond its SQLSTATE, so the pipeline can choose a
/// better next session than a plain reconnect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A plain batched INSERT (sent without `ON CONFLICT` because every row came from an
    /// insert on green) into this green table met a row blue already holds. Nothing of the
    /// group was committed.
    InsertConflict(Box<str>),
    /// Applying a transaction green streamed while in progress failed in a way the ordinary
    /// path handles better (a rejected row, a lock wait, more such transactions or
    /// subtransactions than pgbridge applies at once).
    InProgress,
    /// The schema changed under the bridge at the green transaction committed at this LSN:
    /// nothing of it can be applied, everything before it can.
    SchemaChangedAt(Lsn),
}

/// A bridge error: a lowercase message that names the object involved and, for definite
/// errors, says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: Kind,
    side: Option<Side>,
    message: Box<str>,
    sqlstate: Option<Box<str>>,
    /// Commit LSNs (first, last) of the green transactions whose rows the failed statement
    /// carried, when known.
    lsn: Option<(Lsn, Lsn)>,
    cause: Option<Cause>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn new(kind: Kind, message: String) -> Self {
        Error {
            kind,
            side: None,
            message: message.into(),
            sqlstate: None,
            lsn: None,
            cause: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Error::new(Kind::Transient, message.into())
    }

    pub fn definite(message: impl Into<String>) -> Self {
        Error::new(Kind::Definite, message.into())
    }

    /// An error reported by a server, classified by its SQLSTATE.
    pub fn from_server(context: impl fmt::Display, code: &str, text: impl fmt::Display) -> Self {
        Error {
            sqlstate: Some(code.into()),
            ..Error::new(classify_sqlstate(code), format!("{context}: {text}"))
        }
    }

    /// A tokio-postgres error, with `context` saying what was being done ("apply to blue
    /// table public.orders at 0/16B3748"). Socket-level failures are transient.
    pub fn postgres(context: impl fmt::Display, err: &tokio_postgres::Error) -> Self {
        match err.as_db_error() {
            Some(db) => {
                let mut text = db.message().to_string();
                if let Some(detail) = db.detail() {
                    text.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = db.hint() {
                    text.push_str(&format!("; hint: {hint}"));
                }
                Error::from_server(context, db.code().code(), text)
            }
            None => {
                // Socket trouble (closed, I/O, connect timeout) heals by reconnecting; anything
                // else (encoding a value, an unexpected reply) would fail the same way again.
                let io = std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>());
                let transient = err.is_closed() || io || err.to_string().contains("timeout");
                let kind = if transient { Kind::Transient } else { Kind::Definite };
                Error::new(kind, format!("{context}: {}", chain(err)))
            }
        }
    }

    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> Self {
        Error::transient(format!("{context}: {err}"))
    }

    /// The same error, known to come from `side`.
    pub fn with_side(mut self, side: Side) -> Self {
        self.side = Some(side);
        self
    }

    /// The same error, from `side` unless its side is already known (for errors crossing
    /// from one side's code into the pipeline).
    pub fn or_side(mut self, side: Side) -> Self {
        self.side.get_or_insert(side);
        self
    }

    /// The database the error came from, when known.
    pub fn side(&self) -> Option<Side> {
        self.side
    }

    /// Records what the applier knows about the failure; a cause already recorded is kept
    /// (it is the more specific one).
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause.get_or_insert(cause);
        self
    }

    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_ref()
    }

    /// Records the green transaction a failed row belongs to.
    pub fn at_lsn(self, lsn: Lsn) -> Self {
        self.at_lsns(lsn, lsn)
    }

    /// Records the green transactions (by commit LSN, first and last) a failed statement carried.
    pub fn at_lsns(mut self, first: Lsn, last: Lsn) -> Self {
        if !first.is_zero() {
            self.lsn = Some((first, last));
        }
        self
    }

    /// Commit LSNs (first, last) of the green transactions involved, when known.
    pub fn lsns(&self) -> Option<(Lsn, Lsn)> {
        self.lsn
    }

    /// Whether blue rejected one row for its content (data exception, constraint violation,
    /// an exception raised by a trigger), as opposed to the schema or the connection.
    pub fn is_row_rejection(&self) -> bool {
        self.sqlstate
            .as_deref()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c == "P0001")
    }

    /// Marks a unique violation from a plain batched insert into green table `table`.
    pub fn conflicted_insert(self, table: &str) -> Self {
        self.with_cause(Cause::InsertConflict(table.into()))
    }

    /// The green table whose plain batched insert met an existing row, if that is the error.
    pub fn insert_conflict(&self) -> Option<&str> {
        match &self.cause {
            Some(Cause::InsertConflict(table)) => Some(table),
            _ => None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }

    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, now considered definite (for example a connection failure at start-up,
    /// when nothing has streamed yet and the operator should see it at once).
    pub fn into_definite(mut self) -> Self {
        self.kind = Kind::Definite;
        self
    }

    /// Prefix the message with more context.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message).into();
        self
    }

    /// Append advice on how to fix the problem.
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.message = format!("{}; {hint}", self.message).into();
        self
    }
}

/// Transient SQLSTATEs: the server or the connection is temporarily unable, and the same work
/// will succeed later. Everything else (data, constraint, privilege, undefined object) is
/// definite.
pub fn classify_sqlstate(code: &str) -> Kind {
    let transient = (code.starts_with("08") && code != "08P01") // connection exception, not a protocol violation
        || code.starts_with("53") // insufficient resources (disk full, out of memory, too many connections)
        || code.starts_with("58") // system error (I/O)
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up, recovering)
                | "57P05" // idle_session_timeout
                | "57014" // query_canceled (statement or lock timeout set by an operator)
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "25006" // read_only_sql_transaction: blue fenced or disk-full stand-in
                | "55006" // object_in_use: the slot is still held by a dying walsender
        );
    if transient {
        Kind::Transient
    } else {
        Kind::Definite
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_lock_problems_are_transient() {
        for code in ["08006", "57P01", "57P03", "40P01", "55P03", "25006", "53100"] {
            assert_eq!(classify_sqlstate(code), Kind::Transient, "{code}");
        }
    }

    #[test]
    fn the_side_is_set_where_known_and_kept_across_boundaries() {
        let e = Error::transient("green sent Begin inside a transaction").with_side(Side::Green);
        assert_eq!(e.or_side(Side::Blue).side(), Some(Side::Green));
        let e = Error::transient("connection closed").or_side(Side::Blue);
        assert_eq!(e.side().map(Side::label), Some("blue"));
        assert_eq!(Side::Green.label(), "green");
    }

    #[test]
    fn the_first_cause_recorded_is_kept() {
        let e = Error::definite("drift")
            .with_cause(Cause::SchemaChangedAt(Lsn(7)))
            .with_cause(Cause::InProgress);
        assert_eq!(e.cause(), Some(&Cause::SchemaChangedAt(Lsn(7))));
        let e = Error::from_server("insert", "23505", "duplicate").conflicted_insert("public.t");
        assert_eq!(e.insert_conflict(), Some("public.t"));
        assert!(e.is_row_rejection());
    }

    #[test]
    fn messages_display_unchanged() {
        let e = Error::from_server("apply to blue", "23505", "duplicate key").hint("fix it");
        assert_eq!(e.to_string(), "apply to blue: duplicate key; fix it");
        assert_eq!(e.sqlstate(), Some("23505"));
    }

    #[test]
    fn data_and_schema_problems_are_definite() {
        for code in ["23505", "23502", "22P02", "42P01", "42703", "42501", "28P01"] {
            assert_eq!(classify_sqlstate(code), Kind::Definite, "{code}");
        }
    }
}
