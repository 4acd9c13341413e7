//! Disposable PostgreSQL clusters for integration tests.
//!
//! Every test that needs a server starts its own [`Cluster`]: a private directory holding the
//! data directory, the server log and the Unix socket, plus a free TCP port on 127.0.0.1. Tests
//! run concurrently on threads, so nothing is shared between clusters.
//!
//! Speed matters because most integration tests start two clusters:
//! - `initdb` runs once per test process into a template directory that each cluster copies;
//! - the directories live on `/dev/shm` when it has room (copying the template there takes a
//!   tenth of the time it takes on disk), else under `/tmp`;
//! - the postmaster is a child of the test process rather than of `pg_ctl`, so readiness and
//!   shutdown are observed directly instead of through pg_ctl's 100 ms polling, and a server
//!   that dies during startup is noticed at once.
//!
//! PostgreSQL refuses to run as root and CI runs as root, so the server programs (`initdb`,
//! `postgres`) run as the unprivileged `pgbridge-test` user, created on first use. Clients
//! (`psql`) run as the test process itself. When the tests do not run as root, everything runs
//! as the current user.
//!
//! Nothing is left running: `Drop` stops the server (also while a test unwinds from a panic), and
//! an `atexit` hook stops any cluster that was never dropped (one kept in a `static`, say) and
//! removes the template.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// OS user that owns the data directories and runs the server programs when tests run as root.
const TEST_USER: &str = "pgbridge-test";
/// Overrides where cluster directories go.
const TMPDIR_ENV: &str = "PGBRIDGE_TEST_TMPDIR";
/// Free space `/dev/shm` needs before clusters go there rather than under `/tmp`.
const SHM_MIN_FREE: u64 = 2 << 30;
/// Longest directory that still leaves room for `/.s.PGSQL.65535` in a 107-byte socket path.
const MAX_DIR_LEN: usize = 90;
/// How long a server may take to start or stop; generous because two cores may host many.
const SERVER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `reload_with` waits for new connections to see the reloaded configuration.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts, each on a fresh port, before a port clash counts as a failure.
const START_ATTEMPTS: u32 = 5;
/// Lines of server log quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;

const NOT_FOUND: &str = "PostgreSQL server binaries not found: run scripts/ensure-postgres.sh";

extern "C" {
    fn geteuid() -> u32;
    fn atexit(callback: extern "C" fn()) -> i32;
    fn kill(pid: i32, signal: i32) -> i32;
}

/// The postmaster's shutdown signals (what `pg_ctl stop -m fast|immediate` sends), and SIGKILL.
const SIGINT: i32 = 2;
const SIGQUIT: i32 = 3;
const SIGKILL: i32 = 9;

/// Process-wide facts per server bin directory (one initdb template each), resolved on first use.
static HARNESSES: Mutex<Vec<&'static Harness>> = Mutex::new(Vec::new());
/// Template directories to remove at exit.
static TEMPLATES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Directories of clusters not yet dropped, for the exit hook.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Ports held by live clusters of this process: the OS may offer a port again after we probed it.
static PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// What a test may change about a cluster before it starts.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` settings as (name, unquoted value). They come after the harness
    /// defaults, so they override them; the harness quotes the value.
    pub settings: Vec<(String, String)>,
    /// Extra `pg_hba.conf` lines, placed before the default `trust` lines so they match first.
    pub hba: Vec<String>,
    /// Server binaries of another PostgreSQL version (a bin directory with initdb and
    /// postgres); default [`pg_bin_dir`].
    pub bin: Option<PathBuf>,
}

/// A running PostgreSQL server with its own directory and port; stopped and deleted on drop.
pub struct Cluster {
    /// Owns `data/`, `server.log` and the Unix socket; removed after the server stops.
    dir: TempDir,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// The running postmaster, a child of the test process; `None` while stopped.
    postmaster: Mutex<Option<Child>>,
    harness: &'static Harness,
}

