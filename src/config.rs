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
    /// The source database whose changes are streamed.
    green: RawGreen,
    /// The target database.
    blue: RawBlue,
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
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment.
    dsn: String,
    /// Publication whose tables are streamed.
    #[serde(default = "default_publication")]
    publication: String,
    /// Logical replication slot that holds green's WAL for us.
    #[serde(default = "default_slot")]
    slot: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlue {
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment.
    dsn: String,
    /// Schema on blue holding pgbridge's own tables (checkpoint, dead letters).
    #[serde(default = "default_schema")]
    schema: String,
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
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            dir: default_mapping_dir(),
            implicit: true,
            strict: true,
            exclude: Vec::new(),
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
}

impl Default for RawApply {
    fn default() -> Self {
        RawApply {
            max_batch_rows: default_batch_rows(),
            max_batch_delay: default_batch_delay(),
            on_error: default_on_error(),
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
fn default_batch_delay() -> String {
    "20ms".into()
}
fn default_on_error() -> String {
    "stop".into()
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
            // tokio-postgres' parse errors never echo the password back.
            Error::definite(format!(
                "{}: {side}.dsn is not a valid connection string: {e}; use a URL like \
                 postgres://user@host:5432/dbname or key=value pairs",
                file.display()
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
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!("{} ({}@{}:{}/{})", self.side, self.user(), host, port, self.dbname())
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
    pub mapping_dir: PathBuf,
    pub implicit: bool,
    pub strict: bool,
    /// Excluded green tables as (schema, table).
    pub exclude: Vec<(String, String)>,
    pub max_batch_rows: u64,
    pub max_batch_delay: Duration,
    pub on_error: OnError,
    pub metrics_listen: String,
    /// Renamed sequences as (green (schema, name), blue (schema, name)).
    pub sequences: Vec<((String, String), (String, String))>,
}

impl Config {
    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::definite(format!(
                "cannot read configuration {}: {e}; pass -c PATH or set PGBRIDGE_CONFIG",
                path.display()
            ))
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let file = path.display();
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let expand = |key: &str, value: &str| {
            expand_env(value, env).map_err(|var| {
                Error::definite(format!(
                    "{file}: {key} uses ${{{var}}} but the environment variable {var} is not set"
                ))
            })
        };

        let green = Endpoint::parse("green", &expand("green.dsn", &raw.green.dsn)?, path)?;
        let blue = Endpoint::parse("blue", &expand("blue.dsn", &raw.blue.dsn)?, path)?;
        let publication = expand("green.publication", &raw.green.publication)?;
        let slot = expand("green.slot", &raw.green.slot)?;
        let schema = expand("blue.schema", &raw.blue.schema)?;
        check_identifier(path, "green.publication", &publication)?;
        check_identifier(path, "blue.schema", &schema)?;
        check_slot_name(path, &slot)?;

        let max_batch_delay = humantime::parse_duration(&raw.apply.max_batch_delay).map_err(|e| {
            Error::definite(format!(
                "{file}: apply.max_batch_delay = {:?} is not a duration ({e}); write e.g. \"20ms\" or \"1s\"",
                raw.apply.max_batch_delay
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
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            path: path.to_path_buf(),
            green,
            publication,
            slot,
            blue,
            schema,
            mapping_dir: base.join(&raw.mapping.dir),
            implicit: raw.mapping.implicit,
            strict: raw.mapping.strict,
            exclude,
            sequences,
            max_batch_rows: raw.apply.max_batch_rows,
            max_batch_delay,
            on_error,
            metrics_listen: raw.metrics.listen,
        })
    }

    pub fn is_excluded(&self, schema: &str, table: &str) -> bool {
        self.exclude.iter().any(|(s, t)| s == schema && t == table)
    }
}

/// A TOML error as one line: `FILE:LINE:COLUMN: message`.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // Name the key of the offending line, never its value: it may be a DSN with a password.
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            let key = source_line
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.len() <= 64);
            match key {
                Some(key) => Error::definite(format!("{}:{line}:{column}: {key}: {message}", path.display())),
                None => Error::definite(format!("{}:{line}:{column}: {message}", path.display())),
            }
        }
        None => Error::definite(format!("{}: {message}", path.display())),
    }
}

/// Splits `schema.table` (or `table`, meaning `public`) into its parts. Quoted names are
/// accepted: `"My Schema"."Orders"`.
pub fn split_table_name(name: &str) -> Option<(String, String)> {
    let parts = split_qualified(name)?;
    match parts.as_slice() {
        [table] => Some(("public".into(), table.clone())),
        [schema, table] => Some((schema.clone(), table.clone())),
        _ => None,
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

/// Replaces `${VAR}` with the variable's value; returns the name of the first unset variable.
fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
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
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
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
    }
}
