//! One evaluation environment (DESIGN.md rule 10, CORRECTNESS.md "Semantics" 18).
//!
//! Blue computes every mapped value, and what it computes depends on session settings:
//! `TimeZone` turns a green `timestamptz` into a blue `timestamp` or `date`, `DateStyle` and
//! `IntervalStyle` decide how text is read and printed, `extra_float_digits` how floats print,
//! `search_path` which function an unqualified name in an expression means, and so on. A row
//! copied by `setup --copy` and the same row streamed by `run` are only identical when both
//! were computed under the same settings, so every blue session that evaluates a mapping (the
//! apply session and its lanes, `setup --copy`, `verify`, `check` and `run`'s start-up
//! validation, which prepare the statements) gets them from [`Environment::apply`], and nowhere
//! else sets any of them.
//!
//! The settings are of two kinds:
//!
//! * **Fixed formats** ([`FIXED`]): PostgreSQL's defaults for how values are read and printed
//!   (ISO dates with month-day order, `postgres` intervals, shortest-exact floats, hex bytea,
//!   standard-conforming strings, money in the C locale, ...), whatever blue's server or role
//!   says, so that text means the same in every session.
//! * **Blue's defaults** ([`FROM_BLUE`]): what blue's own applications see for the bridge's
//!   role and database: `search_path`, the text search configuration, `lc_time`, `lc_numeric`,
//!   time zone abbreviations, and `TimeZone` unless `[blue] timezone` names one. They are read
//!   once per command (`pg_settings.reset_val`, i.e. server, database and role settings and the
//!   DSN's options), then set verbatim on every session of that command: a default changed on
//!   blue while a command runs does not split it in two. Change such a default with the bridge
//!   stopped, or pin the zone with `[blue] timezone`.
//!
//! Green's side only prints values: green's SQL sessions that COPY rows out for the copy and
//! `verify`, and the replication connection (pgoutput prints with the walsender's settings),
//! use [`GREEN_PRINT`], formats blue parses back exactly. `timestamptz` is printed with its UTC
//! offset, so green's zone does not matter.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{Error, Result};

/// Settings with one value everywhere: how values are read and printed.
pub const FIXED: [(&str, &str); 11] = [
    // ISO output; the month-day order only matters for ambiguous input like '01/02/2024'.
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    // Shortest text that reads back to the same float (PostgreSQL 12+).
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    // Backslashes in a mapping's string literals are ordinary characters.
    ("standard_conforming_strings", "on"),
    // money reads and prints the same on both sides (green prints it in the C locale too).
    ("lc_monetary", "C"),
    ("xmloption", "content"),
    ("xmlbinary", "base64"),
    ("array_nulls", "on"),
    ("transform_null_equals", "off"),
    // quote_ident(), format('%I') and format_type() quote only where SQL needs it.
    ("quote_all_identifiers", "off"),
];

/// Settings taken from blue's defaults for the bridge's role and database (`TimeZone` also
/// from `[blue] timezone`).
pub const FROM_BLUE: [&str; 6] = [
    "TimeZone",
    "search_path",
    "default_text_search_config",
    "lc_time",
    "lc_numeric",
    "timezone_abbreviations",
];

/// What green's sessions print values with (also the replication connection's startup
/// options): formats blue parses back exactly under [`FIXED`].
pub const GREEN_PRINT: [(&str, &str); 6] = [
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("TimeZone", "UTC"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
];

/// `-c name=value ...` for a connection's `options` startup parameter.
pub fn green_startup_options() -> String {
    let options: Vec<String> = GREEN_PRINT.iter().map(|(n, v)| format!("-c {n}={v}")).collect();
    options.join(" ")
}

/// `SET name = 'value'; ...` for a green SQL session.
pub fn green_set_sql() -> String {
    let sets: Vec<String> = GREEN_PRINT
        .iter()
        .map(|(n, v)| format!("SET {n} = {}", crate::sql::literal(v)))
        .collect();
    sets.join("; ")
}

/// The settings every blue session that evaluates a mapping runs with, resolved for one
/// command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    settings: Vec<(String, String)>,
}

impl Environment {
    /// Reads blue's defaults on `blue`, checks `[blue] timezone` against blue's zones, and
    /// applies the result to `blue`.
    pub async fn setup(blue: &Client, config: &Config) -> Result<Environment> {
        let env = Environment::resolve(blue, config).await?;
        env.apply(blue).await?;
        Ok(env)
    }