/// How to stop a server: the modes of `pg_ctl stop -m`.
#[derive(Clone, Copy, Debug)]
enum Shutdown {
    /// Disconnect clients, checkpoint, exit.
    Fast,
    /// Exit at once, like a crash; the next start runs crash recovery.
    Immediate,
}

impl Cluster {
    /// Copies the template, configures it and starts the server. Panics with the end of the
    /// server log if the server does not come up.
    pub fn start(opts: ClusterOptions) -> Cluster {
        let harness = match &opts.bin {
            Some(bin) => harness_for(bin),
            None => harness(),
        };
        let dir = private_dir("pgb-", harness.run_as);
        // Built before anything can fail, so that `Drop` cleans up after a panic below.
        let mut cluster = Cluster {
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            dir,
            port: 0,
            postmaster: Mutex::new(None),
            harness,
        };
        lock(&LIVE).push(cluster.dir.path().to_path_buf());
        cluster.copy_template(harness);
        cluster.write_hba(&opts.hba);
        cluster.start_on_free_port(&opts.settings);
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's private directory: holds `data/`, `server.log` and the Unix socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Connection URL for the superuser `postgres` (no password: the default rules trust it).
    pub fn dsn(&self, dbname: &str) -> String {
        self.dsn_as("postgres", None, dbname)
    }

    /// Connection URL for any role; user, password and database name are percent-encoded.
    pub fn dsn_as(&self, user: &str, password: Option<&str>, dbname: &str) -> String {
        let mut userinfo = percent_encode(user);
        if let Some(password) = password {
            userinfo.push(':');
            userinfo.push_str(&percent_encode(password));
        }
        format!(
            "postgres://{userinfo}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(dbname)
        )
    }

    /// Runs `sql` through psql as `postgres` and returns what it printed (unaligned, tuples only,
    /// without command tags), trimmed. Panics with psql's stderr on failure.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        self.try_psql(dbname, sql)
            .unwrap_or_else(|err| panic!("psql on database {dbname} failed: {err}\nSQL: {sql}"))
    }

