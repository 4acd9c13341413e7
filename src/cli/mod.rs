//! Command-line interface: one file per command. Exit codes follow DESIGN.md: 0 success,
//! 1 "checked and found wanting" (lag over limit, differences), 2 could not do the job.

mod check;
mod draft;
mod lag;
mod ready;
mod run;
mod sequences;
mod setup;
mod status;
mod switchover;
mod teardown;
mod verify;
mod wait;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_PATH};
use crate::error::Result;

#[derive(Parser, Debug)]
#[command(
    name = "pgbridge",
    version,
    about = "Keep blue current with a migrated green PostgreSQL database, for safe rollbacks"
)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, env = "PGBRIDGE_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the publication and slot on green and the checkpoint on blue (idempotent).
    Setup {
        /// Also copy green's existing rows into blue through the mapping, from the new slot's
        /// snapshot (recreates the slot; blue converges to green).
        #[arg(long)]
        copy: bool,
        /// Parts copied at once, each over its own pair of connections (tables, or block
        /// ranges of an empty blue table); raise it when both servers have cores to spare.
        #[arg(long, default_value_t = 2, value_name = "N")]
        jobs: usize,
    },
    /// Validate the configuration and every mapping against both live catalogs; print the plan
    /// and what a rollback would lose.
    #[command(group(clap::ArgGroup::new("rows").args(["data", "roundtrip"]).multiple(true)))]
    Check {
        /// Also print the SQL statements each table uses.
        #[arg(long)]
        sql: bool,
        /// Also pass green's rows through the mappings on blue (temporary tables, rolled
        /// back) and list every row blue would refuse, with its key and why; exit 1 if any.
        #[arg(long)]
        data: bool,
        /// Also take blue's rows through the reverse bridge's mappings (--reverse) on green
        /// and back through these on blue, and list every row and column that does not come
        /// back equal; exit 1 if any.
        #[arg(long, requires = "reverse")]
        roundtrip: bool,
        /// Configuration of the bridge in the other direction, for --roundtrip.
        #[arg(long, value_name = "PATH", requires = "roundtrip")]
        reverse: Option<PathBuf>,
        /// With --data or --roundtrip: at most N rows per table (a repeatable Bernoulli sample).
        #[arg(long, value_name = "N", requires = "rows", value_parser = clap::value_parser!(u64).range(1..))]
        sample: Option<u64>,
        /// With --data or --roundtrip: rows shown per column (or constraint, or kind of
        /// difference) and table; the rest are counted.
        #[arg(long, default_value_t = 5, value_name = "N")]
        examples: u64,
    },
    /// Stream green's changes to blue until SIGINT/SIGTERM.
    Run,
    /// Lag of blue behind green, read from the databases: the gate for cutover scripts.
    Lag {
        /// Exit 1 when more than this many bytes of green's WAL are not applied on blue.
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        /// Exit 1 when the oldest transaction blue lacks is older than this many seconds.
        #[arg(long, value_name = "S", value_parser = ready::parse_max_seconds)]
        max_seconds: Option<f64>,
        /// Print JSON instead of one key=value line.
        #[arg(long)]
        json: bool,
    },
    /// Write a marker on green and wait until blue has applied it.
    Wait {
        /// Give up after this long (e.g. 30s, 2m); exit 1.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Compare green, passed through the mapping, with blue: rows missing, extra or different.
    Verify {
        /// Only this table (green or blue name, schema.table or table).
        #[arg(long, value_name = "T")]
        table: Option<String>,
        /// Print JSON instead of a line per table.
        #[arg(long)]
        json: bool,
        /// Example keys shown per kind of difference.
        #[arg(long, default_value_t = 5, value_name = "N")]
        examples: usize,
        /// Compare every table row by row, without key-range checksums first.
        #[arg(long)]
        full: bool,
    },
    /// Move every blue sequence to at least green's value, so inserts on blue after a rollback
    /// do not collide (idempotent; prints what it changed).
    SyncSequences {
        /// Add this much headroom beyond green's last value.
        #[arg(long, default_value_t = 0, value_name = "N")]
        margin: i64,
    },
    /// Show positions, lag and state.
    Status {
        /// Print JSON instead of aligned text.
        #[arg(long)]
        json: bool,
    },
    /// Whether a rollback to blue now would lose nothing, condition by condition: exit 0 ready,
    /// 1 not ready, 2 cannot tell.
    Ready {
        /// Most bytes of green's WAL blue may be behind (default: [ready] max_bytes).
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        /// Oldest age in seconds of a green transaction blue may lack (default: [ready]
        /// max_seconds).
        #[arg(long, value_name = "S", value_parser = ready::parse_max_seconds)]
        max_seconds: Option<f64>,
        /// Count only dead letters parked since this time: RFC 3339 (2024-05-01T12:00:00Z) or a
        /// duration before now (24h). Default: every row counts.
        #[arg(long, value_name = "TIME", value_parser = ready::parse_since)]
        since: Option<std::time::SystemTime>,
        /// Also check the configuration of the bridge in the other direction, as `switchover
        /// --reverse` needs it.
        #[arg(long, value_name = "PATH")]
        reverse: Option<PathBuf>,
        /// Print JSON instead of a line per condition.
        #[arg(long)]
        json: bool,
    },
    /// Drop the slot and publication on green and the checkpoint row on blue.
    Teardown,
    /// Move the application's writes from this bridge's source ([green]) to its target
    /// ([blue]): fence the roles there, wait until the target has everything, sync sequences,
    /// set up the bridge for the new direction and un-fence the roles on the target. Undoes
    /// every step if one fails.
    Switchover {
        /// Configuration of the bridge for the new direction (from this bridge's target back
        /// to its source); set up if it is not.
        #[arg(long, value_name = "PATH")]
        reverse: PathBuf,
        /// An application role whose writes move (repeat for each).
        #[arg(long = "app-role", value_name = "ROLE", required = true)]
        app_roles: Vec<String>,
        /// Undo and give up when fencing or catching up takes longer than this.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Headroom for the target's sequences beyond the source's last values.
        #[arg(long, default_value_t = 0, value_name = "N")]
        sequence_margin: i64,
    },
    /// Write mapping files for review from both live catalogs: renames and casts proposed
    /// (guesses marked), what only a person can decide marked so that `check` fails until
    /// then. Exit 0 written, 1 decisions left, 2 error.
    Draft {
        /// Draft the mappings of a bridge from blue back to green, by inverting [mapping] dir;
        /// needs --out.
        #[arg(long)]
        reverse: bool,
        /// Directory to write to (default: [mapping] dir; required with --reverse, so the two
        /// directions never share a directory).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Overwrite files of the same name; without it, nothing is written when one exists.
        #[arg(long)]
        force: bool,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let config = Arc::new(Config::load(&cli.config)?);
    match cli.command {
        Command::Setup { copy, jobs } => setup::run(&config, copy, jobs).await,
        Command::Check {
            sql,
            data,
            roundtrip: _,
            reverse,
            sample,
            examples,
        } => {
            let options = check::Options {
                sql,
                data,
                roundtrip: reverse,
                sample,
                examples,
            };
            check::run(&config, &options).await
        }
        Command::Run => run::run(config).await,
        Command::Lag {
            max_bytes,
            max_seconds,
            json,
        } => lag::run(&config, max_bytes, max_seconds, json).await,
        Command::Wait { timeout } => wait::run(&config, timeout).await,
        Command::Verify {
            table,
            json,
            examples,
            full,
        } => verify::run(&config, table, json, examples, full).await,
        Command::SyncSequences { margin } => sequences::run(&config, margin).await,
        Command::Status { json } => status::run(&config, json).await,
        Command::Ready {
            max_bytes,
            max_seconds,
            since,
            reverse,
            json,
        } => {
            let options = crate::ops::ready::Options {
                max_bytes,
                max_seconds,
                since,
                reverse,
            };
            ready::run(&config, &options, json).await
        }
        Command::Teardown => teardown::run(&config).await,
        Command::Switchover {
            reverse,
            app_roles,
            timeout,
            sequence_margin,
        } => {
            let options = switchover::Options {
                reverse,
                app_roles,
                timeout,
                sequence_margin,
            };
            switchover::run(&config, &options).await
        }
        Command::Draft { reverse, out, force } => {
            draft::run(&config, &crate::ops::draft::Options { reverse, out, force }).await
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
