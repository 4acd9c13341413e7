//! A database connection as the configuration names it: the parsed DSN, its TLS settings, and
//! descriptions for messages that never show the password. A DSN tokio-postgres refuses is
//! explained without quoting it, since it may hold a password.

use std::path::Path;

use super::diagnose::similar;
use crate::error::{Error, Result};

/// A database connection: the parsed DSN plus a password-free description for messages.
#[derive(Clone)]
pub struct Endpoint {
    /// Which side this is: "green" or "blue".
    pub side: &'static str,
    pub pg: tokio_postgres::Config,
    /// `sslmode` and `sslrootcert` from the DSN, with libpq's meaning.
    pub tls: crate::tls::Tls,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.describe())
    }
}

impl Endpoint {
    pub(super) fn parse(side: &'static str, dsn: &str, file: &Path) -> Result<Self> {
        let (dsn, tls_params) = crate::tls::split_dsn(dsn);
        let mut pg: tokio_postgres::Config = dsn.parse().map_err(|e| {
            Error::definite(format!(
                "{}: {side}.dsn is not a valid connection string ({}); use a URL like \
                 postgres://user@host:5432/dbname or key=value pairs",
                file.display(),
                dsn_problem(&dsn, &e)
            ))
        })?;
        let tls = crate::tls::Tls::from_dsn(side, &tls_params, file)?;
        pg.ssl_mode(tls.mode.for_tokio_postgres());
        let host_with_at = pg.get_hosts().iter().any(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.contains('@'),
            _ => false,
        });
        if host_with_at {
            return Err(Error::definite(format!(
                "{}: {side}.dsn has an '@' in its host part; percent-encode '@' in user names and passwords as %40",
                file.display()
            )));
        }
        if pg.get_hosts().is_empty() {
            return Err(Error::definite(format!(
                "{}: {side}.dsn names no host; add one, e.g. postgres://user@localhost:5432/dbname",
                file.display()
            )));
        }
        Ok(Endpoint { side, pg, tls })
    }

    /// `side (user@host:port/dbname)`, never with the password.
    pub fn describe(&self) -> String {
        format!("{} ({}@{})", self.side, self.user(), self.address())
    }

    /// `host:port/dbname`: which database this is, whoever connects.
    pub fn address(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}/{}", self.dbname())
    }

    pub fn user(&self) -> String {
        self.pg
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into())
    }

    pub fn dbname(&self) -> String {
        self.pg.get_dbname().map(str::to_string).unwrap_or_else(|| self.user())
    }
}

/// What is wrong with a connection string that tokio-postgres refused, in words that never
/// quote the string (it may hold a password): tokio-postgres says only "invalid connection
/// string" and keeps the detail in its source, which can quote an unknown key.
fn dsn_problem(dsn: &str, err: &tokio_postgres::Error) -> String {
    let scheme = dsn.trim_start().split_once("://").map(|(scheme, _)| scheme);
    let other_scheme = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && s != "postgres"
            && s != "postgresql"
    };
    if scheme.is_some_and(other_scheme) {
        return "a URL must start with postgres:// or postgresql://".into();
    }
    let detail = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if detail.starts_with("invalid value for option `") {
        // Names a libpq option, never its value.
        detail
    } else if let Some(unknown) = detail
        .strip_prefix("unknown option `")
        .and_then(|d| d.strip_suffix('`'))
    {
        // The unknown key is named only when it is a misspelt option: a value with spaces
        // that was not quoted ("password=a b=c") makes a key out of part of the password.
        const OPTIONS: [&str; 18] = [
            "user",
            "password",
            "dbname",
            "options",
            "application_name",
            "sslmode",
            "sslrootcert",
            "host",
            "hostaddr",
            "port",
            "connect_timeout",
            "tcp_user_timeout",
            "keepalives",
            "keepalives_idle",
            "keepalives_interval",
            "keepalives_retries",
            "target_session_attrs",
            "channel_binding",
        ];
        let plain = unknown.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match OPTIONS.iter().find(|o| plain && similar(unknown, o)) {
            Some(option) => format!("unknown key {unknown}; did you mean {option}?"),
            None => "it has an unknown key; check the spelling of each key, and quote values with spaces: \
                     password='a b'"
                .into(),
        }
    } else if detail.starts_with("unexpected character") || detail == "unexpected EOF" {
        "a key without =value, or a value with spaces that is not quoted: password='a b'".into()
    } else if detail.starts_with("unterminated quoted") {
        "a quoted value has no closing quote".into()
    } else if detail == "unterminated parameter" {
        "a URL parameter after ? has no =value".into()
    } else if detail.starts_with("invalid utf-8") {
        "a %-escape does not decode to UTF-8".into()
    } else {
        "it cannot be parsed".into()
    }
}
