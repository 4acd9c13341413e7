//! `pgbridge lag` and `pgbridge wait`, the gates cutover scripts use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, DB};

fn lag_line(pair: &Pair, args: &[&str]) -> (i32, String) {
    let mut all = vec!["lag"];
    all.extend_from_slice(args);
    let out = pair.pgbridge(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

#[test]
fn lag_gates_a_backlog_and_clears_after_catch_up() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    // A backlog with the daemon stopped.
    pair.green
        .psql(DB, "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g");
    let (code, line) = lag_line(&pair, &["--max-bytes", "0"]);
    assert_eq!(code, 1, "{line}");
    assert!(field(&line, "lag_bytes").parse::<u64>().unwrap() > 0, "{line}");
    let seconds: f64 = field(&line, "lag_seconds").parse().unwrap();
    let age: f64 = pair
        .green
        .psql(DB, "SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
        .parse()
        .unwrap();
    assert!(
        seconds > 0.0 && seconds < age,
        "the age of the pending transaction, not of anything older: {line}"
    );
    assert_eq!(field(&line, "applied_lsn"), pair.checkpoint());
    let (code, _) = lag_line(&pair, &["--max-bytes", "100000000", "--max-seconds", "3600"]);
    assert_eq!(code, 0, "within generous limits");
    let (_, json) = lag_line(&pair, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    for key in ["lag_bytes", "lag_seconds", "applied_lsn", "green_lsn"] {
        assert!(v.get(key).is_some(), "{key} missing in {json}");
    }

    let bridge = pair.run();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("caught up in"), "{}", text(&out));
    // Green idle: the keepalive positions bring blue's checkpoint to green's WAL position.
    wait_for(
        Duration::from_secs(60),
        || lag_line(&pair, &["--max-bytes", "0"]).0 == 0,
        || format!("lag never reached 0: {:?}\n{}", lag_line(&pair, &[]), bridge.log()),
    );
    let (_, line) = lag_line(&pair, &[]);
    assert_eq!(field(&line, "lag_seconds"), "0.000", "{line}");
}

#[test]
fn wait_covers_everything_committed_before_it_under_load() {
    let pair = Arc::new(Pair::start());
    pair.both("CREATE TABLE t (id bigint PRIMARY KEY, v text)");
    pair.setup();
    let bridge = pair.run();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pair, stop) = (pair.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                pair.green.psql(
                    DB,
                    &format!("INSERT INTO t SELECT {batch} * 100 + g, 'v' FROM generate_series(1, 100) g"),
                );
                batch += 1;
            }
        })
    };
    for _ in 0..5 {
        let committed = pair.green.psql(DB, "SELECT coalesce(max(id), 0) FROM t");
        let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
        assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
        let on_blue = pair
            .blue
            .psql(DB, &format!("SELECT count(*) FROM t WHERE id <= {committed}"));
        assert_eq!(
            on_blue, committed,
            "blue must hold every row committed before wait was called"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn wait_times_out_with_exit_1_and_lag_errors_exit_2() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let out = pair.pgbridge(&["wait", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("timed out after"), "{}", text(&out));
    pair.write_config_with("postgres://postgres@127.0.0.1:1/postgres", &pair.blue.dsn(DB), "");
    let out = pair.pgbridge(&["lag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("green.dsn"), "{}", text(&out));
}
