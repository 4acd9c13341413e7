//! Guards the cluster harness itself: when these fail, every other integration test fails for
//! reasons that have nothing to do with pgbridge.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;

use crate::support::{pg_client_bin_dir, Cluster, ClusterOptions};

#[test]
fn harness_starts_two_clusters_concurrently_with_logical_wal() {
    let starting: Vec<_> = (0..2)
        .map(|_| thread::spawn(|| Cluster::start(ClusterOptions::default())))
        .collect();
    let clusters: Vec<Cluster> = starting
        .into_iter()
        .map(|handle| handle.join().expect("a cluster failed to start"))
        .collect();
    assert_ne!(clusters[0].port(), clusters[1].port());
    for cluster in &clusters {
        assert_eq!(cluster.psql("postgres", "SHOW wal_level"), "logical");
        // The same table name in both clusters: they share nothing.
        let count = cluster.psql(
            "postgres",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); SELECT count(*) FROM t",
        );
        assert_eq!(count, "2");
        assert!(cluster.version_num() >= 100_000);
        let err = cluster.try_psql("postgres", "SELECT * FROM missing").unwrap_err();
        assert!(err.contains("\"missing\" does not exist"), "{err}");
    }
}

#[test]
fn harness_applies_options_reloads_and_restarts() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "7s".into())],
        hba: vec!["host all alice 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    assert_eq!(cluster.psql("postgres", "SHOW wal_sender_timeout"), "7s");

    let password = "p@ss w:rd/1";
    cluster.psql(
        "postgres",
        &format!(
            "CREATE ROLE alice LOGIN PASSWORD '{password}'; CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)"
        ),
    );
    // The extra hba line comes before the trust lines, so alice needs her password.
    assert!(!psql_url(&cluster.dsn_as("alice", None, "postgres")).status.success());
    let out = psql_url(&cluster.dsn_as("alice", Some(password), "postgres"));
    assert_eq!(stdout(&out), "alice", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&psql_url(&cluster.dsn("postgres"))), "postgres");

    cluster.reload_with("work_mem", "7MB");
    assert_eq!(cluster.psql("postgres", "SHOW work_mem"), "7MB");

    cluster.restart_with("max_wal_senders", "9");
    assert_eq!(cluster.psql("postgres", "SHOW max_wal_senders"), "9");

    cluster.restart_immediate();
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM kept"), "1");

    cluster.stop_immediate();
    assert!(cluster.try_psql("postgres", "SELECT 1").is_err());
    cluster.start_again();
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
}

#[test]
fn harness_makes_a_standby_that_replicates_and_promotes() {
    let primary = Cluster::start(ClusterOptions::default());
    primary.psql("postgres", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let standby = primary.standby("sb1");
    assert_eq!(standby.psql("postgres", "SELECT pg_is_in_recovery()"), "t");
    primary.psql("postgres", "INSERT INTO t VALUES (2)");
    primary.wait_standby_replayed("sb1");
    assert_eq!(standby.psql("postgres", "SELECT count(*) FROM t"), "2");
    primary.stop_immediate();
    standby.promote();
    assert_eq!(
        standby.psql("postgres", "INSERT INTO t VALUES (3); SELECT count(*) FROM t"),
        "3"
    );
    // Promotion starts a new timeline: WAL file names begin with it.
    let walfile = standby.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(walfile.starts_with("00000002"), "{walfile}");
}

#[test]
fn harness_drop_stops_the_server_and_removes_its_directory() {
    let cluster = Cluster::start(ClusterOptions::default());
    let (dir, port) = (cluster.dir().to_path_buf(), cluster.port());
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let pid: u32 = pid_file.lines().next().unwrap().parse().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(cluster);

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!is_running(pid), "postmaster {pid} still runs");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("port {port}: {err}"));
}

/// Runs `SELECT current_user` through psql with a connection URL, never prompting for a password.
fn psql_url(url: &str) -> Output {
    Command::new(pg_client_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-w", "-c", "SELECT current_user", "-d", url])
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .output()
        .expect("cannot run psql")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Zombies count as stopped: whether they are reaped depends on the container's init.
fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !stat.is_empty() && !state.starts_with('Z')
}
