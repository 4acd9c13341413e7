//! A replication-mode connection to green, spoken directly on `postgres-protocol`
//! (tokio-postgres has no replication mode).
//!
//! It does the startup handshake (trust, cleartext, MD5 and SCRAM-SHA-256), runs replication
//! commands and SQL over the simple query protocol, and hands its socket halves to the stream
//! tasks once `START_REPLICATION` answers with CopyBothResponse.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;

use crate::config::Endpoint;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// Any byte stream to the server (TCP or Unix socket).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// PostgreSQL caps a protocol message at 1 GB; a longer length is a corrupt stream.
const MAX_MESSAGE_LEN: usize = 1 << 30;

/// How long a command-mode exchange (authentication, IDENTIFY_SYSTEM, START_REPLICATION) may
/// take. Outside streaming the walsender has no timeout of its own, so a connection that goes
/// silent there (a partition, a stalled proxy) would otherwise hang both sides for good.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One backend message as far as the replication client cares.
pub enum Backend {
    Message(Message),
    /// CopyBothResponse ('W'), which postgres-protocol's parser does not know.
    CopyBoth,
}

/// Reads framed backend messages from the read half of a connection.
pub struct Reader {
    io: tokio::io::ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    what: String,
}

impl Reader {
    /// Whether a whole message is already buffered, so [`Reader::next`] will not wait.
    pub fn has_message(&self) -> bool {
        self.buf.len() >= 5 && {
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            self.buf.len() > len
        }
    }

    pub async fn next(&mut self) -> Result<Backend> {
        loop {
            if self.buf.len() >= 5 {
                let tag = self.buf[0];
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if !(4..=MAX_MESSAGE_LEN).contains(&len) {
                    return Err(Error::transient(format!(
                        "{}: corrupt protocol stream (message '{}' claims {len} bytes)",
                        self.what, tag as char
                    )));
                }
                if self.buf.len() > len {
                    if tag == b'W' {
                        self.buf.advance(len + 1);
                        return Ok(Backend::CopyBoth);
                    }
                    let msg = Message::parse(&mut self.buf)
                        .map_err(|e| Error::transient(format!("{}: bad protocol message: {e}", self.what)))?;
                    if let Some(msg) = msg {
                        return Ok(Backend::Message(msg));
                    }
                } else {
                    self.buf.reserve(len + 1 - self.buf.len());
                }
            }
            if self.buf.capacity() - self.buf.len() < 8192 {
                self.buf.reserve(8192);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| Error::io(format!("reading from {}", self.what), &e))?;
            if n == 0 {
                return Err(Error::transient(format!("{} closed the connection", self.what)));
            }
        }
    }
}

/// The write half of a connection.
pub struct Writer {
    io: tokio::io::WriteHalf<Box<dyn Stream>>,
    what: String,
}

impl Writer {
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(format!("writing to {}", self.what), &e))?;
        self.io
            .flush()
            .await
            .map_err(|e| Error::io(format!("writing to {}", self.what), &e))
    }
}

/// Result rows of a simple query, as text.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(idx)?.as_deref()
    }
}

/// An open replication connection, before streaming.
pub struct ReplicationConn {
    reader: Reader,
    writer: Writer,
    pub parameters: HashMap<String, String>,
    pub describe: String,
}

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone)]
pub struct SystemId {
    pub system_id: String,
    pub timeline: u32,
    pub xlogpos: Lsn,
}

impl ReplicationConn {
    /// Connects with `replication=database` to the primary among `endpoint`'s hosts, tried in
    /// order, and authenticates. A standby is skipped: a slot on it (PostgreSQL 16+ decodes
    /// on standbys) would not be the bridge's slot.
    pub async fn connect(endpoint: &Endpoint, application_name: &str) -> Result<Self> {
        crate::connect::first_primary(endpoint, |host, one_of_several| async move {
            Self::connect_host(&host, application_name, one_of_several).await
        })
        .await
    }

    /// Connects to the one host of `endpoint`; refused when that server is a standby (it
    /// reports `in_hot_standby` at start-up, PostgreSQL 14+).
    async fn connect_host(endpoint: &Endpoint, application_name: &str, one_of_several: bool) -> Result<Self> {
        let conn = Self::open(endpoint, application_name).await?;
        if conn.parameters.get("in_hot_standby").map(String::as_str) == Some("on") {
            return Err(crate::connect::standby_refused(endpoint, one_of_several));
        }
        Ok(conn)
    }

