//! `pgbridge setup --copy`: the initial copy through the example mapping, under concurrent
//! writes on green (exactly once), into a partly filled blue (converges), and after a failed
//! copy (nothing streams until a rerun succeeds).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, DB};

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/example");

/// Green and blue with the example schemas, a keyless insert-only `log` table on both (mapped
/// implicitly; it would show any row copied or streamed twice), and the example mappings.
pub fn example_pair() -> Pair {
    let pair = Pair::start();
    let read = |f: &str| std::fs::read_to_string(Path::new(EXAMPLE).join(f)).unwrap();
    pair.green.psql(DB, &read("green.sql"));
    pair.blue.psql(DB, &read("blue.sql"));
    pair.both("CREATE TABLE log (n int, note text)");
    pair.green.psql(DB, "ALTER TABLE log REPLICA IDENTITY FULL");
    pair.write_config(&format!("[mapping]\ndir = \"{EXAMPLE}\"\n"));
    pair
}

/// Fills green's example tables: `n` customers, jobs and purchases.
pub fn fill_green(pair: &Pair, n: u32) {
    pair.green.psql(
        DB,
        &format!(
            "INSERT INTO customers (id, name, email_address, location_structured, preferences, created_at) \
               SELECT i, 'customer ' || i, 'c' || i || '@example.com', \
                      CASE WHEN i % 10 = 0 THEN NULL ELSE jsonb_build_object('city', 'city ' || i % 37) END, \
                      '{{}}', timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute' \
               FROM generate_series(1, {n}) i; \
             INSERT INTO jobs SELECT i, i, (i % 9) + 0.5, CASE WHEN i % 3 = 0 THEN NULL ELSE 'job ' || i END \
               FROM generate_series(1, {n}) i; \
             INSERT INTO purchases SELECT i, i % 1000 + 1, i % 997 + 0.99, 'new' FROM generate_series(1, {n}) i;"
        ),
    );
}

/// Green through the example mapping, written out as SQL here (not by pgbridge), against blue.
pub fn assert_example_equal(pair: &Pair) {
    let digest = |cluster: &crate::support::Cluster, q: &str| {
        cluster.psql(
            DB,
            &format!(
                "SET TimeZone = 'UTC'; SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM ({q}) t"
            ),
        )
    };
    let pairs = [
        (
            "SELECT id, name, email_address, location_structured ->> 'city', created_at FROM customers",
            "SELECT id, name, email, location, created_at FROM customers",
        ),
        (
            "SELECT id, customer_id, round(quantity)::int, description FROM jobs",
            "SELECT id, customer_id, quantity, description FROM jobs",
        ),
        ("SELECT * FROM purchases", "SELECT * FROM orders"),
        ("SELECT * FROM log", "SELECT * FROM log"),
    ];
    for (green, blue) in pairs {
        assert_eq!(
            digest(&pair.green, green),
            digest(&pair.blue, blue),
            "green `{green}` differs from blue `{blue}`"
        );
    }
}

/// Writes on green until `stop`: log inserts, purchase inserts and customer updates, one
/// transaction each.
fn writer(pair: &Pair, stop: &AtomicBool, done: &AtomicU64) {
    let mut i = 1_000_000u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        pair.green.psql(
            DB,
            &format!(
                "BEGIN; INSERT INTO log VALUES ({i}, 'during copy'); \
                 INSERT INTO purchases VALUES ({i}, 1, 1.50, 'during'); \
                 UPDATE customers SET email_address = 'w{i}@example.com' WHERE id = {}; \
                 DELETE FROM jobs WHERE id = {}; COMMIT;",
                i % 500 + 1,
                i % 700 + 1
            ),
        );
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn copy_under_concurrent_writes_is_exactly_once() {
    let pair = example_pair();
    fill_green(&pair, 100_000);
    pair.green.psql(
        DB,
        "INSERT INTO log SELECT i, 'before' FROM generate_series(1, 20000) i",
    );
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let bridge = std::thread::scope(|s| {
        s.spawn(|| writer(&pair, &stop, &done));
        // Writes before, during and after the snapshot.
        wait_for(
            Duration::from_secs(30),
            || done.load(Ordering::Relaxed) >= 5,
            || "the writer did not start".into(),
        );
        let out = pair.pgbridge(&["setup", "--copy", "--jobs", "3"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let report = text(&out);
        assert!(report.contains("copied 4 table(s)"), "{report}");
        let bridge = pair.run();
        let before = done.load(Ordering::Relaxed);
        wait_for(
            Duration::from_secs(30),
            || done.load(Ordering::Relaxed) >= before + 5,
            || "the writer stalled".into(),
        );
        stop.store(true, Ordering::Relaxed);
        bridge
    });
    pair.wait_caught_up(&bridge);
    assert_example_equal(&pair);
    let during: i64 = pair
        .blue
        .psql(DB, "SELECT count(*) FROM log WHERE note = 'during copy'")
        .parse()
        .unwrap();
    assert_eq!(
        during as u64,
        done.load(Ordering::Relaxed),
        "each writer transaction exactly once"
    );
}

#[test]
fn copy_into_partly_filled_blue_converges() {
    let pair = example_pair();
    fill_green(&pair, 5_000);
    // Blue holds some of the rows, some stale, some green never had.
    pair.blue.psql(
        DB,
        "INSERT INTO customers (id, name, email, location, created_at) \
           SELECT i, 'stale ' || i, 'old@example.com', 'nowhere', '2020-01-01' FROM generate_series(1, 3000, 2) i; \
         INSERT INTO customers (id, name, email) VALUES (900001, 'only on blue', 'x@example.com'); \
         INSERT INTO orders SELECT i, 1, 0, 'stale' FROM generate_series(4000, 6000) i; \
         INSERT INTO log VALUES (-1, 'only on blue');",
    );
    pair.green.psql(DB, "INSERT INTO log VALUES (1, 'green')");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_example_equal(&pair);
    // Copying again (the slot is recreated) changes nothing.
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_example_equal(&pair);
    let bridge = pair.run();
    pair.green.psql(DB, "UPDATE purchases SET status = 'paid' WHERE id = 7");
    pair.wait_caught_up(&bridge);
    assert_example_equal(&pair);
}

#[test]
fn failed_copy_blocks_streaming_until_rerun() {
    let pair = example_pair();
    fill_green(&pair, 2_000);
    pair.blue
        .psql(DB, "ALTER TABLE orders ADD CONSTRAINT small CHECK (total < 500)");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("public.purchases") && err.contains("public.orders") && err.contains("small"),
        "the error names the tables and the constraint:\n{err}"
    );
    assert!(err.contains("setup --copy"), "says how to recover:\n{err}");
    assert_eq!(pair.checkpoint(), "0/0");
    assert_eq!(
        pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "the slot of the failed copy is dropped"
    );
    // Neither run nor a plain setup proceeds on a half-copied blue.
    let bridge = pair.run();
    let (code, log) = bridge.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("did not finish"), "{log}");
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    pair.blue.psql(DB, "ALTER TABLE orders DROP CONSTRAINT small");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    pair.green
        .psql(DB, "INSERT INTO purchases VALUES (99999, 1, 1, 'after')");
    pair.wait_caught_up(&bridge);
    assert_example_equal(&pair);
}
