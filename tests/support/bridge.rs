//! A green/blue pair of clusters with a pgbridge configuration, and the `pgbridge` binary run
//! against it as a real process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, ClusterOptions};

pub const SLOT: &str = "pgbridge_to_blue";
pub const DB: &str = "postgres";

/// Two clusters, green and blue, plus a working directory holding `pgbridge.toml`.
pub struct Pair {
    pub green: Cluster,
    pub blue: Cluster,
    pub dir: tempfile::TempDir,
    /// Where `pgbridge run` serves /metrics, /healthz, /readyz and /status.
    pub metrics_port: u16,
}

impl Pair {
    /// Starts green and blue concurrently and writes a default configuration.
    pub fn start() -> Pair {
        Pair::start_with(ClusterOptions::default(), ClusterOptions::default())
    }

    pub fn start_with(green: ClusterOptions, blue: ClusterOptions) -> Pair {
        let g = std::thread::spawn(move || Cluster::start(green));
        let blue = Cluster::start(blue);
        let green = g.join().expect("green cluster failed to start");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let pair = Pair {
            green,
            blue,
            dir: tempfile::tempdir().expect("temp dir"),
            metrics_port,
        };
        pair.write_config("");
        pair
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgbridge.toml")
    }

    /// Writes `pgbridge.toml` with both DSNs, then `extra` (whole sections).
    pub fn write_config(&self, extra: &str) {
        self.write_config_with(&self.green.dsn(DB), &self.blue.dsn(DB), extra);
    }

    pub fn write_config_with(&self, green_dsn: &str, blue_dsn: &str, extra: &str) {
        // Each bridge serves its metrics on a port of its own, so tests can run side by side.
        let text = format!(
            "[green]\ndsn = \"{green_dsn}\"\npublication = \"pgbridge\"\nslot = \"{SLOT}\"\n\n\
             [blue]\ndsn = \"{blue_dsn}\"\nschema = \"pgbridge\"\n\n{extra}\n\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n",
            self.metrics_port
        );
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Adds `key = value` (TOML) to the `[green]` section of `pgbridge.toml`.
    pub fn set_green_option(&self, key: &str, value: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        let slot_line = format!("slot = \"{SLOT}\"\n");
        assert!(text.contains(&slot_line), "config without the slot line:\n{text}");
        let text = text.replacen(&slot_line, &format!("{slot_line}{key} = {value}\n"), 1);
        std::fs::write(path, text).expect("write config");
    }

    /// Runs the same SQL on green and blue.
    pub fn both(&self, sql: &str) {
        self.green.psql(DB, sql);
        self.blue.psql(DB, sql);
    }

    /// Runs `pgbridge ARGS` to completion.
    pub fn pgbridge(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pgbridge")
    }

    /// `pgbridge setup`, asserting success.
    pub fn setup(&self) {
        let out = self.pgbridge(&["setup"]);
        assert!(out.status.success(), "pgbridge setup failed:\n{}", text(&out));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.config_path(), args)
    }