    async fn open(endpoint: &Endpoint, application_name: &str) -> Result<Self> {
        let describe = endpoint.describe();
        let stream = open_socket(endpoint).await?;
        let (rd, wr) = tokio::io::split(stream);
        let mut conn = ReplicationConn {
            reader: Reader {
                io: rd,
                buf: BytesMut::with_capacity(64 * 1024),
                what: describe.clone(),
            },
            writer: Writer {
                io: wr,
                what: describe.clone(),
            },
            parameters: HashMap::new(),
            describe,
        };
        // As libpq's connect_timeout, the whole start: a host that accepts but never answers
        // must not hold up trying the next one.
        let limit = endpoint.pg.get_connect_timeout().copied().unwrap_or(ANSWER_TIMEOUT);
        match tokio::time::timeout(limit, conn.startup(endpoint, application_name)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::transient(format!(
                "{} did not answer authentication within {limit:?} (connect_timeout); the connection is presumed dead",
                endpoint.describe()
            )))
            }
        }
        Ok(conn)
    }

    async fn startup(&mut self, endpoint: &Endpoint, application_name: &str) -> Result<()> {
        let user = endpoint.user();
        let dbname = endpoint.dbname();
        let options = crate::evaluation::green_startup_options();
        let params = [
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            // pgoutput prints values with the walsender's settings: formats blue parses exactly.
            ("options", options.as_str()),
        ];
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf).map_err(|e| self.protocol(e))?;
        self.writer.send(&buf).await?;
        self.authenticate(endpoint, &user).await?;
        loop {
            match self.reader.next().await? {
                Backend::Message(Message::ParameterStatus(p)) => {
                    if let (Ok(n), Ok(v)) = (p.name(), p.value()) {
                        self.parameters.insert(n.to_string(), v.to_string());
                    }
                }
                Backend::Message(Message::BackendKeyData(_)) | Backend::Message(Message::NoticeResponse(_)) => {}
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(()),
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(&format!("connecting to {}", self.describe), body.fields()))
                }
                _ => return Err(self.unexpected("startup")),
            }
        }
    }

    async fn authenticate(&mut self, endpoint: &Endpoint, user: &str) -> Result<()> {
        let password = endpoint.pg.get_password();
        let need_password = || {
            Error::definite(format!(
                "{} asks for a password but green.dsn has none; add it to the dsn (e.g. via ${{VAR}}) or use a .pgpass-free trust/peer rule",
                "green"
            ))
        };
        let mut scram: Option<ScramSha256> = None;
        let mut scram_verified = false;
        loop {
            let msg = match self.reader.next().await? {
                Backend::Message(m) => m,
                Backend::CopyBoth => return Err(self.unexpected("authentication")),
            };
            let mut out = BytesMut::new();
            match msg {
                Message::AuthenticationOk if scram.as_ref().is_some_and(|_| !scram_verified) => {
                    return Err(Error::definite(format!(
                        "{} accepted the login without proving it knows the SCRAM password; refusing to continue",
                        self.describe
                    )))
                }
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = password.ok_or_else(need_password)?;
                    frontend::password_message(pw, &mut out).map_err(|e| self.protocol(e))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = password.ok_or_else(need_password)?;
                    let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), pw, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| self.protocol(e))?;
                }
                Message::AuthenticationSasl(body) => {
                    let pw = password.ok_or_else(need_password)?;
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms.next().map_err(|e| self.protocol(e))? {
                        scram_offered |= m == "SCRAM-SHA-256";
                    }
                    if !scram_offered {
                        return Err(Error::definite(format!(
                            "{} offers no SASL mechanism pgbridge supports (only SCRAM-SHA-256 without channel binding)",
                            self.describe
                        )));
                    }
                    let s = ScramSha256::new(pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                        .map_err(|e| self.protocol(e))?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| self.unexpected("SASL continue"))?;
                    s.update(body.data()).map_err(|e| self.auth_failed(e))?;
                    frontend::sasl_response(s.message(), &mut out).map_err(|e| self.protocol(e))?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| self.unexpected("SASL final"))?;
                    s.finish(body.data()).map_err(|e| self.auth_failed(e))?;
                    scram_verified = true;
                    continue;
                }
                Message::ErrorResponse(body) => {
                    return Err(server_error(&format!("connecting to {}", self.describe), body.fields()))
                }
                Message::NoticeResponse(_) => continue,
                _ => {
                    return Err(Error::definite(format!(
                        "{} asks for an authentication method pgbridge does not support (GSSAPI/SSPI/Kerberos); use scram-sha-256, md5 or trust in pg_hba.conf",
                        self.describe
                    )))
                }
            }
            self.writer.send(&out).await?;
        }
    }

    /// Runs one command over the simple query protocol and collects its rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows> {
        self.send_query(sql).await?;
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            match self.reader.next().await? {
                Backend::Message(Message::RowDescription(desc)) => {
                    let mut fields = desc.fields();
                    rows.columns.clear();
                    while let Some(f) = fields.next().map_err(|e| self.protocol(e))? {
                        rows.columns.push(f.name().to_string());
                    }
                }
                Backend::Message(Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut ranges = row.ranges();
                    let mut values = Vec::with_capacity(rows.columns.len());
                    while let Some(range) = ranges.next().map_err(|e| self.protocol(e))? {
                        values.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.rows.push(values);
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(server_error(
                        &format!("running {:?} on {}", short(sql), self.describe),
                        body.fields(),
                    ));
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                Backend::Message(
                    Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::NoticeResponse(_)
                    | Message::ParameterStatus(_),
                ) => {}
                _ => return Err(self.unexpected("a simple query")),
            }
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemId> {
        let describe = self.describe.clone();
        let rows = answer_within(&describe, "IDENTIFY_SYSTEM", self.simple_query("IDENTIFY_SYSTEM")).await?;
        let xlogpos = rows.first("xlogpos").unwrap_or("0/0");
        Ok(SystemId {
            system_id: rows.first("systemid").unwrap_or_default().to_string(),
            timeline: rows.first("timeline").and_then(|t| t.parse().ok()).unwrap_or(0),
            xlogpos: xlogpos
                .parse()
                .map_err(|e| Error::definite(format!("IDENTIFY_SYSTEM: {e}")))?,
        })
    }

    /// This server's identity (system identifier and timeline) and, after a promotion, its
    /// timeline history as (timeline, where it ended).
    pub async fn server(&mut self) -> Result<(crate::state::server::GreenServer, Vec<(u32, Lsn)>)> {
        let system = self.identify_system().await?;
        let server = crate::state::server::GreenServer {
            system_identifier: system.system_id,
            timeline: system.timeline,
        };
        if system.timeline <= 1 {
            return Ok((server, Vec::new()));
        }
        let describe = self.describe.clone();
        let command = format!("TIMELINE_HISTORY {}", system.timeline);
        let rows = answer_within(&describe, "TIMELINE_HISTORY", self.simple_query(&command)).await?;
        let history = crate::state::server::parse_history(rows.first("content").unwrap_or_default());
        Ok((server, history))
    }

    /// Sends `START_REPLICATION` and waits for CopyBothResponse; returns the socket halves.
    pub async fn start_replication(self, command: &str) -> Result<(Reader, Writer)> {
        let describe = self.describe.clone();
        answer_within(&describe, "START_REPLICATION", self.start_replication_inner(command)).await
    }

    async fn start_replication_inner(mut self, command: &str) -> Result<(Reader, Writer)> {
        self.send_query(command).await?;
        loop {
            match self.reader.next().await? {
                Backend::CopyBoth => return Ok((self.reader, self.writer)),
                Backend::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(
                        &format!("starting replication on {}", self.describe),
                        body.fields(),
                    ))
                }
                _ => return Err(self.unexpected("START_REPLICATION")),
            }
        }
    }

    /// Server version as `server_version_num` (e.g. 150004).
    pub fn server_version_num(&self) -> u32 {
        self.parameters
            .get("server_version")
            .map(|v| parse_server_version(v))
            .unwrap_or(0)
    }

    async fn send_query(&mut self, sql: &str) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| self.protocol(e))?;
        self.writer.send(&buf).await
    }

    fn protocol(&self, e: impl std::fmt::Display) -> Error {
        Error::transient(format!("{}: protocol error: {e}", self.describe))
    }

    fn auth_failed(&self, e: impl std::fmt::Display) -> Error {
        Error::definite(format!(
            "{}: SCRAM authentication failed: {e}; check the password in green.dsn",
            self.describe
        ))
    }

    fn unexpected(&self, during: &str) -> Error {
        Error::transient(format!(
            "{}: unexpected protocol message during {during}",
            self.describe
        ))
    }
}

