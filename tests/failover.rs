//! Production topologies: pgbridge started while a database is down or restarting, green with
//! a physical standby that is promoted (a failover slot carries the bridge over on PostgreSQL
//! 17+; before 17 the failover is detected and reported), multi-host DSNs.

use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, DB};

/// Waits until the log of `bridge` contains `needle`.
fn wait_log(bridge: &crate::support::bridge::Running, needle: &str) {
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
