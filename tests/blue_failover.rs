//! Blue fails over to an asynchronous standby (rule 11 of the design). With `[blue] standbys`
//! a position is confirmed to green only once the standby has flushed the blue commit carrying
//! it, so when the standby is cut off and then promoted, green still holds everything the new
//! blue lacks and pgbridge, finding the new primary through its multi-host DSN, applies it
//! again: nothing lost or doubled. Without the option green may have forgotten what the
//! standby never received, and pgbridge must refuse to continue.
//!
//! The standby is cut off deterministically: its `primary_conninfo` is pointed at a port
//! nobody listens on, so it keeps exactly what it flushed before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::bridge::{text, wait_for, Pair, Running, DB, SLOT};
use crate::support::Cluster;
use crate::workload;

const STANDBY: &str = "blue_sb";

/// Green and blue with the workload tables and the slot, and a physical standby of blue
/// (copied after `setup`, so it has blue's checkpoint row).
fn pair_with_blue_standby() -> (Pair, Cluster) {
    let pair = Pair::start();
    workload::create(&pair);
    pair.setup();
    let standby = pair.blue.standby(STANDBY);
    (pair, standby)
}

/// Both blue servers in one DSN: pgbridge connects to whichever accepts writes.
fn blue_dsn(primary: &Cluster, standby: &Cluster) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{DB}?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    )
}

fn checkpoint_on(blue: &Cluster) -> String {
    blue.psql(
        DB,
        &format!("SELECT lsn FROM pgbridge.checkpoint WHERE slot_name = '{SLOT}'"),
    )
}

/// `a >= b` for two LSNs, computed by `cluster`.
fn lsn_ge(cluster: &Cluster, a: &str, b: &str) -> bool {
    cluster.psql(DB, &format!("SELECT '{a}'::pg_lsn >= '{b}'::pg_lsn")) == "t"
}

/// Cuts the standby off from blue's primary and waits until it has replayed everything it
/// flushed; returns blue's checkpoint as the standby has it (what a promotion keeps).
fn cut_off(primary: &Cluster, standby: &Cluster) -> String {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    standby.reload_with(
        "primary_conninfo",
        &format!("host=127.0.0.1 port={dead_port} user=postgres dbname=postgres application_name={STANDBY}"),
    );
    let gone = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{STANDBY}'");
    wait_for(
        Duration::from_secs(60),
        || primary.psql(DB, &gone) == "0",
        || "the standby stayed connected to blue's primary".into(),
    );
    // What it received may end inside a record, which it never replays; so it is done once
    // its startup process waits for more WAL and its replay position stays put meanwhile.
    wait_for(
        Duration::from_secs(60),
        || {
            let out = standby.psql(
                DB,
                "SELECT pg_last_wal_replay_lsn(); \
                 SELECT coalesce(wait_event, '-') FROM pg_stat_activity WHERE backend_type = 'startup'; \
                 SELECT pg_last_wal_replay_lsn();",
            );
            let lines: Vec<&str> = out.lines().collect();
            matches!(lines[..], [before, "RecoveryWalStream" | "RecoveryRetrieveRetryInterval", after] if before == after)
        },
        || "the standby did not finish replaying what it received".into(),
    );
    checkpoint_on(standby)
}

/// Runs `transactions` workload transactions on green in the background.
fn writing(pair: &Arc<Pair>, seed: u64, transactions: usize) -> std::thread::JoinHandle<()> {
    let pair = pair.clone();
    std::thread::spawn(move || workload::run(&pair, seed, transactions))
}

/// The pair with blue's promoted standby as blue (the old primary is stopped).
fn failed_over(pair: Arc<Pair>, standby: Cluster) -> Pair {
    let Ok(Pair {
        green,
        blue: _old,
        dir,
        metrics_port,
    }) = Arc::try_unwrap(pair)
    else {
        panic!("the workload still holds the pair");
    };
    Pair {
        green,
        blue: standby,
        dir,
        metrics_port,
    }
}

/// Streams under load with the standby connected (positions are confirmed), then cuts it
/// off while the load goes on. Returns the standby's checkpoint and the running bridge.
fn stream_and_cut_off(pair: &Arc<Pair>, standby: &Cluster) -> (String, Running) {
    let bridge = pair.run();
    workload::run(pair, 31, 200);
    pair.wait_caught_up(&bridge);
    let applied = pair.checkpoint();
    wait_for(
        Duration::from_secs(60),
        || lsn_ge(&pair.green, &pair.confirmed_flush(), &applied),
        || format!("nothing was confirmed with the standby connected\n{}", bridge.log()),
    );
    let writer = writing(pair, 32, 400);
    let standby_checkpoint = cut_off(&pair.blue, standby);
    writer.join().expect("workload");
    (standby_checkpoint, bridge)
}