/// `"15.4 (Debian 15.4-1)"` -> 150004; `"9.6.3"` -> 90603.
pub fn parse_server_version(text: &str) -> u32 {
    let numeric: String = text.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if major >= 10 {
        major * 10_000 + minor
    } else {
        major * 10_000 + minor * 100 + parts.next().unwrap_or(0)
    }
}

/// Runs one command-mode exchange, failing (transiently, so the caller reconnects) when the
/// server has not answered within [`ANSWER_TIMEOUT`].
async fn answer_within<T>(
    what: &str,
    during: &str,
    exchange: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Error::transient(format!(
            "{what} did not answer {during} within {}s; the connection is presumed dead",
            ANSWER_TIMEOUT.as_secs()
        ))),
    }
}

fn short(sql: &str) -> String {
    let first = sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
    if first.len() < sql.trim().len() {
        format!("{first} ...")
    } else {
        first
    }
}

/// Turns an ErrorResponse into an [`Error`] classified by SQLSTATE, with advice for the
/// errors operators meet when setting pgbridge up.
pub fn server_error(context: &str, mut fields: ErrorFields<'_>) -> Error {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    let mut text = message;
    if let Some(d) = detail {
        text.push_str(&format!(" ({d})"));
    }
    if let Some(h) = hint {
        text.push_str(&format!("; hint: {h}"));
    }
    let err = Error::from_server(context, &code, text);
    match code.as_str() {
        "28P01" => err.hint("check the password in the dsn"),
        "28000" => err.hint("add a pg_hba.conf line that admits this user (for replication=database connections the database column must match the database, not 'replication')"),
        "42501" => err.hint("the role needs the REPLICATION attribute: ALTER ROLE ... REPLICATION"),
        "3D000" => err.hint("check the database name in the dsn"),
        "53300" => err.hint("raise max_connections or max_wal_senders on the server"),
        _ => err,
    }
}

