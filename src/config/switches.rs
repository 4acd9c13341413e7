//! Switches set in the environment rather than in `pgbridge.toml`: they select reference or
//! test paths (the tests and scripts set them per process), not how a deployment behaves. They
//! are read once, where the configuration is loaded, so that the code below sees typed fields
//! of [`super::Config`] instead of reading the environment itself.
//!
//! Each keeps its meaning of old: a value that is not the one named leaves the default, and is
//! never an error.

/// Rows per chunk `verify` compares when `PGBRIDGE_VERIFY_CHUNK_ROWS` does not say otherwise.
pub const DEFAULT_VERIFY_CHUNK_ROWS: u64 = 50_000;

/// The environment switches, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switches {
    /// Ask green to stream in-progress transactions (protocol version 2 `streaming`).
    /// `PGBRIDGE_STREAMING=off` turns it off: green then sends each transaction whole once it
    /// commits, the path the in-progress tests compare against.
    pub streaming: bool,
    /// Apply runs of rows set-based, many rows per statement. `PGBRIDGE_APPLY=exact` turns it
    /// off: one statement per row in green's order, the reference path.
    pub batching: bool,
    /// Ask green for values in binary (`binary 'true'`) where every published column travels
    /// exactly so (see `mapping::wire`). `PGBRIDGE_BINARY=off` keeps the stream in text, the
    /// path the binary tests compare against.
    pub binary: bool,
    /// Rows per chunk `verify` compares: `PGBRIDGE_VERIFY_CHUNK_ROWS` when it is a whole number
    /// above zero (tests use small chunks), else [`DEFAULT_VERIFY_CHUNK_ROWS`].
    pub verify_chunk_rows: u64,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            streaming: true,
            batching: true,
            binary: true,
            verify_chunk_rows: DEFAULT_VERIFY_CHUNK_ROWS,
        }
    }
}

impl Switches {
    /// The switches as `env` (the process environment, or a test's) sets them.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Switches {
        Switches {
            streaming: env("PGBRIDGE_STREAMING").map_or(true, |v| v != "off"),
            batching: env("PGBRIDGE_APPLY").map_or(true, |v| v != "exact"),
            binary: env("PGBRIDGE_BINARY").map_or(true, |v| v != "off"),
            verify_chunk_rows: env("PGBRIDGE_VERIFY_CHUNK_ROWS")
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_VERIFY_CHUNK_ROWS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switches(vars: &[(&str, &str)]) -> Switches {
        Switches::from_env(&|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn unset_switches_keep_the_defaults() {
        assert_eq!(switches(&[]), Switches::default());
        assert!(Switches::default().streaming && Switches::default().batching && Switches::default().binary);
        assert_eq!(Switches::default().verify_chunk_rows, 50_000);
    }

    #[test]
    fn only_the_named_values_turn_a_switch() {
        assert!(!switches(&[("PGBRIDGE_STREAMING", "off")]).streaming);
        assert!(switches(&[("PGBRIDGE_STREAMING", "OFF")]).streaming);
        assert!(switches(&[("PGBRIDGE_STREAMING", "")]).streaming);
        assert!(!switches(&[("PGBRIDGE_APPLY", "exact")]).batching);
        assert!(switches(&[("PGBRIDGE_APPLY", "batch")]).batching);
        assert!(!switches(&[("PGBRIDGE_BINARY", "off")]).binary);
        assert!(switches(&[("PGBRIDGE_BINARY", "on")]).binary);
    }

    #[test]
    fn verify_chunk_rows_takes_only_positive_whole_numbers() {
        assert_eq!(switches(&[("PGBRIDGE_VERIFY_CHUNK_ROWS", "7")]).verify_chunk_rows, 7);
        for bad in ["0", "-3", "many", "", "7.5"] {
            assert_eq!(
                switches(&[("PGBRIDGE_VERIFY_CHUNK_ROWS", bad)]).verify_chunk_rows,
                DEFAULT_VERIFY_CHUNK_ROWS,
                "{bad:?}"
            );
        }
    }
}
