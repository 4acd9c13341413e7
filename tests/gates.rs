//! `pgbridge lag` and `pgbridge wait`, the gates cutover scripts use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::bridge::{text, wait_for, Pair, DB};
use crate::support::ClusterOptions;
use crate::telemetry::{http_get, sample};

fn lag_line(pair: &Pair, args: &[&str]) -> (i32, String) {
    let mut all = vec!["lag"];
    all.extend_from_slice(args);
    let out = pair.pgbridge(&all);
    assert_ne!(out.status.code(), Some(2), "pgbridge lag failed: {}", text(&out));
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

/// `pgbridge_lag_seconds` as the running bridge serves it; `None` while /metrics does not answer.
fn lag_metric(pair: &Pair) -> Option<f64> {
    http_get(pair.metrics_port, "/metrics").and_then(|(_, m)| sample(&m, "pgbridge_lag_seconds"))
}

/// `lag_seconds` from `pgbridge status --json`.
fn status_lag_seconds(pair: &Pair) -> serde_json::Value {
    let out = pair.pgbridge(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    doc["lag_seconds"].clone()
}

/// WAL that gives blue nothing to do (an excluded table, a transaction applied under a
/// replication origin the bridge does not carry, autovacuum, another database) moves green's
/// position but is no lag: with blue caught up on every published change and its last applied
/// commit older than the gate's limit, `lag` passes at once while `run` holds the slot, and the
/// metric and `status` say 0 too.
#[test]
fn unpublished_wal_is_not_lag_while_the_bridge_streams() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.green.psql(
        DB,
        "CREATE TABLE scratch (id serial PRIMARY KEY, v text); SELECT pg_replication_origin_create('elsewhere')",
    );
    pair.write_config("[mapping]\nexclude = [\"public.scratch\"]");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'published')");
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    // The last commit blue applied is older than the limit below: its age is not the answer.
    wait_for(
        Duration::from_secs(30),
        || {
            pair.blue.psql(
                DB,
                "SELECT now() - commit_time > interval '6 seconds' FROM pgbridge.checkpoint",
            ) == "t"
        },
        || {
            format!(
                "blue's last commit time: {}",
                pair.blue.psql(DB, "TABLE pgbridge.checkpoint")
            )
        },
    );
    let assert_no_lag = |what: &str| {
        let (code, line) = lag_line(&pair, &["--max-seconds", "5"]);
        assert_eq!(code, 0, "{what} failed the gate: {line}\n{}", bridge.log());
        assert_eq!(field(&line, "lag_seconds"), "0.000", "{what}: {line}");
        assert_eq!(lag_metric(&pair), Some(0.0), "{what}: the metric agrees with {line}");
        assert_eq!(status_lag_seconds(&pair), serde_json::json!(0.0), "{what}: status");
        field(&line, "lag_bytes").parse::<u64>().unwrap()
    };
    pair.green
        .psql(DB, "INSERT INTO scratch (v) SELECT 'x' FROM generate_series(1, 2000)");
    assert_no_lag("a write to an excluded table");

    // Blue's checkpoint follows green's idle position within about a second; a lock that
    // stops it (reads still pass) keeps that WAL ahead of it while `lag` looks.
    let lock = BlueLock::take_in_mode(&pair, "pgbridge.checkpoint", "EXCLUSIVE");
    // Applied under a replication origin, which the bridge does not carry (green.origin =
    // "none", the default).
    pair.green.psql(
        DB,
        "SELECT pg_replication_origin_session_setup('elsewhere'); INSERT INTO t VALUES (2, 'from elsewhere')",
    );
    pair.green
        .psql(DB, "INSERT INTO scratch (v) SELECT 'x' FROM generate_series(1, 2000)");
    let behind = assert_no_lag("WAL without anything for blue, ahead of its checkpoint");
    assert!(behind > 0, "the checkpoint moved despite the lock");
    lock.release();
    assert_eq!(bridge.terminate(), 0);
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM t"), "1", "not carried");
}

/// Holds a lock on blue's `table` from another session until released (or dropped).
pub(crate) struct BlueLock {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl BlueLock {
    pub(crate) fn take(pair: &Pair, table: &str) -> BlueLock {
        BlueLock::take_in_mode(pair, table, "ACCESS EXCLUSIVE")
    }

    fn take_in_mode(pair: &Pair, table: &str, mode: &str) -> BlueLock {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(&pair.blue.dsn(DB), tokio_postgres::NoTls))
            .unwrap();
        rt.spawn(conn);
        rt.block_on(client.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN {mode} MODE")))
            .unwrap();
        BlueLock { rt, client }
    }