    /// Like [`Cluster::psql`], but returns psql's stderr instead of panicking. Statements run one
    /// by one and psql stops at the first error.
    pub fn try_psql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(pg_client_bin_dir().join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(dbname)
            .current_dir(self.dir.path());
        scrub_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "30");
        let out = run_with_stdin(&mut cmd, sql).map_err(|err| format!("cannot run psql: {err}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(if stderr.is_empty() {
            format!("psql exited with {}", out.status)
        } else {
            stderr
        })
    }

    /// Stops the server like a crash would (what `pg_ctl stop -m immediate` does) and waits
    /// until it has exited.
    pub fn stop_immediate(&self) {
        self.stop(Shutdown::Immediate);
    }

    /// Starts a stopped server again on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        if let Err(err) = self.start_postmaster() {
            panic!("{}", self.failure("start", &err));
        }
    }

    /// Crash and restart: `stop_immediate` then `start_again` (the server runs crash recovery).
    pub fn restart_immediate(&self) {
        self.stop_immediate();
        self.start_again();
    }

    /// Sets a reloadable setting with ALTER SYSTEM and reloads. Returns once new connections see
    /// the reloaded configuration. `value` is passed as one string literal.
    pub fn reload_with(&self, name: &str, value: &str) {
        let before = self.conf_load_time();
        self.psql("postgres", &alter_system(name, value));
        self.psql("postgres", "SELECT pg_reload_conf()");
        self.wait_for_reload(&before);
    }

    /// Sets a setting that needs a restart (wal_level, max_wal_senders, ...) with ALTER SYSTEM,
    /// then restarts the server after a fast shutdown.
    pub fn restart_with(&self, name: &str, value: &str) {
        self.psql("postgres", &alter_system(name, value));
        self.stop(Shutdown::Fast);
        self.start_again();
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = match fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => return format!("(cannot read {}: {err})", self.log.display()),
        };
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `server_version_num`, e.g. 150018.
    pub fn version_num(&self) -> u32 {
        let text = self.psql("postgres", "SHOW server_version_num");
        text.parse()
            .unwrap_or_else(|err| panic!("server_version_num {text:?} is not a number: {err}"))
    }

    /// Makes a physical standby of this server without `pg_basebackup`: creates the physical
    /// slot `name` here, stops this server cleanly, copies its data directory, adds
    /// `standby.signal` and `primary_conninfo`, and starts both. The standby streams through
    /// the slot with `hot_standby_feedback`, and on PostgreSQL 17+ synchronizes failover slots
    /// (`sync_replication_slots`). Returns once the standby accepts read-only connections.
    pub fn standby(&self, name: &str) -> Cluster {
        self.psql(
            "postgres",
            &format!("SELECT pg_create_physical_replication_slot('{name}') WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '{name}')"),
        );
        let sync_slots = self.version_num() >= 170_000;
        self.stop(Shutdown::Fast);
        let dir = private_dir("pgb-", self.harness.run_as);
        let mut standby = Cluster {
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            dir,
            port: 0,
            postmaster: Mutex::new(None),
            harness: self.harness,
        };
        lock(&LIVE).push(standby.dir.path().to_path_buf());
        if let Err(err) = run(Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(&self.data)
            .arg(&standby.data))
        {
            panic!("cannot copy {} for a standby: {err}", self.data.display());
        }
        // Slots are the primary's own: the copy must not hold WAL for them, and a logical slot
        // of the same name would stop slot synchronization.
        let slots = standby.data.join("pg_replslot");
        for entry in fs::read_dir(&slots).into_iter().flatten().flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
        let _ = fs::remove_file(standby.data.join("postmaster.pid"));
        standby.write_data_file("standby.signal", "");
        self.start_again();
        let mut settings = vec![
            (
                "primary_conninfo".to_owned(),
                format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres application_name={name}",
                    self.port
                ),
            ),
            ("primary_slot_name".to_owned(), name.to_owned()),
            ("hot_standby".to_owned(), "on".to_owned()),
            ("hot_standby_feedback".to_owned(), "on".to_owned()),
        ];
        if sync_slots {
            settings.push(("sync_replication_slots".to_owned(), "on".to_owned()));
        }
        standby.start_on_free_port(&settings);
        standby
    }

    /// Promotes this standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.psql("postgres", "SELECT pg_promote(true, 60)");
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let mut backoff = Backoff::new();
        while self.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "the standby was not promoted within {SERVER_TIMEOUT:?}"
            );
            backoff.sleep();
        }
    }

    /// Waits until the standby `name` has replayed everything this primary has written so far.
    pub fn wait_standby_replayed(&self, name: &str) {
        let target = self.psql("postgres", "SELECT pg_current_wal_lsn()");
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let mut backoff = Backoff::new();
        let sql = format!(
            "SELECT coalesce(replay_lsn >= '{target}', false) FROM pg_stat_replication WHERE application_name = '{name}'"
        );
        while self.psql("postgres", &sql) != "t" {
            assert!(
                Instant::now() < deadline,
                "standby {name} did not replay {target} within {SERVER_TIMEOUT:?}"
            );
            backoff.sleep();
        }
    }

    fn copy_template(&self, harness: &Harness) {
        // `cp -a` keeps the owner (root may give files away) and the 0700 mode postgres demands;
        // `--sparse=always` skips writing the zeroes that fill most of the first WAL segment.
        let copied = run(Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(harness.template_root.join("data"))
            .arg(&self.data));
        if let Err(err) = copied {
            panic!("cannot copy the template data directory: {err}");
        }
    }

    fn write_hba(&self, extra: &[String]) {
        let mut text = String::from("# written by the pgbridge test harness\n");
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(
            "local all all trust\n\
             host all all 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n",
        );
        self.write_data_file("pg_hba.conf", &text);
    }

    fn start_on_free_port(&mut self, settings: &[(String, String)]) {
        let base_conf = fs::read_to_string(self.data.join("postgresql.conf"))
            .unwrap_or_else(|err| panic!("cannot read the template postgresql.conf: {err}"));
        let mut attempt = 1;
        loop {
            self.port = reserve_port();
            let conf = format!("{base_conf}\n{}", self.conf_block(settings));
            self.write_data_file("postgresql.conf", &conf);
            let log_before = fs::metadata(&self.log).map_or(0, |m| m.len());
            match self.start_postmaster() {
                Ok(()) => return,
                // Another process took the port between our probe and the server's bind.
                Err(_) if attempt < START_ATTEMPTS && self.port_clash_since(log_before) => {
                    release_port(self.port);
                    self.port = 0;
                    attempt += 1;
                }
                Err(err) => panic!("{}", self.failure("start", &err)),
            }
        }
    }

    /// Settings appended to the template's postgresql.conf; later lines win.
    fn conf_block(&self, extra: &[(String, String)]) -> String {
        let socket_dir = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("port", &port),
            ("unix_socket_directories", &socket_dir),
            ("wal_level", "logical"),
            ("max_wal_senders", "20"),
            ("max_replication_slots", "20"),
            ("fsync", "off"),
            ("synchronous_commit", "on"),
            ("full_page_writes", "off"),
            ("shared_buffers", "64MB"),
            ("max_connections", "100"),
            ("logging_collector", "off"),
            ("log_min_messages", "warning"),
        ];
        let mut block = String::from("# added by the pgbridge test harness\n");
        let extra = extra.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in defaults.into_iter().chain(extra) {
            let value = value.replace('\\', "\\\\").replace('\'', "''");
            let _ = writeln!(block, "{name} = '{value}'");
        }
        block
    }

    fn port_clash_since(&self, log_offset: u64) -> bool {
        let Ok(bytes) = fs::read(&self.log) else {
            return false;
        };
        let new = bytes.get(log_offset as usize..).unwrap_or_default();
        let new = String::from_utf8_lossy(new);
        new.contains("Address already in use") || new.contains("could not bind IPv4 address")
    }

    /// Files root writes into the data directory keep their owner: they already exist.
    fn write_data_file(&self, name: &str, text: &str) {
        let path = self.data.join(name);
        fs::write(&path, text).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    }

    /// Spawns `postgres -D data` with its output appended to the log (what `pg_ctl start -l`
    /// does) and waits until it reports itself ready.
    fn start_postmaster(&self) -> Result<(), String> {
        let mut postmaster = lock(&self.postmaster);
        if postmaster.is_some() {
            return Err("the server is already running".to_owned());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|err| format!("cannot open {}: {err}", self.log.display()))?;
        let log_too = log.try_clone().map_err(|err| err.to_string())?;
        let mut cmd = self.harness.server_command("postgres", self.dir.path());
        cmd.arg("-D").arg(&self.data).stdout(log).stderr(log_too);
        let child = cmd.spawn().map_err(|err| format!("cannot run postgres: {err}"))?;
        // Stored before waiting, so that `Drop` stops it whatever happens next.
        let child = postmaster.insert(child);
        let ready = wait_until_ready(child, &self.data);
        if ready.is_err() && matches!(child.try_wait(), Ok(Some(_))) {
            *postmaster = None;
        }
        ready
    }

    /// Sends the shutdown signal and waits until the postmaster has exited.
    fn stop(&self, mode: Shutdown) {
        let stopped = match lock(&self.postmaster).take() {
            Some(mut child) => stop_postmaster(&mut child, mode),
            None => Err("the server is not running".to_owned()),
        };
        if let Err(err) = stopped {
            panic!("{}", self.failure(&format!("stop ({mode:?})"), &err));
        }
    }

    fn conf_load_time(&self) -> String {
        self.psql("postgres", "SELECT pg_conf_load_time()")
    }

    /// Each new backend inherits the postmaster's configuration load time, so once a new
    /// connection reports a later time, every new connection sees the reloaded settings.
    fn wait_for_reload(&self, before: &str) {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        let mut backoff = Backoff::new();
        while self.conf_load_time() == before {
            if Instant::now() > deadline {
                let err = format!("the configuration was not reloaded within {RELOAD_TIMEOUT:?}");
                panic!("{}", self.failure("reload", &err));
            }
            backoff.sleep();
        }
    }

    fn failure(&self, what: &str, err: &str) -> String {
        format!(
            "cannot {what} the PostgreSQL cluster in {} (port {}): {err}\n\
             --- last lines of {} ---\n{}\n---",
            self.data.display(),
            self.port,
            self.log.display(),
            self.log_tail(LOG_TAIL_LINES),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.postmaster).take() {
            if let Err(err) = stop_postmaster(&mut child, Shutdown::Immediate) {
                eprintln!("warning: {err}; killing postmaster {}", child.id());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        lock(&LIVE).retain(|dir| dir != self.dir.path());
        release_port(self.port);
        // `self.dir` removes the directory once this returns.
    }
}

/// Polls `postmaster.pid` until its status line says `ready`, as `pg_ctl start -w` does, but
/// every few milliseconds, and failing at once if the postmaster exits.
fn wait_until_ready(child: &mut Child, data: &Path) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_TIMEOUT;
    let mut backoff = Backoff::new();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("postgres exited during startup ({status})")),
            Ok(None) => {}
            Err(err) => return Err(format!("cannot watch postgres: {err}")),
        }
        // Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
        // The pid check skips a stale file left by a killed server.
        let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
        if lines.len() >= 8 && lines[0] == child.id().to_string() && (lines[7] == "ready" || lines[7] == "standby") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("postgres not ready within {SERVER_TIMEOUT:?}"));
        }
        backoff.sleep();
    }
}

