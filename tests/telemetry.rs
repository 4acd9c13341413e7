//! The HTTP endpoints of `pgbridge run`: every metric DESIGN.md names is exported with its
//! labels, /healthz, /readyz and /status answer, and no password leaks into any of them.

use std::io::{Read, Write};
use std::time::Duration;

use pgbridge::telemetry::names;

use crate::support::bridge::{wait_for, Pair, DB};

/// GET `path` on 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Waits until the bridge serving on `port` reports ready (streaming).
fn wait_ready(port: u16, bridge: &crate::support::bridge::Running) {
    wait_for(
        Duration::from_secs(30),
        || http_get(port, "/readyz").is_some_and(|(c, _)| c == 200),
        || bridge.log(),
    );
}

pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_health_and_status_endpoints() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    // Trust authentication ignores the password, so it can be planted in the DSN and searched for.
    let secret = "Sup3r-s3cret-pw";
    pair.write_config_with(
        &format!("postgres://postgres:{secret}@127.0.0.1:{}/{DB}", pair.green.port()),
        &format!("postgres://postgres:{secret}@127.0.0.1:{}/{DB}", pair.blue.port()),
        "",
    );
    pair.setup();
    let bridge = pair.run();
    let port = pair.metrics_port;
    wait_ready(port, &bridge);
    pair.green.psql(DB, "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g; UPDATE t SET v = 'y' WHERE id <= 10; DELETE FROM t WHERE id = 50;");
    pair.green.psql(DB, "TRUNCATE t");
    pair.wait_caught_up(&bridge);

    let (code, metrics) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    for name in names::ALL {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} is not exported:\n{metrics}"
        );
    }
    for series in [
        "pgbridge_rows_applied_total{table=\"public.t\",op=\"insert\"} 50",
        "pgbridge_rows_applied_total{table=\"public.t\",op=\"update\"} 10",
        "pgbridge_rows_applied_total{table=\"public.t\",op=\"delete\"} 1",
        "pgbridge_rows_applied_total{table=\"public.t\",op=\"truncate\"} 1",
        "pgbridge_state{state=\"streaming\"} 1",
        "pgbridge_state{state=\"failed\"} 0",
        "pgbridge_errors_total{kind=\"definite\"} 0",
        "pgbridge_reconnects_total{side=\"blue\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "missing {series}:\n{metrics}");
    }
    assert!(
        sample(&metrics, "pgbridge_transactions_applied_total").unwrap() >= 3.0,
        "{metrics}"
    );
    assert!(sample(&metrics, "pgbridge_applied_lsn").unwrap() > 0.0, "{metrics}");
    assert!(
        metrics.contains("pgbridge_apply_duration_seconds_bucket"),
        "histograms have buckets"
    );
    // Caught up and idle: lag_seconds is 0.
    assert_eq!(
        sample(&metrics, "pgbridge_lag_seconds"),
        Some(0.0),
        "{metrics}\n--- pgbridge log ---\n{}",
        bridge.log()
    );

    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    let (code, status) = http_get(port, "/status").expect("/status answers");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(doc["state"], "streaming");
    assert_eq!(doc["tables"]["public.t"]["insert"], 50);
    assert_eq!(http_get(port, "/nope").map(|r| r.0), Some(404));

    for text in [&metrics, &status, &bridge.log()] {
        assert!(!text.contains(secret), "the password leaked");
    }
    assert_eq!(bridge.terminate(), 0);
}

/// Lag grows while blue is blocked and a backlog waits.
#[test]
fn lag_seconds_grows_while_a_backlog_waits() {
    let pair = std::sync::Arc::new(Pair::start());
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let bridge = pair.run();
    let port = pair.metrics_port;
    wait_ready(port, &bridge);
    let locker = {
        let pair = pair.clone();
        std::thread::spawn(move || pair.blue.psql(DB, "BEGIN; LOCK TABLE t; SELECT pg_sleep(3); COMMIT;"))
    };
    wait_for(
        Duration::from_secs(10),
        || {
            pair.blue.psql(
                DB,
                "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'",
            ) == "1"
        },
        || "no lock".into(),
    );
    pair.green.psql(DB, "INSERT INTO t VALUES (1)");
    let lag = || {
        http_get(port, "/metrics")
            .and_then(|(_, m)| sample(&m, "pgbridge_lag_seconds"))
            .unwrap_or(0.0)
    };
    wait_for(
        Duration::from_secs(10),
        || lag() >= 1.0,
        || "lag_seconds never grew past 1 s".into(),
    );
    locker.join().unwrap();
    pair.wait_caught_up(&bridge);
    wait_for(
        Duration::from_secs(10),
        || lag() == 0.0,
        || "lag_seconds did not return to 0".into(),
    );
}

/// A group whose COMMIT returned is counted even when a later group fails before the applier
/// took note of that COMMIT (here a large transaction green streamed in progress, then a row
/// blue rejects, parked as a dead letter after the replay): the metrics count every row blue
/// has, each once. Before, the 50,000 rows were missing from the metrics (found by an outside
/// test of the restructured binary; the old one did the same).
#[test]
fn rows_committed_before_a_failed_group_are_counted() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v int)");
    pair.blue
        .psql(DB, "ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100000)");
    // The large transaction is streamed while in progress, on a lane of its own.
    pair.green
        .psql(DB, "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'");
    pair.green.psql(DB, "SELECT pg_reload_conf()");
    pair.write_config("[apply]\non_error = \"dead_letter\"\n");
    pair.setup();
    let bridge = pair.run();
    let port = pair.metrics_port;
    wait_ready(port, &bridge);
    pair.green
        .psql(DB, "INSERT INTO t SELECT g, g % 1000 FROM generate_series(1, 50000) g");
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO t VALUES (100001, 200000); INSERT INTO t VALUES (100002, 5); COMMIT;",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM t"), "50001");
    let (_, metrics) = http_get(port, "/metrics").expect("/metrics answers");
    // The rejected row is counted as applied too: it was handled (parked), as before.
    let series = "pgbridge_rows_applied_total{table=\"public.t\",op=\"insert\"} 50002";
    assert!(
        metrics.lines().any(|l| l == series),
        "missing {series}:\n{metrics}\n--- log ---\n{}",
        bridge.log()
    );
    assert_eq!(bridge.terminate(), 0);
}