    /// Blue's defaults for this role and database, with `[blue] timezone` when set; an error
    /// naming the key when blue does not know that zone.
    pub async fn resolve(blue: &Client, config: &Config) -> Result<Environment> {
        let env = Environment::blue_defaults(blue).await?;
        match &config.blue_timezone {
            None => Ok(env),
            Some(zone) => {
                check_zone(blue, config, zone).await?;
                Ok(env.with("TimeZone", zone))
            }
        }
    }

    /// Blue's defaults alone, `TimeZone` included (ignoring `[blue] timezone`).
    pub async fn blue_defaults(blue: &Client) -> Result<Environment> {
        let names: Vec<String> = FROM_BLUE.iter().map(|n| n.to_lowercase()).collect();
        let rows = blue
            .query(
                "SELECT lower(name), reset_val FROM pg_settings WHERE lower(name) = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| Error::postgres("reading blue's default session settings", &e))?;
        let mut settings: Vec<(String, String)> = FIXED.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        for name in FROM_BLUE {
            // A setting this server does not have is left alone.
            if let Some(row) = rows.iter().find(|r| r.get::<_, String>(0) == name.to_lowercase()) {
                settings.push((name.to_string(), row.get(1)));
            }
        }
        Ok(Environment { settings })
    }

    fn with(mut self, name: &str, value: &str) -> Environment {
        match self.settings.iter_mut().find(|(n, _)| n == name) {
            Some(setting) => setting.1 = value.to_string(),
            None => self.settings.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// The value of setting `name` (as spelled in [`FIXED`] and [`FROM_BLUE`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Sets every setting on `client` (for the session, in one round trip).
    pub async fn apply(&self, client: &Client) -> Result<()> {
        let (names, values): (Vec<&str>, Vec<&str>) =
            self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())).unzip();
        client
            .execute(
                "SELECT set_config(s.name, s.value, false) FROM unnest($1::text[], $2::text[]) AS s(name, value)",
                &[&names, &values],
            )
            .await
            .map(|_| ())
            .map_err(|e| Error::postgres("setting the evaluation environment on blue", &e))
    }

    /// One line for logs and reports: `TimeZone=... search_path=...`.
    pub fn describe(&self) -> String {
        FROM_BLUE
            .iter()
            .filter_map(|n| self.get(n).map(|v| format!("{n}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Whether blue accepts `zone` as a TimeZone; else an error naming `blue.timezone`.
async fn check_zone(blue: &Client, config: &Config, zone: &str) -> Result<()> {
    // Local to a transaction of its own, so the session keeps its zone either way.
    let result = blue
        .query_one("SELECT set_config('TimeZone', $1, true) IS NOT NULL", &[&zone])
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            Err(Error::definite(format!(
                "{}: blue.timezone = {zone:?} is not a time zone blue knows; use a name from blue's \
                 pg_timezone_names (e.g. \"UTC\" or \"Europe/Berlin\"), or remove the key to use blue's default",
                config.path.display()
            )))
        }
        Err(e) => Err(Error::postgres("checking blue.timezone on blue", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn green_prints_what_blue_reads() {
        assert_eq!(
            green_startup_options(),
            "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC \
             -c bytea_output=hex -c lc_monetary=C"
        );
        assert!(green_set_sql().starts_with("SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres';"));
        // The formats green prints in are the ones blue reads in.
        for (name, value) in GREEN_PRINT {
            if let Some((_, fixed)) = FIXED.iter().find(|(n, _)| *n == name) {
                assert!(
                    fixed.starts_with(value),
                    "{name}: green prints {value}, blue reads {fixed}"
                );
            }
        }
    }

    #[test]
    fn the_zone_can_be_overridden() {
        let env = Environment {
            settings: vec![
                ("DateStyle".into(), "ISO, MDY".into()),
                ("TimeZone".into(), "UTC".into()),
            ],
        }
        .with("TimeZone", "Pacific/Kiritimati");
        assert_eq!(env.get("TimeZone"), Some("Pacific/Kiritimati"));
        assert_eq!(env.describe(), "TimeZone=Pacific/Kiritimati");
    }
}