fn stop_postmaster(child: &mut Child, mode: Shutdown) -> Result<ExitStatus, String> {
    // Until it is reaped, the pid cannot be reused, so signalling it is safe.
    if let Ok(Some(status)) = child.try_wait() {
        return Ok(status);
    }
    let signal = match mode {
        Shutdown::Fast => SIGINT,
        Shutdown::Immediate => SIGQUIT,
    };
    let pid = i32::try_from(child.id()).map_err(|err| err.to_string())?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, signal) };
    wait_for_exit(child, SERVER_TIMEOUT)
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() > deadline => return Err(format!("postgres did not exit within {timeout:?}")),
            Ok(None) => backoff.sleep(),
            Err(err) => return Err(format!("cannot watch postgres: {err}")),
        }
    }
}

/// Sleeps 1, 2, 4 ... ms, capped at 50 ms: fast for servers that are quick, cheap for slow ones.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(1))
    }

    fn sleep(&mut self) {
        thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
    }
}

/// Where the binaries are, who runs them, and the initdb template.
struct Harness {
    bin: PathBuf,
    /// (uid, gid) that server programs run as; `None` when the tests do not run as root.
    run_as: Option<(u32, u32)>,
    /// Directory holding the template `data/`; removed at process exit.
    template_root: PathBuf,
}

