//! Production topologies: pgbridge started while a database is down or restarting, green with
//! a physical standby that is promoted (a failover slot carries the bridge over on PostgreSQL
//! 17+; before 17 the failover is detected and reported), multi-host DSNs.

use std::time::{Duration, Instant};

use crate::support::bridge::{rows, text, wait_for, Pair, Running, DB, SLOT};
use crate::support::Cluster;

/// Waits until the log of `bridge` contains `needle`.
fn wait_log(bridge: &Running, needle: &str) {
    wait_for(
        Duration::from_secs(60),
        || bridge.log().contains(needle),
        || bridge.log(),
    );
}

/// A sidecar (re)started while green, then blue, is down waits for it, logging each attempt,
/// and streams once it is back: only definite problems exit 2 at start.
#[test]
fn run_started_while_a_database_is_down_waits_for_it() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    for side in ["green", "blue"] {
        let cluster = if side == "green" { &pair.green } else { &pair.blue };
        cluster.stop_immediate();
        let mut bridge = pair.run();
        wait_log(&bridge, "cannot start yet; waiting for the databases");
        assert!(
            bridge.alive(),
            "pgbridge gave up while {side} was down:\n{}",
            bridge.log()
        );
        cluster.start_again();
        pair.green
            .psql(DB, &format!("INSERT INTO t VALUES ({}, '{side}')", side.len()));
        pair.wait_caught_up(&bridge);
        pair.assert_same("t");
        assert!(
            bridge.log().contains(&format!("cannot connect to {side}")),
            "{}",
            bridge.log()
        );
        assert_eq!(bridge.terminate(), 0);
    }
}

/// A definite problem at start still exits 2 at once, even while the other side is down.
#[test]
fn run_exits_at_once_on_a_definite_problem_at_start() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    // A database that does not exist is a configuration problem, not a wait.
    let green = pair.green.dsn("no_such_db");
    pair.write_config_with(&green, &pair.blue.dsn(DB), "");
    let out = pair.pgbridge(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no_such_db"), "{}", text(&out));
}

/// A URL listing both servers; pgbridge connects to whichever is the primary.
fn two_hosts(a: &Cluster, b: &Cluster) -> String {
    format!("postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{DB}", a.port(), b.port())
}

/// Emits a marker on `green` and waits until blue's checkpoint has passed it.
fn wait_applied(pair: &Pair, green: &Cluster, bridge: &Running) {
    let lsn = green.psql(DB, "SELECT pg_logical_emit_message(true, 'pgbridge_test', 'sync')");
    pair.wait_checkpoint_at_least(&lsn, bridge);
}

/// Waits until `bridge` exits, requiring exit 2 and an error line that says each of `needed`.
fn assert_stops_saying(bridge: Running, needed: &[&str]) {
    let (code, log) = bridge.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 2, "{log}");
    let error = log.lines().rev().find(|l| l.contains("error")).unwrap_or_default();
    for needed in needed {
        assert!(error.contains(needed), "{needed:?} missing from: {error}\n{log}");
    }
}

/// Writes `n` single-row transactions into `events` (no key, so a doubled row shows).
fn write_events(green: &Cluster, from: u32, n: u32) {
    let sql: String = (from..from + n)
        .map(|i| format!("INSERT INTO events VALUES ({i}, repeat('x', {i} % 50));\n"))
        .collect();
    green.psql(DB, &sql);
}