    pub(crate) fn release(self) {
        self.rt.block_on(self.client.batch_execute("ROLLBACK")).unwrap();
    }
}

/// A green transaction whose apply is blocked on blue (a lock held by another session) is
/// lag from its commit on: `lag` reports its age, never more, and fails the gate; the metric
/// and `status` agree. Once the lock goes, lag returns to 0.
#[test]
fn a_transaction_blocked_on_blue_is_lag_from_its_commit() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    let bridge = pair.run();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());

    let lock = BlueLock::take(&pair, "t");
    let before_commit = Instant::now();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'blocked')");
    let last = std::cell::RefCell::new((0, String::new()));
    wait_for(
        Duration::from_secs(30),
        || {
            let seen = lag_line(&pair, &["--max-seconds", "1"]);
            let over = field(&seen.1, "lag_seconds").parse::<f64>().unwrap() > 1.0;
            *last.borrow_mut() = seen;
            over
        },
        || format!("lag_seconds never passed 1 s: {:?}\n{}", last.borrow(), bridge.log()),
    );
    let (code, line) = last.into_inner();
    let elapsed = before_commit.elapsed().as_secs_f64();
    assert_eq!(code, 1, "over --max-seconds 1: {line}");
    let seconds: f64 = field(&line, "lag_seconds").parse().unwrap();
    assert!(
        seconds <= elapsed,
        "{seconds} s is more than the {elapsed:.3} s since the commit: {line}"
    );
    let metric = lag_metric(&pair).expect("/metrics answers");
    let elapsed = before_commit.elapsed().as_secs_f64();
    assert!(
        metric > 1.0 && metric <= elapsed,
        "metric {metric}, {elapsed:.3} s since the commit"
    );
    let status = status_lag_seconds(&pair).as_f64().expect("status reports lag_seconds");
    assert!(
        status > 1.0 && status <= before_commit.elapsed().as_secs_f64(),
        "status {status}"
    );

    lock.release();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    let (code, line) = lag_line(&pair, &["--max-seconds", "1"]);
    assert_eq!((code, field(&line, "lag_seconds").as_str()), (0, "0.000"), "{line}");
    wait_for(
        Duration::from_secs(10),
        || lag_metric(&pair) == Some(0.0),
        || format!("the metric stayed at {:?}", lag_metric(&pair)),
    );
    assert_eq!(pair.blue.psql(DB, "SELECT v FROM t WHERE id = 1"), "blocked");
    assert_eq!(bridge.terminate(), 0);
}

/// When the truth cannot be read (here: `run` holds the slot and green has no replication slot
/// free for the copy `lag` decodes), `lag` exits 2 naming the cause and the fix instead of
/// printing a number, and `status` says the same; the metric, which tracks what the bridge
/// received, still counts the blocked transaction.
#[test]
fn lag_exits_2_when_it_cannot_tell() {
    let green = ClusterOptions {
        settings: vec![("max_replication_slots".into(), "1".into())],
        ..ClusterOptions::default()
    };
    let pair = Pair::start_with(green, ClusterOptions::default());
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let bridge = pair.run();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    let lock = BlueLock::take(&pair, "t");
    pair.green.psql(DB, "INSERT INTO t VALUES (1)");

    let out = pair.pgbridge(&["lag", "--max-seconds", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no number when it cannot tell: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for words in ["cannot tell lag_seconds", "max_replication_slots", "pgbridge_to_blue"] {
        assert!(err.contains(words), "no {words:?} in: {err}");
    }
    let out = pair.pgbridge(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(doc["lag_seconds"].is_null(), "{doc}");
    let why = doc["lag_seconds_unknown"].as_str().unwrap_or_default();
    assert!(why.contains("max_replication_slots"), "{doc}");
    wait_for(
        Duration::from_secs(10),
        || lag_metric(&pair).is_some_and(|v| v > 0.0),
        || format!("the metric says {:?}\n{}", lag_metric(&pair), bridge.log()),
    );

    lock.release();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    // Caught up to green's position, nothing needs decoding: the answer is exact again.
    wait_for(
        Duration::from_secs(30),
        || {
            let out = pair.pgbridge(&["lag", "--max-seconds", "5"]);
            out.status.code() == Some(0) && text(&out).contains("lag_bytes=0 lag_seconds=0.000")
        },
        || text(&pair.pgbridge(&["lag"])),
    );
    assert_eq!(bridge.terminate(), 0);
}

/// While blue is down the bridge cannot stream, so green's new transactions reach no one: the
/// metric still counts them (the bridge decodes a copy of its slot when its stream falls
/// behind), with their true age, and returns to 0 once blue is back and has them.
#[test]
fn the_metric_counts_transactions_green_has_not_sent_yet() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let bridge = pair.run();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    pair.blue.stop_immediate();
    wait_for(
        Duration::from_secs(30),
        || http_get(pair.metrics_port, "/readyz").is_some_and(|(code, _)| code == 503),
        || format!("the bridge still streams without blue\n{}", bridge.log()),
    );
    let before_commit = Instant::now();
    pair.green.psql(DB, "INSERT INTO t VALUES (1)");
    wait_for(
        Duration::from_secs(30),
        || lag_metric(&pair).is_some_and(|v| v > 1.0),
        || format!("the metric says {:?}\n{}", lag_metric(&pair), bridge.log()),
    );
    let metric = lag_metric(&pair).expect("/metrics answers");
    let elapsed = before_commit.elapsed().as_secs_f64();
    assert!(metric <= elapsed, "metric {metric}, {elapsed:.3} s since the commit");

    pair.blue.start_again();
    let out = pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    wait_for(
        Duration::from_secs(10),
        || lag_metric(&pair) == Some(0.0),
        || format!("the metric stayed at {:?}", lag_metric(&pair)),
    );
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM t"), "1");
    assert_eq!(bridge.terminate(), 0);
}