fn harness() -> &'static Harness {
    harness_for(&pg_bin_dir())
}

/// The harness for the server binaries in `bin`, set up (initdb template) on first use.
fn harness_for(bin: &Path) -> &'static Harness {
    let mut all = lock(&HARNESSES);
    if let Some(h) = all.iter().find(|h| h.bin == bin) {
        return h;
    }
    let h: &'static Harness = Box::leak(Box::new(Harness::init(bin.to_path_buf())));
    all.push(h);
    h
}

impl Harness {
    fn init(bin: PathBuf) -> Harness {
        let run_as = is_root().then(ensure_test_user);
        let template_root = private_dir("pgb-template-", run_as).keep();
        lock(&TEMPLATES).push(template_root.clone());
        let harness = Harness {
            bin,
            run_as,
            template_root,
        };
        if let Err(err) = harness.check_server_runs().and_then(|()| harness.initdb()) {
            let _ = fs::remove_dir_all(&harness.template_root);
            panic!("{err}");
        }
        static REGISTERED: OnceLock<()> = OnceLock::new();
        // SAFETY: registers a plain function; it only runs at process exit.
        REGISTERED.get_or_init(|| unsafe {
            atexit(cleanup_at_exit);
        });
        harness
    }

    /// A server program run as the unprivileged user, in `cwd` (root's cwd may be unreadable).
    fn server_command(&self, program: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(cwd).stdin(Stdio::null());
        scrub_pg_env(&mut cmd);
        if let Some((uid, gid)) = self.run_as {
            // std also drops root's supplementary groups when it switches uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn check_server_runs(&self) -> Result<(), String> {
        let mut cmd = self.server_command("postgres", &self.template_root);
        run(cmd.arg("--version")).map(drop).map_err(|err| {
            let who = match self.run_as {
                Some(_) => TEST_USER,
                None => "the current user",
            };
            format!(
                "{who} cannot run {}/postgres ({err}): make the directory readable by that \
                 user, or point PGBRIDGE_PG_BIN elsewhere",
                self.bin.display()
            )
        })
    }

    /// Falls back to the C locale where C.UTF-8 is missing (older glibc).
    fn initdb(&self) -> Result<(), String> {
        let data = self.template_root.join("data");
        let mut failures = Vec::new();
        for locale in ["C.UTF-8", "C"] {
            let mut cmd = self.server_command("initdb", &self.template_root);
            cmd.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg(format!("--locale={locale}"));
            match run(&mut cmd) {
                Ok(_) => return Ok(()),
                Err(err) => failures.push(format!("--locale={locale}: {err}")),
            }
            let _ = fs::remove_dir_all(&data);
        }
        Err(format!("initdb failed:\n{}", failures.join("\n")))
    }
}

/// Stops clusters that were never dropped and removes their directories and the template.
extern "C" fn cleanup_at_exit() {
    // try_lock: a thread still inside `Cluster::start` must not block the exit.
    if let Ok(live) = LIVE.try_lock() {
        for dir in live.iter() {
            stop_leaked_server(&dir.join("data"));
            let _ = fs::remove_dir_all(dir);
        }
    }
    if let Ok(templates) = TEMPLATES.try_lock() {
        for t in templates.iter() {
            let _ = fs::remove_dir_all(t);
        }
    }
}

/// Immediate shutdown of the server in `data` found through its pid file, waiting up to 10 s.
fn stop_leaked_server(data: &Path) {
    let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    let Some(pid) = pid_file.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return;
    };
    if pid <= 0 || !is_running_postgres(pid) {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut backoff = Backoff::new();
    while is_running_postgres(pid) && Instant::now() < deadline {
        backoff.sleep();
    }
}

/// Whether `pid` is a live (not zombie) postgres process, so that a reused pid is never signalled.
fn is_running_postgres(pid: i32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    comm.trim() == "postgres" && !state.is_empty() && !state.starts_with('Z')
}

/// Directory holding initdb, postgres and psql: `PGBRIDGE_PG_BIN` if set, else
/// `pg_config --bindir` if it has initdb, else the newest `/usr/lib/postgresql/*/bin`.
/// scripts/ensure-postgres.sh searches the same places.
pub fn pg_bin_dir() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_bin_dir).clone()
}