async fn open_socket(endpoint: &Endpoint) -> Result<Box<dyn Stream>> {
    let host = endpoint.pg.get_hosts().first().cloned();
    let port = endpoint.pg.get_ports().first().copied().unwrap_or(5432);
    let timeout = endpoint
        .pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let what = endpoint.describe();
    let connect = async {
        match &host {
            Some(Host::Tcp(h)) => {
                // `hostaddr` skips the name lookup; the name is still what TLS verifies.
                let s = match endpoint.pg.get_hostaddrs().first() {
                    Some(addr) => tokio::net::TcpStream::connect((*addr, port)).await?,
                    None => tokio::net::TcpStream::connect((h.as_str(), port)).await?,
                };
                s.set_nodelay(true)?;
                Ok::<Box<dyn Stream>, std::io::Error>(Box::new(s))
            }
            Some(Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let s: Box<dyn Stream> = Box::new(tokio::net::UnixStream::connect(path).await?);
                Ok(s)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host in dsn")),
        }
    };
    let tls = &endpoint.tls;
    let secure = |mut s: Box<dyn Stream>| async {
        // As libpq: TLS over TCP only; a Unix socket is already local.
        let Some(Host::Tcp(h)) = &host else {
            return Ok(s);
        };
        if !tls.negotiate(&mut s, &what, endpoint.side).await? {
            return Ok(s);
        }
        let s = tls
            .handshake(s, h)
            .await
            .map_err(|e| Error::definite(format!("cannot connect to {what}: {}", e.message())))?;
        let s: Box<dyn Stream> = Box::new(s);
        Ok::<_, Error>(s)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => match tokio::time::timeout(timeout, secure(s)).await {
            Ok(result) => result,
            Err(_) => Err(Error::transient(format!(
                "cannot connect to {what}: the TLS handshake timed out after {timeout:?}"
            ))),
        },
        Ok(Err(e)) => Err(Error::transient(format!(
            "cannot connect to {what}: {e}; check host and port in {}.dsn and that the server is running",
            endpoint.side
        ))),
        Err(_) => Err(Error::transient(format!(
            "cannot connect to {what}: timed out after {timeout:?}; check host and port in {}.dsn and the network",
            endpoint.side
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse() {
        assert_eq!(parse_server_version("15.4 (Debian 15.4-1.pgdg120+1)"), 150004);
        assert_eq!(parse_server_version("18beta1"), 180000);
        assert_eq!(parse_server_version("9.6.24"), 90624);
    }
}