/// `[blue] standbys = ["blue_sb"]`: while the standby is cut off pgbridge keeps applying to
/// blue but confirms nothing beyond what the standby flushed; after blue's primary crashes and
/// the standby is promoted, pgbridge resumes on it by itself and blue equals green.
#[test]
fn blue_failover_with_the_standbys_option_loses_and_doubles_nothing() {
    let (pair, standby) = pair_with_blue_standby();
    pair.write_config_with(
        &pair.green.dsn(DB),
        &blue_dsn(&pair.blue, &standby),
        &format!("standbys = [\"{STANDBY}\"]"),
    );
    let pair = Arc::new(pair);
    let (standby_checkpoint, bridge) = stream_and_cut_off(&pair, &standby);

    // The load goes on: blue's primary gets it, green's slot stays at what the standby has.
    let writer = writing(&pair, 33, 1200);
    wait_for(
        Duration::from_secs(120),
        || !lsn_ge(&pair.blue, &standby_checkpoint, &pair.checkpoint()),
        || format!("pgbridge stopped applying to blue's primary\n{}", bridge.log()),
    );
    while !writer.is_finished() {
        let confirmed = pair.confirmed_flush();
        assert!(
            lsn_ge(&pair.green, &standby_checkpoint, &confirmed),
            "green's slot confirmed {confirmed}, beyond {standby_checkpoint} that the cut-off standby has\n{}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.join().expect("workload");
    pair.wait_caught_up(&bridge);
    let confirmed = pair.confirmed_flush();
    assert!(
        lsn_ge(&pair.green, &standby_checkpoint, &confirmed),
        "caught up: green's slot confirmed {confirmed}, beyond the standby's {standby_checkpoint}"
    );
    let warning = format!("blue standby(s) {STANDBY} not connected to blue");
    assert!(
        bridge.log().contains(&warning),
        "no warning naming the standby:\n{}",
        bridge.log()
    );
    let lost = pair.checkpoint();
    assert!(
        !lsn_ge(&pair.blue, &standby_checkpoint, &lost),
        "the standby lacks nothing"
    );

    // Blue's primary crashes; the standby is promoted with what it has.
    pair.blue.stop_immediate();
    standby.promote();
    let promoted = Instant::now();
    // Promotion replays what the standby had received but not yet replayed, so its checkpoint
    // may have moved past what was read at the cut-off; what green's slot confirmed it has.
    let promoted_checkpoint = checkpoint_on(&standby);
    assert!(
        lsn_ge(&standby, &promoted_checkpoint, &standby_checkpoint)
            && lsn_ge(&standby, &promoted_checkpoint, &confirmed),
        "the promoted standby's checkpoint {promoted_checkpoint} is behind what green's slot confirmed ({confirmed})"
    );
    let pair = failed_over(pair, standby);
    wait_for(
        Duration::from_secs(120),
        || !lsn_ge(&pair.blue, &promoted_checkpoint, &pair.checkpoint()),
        || format!("pgbridge did not resume on the promoted standby\n{}", bridge.log()),
    );
    eprintln!(
        "blue failover: pgbridge applied on the promoted standby {:?} after its promotion",
        promoted.elapsed()
    );
    workload::run(&pair, 34, 200);
    pair.wait_caught_up(&bridge);
    workload::assert_converged(&pair);
    assert!(!bridge.log().contains("beyond blue's checkpoint"), "{}", bridge.log());
}

/// Without the option, pgbridge confirms what blue's primary flushed; after the failover the
/// promoted standby's checkpoint is behind the slot, and pgbridge stops with a definite error
/// instead of streaming on with a gap.
#[test]
fn blue_failover_without_the_standbys_option_is_detected_and_stops() {
    let (pair, standby) = pair_with_blue_standby();
    pair.write_config_with(&pair.green.dsn(DB), &blue_dsn(&pair.blue, &standby), "");
    let pair = Arc::new(pair);
    let (standby_checkpoint, bridge) = stream_and_cut_off(&pair, &standby);
    workload::run(&pair, 33, 300);
    pair.wait_caught_up(&bridge);
    wait_for(
        Duration::from_secs(60),
        || !lsn_ge(&pair.green, &standby_checkpoint, &pair.confirmed_flush()),
        || format!("green's slot never passed the standby's checkpoint {standby_checkpoint}"),
    );

    pair.blue.stop_immediate();
    standby.promote();
    let (code, log) = bridge.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 2, "pgbridge must stop with a definite error:\n{log}");
    assert!(
        log.contains(&format!("beyond blue's checkpoint {standby_checkpoint}")),
        "the error must say blue's checkpoint is behind the slot:\n{log}"
    );
}

/// The option needs pg_read_all_stats on blue: `check` names the grant and `run` refuses;
/// with it, `check` reports a named standby that is not connected.
#[test]
fn blue_standbys_need_pg_read_all_stats_and_check_names_missing_standbys() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    pair.blue.psql(
        DB,
        "CREATE ROLE bridge LOGIN; GRANT USAGE, CREATE ON SCHEMA pgbridge TO bridge; \
         GRANT ALL ON ALL TABLES IN SCHEMA pgbridge TO bridge; GRANT ALL ON t TO bridge",
    );
    pair.write_config_with(
        &pair.green.dsn(DB),
        &pair.blue.dsn_as("bridge", None, DB),
        "standbys = [\"blue_b\", \"blue_c\"]\n\n[apply]\norigin = \"\"",
    );
    let grant = "GRANT pg_read_all_stats TO \"bridge\"";
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(grant), "{}", text(&out));
    let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains(grant), "{log}");

    pair.blue.psql(DB, "GRANT pg_read_all_stats TO bridge");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("blue standby(s) blue_b, blue_c not connected to blue"),
        "{}",
        text(&out)
    );
    let out = pair.pgbridge(&["status", "--json"]);
    assert!(
        text(&out).contains("blue_b not connected, blue_c not connected"),
        "{}",
        text(&out)
    );
}