/// Where client programs (psql, pg_dump, pgbench) come from: the server bin directory when it
/// has them, else Debian's (the npm server packages carry no clients).
pub fn pg_client_bin_dir() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let server = pg_bin_dir();
        if server.join("psql").is_file() {
            return server;
        }
        pg_config_bin_dir()
            .or_else(newest_debian_bin_dir)
            .filter(|d| d.join("psql").is_file())
            .unwrap_or_else(|| panic!("no psql next to {} nor in Debian's packages", server.display()))
    })
    .clone()
}

/// Server binaries of PostgreSQL `major` when the environment names them
/// (`PGBRIDGE_PG<major>_BIN`, set by scripts/test.sh from scripts/ensure-postgres-version.sh).
pub fn pg_version_bin_dir(major: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(format!("PGBRIDGE_PG{major}_BIN"))?);
    has_initdb(&dir).then_some(dir)
}

fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGBRIDGE_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_initdb(&dir),
            "PGBRIDGE_PG_BIN={} has no initdb: point it at a PostgreSQL bin directory or unset it",
            dir.display()
        );
        return dir;
    }
    pg_config_bin_dir()
        .or_else(newest_debian_bin_dir)
        .unwrap_or_else(|| panic!("{NOT_FOUND}"))
}

fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file()
}

