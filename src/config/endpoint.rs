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
        check_session_attrs(side, tls_params.target_session_attrs.as_deref(), file)?;
        if pg.get_connect_timeout().is_none() {
            // Per host: a host that does not answer (a failed primary's machine) must not hold
            // up trying the next one for the operating system's minutes.
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
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

    /// `host:port/dbname`: which database this is, whoever connects; every host of a
    /// multi-host DSN (`a:5432,b:5432/app`).
    pub fn address(&self) -> String {
        let hosts: Vec<String> = (0..self.host_count()).map(|i| self.host_label(i)).collect();
        format!("{}/{}", hosts.join(","), self.dbname())
    }

    /// How many hosts the DSN lists (`host=a,b,c`): pgbridge connects to the primary among them.
    pub fn host_count(&self) -> usize {
        self.pg.get_hosts().len().max(self.pg.get_hostaddrs().len()).max(1)
    }

    /// `host:port` of the `i`-th host.
    pub fn host_label(&self, i: usize) -> String {
        let host = match (self.pg.get_hosts().get(i), self.pg.get_hostaddrs().get(i)) {
            (Some(tokio_postgres::config::Host::Tcp(h)), _) => h.clone(),
            (Some(tokio_postgres::config::Host::Unix(p)), _) => p.display().to_string(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "?".into(),
        };
        format!("{host}:{}", self.port(i))
    }

    /// The port of the `i`-th host: one port for all, or one per host.
    pub fn port(&self, i: usize) -> u16 {
        let ports = self.pg.get_ports();
        ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432)
    }

    /// The same connection settings with only the `i`-th host (and its port and hostaddr).
    pub fn single_host(&self, i: usize) -> Endpoint {
        let from = &self.pg;
        let mut pg = tokio_postgres::Config::new();
        if let Some(user) = from.get_user() {
            pg.user(user);
        }
        if let Some(password) = from.get_password() {
            pg.password(password);
        }
        if let Some(dbname) = from.get_dbname() {
            pg.dbname(dbname);
        }
        if let Some(options) = from.get_options() {
            pg.options(options);
        }
        if let Some(name) = from.get_application_name() {
            pg.application_name(name);
        }
        match from.get_hosts().get(i) {
            Some(tokio_postgres::config::Host::Tcp(h)) => pg.host(h),
            Some(tokio_postgres::config::Host::Unix(p)) => pg.host_path(p),
            None => &mut pg,
        };
        if let Some(addr) = from.get_hostaddrs().get(i) {
            pg.hostaddr(*addr);
        }
        pg.port(self.port(i))
            .ssl_mode(from.get_ssl_mode())
            .channel_binding(from.get_channel_binding())
            .keepalives(from.get_keepalives())
            .keepalives_idle(from.get_keepalives_idle());
        if let Some(t) = from.get_connect_timeout() {
            pg.connect_timeout(*t);
        }
        if let Some(t) = from.get_tcp_user_timeout() {
            pg.tcp_user_timeout(*t);
        }
        if let Some(t) = from.get_keepalives_interval() {
            pg.keepalives_interval(t);
        }
        if let Some(n) = from.get_keepalives_retries() {
            pg.keepalives_retries(n);
        }
        Endpoint {
            side: self.side,
            pg,
            tls: self.tls.clone(),
        }
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

/// How long one host may take to accept a connection when the DSN sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// pgbridge reads green's slot and writes blue: it always connects to the primary among the
/// DSN's hosts, as `target_session_attrs=primary` does. A value that asks for a standby is a
/// mistake worth saying before anything connects.
fn check_session_attrs(side: &str, value: Option<&str>, file: &Path) -> Result<()> {
    match value {
        None | Some("primary" | "read-write" | "any") => Ok(()),
        Some(other) => Err(Error::definite(format!(
            "{}: {side}.dsn has target_session_attrs={other}, but pgbridge needs {side}'s primary (it {}); \
             use target_session_attrs=primary or leave it out: pgbridge connects to the primary among the hosts",
            file.display(),
            if side == "green" {
                "reads the slot there"
            } else {
                "writes there"
            },
        ))),
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
