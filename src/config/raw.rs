//! The configuration file exactly as written: serde structs that mirror `pgbridge.toml` key
//! for key, with the documented defaults. Unknown keys are errors, so a typo never silently
//! falls back to a default; nothing here is validated (see [`super::Config::parse`]).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// The source database whose changes are streamed (required; optional here so that its
    /// absence gets a message of our own).
    pub(super) green: Option<RawGreen>,
    /// The target database (required).
    pub(super) blue: Option<RawBlue>,
    /// How green tables map to blue tables.
    #[serde(default)]
    pub(super) mapping: RawMapping,
    /// Batching and error policy of the apply side.
    #[serde(default)]
    pub(super) apply: RawApply,
    /// The HTTP endpoint for Prometheus and health checks.
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    /// Green sequence -> blue sequence, where the names differ (`sync-sequences`).
    #[serde(default)]
    pub(super) sequences: BTreeMap<String, String>,
    /// Limits of rollback readiness (`pgbridge ready` and the bridge's own evaluation).
    #[serde(default)]
    pub(super) ready: RawReady,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGreen {
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment (required).
    pub(super) dsn: Option<String>,
    /// Publication whose tables are streamed.
    #[serde(default = "default_publication")]
    pub(super) publication: String,
    /// Logical replication slot that holds green's WAL for us.
    #[serde(default = "default_slot")]
    pub(super) slot: String,
    /// `none`: skip transactions that were applied under a replication origin (another
    /// pgbridge's or a subscription's), so two bridges in opposite directions do not echo;
    /// `any`: carry them too.
    #[serde(default = "default_origin_filter")]
    pub(super) origin: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlue {
    /// libpq-style URL or key=value string; `${VAR}` is expanded from the environment (required).
    pub(super) dsn: Option<String>,
    /// Schema on blue holding pgbridge's own tables (checkpoint, dead letters).
    #[serde(default = "default_schema")]
    pub(super) schema: String,
    /// The TimeZone mapping expressions are evaluated in on blue (a `timestamptz` stored into
    /// a `timestamp` or `date` column, `at::date`, ...), by every path alike; default: blue's
    /// own default for the bridge's role and database, the zone blue's applications see.
    pub(super) timezone: Option<String>,
    /// Blue's physical standbys that must have flushed a blue commit before the green position
    /// it carries is confirmed: `"all"` or a list of `application_name`s (validated in
    /// [`super::Config::parse`], hence a raw value here).
    pub(super) standbys: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    /// Directory of mapping files, relative to the configuration file.
    #[serde(default = "default_mapping_dir")]
    pub(super) dir: String,
    /// Map a same-named blue table column by column when it has no mapping file.
    #[serde(default = "default_true")]
    pub(super) implicit: bool,
    /// Every published green column must be used or ignored.
    #[serde(default = "default_true")]
    pub(super) strict: bool,
    /// Green tables (`schema.table`) deliberately not replicated.
    #[serde(default)]
    pub(super) exclude: Vec<String>,
    /// How often `run` compares green's and blue's catalogs with the accepted plan (a
    /// duration, e.g. "5s"): what Relation messages cannot show (a table that left the
    /// publication, was re-created or gained partitions) is found this way.
    #[serde(default = "default_schema_check_interval")]
    pub(super) schema_check_interval: String,
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
pub(super) struct RawApply {
    /// Most rows in one blue transaction before it is committed.
    #[serde(default = "default_batch_rows")]
    pub(super) max_batch_rows: u64,
    /// Longest time one blue transaction collects green transactions.
    #[serde(default = "default_batch_delay")]
    pub(super) max_batch_delay: String,
    /// `stop` or `dead_letter`.
    #[serde(default = "default_on_error")]
    pub(super) on_error: String,
    /// Replication origin blue's commits are tagged with (default `pgbridge_<slot>`); `""`
    /// applies untagged.
    pub(super) origin: Option<String>,
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
pub(super) struct RawMetrics {
    /// Address of the HTTP listener for /metrics, /healthz, /readyz and /status.
    #[serde(default = "default_listen")]
    pub(super) listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReady {
    /// Most bytes of green's WAL blue's checkpoint may be behind (`--max-bytes` overrides it).
    #[serde(default = "default_ready_max_bytes")]
    pub(super) max_bytes: u64,
    /// Oldest age, in seconds, of a green transaction blue lacks (`--max-seconds` overrides it).
    #[serde(default = "default_ready_max_seconds")]
    pub(super) max_seconds: f64,
    /// Most WAL green may retain for the slot, in bytes.
    #[serde(default = "default_ready_max_retained_bytes")]
    pub(super) max_retained_bytes: u64,
    /// Longest time blue's checkpoint may stand still, while green's WAL is ahead of it, before
    /// the bridge counts as stuck (a duration, e.g. "60s").
    #[serde(default = "default_ready_max_stall")]
    pub(super) max_stall: String,
}

impl Default for RawReady {
    fn default() -> Self {
        RawReady {
            max_bytes: default_ready_max_bytes(),
            max_seconds: default_ready_max_seconds(),
            max_retained_bytes: default_ready_max_retained_bytes(),
            max_stall: default_ready_max_stall(),
        }
    }
}

fn default_ready_max_bytes() -> u64 {
    64 << 20
}
fn default_ready_max_seconds() -> f64 {
    10.0
}
fn default_ready_max_retained_bytes() -> u64 {
    1 << 30
}
fn default_ready_max_stall() -> String {
    "60s".into()
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
