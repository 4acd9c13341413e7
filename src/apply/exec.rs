//! Pipelined execution on blue.
//!
//! tokio-postgres sends a request the first time its future is polled and answers requests in
//! order, so polling each statement once as it is issued and awaiting the results later keeps
//! many statements in flight on one connection without changing their order. The first error
//! in issue order is the real one: everything after it only reports the aborted transaction.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// A value sent in text form to a `text`-typed parameter; the SQL casts it to blue's type.
#[derive(Debug, Clone)]
pub struct TextParam(pub Option<Bytes>);

impl ToSql for TextParam {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.0 {
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT
    }

    to_sql_checked!();
}

/// What a statement was doing, formatted only when it fails.
#[derive(Clone, Debug)]
pub struct Context {
    pub action: &'static str,
    pub table: Option<Arc<str>>,
    /// The green transaction's commit LSN (0 outside a transaction).
    pub lsn: Lsn,
    /// For a batch spanning several green transactions: the last one's commit LSN.
    pub lsn_end: Lsn,
    /// Rows the statement must report, when it matters (the checkpoint update).
    pub expect_rows: Option<u64>,
    /// Approximate bytes the statement carries, for bounding what is in flight.
    pub weight: usize,
    /// The statement is a group's COMMIT: its success is counted (`take_commits`).
    pub commit: bool,
    /// A batched INSERT sent without `ON CONFLICT` (see [`Error::insert_conflict`]).
    pub optimistic: bool,
}

impl Context {
    pub fn new(action: &'static str) -> Self {
        Context {
            action,
            table: None,
            lsn: Lsn::ZERO,
            lsn_end: Lsn::ZERO,
            expect_rows: None,
            weight: 0,
            commit: false,
            optimistic: false,
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("{} on blue", self.action);
        if let Some(t) = &self.table {
            text = format!("{} for table {t} on blue", self.action);
        }
        if !self.lsn.is_zero() {
            text.push_str(&format!(" (green transaction committed at {})", self.lsn));
        }
        text
    }
}

type Pending = (
    Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>,
    Context,
);

/// Statements in flight on one blue connection.
pub struct Pipeline {
    client: Arc<Client>,
    pending: VecDeque<Pending>,
    max_in_flight: usize,
    /// Sum of the pending statements' weights.
    in_flight_bytes: usize,
    /// COMMITs that succeeded since the last `take_commits`.
    commits: usize,
}

/// Most bytes of statement parameters in flight at once: encoded requests wait in the
/// connection's queue until blue takes them, so this bounds memory when blue is slower.
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;

impl Pipeline {
    pub fn new(client: Arc<Client>, max_in_flight: usize) -> Self {
        Pipeline {
            client,
            pending: VecDeque::new(),
            max_in_flight,
            in_flight_bytes: 0,
            commits: 0,
        }
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Issues a prepared statement with its parameters.
    pub async fn execute<P: ToSql + Send + Sync + 'static>(
        &mut self,
        statement: &Statement,
        params: Vec<P>,
        ctx: Context,
    ) -> Result<()> {
        let client = self.client.clone();
        let statement = statement.clone();
        self.issue(
            Box::pin(async move { client.execute_raw(&statement, params).await }),
            ctx,
        )
        .await
    }

    /// Issues a simple-protocol command such as `BEGIN` or `COMMIT`.
    pub async fn command(&mut self, sql: String, ctx: Context) -> Result<()> {
        let client = self.client.clone();
        self.issue(
            Box::pin(async move { client.batch_execute(&sql).await.map(|_| 0) }),
            ctx,
        )
        .await
    }

    async fn issue(
        &mut self,
        mut fut: Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>,
        ctx: Context,
    ) -> Result<()> {
        // The first poll writes the request into the connection's queue.
        match futures_util::poll!(fut.as_mut()) {
            Poll::Ready(result) => {
                // Only possible when encoding failed or the connection is gone; report the
                // earlier statements' errors first, they are the cause.
                self.drain().await?;
                check(result, &ctx)?;
            }
            Poll::Pending => {
                self.in_flight_bytes += ctx.weight;
                self.pending.push_back((fut, ctx));
            }
        }
        while self.pending.len() > self.max_in_flight
            || (self.in_flight_bytes > MAX_IN_FLIGHT_BYTES && self.pending.len() > 1)
        {
            self.finish_one().await?;
        }
        Ok(())
    }

    /// Waits for the oldest statement in flight. Cancel-safe: the statement stays queued
    /// until it has completed, so this can race other events in a `select!`.
    pub async fn finish_one(&mut self) -> Result<()> {
        let Some((fut, _)) = self.pending.front_mut() else {
            return Ok(());
        };
        let result = fut.as_mut().await;
        let (_, ctx) = self.pending.pop_front().expect("the statement just awaited");
        self.in_flight_bytes -= ctx.weight;
        if let Err(e) = check(result, &ctx) {
            self.pending.clear();
            self.in_flight_bytes = 0;
            return Err(e);
        }
        if ctx.commit {
            self.commits += 1;
        }
        Ok(())
    }

    /// Whether statements are in flight.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How many COMMITs completed since the last call (they complete in issue order).
    pub fn take_commits(&mut self) -> usize {
        std::mem::take(&mut self.commits)
    }

    /// Waits for every statement in flight; returns the first error in issue order.
    pub async fn drain(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.finish_one().await?;
        }
        Ok(())
    }

    /// A failure from a direct call on the client (prepare, catalog query) while statements
    /// are in flight: an earlier statement's error is the real cause when there is one.
    pub async fn root_cause(&mut self, err: Error) -> Error {
        match self.drain().await {
            Err(earlier) => earlier,
            Ok(()) => err,
        }
    }
}

fn check(result: Result<u64, tokio_postgres::Error>, ctx: &Context) -> Result<()> {
    let rows = result.map_err(|e| {
        let err = Error::postgres(ctx.describe(), &e).at_lsns(ctx.lsn, ctx.lsn_end.max(ctx.lsn));
        match &ctx.table {
            Some(table) if ctx.optimistic && err.sqlstate() == Some("23505") => err.conflicted_insert(table),
            _ => err,
        }
    })?;
    match ctx.expect_rows {
        Some(expected) if expected != rows => Err(Error::definite(format!(
            "{}: expected {expected} row(s), got {rows}",
            ctx.describe()
        ))),
        _ => Ok(()),
    }
}
