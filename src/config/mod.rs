//! `pgbridge.toml`, in two steps: raw serde structs that mirror the file exactly (unknown keys
//! are errors, so a typo never silently falls back to a default; see [`raw`]), then a validated
//! [`Config`] with parsed connection strings, durations and identifiers. The environment
//! switches (`PGBRIDGE_STREAMING`, ...) are read at the same moment into [`Switches`], so that
//! nothing below the configuration reads the environment.
//!
//! - [`raw`]: the file as written, with its defaults;
//! - [`endpoint`]: a parsed connection string and its password-free descriptions;
//! - [`names`]: table, sequence, slot, origin and zone names, `${VAR}` expansion;
//! - [`diagnose`]: TOML errors as one line in the file's terms, "did you mean";
//! - [`switches`]: the environment switches.

mod diagnose;
mod endpoint;
mod names;
mod raw;
mod switches;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use names::{check_identifier, check_origin_name, check_slot_name, check_timezone, expand_env};
use raw::{RawApply, RawBlue, RawConfig, RawGreen, RawMapping, RawReady};

pub use diagnose::toml_error;
pub use endpoint::Endpoint;
pub use names::{parse_table_name, split_table_name};
pub use switches::{Switches, DEFAULT_VERIFY_CHUNK_ROWS};

/// A renamed sequence: green's (schema, name), blue's (schema, name).
pub type RenamedSequence = ((String, String), (String, String));

/// Where the configuration comes from when `-c` is not given.
pub const DEFAULT_PATH: &str = "pgbridge.toml";

/// What to do with a row that blue rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Stop,
    DeadLetter,
}

/// `[blue] standbys`: which of blue's physical standbys must have flushed a blue commit before
/// the green position it carries is confirmed to green (rule 11 of the design).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standbys {
    /// Every physical standby connected to blue, and at least one.
    All,
    /// The standbys with these `application_name`s (as in `pg_stat_replication` and
    /// `synchronous_standby_names`), each of them connected.
    Named(Vec<String>),
}

/// `[ready]`: the limits rollback readiness is judged by (`pgbridge ready` takes
/// `--max-bytes` and `--max-seconds` over the first two; `run` has only these).
#[derive(Clone, Debug, PartialEq)]
pub struct ReadyLimits {
    /// Most bytes of green's WAL blue's checkpoint may be behind.
    pub max_bytes: u64,
    /// Oldest age, in seconds, of a green transaction blue lacks.
    pub max_seconds: f64,
    /// Most WAL green may retain for the slot, in bytes.
    pub max_retained_bytes: u64,
    /// Longest time blue's checkpoint may stand still while green's WAL is ahead of it.
    pub max_stall: Duration,
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
    /// `[blue] standbys`: `None` when positions wait only for blue's own durability.
    pub blue_standbys: Option<Standbys>,
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
    pub sequences: Vec<RenamedSequence>,
    /// Skip green transactions that carry a replication origin (`green.origin = "none"`).
    pub skip_origins: bool,
    /// The replication origin blue's commits are tagged with (`apply.origin`); `None` when
    /// tagging is off.
    pub origin: Option<String>,
    /// The environment switches, read when the configuration was loaded.
    pub switches: Switches,
    /// `[ready]`: limits of rollback readiness.
    pub ready: ReadyLimits,
}

impl Config {
    /// Reads and validates the configuration file, and the environment switches.
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

    /// Parses configuration text; `env` resolves `${VAR}` references and the switches.
    ///
    /// The checks run in the order of the file's sections, so that a file with several
    /// mistakes is always refused for the same first one.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| diagnose::toml_error(path, text, &e))?;
        let resolve = Resolve { path, env };
        let sides = resolve.sides(raw.green, raw.blue)?;
        let policy = resolve.policy(&raw.apply, &raw.mapping)?;
        let exclude = resolve.exclude(&raw.mapping.exclude)?;
        let sequences = resolve.sequences(&raw.sequences)?;
        let skip_origins = resolve.skip_origins(&sides.origin_filter)?;
        let origin = resolve.origin(raw.apply.origin, &sides.slot)?;
        let metrics_listen = resolve.listen(raw.metrics.listen)?;
        let ready = resolve.ready(&raw.ready)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            path: path.to_path_buf(),
            green: sides.green,
            publication: sides.publication,
            slot: sides.slot,
            blue: sides.blue,
            schema: sides.schema,
            blue_timezone: sides.blue_timezone,
            blue_standbys: sides.blue_standbys,
            mapping_dir: base.join(&raw.mapping.dir),
            implicit: raw.mapping.implicit,
            strict: raw.mapping.strict,
            schema_check_interval: policy.schema_check_interval,
            exclude,
            sequences,
            max_batch_rows: raw.apply.max_batch_rows,
            max_batch_delay: policy.max_batch_delay,
            on_error: policy.on_error,
            metrics_listen,
            skip_origins,
            origin,
            switches: Switches::from_env(env),
            ready,
        })
    }

    pub fn is_excluded(&self, schema: &str, table: &str) -> bool {
        self.exclude.iter().any(|(s, t)| s == schema && t == table)
    }
}