/// Case 25 for green: a primary with a physical standby; pgbridge streams through a DSN
/// listing both; the primary dies (immediate stop) under load and the standby is promoted.
/// On PostgreSQL 17+ the slot is a failover slot synchronized to the standby, and the
/// primary holds logical replication back for it (`synchronized_standby_slots`): pgbridge
/// finds the new primary by itself and carries on, nothing lost or doubled. Before 17 the slot
/// is gone: pgbridge stops with exit 2, saying green failed over and how to recover, and blue
/// keeps everything it had.
#[test]
fn green_failover_is_carried_over_on_17_and_reported_before() {
    let pair = Pair::start();
    pair.both("CREATE TABLE events (id int, v text); ALTER TABLE events REPLICA IDENTITY FULL");
    let standby = pair.green.standby("green_sb");
    let failover_slots = pair.green.version_num() >= 170_000;
    if failover_slots {
        pair.green.reload_with("synchronized_standby_slots", "green_sb");
    }
    pair.write_config_with(&two_hosts(&pair.green, &standby), &pair.blue.dsn(DB), "");
    pair.setup();
    if failover_slots {
        let failover = pair.green.psql(
            DB,
            &format!("SELECT failover FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        );
        assert_eq!(failover, "t", "setup creates a failover slot on 17+");
    }
    let bridge = pair.run();
    write_events(&pair.green, 0, 200);
    wait_applied(&pair, &pair.green, &bridge);
    if failover_slots {
        // The slot synchronization worker copies the slot to the standby (persistent once
        // the standby has caught up with it).
        let synced = format!("SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = '{SLOT}'");
        wait_for(
            Duration::from_secs(120),
            || standby.psql(DB, &synced) == "t",
            || bridge.log(),
        );
    } else {
        pair.green.wait_standby_replayed("green_sb");
    }
    // Under load: the primary dies between two writes of a stream of them.
    let writer = {
        let port = pair.green.port();
        std::thread::spawn(move || {
            let sql: String = (200..2000)
                .map(|i| format!("INSERT INTO events VALUES ({i}, 'late');\n"))
                .collect();
            let mut cmd = std::process::Command::new(crate::support::pg_client_bin_dir().join("psql"));
            cmd.args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", DB, "-p"])
                .arg(port.to_string())
                .arg("-c")
                .arg(sql);
            let _ = cmd.output();
        })
    };
    let count = |c: &Cluster| c.psql(DB, "SELECT count(*) FROM events").parse::<u32>().unwrap_or(0);
    wait_for(Duration::from_secs(60), || count(&pair.blue) > 200, || bridge.log());
    pair.green.stop_immediate();
    let _ = writer.join();
    let promoted_at = Instant::now();
    standby.promote();
    if !failover_slots {
        assert_stops_saying(bridge, &["failed over", "timeline 2", SLOT, "setup --copy"]);
        // Blue kept everything it had; nothing after the failover was streamed.
        assert!(count(&pair.blue) >= 200);
        return;
    }
    write_events(&standby, 5000, 100);
    wait_applied(&pair, &standby, &bridge);
    eprintln!(
        "green failover: promotion to blue applying again took {:?}",
        promoted_at.elapsed()
    );
    let g = rows(&standby, "events");
    let b = rows(&pair.blue, "events");
    assert_eq!(
        g.len(),
        b.len(),
        "green has {} rows, blue {}\n{}",
        g.len(),
        b.len(),
        bridge.log()
    );
    assert!(g == b, "blue differs from the promoted green\n{}", bridge.log());
    assert!(bridge.log().contains("green failed over"), "{}", bridge.log());
    assert_eq!(bridge.terminate(), 0);
}

/// `check` and `status` say whether the slot survives a failover of green and exactly what to
/// configure where it would not: on 17+ per standby green.dsn lists, before 17 that it cannot.
#[test]
fn check_and_status_say_what_to_configure_for_a_green_failover() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    let standby = pair.green.standby("green_sb");
    let v17 = pair.green.version_num() >= 170_000;
    if v17 {
        standby.reload_with("hot_standby_feedback", "off");
    }
    pair.write_config_with(&two_hosts(&pair.green, &standby), &pair.blue.dsn(DB), "");
    pair.setup();
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let check = text(&out);
    let label = format!("green standby 127.0.0.1:{}", standby.port());
    if !v17 {
        assert!(check.contains("a failover of green ends the bridge"), "{check}");
        return;
    }
    assert!(check.contains(&format!("slot {SLOT} is a failover slot")), "{check}");
    assert!(
        check.contains(&format!("{label}: set hot_standby_feedback = on")),
        "{check}"
    );
    assert!(
        check.contains("green primary: set synchronized_standby_slots = 'green_sb'"),
        "{check}"
    );
    // Once configured, the standby is reported ready when it has the slot.
    standby.reload_with("hot_standby_feedback", "on");
    pair.green.reload_with("synchronized_standby_slots", "green_sb");
    let ready = format!("{label} has slot {SLOT} synchronized");
    wait_for(
        Duration::from_secs(120),
        || text(&pair.pgbridge(&["status"])).contains(&ready),
        || text(&pair.pgbridge(&["status"])),
    );
    let check = text(&pair.pgbridge(&["check"]));
    assert!(!check.contains("note:"), "{check}");
    let json = text(&pair.pgbridge(&["status", "--json"]));
    assert!(json.contains("\"high_availability\""), "{json}");
}

/// Case 25, the other way round: green's primary does not hold logical replication back for
/// its standby (no `synchronized_standby_slots`), the standby falls behind, and pgbridge
/// applies transactions the standby never receives. After the promotion blue holds writes
/// green lost, and positions after the fork belong to other transactions: pgbridge stops,
/// never absorbs it (on every version), `setup` refuses to paper over it, and the recovery
/// the README gives (`setup --copy`) makes blue equal to the new green again.
#[test]
fn green_failover_that_lost_what_blue_has_is_reported_and_recovered_with_a_copy() {
    let pair = Pair::start();
    pair.both("CREATE TABLE events (id int, v text); ALTER TABLE events REPLICA IDENTITY FULL");
    let standby = pair.green.standby("green_sb");
    pair.write_config_with(&two_hosts(&pair.green, &standby), &pair.blue.dsn(DB), "");
    pair.setup();
    let bridge = pair.run();
    write_events(&pair.green, 0, 100);
    wait_applied(&pair, &pair.green, &bridge);
    pair.green.wait_standby_replayed("green_sb");
    // The standby loses its primary; pgbridge goes on.
    standby.reload_with(
        "primary_conninfo",
        "host=127.0.0.1 port=1 user=postgres dbname=postgres",
    );
    let streaming = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'green_sb'";
    wait_for(
        Duration::from_secs(60),
        || pair.green.psql(DB, streaming) == "0",
        || pair.green.log_tail(20),
    );
    write_events(&pair.green, 100, 100);
    wait_applied(&pair, &pair.green, &bridge);
    let checkpoint = pair.checkpoint();
    pair.green.stop_immediate();
    standby.promote();

    assert_stops_saying(bridge, &["failed over", "never received", "setup --copy"]);
    assert_eq!(pair.checkpoint(), checkpoint, "nothing moved");
    // The gates and status do not call it fine either.
    let out = pair.pgbridge(&["lag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("green failed over (timeline 1 to 2)"),
        "{}",
        text(&out)
    );
    let out = pair.pgbridge(&["status"]);
    assert!(text(&out).contains("green changed"), "{}", text(&out));
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "setup must not accept the new green:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("never received"), "{}", text(&out));

    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    write_events(&standby, 500, 10);
    wait_applied(&pair, &standby, &bridge);
    assert!(
        rows(&standby, "events") == rows(&pair.blue, "events"),
        "blue differs after the re-copy"
    );
    assert_eq!(
        rows(&pair.blue, "events").len(),
        110,
        "the 100 events green lost are gone from blue"
    );
    assert_eq!(bridge.terminate(), 0);
}

/// A host that accepts connections but never answers (a stuck proxy, a frozen machine) listed
/// first costs each connection `connect_timeout`, not for ever: `run` goes on to the next host
/// and streams, and SIGTERM stops it.
#[test]
fn a_host_that_accepts_but_never_answers_is_passed_over() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let silent_port = silent.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    let green = format!(
        "postgres://postgres@127.0.0.1:{silent_port},127.0.0.1:{}/{DB}?connect_timeout=1",
        pair.green.port()
    );
    pair.write_config_with(&green, &pair.blue.dsn(DB), "");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1)");
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
    assert_eq!(bridge.terminate(), 0);
}