    /// `pgbridge -c CONFIG ARGS`, for a second bridge in the same directory.
    pub fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgbridge"));
        cmd.arg("-c")
            .arg(config)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd.env_remove("PGBRIDGE_FAILPOINT");
        cmd.env("PGBRIDGE_LOG", "info,pgbridge=debug");
        cmd
    }

    /// Starts `pgbridge run` in the background.
    pub fn run(&self) -> Running {
        self.run_with_env(&[])
    }

    /// Starts `pgbridge run` with green's values in `wire`'s form.
    pub fn run_in(&self, wire: Wire) -> Running {
        self.run_with_env(wire.env())
    }

    pub fn run_with_env(&self, env: &[(&str, &str)]) -> Running {
        self.spawn_logged(&["run"], env)
    }

    /// Starts `pgbridge ARGS` in the background with its output in a log file, like
    /// [`Pair::run`]; for a `run` with global options (`--log-format json run`).
    pub fn run_with_args(&self, args: &[&str]) -> Running {
        self.spawn_logged(args, &[])
    }

    fn spawn_logged(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        self.spawn_logged_with(&self.config_path(), args, env)
    }

    /// `pgbridge -c CONFIG ARGS` in the background, logged like [`Pair::run`].
    pub fn spawn_logged_with(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.path().join(format!("run-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.command_with(config, args);
        cmd.stdout(file.try_clone().expect("log")).stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Running {
            child: Some(cmd.spawn().expect("spawn pgbridge run")),
            log,
        }
    }

    /// Blue's checkpoint LSN for the test slot, as text.
    pub fn checkpoint(&self) -> String {
        self.blue.psql(
            DB,
            &format!("SELECT lsn FROM pgbridge.checkpoint WHERE slot_name = '{SLOT}'"),
        )
    }

    /// The slot's confirmed_flush_lsn on green, as text.
    pub fn confirmed_flush(&self) -> String {
        self.green.psql(
            DB,
            &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        )
    }

    /// Writes a transactional logical message on green and waits until blue's checkpoint passes
    /// it: then blue has every transaction green committed before this call.
    pub fn wait_caught_up(&self, bridge: &Running) {
        let lsn = self
            .green
            .psql(DB, "SELECT pg_logical_emit_message(true, 'pgbridge_test', 'sync')");
        self.wait_checkpoint_at_least(&lsn, bridge);
    }

    pub fn wait_checkpoint_at_least(&self, lsn: &str, bridge: &Running) {
        let query = format!("SELECT lsn >= '{lsn}'::pg_lsn FROM pgbridge.checkpoint WHERE slot_name = '{SLOT}'");
        wait_for(
            Duration::from_secs(120),
            || self.blue.psql(DB, &query) == "t",
            || {
                format!(
                    "blue's checkpoint never reached {lsn} (now {})\n--- pgbridge log ---\n{}",
                    self.checkpoint(),
                    bridge.log()
                )
            },
        );
    }

    /// `pgbridge wait` until blue has everything green committed, then `pgbridge verify`: both
    /// must exit 0, i.e. blue is identical to green through the mapping. `what` heads failures.
    pub fn assert_caught_up_and_verified(&self, bridge: &Running, what: &str) {
        let out = self.pgbridge(&["wait", "--timeout", "120s"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: wait\n{}\n{}",
            text(&out),
            bridge.log()
        );
        let out = self.pgbridge(&["verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: verify found differences\n{}\n--- pgbridge log ---\n{}",
            text(&out),
            bridge.log()
        );
    }

    /// Asserts that `table` holds the same rows (as a multiset of row texts) on both sides.
    pub fn assert_same(&self, table: &str) {
        let g = rows(&self.green, table);
        let b = rows(&self.blue, table);
        if g != b {
            let clip = |r: &String| r.chars().take(160).collect::<String>();
            let only_green: Vec<_> = g.iter().filter(|r| !b.contains(r)).take(5).map(clip).collect();
            let only_blue: Vec<_> = b.iter().filter(|r| !g.contains(r)).take(5).map(clip).collect();
            panic!(
                "{table} differs: green has {} rows, blue {}; only on green (first 5): {only_green:?}; only on blue: {only_blue:?}",
                g.len(),
                b.len()
            );
        }
    }
}

/// Rows of `table` as sorted text, in a session with fixed output settings.
pub fn rows(cluster: &Cluster, table: &str) -> Vec<String> {
    let out = cluster.psql(
        DB,
        &format!(
            "SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET datestyle = ISO; SET IntervalStyle = postgres; \
             SET bytea_output = hex; \
             SELECT coalesce(string_agg(r, E'\\n' ORDER BY r), '') FROM (SELECT pgbridge_row::text AS r FROM {table} pgbridge_row) s"
        ),
    );
    // psql prints the SET tags only without -q; keep the data lines.
    out.lines().filter(|l| *l != "SET").map(str::to_string).collect()
}

/// The form green's values travel in, for the tests that run in both (binary is the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Binary,
    Text,
}

impl Wire {
    /// The environment of a `pgbridge` that streams in this form.
    pub fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Wire::Binary => &[],
            Wire::Text => &[("PGBRIDGE_BINARY", "off")],
        }
    }
}

/// A running `pgbridge run`; killed with SIGKILL when dropped.
pub struct Running {
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts the stream started in `wire`'s form (and only in it).
    pub fn assert_wire(&self, wire: Wire) {
        let log = self.log();
        let binary = log.contains("values travel in binary");
        let text = log.contains("values travel as text");
        match wire {
            Wire::Binary => assert!(binary && !text, "green's values did not travel in binary:\n{log}"),
            Wire::Text => assert!(!binary, "green's values travelled in binary:\n{log}"),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn terminate(mut self) -> i32 {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "pgbridge did not stop within 60 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(mut self, timeout: Duration) -> (i32, String) {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), self.log());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("pgbridge did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Peak resident memory (VmHWM) in kB, from /proc.
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 20 ms until it holds, or panics with `describe()` after `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool, describe: impl FnOnce() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?}: {}", describe());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stdout and stderr of a finished command.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