/// The `[green]` and `[blue]` sections, validated.
struct Sides {
    green: Endpoint,
    publication: String,
    slot: String,
    /// `green.origin` as written; checked after the table lists (see [`Resolve::skip_origins`]).
    origin_filter: String,
    blue: Endpoint,
    schema: String,
    blue_timezone: Option<String>,
    blue_standbys: Option<Standbys>,
}

/// `[apply]`'s durations and policy, and `[mapping]`'s interval.
struct Policy {
    max_batch_delay: Duration,
    schema_check_interval: Duration,
    on_error: OnError,
}

/// Turns the raw sections into validated values; every message names the file.
struct Resolve<'a> {
    path: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolve<'_> {
    fn file(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    /// `value` with its `${VAR}` references expanded; `key` names it in messages.
    fn expand(&self, key: &str, value: &str) -> Result<String> {
        let file = self.file();
        expand_env(value, self.env).map_err(|var| match var {
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
    }

    /// Both databases: the sections and their DSNs must be there, then each is parsed.
    fn sides(&self, green: Option<RawGreen>, blue: Option<RawBlue>) -> Result<Sides> {
        let (file, path) = (self.file(), self.path);
        let example = "dsn = \"postgres://user@host:5432/dbname\"";
        let raw_green = green.ok_or_else(|| {
            Error::definite(format!(
                "{file}: [green] is missing; add a [green] section with {example} (the database whose changes are \
                 streamed)"
            ))
        })?;
        let raw_blue = blue.ok_or_else(|| {
            Error::definite(format!(
                "{file}: [blue] is missing; add a [blue] section with {example} (the database pgbridge writes to)"
            ))
        })?;
        let dsn = |side: &str, dsn: Option<String>| {
            dsn.ok_or_else(|| Error::definite(format!("{file}: {side}.dsn is missing; add {example} under [{side}]")))
        };
        let (green_dsn, blue_dsn) = (dsn("green", raw_green.dsn)?, dsn("blue", raw_blue.dsn)?);

        let green = Endpoint::parse("green", &self.expand("green.dsn", &green_dsn)?, path)?;
        let blue = Endpoint::parse("blue", &self.expand("blue.dsn", &blue_dsn)?, path)?;
        let publication = self.expand("green.publication", &raw_green.publication)?;
        let slot = self.expand("green.slot", &raw_green.slot)?;
        let schema = self.expand("blue.schema", &raw_blue.schema)?;
        check_identifier(path, "green.publication", &publication)?;
        check_identifier(path, "blue.schema", &schema)?;
        check_slot_name(path, &slot)?;
        let blue_timezone = match &raw_blue.timezone {
            Some(zone) => Some(check_timezone(path, &self.expand("blue.timezone", zone)?)?),
            None => None,
        };
        let blue_standbys = match &raw_blue.standbys {
            Some(value) => Some(self.standbys(value)?),
            None => None,
        };
        Ok(Sides {
            green,
            publication,
            slot,
            origin_filter: raw_green.origin,
            blue,
            schema,
            blue_timezone,
            blue_standbys,
        })
    }

    fn policy(&self, apply: &RawApply, mapping: &RawMapping) -> Result<Policy> {
        let file = self.file();
        let max_batch_delay = humantime::parse_duration(&apply.max_batch_delay).map_err(|e| {
            Error::definite(format!(
                "{file}: apply.max_batch_delay = {:?} is not a duration ({e}); write e.g. \"20ms\" or \"1s\"",
                apply.max_batch_delay
            ))
        })?;
        let schema_check_interval = humantime::parse_duration(&mapping.schema_check_interval)
            .ok()
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| {
                Error::definite(format!(
                    "{file}: mapping.schema_check_interval = {:?} is not a duration of at least 100ms; write e.g. \"5s\"",
                    mapping.schema_check_interval
                ))
            })?;
        if apply.max_batch_rows == 0 {
            return Err(Error::definite(format!(
                "{file}: apply.max_batch_rows must be at least 1"
            )));
        }
        let on_error = match apply.on_error.as_str() {
            "stop" => OnError::Stop,
            "dead_letter" => OnError::DeadLetter,
            other => {
                return Err(Error::definite(format!(
                    "{file}: apply.on_error = {other:?} is not one of \"stop\", \"dead_letter\""
                )))
            }
        };
        Ok(Policy {
            max_batch_delay,
            schema_check_interval,
            on_error,
        })
    }

    /// `mapping.exclude` as (schema, table).
    fn exclude(&self, names: &[String]) -> Result<Vec<(String, String)>> {
        let file = self.file();
        names
            .iter()
            .map(|name| {
                split_table_name(name).ok_or_else(|| {
                    Error::definite(format!(
                    "{file}: mapping.exclude entry {name:?} is not a table name; write \"schema.table\" or \"table\""
                ))
                })
            })
            .collect()
    }

    /// `[sequences]` as (green (schema, name), blue (schema, name)).
    fn sequences(&self, renamed: &std::collections::BTreeMap<String, String>) -> Result<Vec<RenamedSequence>> {
        let file = self.file();
        let sequence_name = |name: &str| {
            split_table_name(name).ok_or_else(|| {
                Error::definite(format!(
                    "{file}: [sequences] entry {name:?} is not a sequence name; write \"schema.sequence\" or \"sequence\""
                ))
            })
        };
        renamed
            .iter()
            .map(|(green, blue)| Ok((sequence_name(green)?, sequence_name(blue)?)))
            .collect()
    }

    /// `green.origin`: whether to skip transactions applied under a replication origin.
    fn skip_origins(&self, filter: &str) -> Result<bool> {
        match filter {
            "none" => Ok(true),
            "any" => Ok(false),
            other => Err(Error::definite(format!(
                "{}: green.origin = {other:?} is not one of \"none\" (skip what another bridge or a \
                 subscription applied on green: no echo between two bridges) or \"any\" (carry it too)",
                self.file()
            ))),
        }
    }

    /// `apply.origin`: by default `pgbridge_<slot>`, `""` for none.
    fn origin(&self, written: Option<String>, slot: &str) -> Result<Option<String>> {
        let origin = match written {
            None => Some(format!("pgbridge_{slot}")),
            Some(name) if name.is_empty() => None,
            Some(name) => Some(name),
        };
        if let Some(name) = &origin {
            check_origin_name(self.path, name)?;
        }
        Ok(origin)
    }

    /// `blue.standbys`: `"all"` or a non-empty list of distinct standby names.
    fn standbys(&self, value: &toml::Value) -> Result<Standbys> {
        let file = self.file();
        let refuse = |why: String| {
            Error::definite(format!(
                "{file}: blue.standbys {why}; write standbys = \"all\" (every physical standby connected to blue) or \
                 standbys = [\"name\", ...] (their application_name, as pg_stat_replication shows it), or remove the key"
            ))
        };
        let names = match value {
            toml::Value::String(s) if s == "all" => return Ok(Standbys::All),
            toml::Value::String(s) => return Err(refuse(format!("= {s:?} is not \"all\" nor a list"))),
            toml::Value::Array(items) => items,
            other => return Err(refuse(format!("is a {}, not \"all\" nor a list", other.type_str()))),
        };
        if names.is_empty() {
            return Err(refuse("is an empty list".into()));
        }
        let mut valid: Vec<String> = Vec::new();
        for item in names {
            let Some(name) = item.as_str() else {
                return Err(refuse(format!("has {item} in its list, which is not a string")));
            };
            // PostgreSQL keeps 63 bytes of printable ASCII of an application_name.
            let printable = name.bytes().all(|b| (32..127).contains(&b));
            if name.trim().is_empty() || name.len() > 63 || !printable {
                return Err(refuse(format!(
                    "has {name:?} in its list, which is not an application_name (1 to 63 printable ASCII characters)"
                )));
            }
            if valid.iter().any(|v| v == name) {
                return Err(refuse(format!("names {name:?} twice")));
            }
            valid.push(name.to_owned());
        }
        Ok(Standbys::Named(valid))
    }

    /// `[ready]`: a finite, non-negative `max_seconds` and a duration for `max_stall`.
    fn ready(&self, raw: &RawReady) -> Result<ReadyLimits> {
        let file = self.file();
        if !(raw.max_seconds.is_finite() && raw.max_seconds >= 0.0) {
            return Err(Error::definite(format!(
                "{file}: ready.max_seconds = {} is not a number of seconds of 0 or more; write e.g. 10 or 2.5",
                raw.max_seconds
            )));
        }
        let max_stall = humantime::parse_duration(&raw.max_stall).map_err(|e| {
            Error::definite(format!(
                "{file}: ready.max_stall = {:?} is not a duration ({e}); write e.g. \"60s\" or \"2m\"",
                raw.max_stall
            ))
        })?;
        Ok(ReadyLimits {
            max_bytes: raw.max_bytes,
            max_seconds: raw.max_seconds,
            max_retained_bytes: raw.max_retained_bytes,
            max_stall,
        })
    }

    /// `metrics.listen`: `host:port`.
    fn listen(&self, listen: String) -> Result<String> {
        let valid_listen = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid_listen {
            return Err(Error::definite(format!(
                "{}: metrics.listen = {listen:?} is not an address to listen on; write host:port, e.g. \
                 \"127.0.0.1:9187\" or \"[::]:9187\"",
                self.file()
            )));
        }
        Ok(listen)
    }
}

#[cfg(test)]
pub(crate) mod mutate;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
