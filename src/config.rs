//! `pgbridge.toml`, in two steps: raw serde structs that mirror the file exactly (unknown keys
//! are errors, so a typo never silently falls back to a default), then a validated [`Config`]
//! with parsed connection strings, durations and identifiers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Where the configuration comes from when `-c` is not given.
pub const DEFAULT_PATH: &str = "pgbridge.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The source database whose changes are streamed (required; optional here so that its
    /// absence gets a message of our own).
    green: Option<RawGreen>,
    /// The target database (required).
    blue: Option<RawBlue>,
    /// How green tables map to blue tables.
    #[serde(default)]
    mapping: RawMapping,
    /// Batching and error policy of the apply side.
    #[serde(default)]
    apply: RawApply,
    /// The HTTP endpoint for Prometheus and health checks.
    #[serde(default)]
    metrics: RawMetrics,
    /// Green sequence -> blue sequence, where the names differ (`sync-sequences`).
    #[serde(default)]
    sequences: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGreen {
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment (required).
    dsn: Option<String>,
    /// Publication whose tables are streamed.
    #[serde(default = "default_publication")]
    publication: String,
    /// Logical replication slot that holds green's WAL for us.
    #[serde(default = "default_slot")]
    slot: String,
    /// `none`: skip transactions that were applied under a replication origin (another
    /// pgbridge's or a subscription's), so two bridges in opposite directions do not echo;
    /// `any`: carry them too.
    #[serde(default = "default_origin_filter")]
    origin: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlue {
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment (required).
    dsn: Option<String>,
    /// Schema on blue holding pgbridge's own tables (checkpoint, dead letters).
    #[serde(default = "default_schema")]
    schema: String,
    /// The TimeZone mapping expressions are evaluated in on blue (a `timestamptz` stored into
    /// a `timestamp` or `date` column, `at::date`, ...), by every path alike; default: blue's
    /// own default for the bridge's role and database, the zone blue's applications see.
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    /// Directory of mapping files, relative to the configuration file.
    #[serde(default = "default_mapping_dir")]
    dir: String,
    /// Map a same-named blue table column by column when it has no mapping file.
    #[serde(default = "default_true")]
    implicit: bool,
    /// Every published green column must be used or ignored.
    #[serde(default = "default_true")]
    strict: bool,
    /// Green tables (`schema.table`) deliberately not replicated.
    #[serde(default)]
    exclude: Vec<String>,
    /// How often `run` compares green's and blue's catalogs with the accepted plan (a
    /// duration, e.g. "5s"): what Relation messages cannot show (a table that left the
    /// publication, was re-created or gained partitions) is found this way.
    #[serde(default = "default_schema_check_interval")]
    schema_check_interval: String,
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            dir: default_mapping_dir(),
            implicit: true,
            strict: true,
            exclude: Vec::new(),
            schema_check_interval: default_schema_check_interval(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApply {
    /// Most rows in one blue transaction before it is committed.
    #[serde(default = "default_batch_rows")]
    max_batch_rows: u64,
    /// Longest time one blue transaction collects green transactions.
    #[serde(default = "default_batch_delay")]
    max_batch_delay: String,
    /// `stop` or `dead_letter`.
    #[serde(default = "default_on_error")]
    on_error: String,
    /// Replication origin blue's commits are tagged with (default `pgbridge_<slot>`); `""`
    /// applies untagged.
    origin: Option<String>,
}

impl Default for RawApply {
    fn default() -> Self {
        RawApply {
            max_batch_rows: default_batch_rows(),
            max_batch_delay: default_batch_delay(),
            on_error: default_on_error(),
            origin: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Address of the HTTP listener for /metrics, /healthz, /readyz and /status.
    #[serde(default = "default_listen")]
    listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_listen(),
        }
    }
}

fn default_publication() -> String {
    "pgbridge".into()
}
fn default_slot() -> String {
    "pgbridge_to_blue".into()
}
fn default_schema() -> String {
    "pgbridge".into()
}
fn default_mapping_dir() -> String {
    "mappings".into()
}
fn default_true() -> bool {
    true
}
fn default_batch_rows() -> u64 {
    10_000
}
fn default_schema_check_interval() -> String {
    "5s".into()
}
fn default_batch_delay() -> String {
    "20ms".into()
}
fn default_on_error() -> String {
    "stop".into()
}
fn default_origin_filter() -> String {
    "none".into()
}
fn default_listen() -> String {
    "127.0.0.1:9187".into()
}

/// What to do with a row that blue rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Stop,
    DeadLetter,
}

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
    fn parse(side: &'static str, dsn: &str, file: &Path) -> Result<Self> {
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

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub green: Endpoint,
    pub publication: String,
    pub slot: String,
    pub blue: Endpoint,
    pub schema: String,
    /// `[blue] timezone`: the TimeZone mapping expressions see on blue; `None` means blue's
    /// default for the role and database (see [`crate::evaluation`]). Checked against blue's
    /// zones when a command connects.
    pub blue_timezone: Option<String>,
    pub mapping_dir: PathBuf,
    pub implicit: bool,
    pub strict: bool,
    /// How often `run` compares both catalogs with the accepted plan.
    pub schema_check_interval: Duration,
    /// Excluded green tables as (schema, table).
    pub exclude: Vec<(String, String)>,
    pub max_batch_rows: u64,
    pub max_batch_delay: Duration,
    pub on_error: OnError,
    pub metrics_listen: String,
    /// Renamed sequences as (green (schema, name), blue (schema, name)).
    pub sequences: Vec<((String, String), (String, String))>,
    /// Skip green transactions that carry a replication origin (`green.origin = "none"`).
    pub skip_origins: bool,
    /// The replication origin blue's commits are tagged with (`apply.origin`); `None` when
    /// tagging is off.
    pub origin: Option<String>,
}

impl Config {
    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                Error::definite(format!("{}: not UTF-8 text; save the file as UTF-8", path.display()))
            }
            _ => Error::definite(format!(
                "cannot read configuration {}: {e}; pass -c PATH or set PGBRIDGE_CONFIG",
                path.display()
            )),
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let file = path.display();
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let expand = |key: &str, value: &str| {
            expand_env(value, env).map_err(|var| match var {
                Some(var) => Error::definite(format!(
                    "{file}: {key} uses ${{{var}}} but the environment variable {var} is not set; set it or \
                     write the value itself"
                )),
                // Not a variable name: quoting it could show part of a password.
                None => Error::definite(format!(
                    "{file}: {key} has a ${{...}} that is not a variable name; write ${{NAME}} with letters, digits \
                     and underscores"
                )),
            })
        };
        let example = "dsn = \"postgres://user@host:5432/dbname\"";
        let raw_green = raw.green.ok_or_else(|| {
            Error::definite(format!(
                "{file}: [green] is missing; add a [green] section with {example} (the database whose changes are \
                 streamed)"
            ))
        })?;
        let raw_blue = raw.blue.ok_or_else(|| {
            Error::definite(format!(
                "{file}: [blue] is missing; add a [blue] section with {example} (the database pgbridge writes to)"
            ))
        })?;
        let dsn = |side: &str, dsn: Option<String>| {
            dsn.ok_or_else(|| Error::definite(format!("{file}: {side}.dsn is missing; add {example} under [{side}]")))
        };
        let (green_dsn, blue_dsn) = (dsn("green", raw_green.dsn)?, dsn("blue", raw_blue.dsn)?);

        let green = Endpoint::parse("green", &expand("green.dsn", &green_dsn)?, path)?;
        let blue = Endpoint::parse("blue", &expand("blue.dsn", &blue_dsn)?, path)?;
        let publication = expand("green.publication", &raw_green.publication)?;
        let slot = expand("green.slot", &raw_green.slot)?;
        let schema = expand("blue.schema", &raw_blue.schema)?;
        check_identifier(path, "green.publication", &publication)?;
        check_identifier(path, "blue.schema", &schema)?;
        check_slot_name(path, &slot)?;
        let blue_timezone = match &raw_blue.timezone {
            Some(zone) => Some(check_timezone(path, &expand("blue.timezone", zone)?)?),
            None => None,
        };

        let max_batch_delay = humantime::parse_duration(&raw.apply.max_batch_delay).map_err(|e| {
            Error::definite(format!(
                "{file}: apply.max_batch_delay = {:?} is not a duration ({e}); write e.g. \"20ms\" or \"1s\"",
                raw.apply.max_batch_delay
            ))
        })?;
        let schema_check_interval = humantime::parse_duration(&raw.mapping.schema_check_interval)
            .ok()
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| {
                Error::definite(format!(
                    "{file}: mapping.schema_check_interval = {:?} is not a duration of at least 100ms; write e.g. \"5s\"",
                    raw.mapping.schema_check_interval
                ))
            })?;
        if raw.apply.max_batch_rows == 0 {
            return Err(Error::definite(format!(
                "{file}: apply.max_batch_rows must be at least 1"
            )));
        }
        let on_error = match raw.apply.on_error.as_str() {
            "stop" => OnError::Stop,
            "dead_letter" => OnError::DeadLetter,
            other => {
                return Err(Error::definite(format!(
                    "{file}: apply.on_error = {other:?} is not one of \"stop\", \"dead_letter\""
                )))
            }
        };
        let exclude = raw
            .mapping
            .exclude
            .iter()
            .map(|name| {
                split_table_name(name).ok_or_else(|| {
                    Error::definite(format!(
                    "{file}: mapping.exclude entry {name:?} is not a table name; write \"schema.table\" or \"table\""
                ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let sequence_name = |name: &str| {
            split_table_name(name).ok_or_else(|| {
                Error::definite(format!(
                    "{file}: [sequences] entry {name:?} is not a sequence name; write \"schema.sequence\" or \"sequence\""
                ))
            })
        };
        let sequences = raw
            .sequences
            .iter()
            .map(|(green, blue)| Ok((sequence_name(green)?, sequence_name(blue)?)))
            .collect::<Result<Vec<_>>>()?;
        let skip_origins = match raw_green.origin.as_str() {
            "none" => true,
            "any" => false,
            other => {
                return Err(Error::definite(format!(
                    "{file}: green.origin = {other:?} is not one of \"none\" (skip what another bridge or a \
                     subscription applied on green: no echo between two bridges) or \"any\" (carry it too)"
                )))
            }
        };
        let origin = match raw.apply.origin {
            None => Some(format!("pgbridge_{slot}")),
            Some(name) if name.is_empty() => None,
            Some(name) => Some(name),
        };
        if let Some(name) = &origin {
            check_origin_name(path, name)?;
        }
        let listen = raw.metrics.listen;
        let valid_listen = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid_listen {
            return Err(Error::definite(format!(
                "{file}: metrics.listen = {listen:?} is not an address to listen on; write host:port, e.g. \
                 \"127.0.0.1:9187\" or \"[::]:9187\""
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            path: path.to_path_buf(),
            green,
            publication,
            slot,
            blue,
            schema,
            blue_timezone,
            mapping_dir: base.join(&raw.mapping.dir),
            implicit: raw.mapping.implicit,
            strict: raw.mapping.strict,
            schema_check_interval,
            exclude,
            sequences,
            max_batch_rows: raw.apply.max_batch_rows,
            max_batch_delay,
            on_error,
            metrics_listen: listen,
            skip_origins,
            origin,
        })
    }

    pub fn is_excluded(&self, schema: &str, table: &str) -> bool {
        self.exclude.iter().any(|(s, t)| s == schema && t == table)
    }
}

/// Longest origin name pgbridge takes: PostgreSQL allows 512 bytes, and streamed
/// transactions use the name with a suffix (see `apply::origin`).
const MAX_ORIGIN_NAME: usize = 500;

/// A replication origin name PostgreSQL accepts.
fn check_origin_name(path: &Path, name: &str) -> Result<()> {
    let file = path.display();
    if name.len() > MAX_ORIGIN_NAME {
        return Err(Error::definite(format!(
            "{file}: apply.origin is {} bytes long; use at most {MAX_ORIGIN_NAME}",
            name.len()
        )));
    }
    if name.starts_with("pg_") || name.eq_ignore_ascii_case("none") || name.eq_ignore_ascii_case("any") {
        return Err(Error::definite(format!(
            "{file}: apply.origin = {name:?} is reserved by PostgreSQL (names starting with pg_, \"none\" and \
             \"any\"); choose another name, e.g. \"pgbridge_to_blue\""
        )));
    }
    Ok(())
}

/// A TOML error as one line: `FILE:LINE:COLUMN: message`.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = plain_toml_message(err.message());
    match err.span() {
        Some(span) => {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // Name the key of the offending line, never its value: it may be a DSN with a password.
            // A missing key is reported at its table, whose first line is some other key.
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            let key = source_line
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| looks_like_key(k) && !message.contains(&format!("`{k}`")))
                .filter(|_| !message.starts_with("missing key"));
            match key {
                Some(key) => Error::definite(format!("{}:{line}:{column}: {key}: {message}", path.display())),
                None => Error::definite(format!("{}:{line}:{column}: {message}", path.display())),
            }
        }
        None => Error::definite(format!("{}: {message}", path.display())),
    }
}

/// Whether `k`, the text before `=` on a line, is a TOML key rather than the inside of a value
/// (a string broken over lines): bare or quoted key characters, no spaces.
fn looks_like_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"'".contains(c))
}

/// serde's words for a TOML error, in the file's terms; never quotes a string value.
fn plain_toml_message(message: &str) -> String {
    let mut m = message.trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
    if m == "expected `.`, `=`" {
        m = "a key must be followed by = and its value".into();
    }
    // "invalid type: string \"postgres://u:pw@h\", expected u64" quotes the whole value.
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = m.strip_prefix(prefix) {
            if let Some(i) = rest.rfind(", expected ") {
                let found = &rest[..i];
                let found = if found.starts_with("string ") {
                    "a string"
                } else {
                    found
                };
                m = format!("expected {}, found {found}", &rest[i + ", expected ".len()..]);
            }
            break;
        }
    }
    for (serde, toml) in [
        ("unknown field", "unknown key"),
        ("missing field", "missing key"),
        ("struct RawGreen", "a [green] table"),
        ("struct RawBlue", "a [blue] table"),
        ("struct RawMapping", "a [mapping] table"),
        ("struct RawApply", "an [apply] table"),
        ("struct RawMetrics", "a [metrics] table"),
        ("struct RawColumn", "an inline table like { from = \"green_column\" }"),
        ("struct RawFilter", "a [filter] table with where = \"condition\""),
        ("expected u64", "expected a whole number"),
        ("expected a sequence", "expected an array like [\"a\", \"b\"]"),
        ("expected a map", "expected a table"),
        ("found sequence", "found an array"),
        ("found map", "found a table"),
    ] {
        m = m.replace(serde, toml);
    }
    // "unknown key `aply`, expected one of `green`, `blue`, ...": suggest the closest.
    if m.starts_with("unknown key `") {
        let quoted: Vec<&str> = m.split('`').skip(1).step_by(2).collect();
        if let Some((unknown, allowed)) = quoted.split_first() {
            let best = allowed.iter().min_by_key(|a| edit_distance(unknown, a));
            if let Some(best) = best.filter(|a| edit_distance(unknown, a) <= 2.min(a.len() / 2)) {
                m = format!("{m}; did you mean `{best}`?");
            }
        }
    }
    m
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
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
        match OPTIONS
            .iter()
            .find(|o| plain && edit_distance(unknown, o) <= 2.min(o.len() / 2))
        {
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

/// Splits `schema.table` (or `table`, meaning `public`) into its parts. Quoted names are
/// accepted: `"My Schema"."Orders"`.
pub fn split_table_name(name: &str) -> Option<(String, String)> {
    parse_table_name(name).map(|(schema, table)| (schema.unwrap_or_else(|| "public".into()), table))
}

/// A table name as mapping files write it, as (schema if given, table): unquoted parts are
/// folded to lower case as SQL does, quoted ones kept as written (`"Sales Dept"."Order"`).
pub fn parse_table_name(name: &str) -> Option<(Option<String>, String)> {
    let mut parts = split_qualified(name)?;
    let table = parts.pop()?;
    match parts.pop() {
        None => Some((None, table)),
        Some(schema) if parts.is_empty() => Some((Some(schema), table)),
        Some(_) => None,
    }
}

fn split_qualified(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

/// Replaces `${VAR}` with the variable's value; returns the name of the first unset variable,
/// or `None` for a `${...}` whose inside is not a variable name.
fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<String, Option<String>> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(None);
        }
        out.push_str(&env(name).ok_or_else(|| Some(name.to_string()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_identifier(path: &Path, key: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 63 || value.contains('\0') {
        return Err(Error::definite(format!(
            "{}: {key} = {value:?} must be 1 to 63 bytes without NUL",
            path.display()
        )));
    }
    Ok(())
}

/// A plausible time zone name: blue is asked whether it knows the zone when a command connects
/// (see [`crate::evaluation`]); here only what can never be one is refused.
fn check_timezone(path: &Path, zone: &str) -> Result<String> {
    let zone = zone.trim();
    if zone.is_empty() || zone.len() > 255 || zone.chars().any(char::is_control) {
        return Err(Error::definite(format!(
            "{}: blue.timezone = {zone:?} is not a time zone name; write one from blue's pg_timezone_names, e.g. \
             \"Europe/Berlin\", or remove the key to use blue's default",
            path.display()
        )));
    }
    Ok(zone.to_string())
}

/// PostgreSQL accepts only lower-case letters, digits and underscores in slot names.
fn check_slot_name(path: &Path, slot: &str) -> Result<()> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::definite(format!(
            "{}: green.slot = {slot:?} is not a valid slot name; use 1 to 63 lower-case letters, digits or underscores",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/pgbridge/pgbridge.toml"), &|name| {
            (name == "GREEN_PASSWORD").then(|| "s3cret".to_string())
        })
    }

    const MINIMAL: &str = r#"
[green]
dsn = "postgres://bridge:${GREEN_PASSWORD}@green-host:5432/app"
[blue]
dsn = "host=blue-host port=5433 user=bridge dbname=app"
"#;

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.publication, "pgbridge");
        assert_eq!(c.slot, "pgbridge_to_blue");
        assert_eq!(c.schema, "pgbridge");
        assert_eq!(c.max_batch_rows, 10_000);
        assert_eq!(c.max_batch_delay, Duration::from_millis(20));
        assert_eq!(c.on_error, OnError::Stop);
        assert_eq!(c.metrics_listen, "127.0.0.1:9187");
        assert_eq!(c.mapping_dir, Path::new("/etc/pgbridge/mappings"));
        assert!(c.implicit && c.strict);
        assert_eq!(c.green.pg.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            c.blue_timezone, None,
            "blue's own default zone unless the file names one"
        );
    }

    #[test]
    fn blue_timezone_is_taken_as_written_and_never_empty() {
        let with = |line: &str| parse(&MINIMAL.replace("dbname=app\"", &format!("dbname=app\"\n{line}")));
        let c = with("timezone = \" America/St_Johns \"").unwrap();
        assert_eq!(c.blue_timezone.as_deref(), Some("America/St_Johns"));
        let e = with("timezone = \"\"").unwrap_err().to_string();
        assert!(e.contains("blue.timezone") && e.contains("not a time zone name"), "{e}");
        let e = with("time_zone = \"UTC\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown key `time_zone`") && e.contains("did you mean `timezone`"),
            "{e}"
        );
    }

    #[test]
    fn descriptions_never_contain_the_password() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.green.describe(), "green (bridge@green-host:5432/app)");
        assert!(!format!("{:?}", c.green).contains("s3cret"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_file_and_key() {
        let err = parse(&format!("{MINIMAL}\n[apply]\nmax_batch_rowz = 5\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/pgbridge/pgbridge.toml"), "{msg}");
        assert!(msg.contains("max_batch_rowz"), "{msg}");
    }

    #[test]
    fn syntax_errors_never_echo_a_dsn() {
        let text = MINIMAL.replace("${GREEN_PASSWORD}", "pa\\ss");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains(":3:") && msg.contains("dsn") && !msg.contains("pa\\ss"),
            "{msg}"
        );
    }

    #[test]
    fn bad_sslmode_and_ambiguous_hosts_are_refused() {
        let tls = MINIMAL.replace("app\"\n[blue]", "app?sslmode=strict\"\n[blue]");
        let msg = parse(&tls).unwrap_err().to_string();
        assert!(msg.contains("green.dsn sslmode=strict is not a valid sslmode"), "{msg}");
        let ok = MINIMAL.replace("app\"\n[blue]", "app?sslmode=require\"\n[blue]");
        assert_eq!(parse(&ok).unwrap().green.tls.mode, crate::tls::SslMode::Require);
        let at = MINIMAL.replace("${GREEN_PASSWORD}", "p@ss");
        let msg = parse(&at).unwrap_err().to_string();
        assert!(msg.contains("%40") && !msg.contains("p@ss"), "{msg}");
    }

    #[test]
    fn unset_variable_is_named() {
        let text = MINIMAL.replace("GREEN_PASSWORD", "NOPE");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("${NOPE}") && msg.contains("green.dsn"), "{msg}");
    }

    #[test]
    fn bad_values_are_explained() {
        let bad_delay = format!("{MINIMAL}\n[apply]\nmax_batch_delay = \"soon\"\n");
        assert!(parse(&bad_delay).unwrap_err().to_string().contains("max_batch_delay"));
        let bad_slot = MINIMAL.replace("[blue]", "slot = \"Bad-Slot\"\n[blue]");
        assert!(parse(&bad_slot).unwrap_err().to_string().contains("green.slot"));
        let bad_policy = format!("{MINIMAL}\n[apply]\non_error = \"ignore\"\n");
        assert!(parse(&bad_policy).unwrap_err().to_string().contains("on_error"));
    }

    #[test]
    fn table_names_split_like_postgres() {
        assert_eq!(split_table_name("orders"), Some(("public".into(), "orders".into())));
        assert_eq!(
            split_table_name("Sales.Orders"),
            Some(("sales".into(), "orders".into()))
        );
        assert_eq!(
            split_table_name("\"My Schema\".\"Or\"\"ders\""),
            Some(("My Schema".into(), "Or\"ders".into()))
        );
        assert_eq!(split_table_name("a.b.c"), None);
        assert_eq!(split_table_name("drop table x;"), None);
        assert_eq!(parse_table_name("\"Order\""), Some((None, "Order".into())));
        assert_eq!(
            parse_table_name(" \"Sales Dept\".\"Order\" "),
            Some((Some("Sales Dept".into()), "Order".into()))
        );
        assert_eq!(parse_table_name("\"Sales Dept\".\"Order"), None);
        assert_eq!(parse_table_name("Sales Dept.Order"), None);
    }
}

/// Mutations of valid texts for the parsers' property tests (here and in `mapping::file`).
#[cfg(test)]
pub(crate) mod mutate {
    use proptest::prelude::*;

    /// One edit of a text, at a position taken modulo its length in characters.
    #[derive(Clone, Debug)]
    pub enum Edit {
        Insert(usize, String),
        Delete(usize, usize),
        Replace(usize, String),
        Truncate(usize),
    }

    /// Characters and fragments that matter to TOML and to connection strings.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<char>().prop_map(String::from),
            prop::sample::select(vec![
                "=", "\"", "'", "\n", "[", "]", "{", "}", "${", "$", "@", ":", "/", "?", "&", " ", "\\", "%", "#", ",",
                ".", "\"\"\"", "[[", "-", "0", "\t", "\r\n", "\u{0}", "é", "日本",
            ])
            .prop_map(String::from),
            "[a-z_]{1,8}",
        ]
    }

    pub fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            3 => (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Insert(at, s)),
            3 => (any::<usize>(), 1..4usize).prop_map(|(at, n)| Edit::Delete(at, n)),
            3 => (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Replace(at, s)),
            1 => any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    /// `text` after `edits`, in order.
    pub fn apply(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for edit in edits {
            let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
            match edit {
                Edit::Insert(at, s) => {
                    let at = pos(*at, chars.len() + 1);
                    chars.splice(at..at, s.chars());
                }
                Edit::Delete(at, n) => {
                    let at = pos(*at, chars.len());
                    let end = (at + n).min(chars.len());
                    chars.drain(at..end);
                }
                Edit::Replace(at, s) => {
                    if !chars.is_empty() {
                        let at = pos(*at, chars.len());
                        chars.splice(at..at + 1, s.chars());
                    }
                }
                Edit::Truncate(at) => chars.truncate(pos(*at, chars.len() + 1)),
            }
        }
        chars.into_iter().collect()
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::tls::{split_dsn, DsnTls};

    const FILE: &str = "/etc/pgbridge/pgbridge.toml";
    const PASSWORD: &str = "s3cr3t-pw";

    /// Valid configurations with a password in their DSNs: in a URL, quoted in key=value form,
    /// percent-encoded, and from `${GREEN_PASSWORD}`.
    const VALID: [&str; 3] = [
        r#"[green]
dsn = "postgres://bridge:s3cr3t-pw@green-host:5432/app?sslmode=prefer&application_name=pgbridge"
publication = "pgbridge"
slot = "pgbridge_to_blue"

[blue]
dsn = "host=blue-host port=5433 user=bridge password=s3cr3t-pw dbname=app sslmode=disable"
schema = "pgbridge"

[mapping]
dir = "mappings"
implicit = true
strict = true
exclude = ["public.audit", "\"Odd Schema\".\"T\""]

[apply]
max_batch_rows = 10000
max_batch_delay = "20ms"
on_error = "dead_letter"

[metrics]
listen = "127.0.0.1:9187"

[sequences]
"public.orders_id_seq" = "public.purchases_id_seq"
"#,
        r#"[green]
dsn = "host=green-host user=bridge password='s3cr3t-pw' dbname=app sslmode=require"
[blue]
dsn = "postgres://bridge:${GREEN_PASSWORD}@blue-host/app"
"#,
        "[blue]\ndsn = 'postgresql://bridge:s3cr3t%2Dpw@[::1]:5433/app'\n\
         [green]\ndsn = \"\"\"\nhost=green-host password=s3cr3t-pw\"\"\"\n",
    ];

    /// Connection strings with the password before TLS parameters, after them, and quoted: the
    /// text before the password, the password with its key, the text after.
    const DSNS: [(&str, &str, &str); 3] = [
        (
            "postgres://bridge",
            ":s3cr3t-pw@",
            "green-host:5432/app?sslmode=require&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        ),
        (
            "sslmode=require sslrootcert=/etc/ca.pem ",
            "password=s3cr3t-pw",
            " host=h user=bridge dbname=app",
        ),
        (
            "host=h user=bridge ",
            "password='s3cr3t-pw'",
            " dbname=app connect_timeout=5 sslmode=prefer",
        ),
    ];

    /// Edits that matter to a connection string: its punctuation, and deletions.
    fn dsn_edit() -> impl Strategy<Value = mutate::Edit> {
        let fragment = prop::sample::select(vec![
            "'", "\"", " ", "=", "&", "?", "@", ":", "/", "%", "\\", "${", "}", "#", ",", "[", "]",
        ]);
        prop_oneof![
            (any::<usize>(), fragment.clone()).prop_map(|(at, s)| mutate::Edit::Insert(at, s.to_string())),
            (any::<usize>(), 1..8usize).prop_map(|(at, n)| mutate::Edit::Delete(at, n)),
            (any::<usize>(), fragment).prop_map(|(at, s)| mutate::Edit::Replace(at, s.to_string())),
        ]
    }

    /// `value` as a TOML basic string, so that it reaches the DSN parser unchanged.
    fn toml_string(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new(FILE), &|name| {
            (name == "GREEN_PASSWORD").then(|| PASSWORD.to_string())
        })
    }

    /// An error names the file, is one line, and holds no part of the password.
    fn check_error(err: &Error, file: &str) -> std::result::Result<(), TestCaseError> {
        let msg = err.to_string();
        prop_assert!(!msg.trim().is_empty());
        prop_assert!(msg.contains(file), "the error does not name {}: {}", file, msg);
        prop_assert!(!msg.contains('\n'), "the error spans several lines: {}", msg);
        prop_assert!(!msg.contains("s3cr3t"), "the error shows the password: {}", msg);
        Ok(())
    }

    /// A configuration that parsed never shows the password when printed.
    fn check_config(config: &Config) -> std::result::Result<(), TestCaseError> {
        for endpoint in [&config.green, &config.blue] {
            let visible = format!("{:?} {}", endpoint.pg.get_user(), endpoint.dbname());
            let hosts = format!("{:?}", endpoint.pg.get_hosts());
            // A mutation can turn the password into a user, database or host name, which are shown.
            if !visible.contains("s3cr3t") && !hosts.contains("s3cr3t") {
                prop_assert!(!endpoint.describe().contains("s3cr3t"));
            }
        }
        let shown = format!("{config:?}");
        let named = [&config.green, &config.blue]
            .iter()
            .any(|e| format!("{} {:?}", e.describe(), e.pg.get_options()).contains("s3cr3t"));
        if !named {
            prop_assert!(!shown.contains("s3cr3t"), "{}", shown);
        }
        Ok(())
    }

    /// What is left after taking the TLS parameters out has none.
    fn split_twice(dsn: &str) -> std::result::Result<(), TestCaseError> {
        let (rest, _) = split_dsn(dsn);
        prop_assert_eq!(split_dsn(&rest).1, DsnTls::default(), "{:?} left {:?}", dsn, rest);
        Ok(())
    }

    #[test]
    fn valid_texts_parse_and_carry_the_password() {
        for text in VALID {
            let config = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(config.green.pg.get_password(), Some(PASSWORD.as_bytes()), "{text}");
            assert_eq!(config.blue.pg.get_password(), Some(PASSWORD.as_bytes()), "{text}");
            assert!(!format!("{config:?}").contains("s3cr3t"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_refused_cleanly(text in any::<String>()) {
            match parse(&text) {
                Ok(config) => check_config(&config)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        #[test]
        fn arbitrary_text_around_a_valid_config_is_refused_cleanly(
            base in 0..VALID.len(),
            before in ".{0,16}",
            after in ".{0,16}",
        ) {
            let text = format!("{before}{}{after}", VALID[base]);
            match parse(&text) {
                Ok(config) => check_config(&config)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        #[test]
        fn arbitrary_bytes_in_the_file_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pgbridge.toml");
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = Config::load(&path) {
                check_error(&e, &path.display().to_string())?;
            }
        }

        #[test]
        fn mutated_configs_never_show_the_password(
            base in 0..VALID.len(),
            edits in prop::collection::vec(mutate::edit(), 1..4),
        ) {
            let text = mutate::apply(VALID[base], &edits);
            match parse(&text) {
                Ok(config) => check_config(&config)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        #[test]
        fn split_dsn_takes_out_every_tls_parameter_of_arbitrary_text(dsn in any::<String>()) {
            split_twice(&dsn)?;
        }

        #[test]
        fn split_dsn_takes_out_every_tls_parameter_of_mutated_dsns(
            base in prop::sample::select(vec![
                "postgres://bridge:s3cr3t-pw@green-host:5432/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
                "host=h user=bridge password='s3\\'cr3t pw' sslmode = require sslrootcert='/x y/ca.pem' dbname=d",
            ]),
            edits in prop::collection::vec(mutate::edit(), 1..4),
        ) {
            split_twice(&mutate::apply(base, &edits))?;
        }

        /// key=value form: every value quoted, with arbitrary characters.
        #[test]
        fn split_dsn_keeps_quoted_values_apart(
            password in ".{0,12}",
            user in ".{0,8}",
            sslmode in ".{0,10}",
            sslrootcert in ".{0,10}",
            tls_first: bool,
        ) {
            let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
            let plain = format!("user={} password={}", quote(&user), quote(&password));
            let tls = format!("sslmode={} sslrootcert={}", quote(&sslmode), quote(&sslrootcert));
            let dsn = if tls_first { format!("{tls} {plain} host=h") } else { format!("host=h {plain} {tls}") };
            let (rest, found) = split_dsn(&dsn);
            prop_assert_eq!(found.sslmode.as_deref(), Some(sslmode.as_str()));
            prop_assert_eq!(found.sslrootcert.as_deref(), Some(sslrootcert.as_str()));
            let pg: tokio_postgres::Config = rest.parse().map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
            prop_assert_eq!(pg.get_password(), Some(password.as_bytes()));
            prop_assert_eq!(pg.get_user(), Some(user.as_str()));
        }

        /// URL form: every value percent-encoded.
        #[test]
        fn split_dsn_decodes_url_parameters(
            password in ".{1,12}",
            sslmode in ".{0,10}",
            sslrootcert in ".{0,10}",
            tls_first: bool,
        ) {
            let encode = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            let tls = format!("sslmode={}&sslrootcert={}", encode(&sslmode), encode(&sslrootcert));
            let query = if tls_first {
                format!("{tls}&application_name=x")
            } else {
                format!("application_name=x&{tls}")
            };
            let dsn = format!("postgres://bridge:{}@h:5432/db?{query}", encode(&password));
            let (rest, found) = split_dsn(&dsn);
            let expected = format!("postgres://bridge:{}@h:5432/db?application_name=x", encode(&password));
            prop_assert_eq!(rest.as_str(), expected);
            prop_assert_eq!(found.sslmode.as_deref(), Some(sslmode.as_str()));
            prop_assert_eq!(found.sslrootcert.as_deref(), Some(sslrootcert.as_str()));
            let pg: tokio_postgres::Config = rest.parse().map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
            prop_assert_eq!(pg.get_password(), Some(password.as_bytes()));
        }
    }

    proptest! {
        // The most pointed target: more cases, each cheap.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Edits around the password (never inside it: an edit can make it part of another
        /// value, a file name for instance, which is then rightly shown).
        #[test]
        fn mutated_dsns_never_show_the_password(
            (before, password, after) in prop::sample::select(DSNS.to_vec()),
            edits_before in prop::collection::vec(dsn_edit(), 0..3),
            edits_after in prop::collection::vec(dsn_edit(), 0..3),
            green: bool,
        ) {
            let dsn = format!(
                "{}{password}{}",
                mutate::apply(before, &edits_before),
                mutate::apply(after, &edits_after)
            );
            let dsn = toml_string(&dsn);
            let text = if green {
                format!("[green]\ndsn = {dsn}\n[blue]\ndsn = \"host=b\"\n")
            } else {
                format!("[green]\ndsn = \"host=g\"\n[blue]\ndsn = {dsn}\n")
            };
            match parse(&text) {
                Ok(config) => check_config(&config)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }
    }
}
