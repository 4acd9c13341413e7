//! PgBouncer (Debian's `pgbouncer` package, installed by scripts/ensure-postgres.sh) in front
//! of a test cluster, on a free loopback port, in the pool mode a test asks for.
//!
//! PgBouncer refuses to run as root, so when the tests run as root it runs as the user the
//! clusters run as: the owner of a [`server_files_dir`], which also holds its configuration
//! and log. It runs in the foreground as a child of the test process and is killed on drop.
//! `postgres` is also its admin user (`RECONNECT`).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::server_files_dir;

/// Where Debian installs it; `PGBRIDGE_PGBOUNCER` overrides.
const BINARY: &str = "/usr/sbin/pgbouncer";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PgBouncer; killed when dropped.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer with `pool_mode` (`session`, `transaction` or `statement`) in front of
    /// the server on 127.0.0.1:`target`, admitting the user `postgres` without a password.
    pub fn start(target: u16, pool_mode: &str) -> PgBouncer {
        let binary = binary();
        let dir = server_files_dir();
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={target}\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n\
             logfile = {log}\nignore_startup_parameters = extra_float_digits,options\n\
             max_client_conn = 200\ndefault_pool_size = 20\nadmin_users = postgres\n\
             server_login_retry = 1\n",
            users = path("users.txt"),
            log = path("pgbouncer.log"),
        );
        for (name, text) in [("pgbouncer.ini", config.as_str()), ("users.txt", "\"postgres\" \"\"\n")] {
            fs::write(dir.path().join(name), text).expect("write pgbouncer files");
        }
        let owner = fs::metadata(dir.path()).expect("pgbouncer dir");
        let mut cmd = Command::new(&binary);
        cmd.arg(path("pgbouncer.ini"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mine = fs::metadata(dir.path().join("users.txt")).expect("users file").uid();
        if owner.uid() != mine {
            // Running as root: the directory belongs to the clusters' unprivileged user.
            for name in ["pgbouncer.ini", "users.txt"] {
                std::os::unix::fs::chown(dir.path().join(name), Some(owner.uid()), Some(owner.gid()))
                    .expect("chown pgbouncer files");
            }
            cmd.uid(owner.uid()).gid(owner.gid());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut bouncer = PgBouncer { dir, port, child };
        bouncer.wait_listening();
        bouncer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for `postgres` through the pooler.
    pub fn dsn(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// `RECONNECT` on the admin console: every server connection is closed once its client
    /// releases it, so the next transaction of each client runs on a new one.
    pub fn reconnect(&self) {
        let out = Command::new(super::pg_client_bin_dir().join("psql"))
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
            ])
            .args(["-c", "RECONNECT"])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "pgbouncer RECONNECT failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().expect("wait for pgbouncer") {
                panic!("pgbouncer exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let path = std::env::var_os("PGBRIDGE_PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINARY));
    assert!(
        path.exists(),
        "{} not found: run scripts/ensure-postgres.sh (as root it installs Debian's pgbouncer package) or set \
         PGBRIDGE_PGBOUNCER",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