fn pg_config_bin_dir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    has_initdb(&dir).then_some(dir)
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: Vec<u32> = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { geteuid() == 0 }
}

/// Uid and gid of `pgbridge-test`, creating the user if needed.
fn ensure_test_user() -> (u32, u32) {
    if let Some(ids) = lookup_user(TEST_USER) {
        return ids;
    }
    let created = run(Command::new("useradd").args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        TEST_USER,
    ]));
    // Look again rather than trust useradd: a concurrent test process may have won the race.
    lookup_user(TEST_USER).unwrap_or_else(|| {
        let err = created.err().unwrap_or_default();
        panic!("cannot create the OS user {TEST_USER} to run PostgreSQL, which refuses to run as root: {err}")
    })
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let out = Command::new("getent").args(["passwd", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?;
    let mut fields = line.trim().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// Parent of the cluster directories: `PGBRIDGE_TEST_TMPDIR` if set, else `/dev/shm` if it has
/// room, else `/tmp`. Kept short: the Unix socket path must fit in 107 bytes.
fn tmp_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(TMPDIR_ENV) {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if free_bytes(shm).is_some_and(|free| free >= SHM_MIN_FREE) {
            return shm.to_path_buf();
        }
        PathBuf::from("/tmp")
    })
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let available_kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib * 1024)
}

/// A fresh directory in [`tmp_root`], owned by `owner` if given.
fn private_dir(prefix: &str, owner: Option<(u32, u32)>) -> TempDir {
    let root = tmp_root();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .unwrap_or_else(|err| panic!("cannot create a directory in {} ({TMPDIR_ENV}): {err}", root.display()));
    assert!(
        dir.path().as_os_str().len() <= MAX_DIR_LEN,
        "{} is too long for a Unix socket path: set {TMPDIR_ENV} to a shorter directory",
        dir.path().display()
    );
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .unwrap_or_else(|err| panic!("cannot give {} to {TEST_USER}: {err}", dir.path().display()));
    }
    dir
}

/// A directory the server programs can read, for files a test hands to a server (TLS
/// certificates and keys). Files written into it should go through [`give_to_server`].
pub fn server_files_dir() -> TempDir {
    private_dir("pgb-files-", harness().run_as)
}

/// Makes a file the server user's own, so the server accepts it as its private key (mode 0600).
pub fn give_to_server(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
    if let Some((uid, gid)) = harness().run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|err| panic!("cannot give {} to {TEST_USER}: {err}", path.display()));
    }
}

/// A port that was free a moment ago and that no live cluster of this process holds.
fn reserve_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|err| panic!("cannot bind 127.0.0.1:0 to find a free port: {err}"));
        if lock(&PORTS).insert(port) {
            return port;
        }
    }
}

fn release_port(port: u16) {
    lock(&PORTS).remove(&port);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes PGHOST, PGPORT, PGPASSWORD and friends, which would override or confuse our settings.
fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` to completion; the error carries what it printed, for panic messages.
fn run(cmd: &mut Command) -> Result<String, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let printed = format!("{}\n{stdout}", stderr.trim());
    Err(format!("{program} exited with {}: {}", out.status, printed.trim()))
}

/// Runs `cmd` with `input` on its stdin, written from a thread so large inputs cannot deadlock
/// against a full stdout pipe.
fn run_with_stdin(cmd: &mut Command, input: &str) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    // A write error means the child exited early; its stderr says why.
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

fn alter_system(name: &str, value: &str) -> String {
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
        "{name:?} is not a setting name"
    );
    format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for URL user info and paths.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
