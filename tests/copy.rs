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

/// The summary line `setup --copy` prints for `table` (the one starting `copied <table>`).
fn summary_line(report: &str, table: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with(&format!("copied {table} ")))
        .unwrap_or_else(|| panic!("no summary line for {table}:\n{report}"))
        .to_string()
}

/// `count md5` of a query's rows as text, in a UTC session.
fn digest(cluster: &crate::support::Cluster, query: &str) -> String {
    cluster.psql(
        DB,
        &format!(
            "SET TimeZone = 'UTC'; SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM ({query}) t"
        ),
    )
}

/// A mapping directory holding the example mappings and `extra` (file name, text).
fn mappings(pair: &Pair, extra: &[(&str, &str)]) {
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["customers.toml", "jobs.toml", "orders.toml"] {
        std::fs::copy(Path::new(EXAMPLE).join(f), dir.join(f)).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
}

#[test]
fn copy_into_filled_blue_goes_by_key_ranges_fixing_changed_and_deleting_extra_rows() {
    let pair = example_pair();
    fill_green(&pair, 2_000);
    pair.green.psql(
        DB,
        "CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric(10,2), pad text); \
         INSERT INTO big SELECT i, 'v' || i, i % 9 + 0.25, repeat(md5(i::text), 20) FROM generate_series(1, 40000) i; \
         DELETE FROM big WHERE id % 101 = 0; VACUUM ANALYZE big",
    );
    // Blue: a third of green's rows as the mapping writes them, a third stale, a third
    // missing; rows green deleted, and rows below and above green's keys.
    pair.blue.psql(
        DB,
        "CREATE TABLE big (id bigint PRIMARY KEY, v text, n integer, pad text); \
         INSERT INTO big SELECT i, CASE WHEN i % 3 = 0 THEN 'v' || i ELSE 'stale' END, round(i % 9 + 0.25), \
                repeat(md5(i::text), 20) FROM generate_series(1, 40000) i WHERE i % 3 <> 2; \
         INSERT INTO big VALUES (-5, 'below', 1, ''), (0, 'zero', 1, ''), (40001, 'above', 1, ''), (90000, 'far', 1, '');",
    );
    let untouched = "SELECT xmin::text FROM big WHERE id = 3";
    let before = pair.blue.psql(DB, untouched);
    let out = pair.pgbridge(&["setup", "--copy", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    let line = summary_line(&report, "public.big");
    assert!(line.contains("key ranges"), "cut into key ranges: {line}");
    assert!(line.contains("blue's table holds rows"), "{line}");
    let extra = (1..=40000).filter(|i| i % 101 == 0 && i % 3 != 2).count() + 4;
    assert!(
        line.contains(&format!("; {extra} blue rows not on green deleted")),
        "{line}"
    );
    assert_eq!(
        digest(&pair.green, "SELECT id, v, round(n)::int, pad FROM big"),
        digest(&pair.blue, "SELECT id, v, n, pad FROM big"),
        "blue's big is green's through the mapping"
    );
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT count(*) FROM big WHERE id % 101 = 0 OR id <= 0 OR id > 40000"
        ),
        "0"
    );
    assert_eq!(
        pair.blue.psql(DB, untouched),
        before,
        "a row that matched is not written"
    );
    assert_example_equal(&pair);
}

#[test]
fn binary_and_text_routes_carry_every_value() {
    let pair = example_pair();
    pair.both(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE moods (id int PRIMARY KEY, m mood, ms mood[], n numeric, note text); \
         CREATE TABLE builtins (id int PRIMARY KEY, t timestamptz, ts timestamp, d date, b bytea, j jsonb, \
             f float8, r real, a int[], ta text[], n numeric, nd numeric(8,3), u uuid, i interval, bo boolean, \
             c char(3), v varchar(10), ip inet, tm time);",
    );
    pair.green.psql(
        DB,
        "INSERT INTO moods SELECT i, (ARRAY['sad', 'ok', 'happy', NULL])[i % 4 + 1]::mood, \
                ARRAY['happy', NULL, 'sad']::mood[], i / 7.0, E'line\\nbreak\\ttab \\\\ ' || i \
           FROM generate_series(1, 3000) i; \
         INSERT INTO builtins SELECT i, timestamptz '2024-03-10 01:30:00-05' + i * interval '17 minutes', \
                timestamp '1999-12-31 23:59:59.999999' + i * interval '1 day', date '2000-02-28' + i, \
                decode(md5(i::text), 'hex'), jsonb_build_object('k', i, 'a', jsonb_build_array(1, 2.50, NULL)), \
                i / 3.0, i / 7.0, ARRAY[i, NULL, -i], ARRAY['a,b', '\"q\"', NULL, ''], i * 1.000001, i / 9.0, \
                md5(i::text)::uuid, make_interval(years => i % 3, days => -i, secs => i / 1000.0), i % 2 = 0, \
                'ab', 'v' || i, ('10.0.' || i % 256 || '.1')::inet, time '00:00:00.5' + i * interval '1 minute' \
           FROM generate_series(1, 3000) i; \
         INSERT INTO builtins VALUES \
           (-1, 'infinity', '-infinity', 'infinity', '\\x', '{}', 'NaN', '-Infinity', '{}', '{}', 'NaN', -0.0005, \
            '00000000-0000-0000-0000-000000000000', '-178000000 years', false, '', '', '::1', '24:00:00'), \
           (-2, '-infinity', 'infinity', '-infinity', '\\x00ff', 'null', '-0', 'Infinity', '{{1,2},{3,4}}', '{NULL}', \
            '1e-100', 99999.9994, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '178000000 years', NULL, 'xyz', 'é€', \
            '2001:db8::/32', '23:59:59.999999'), \
           (-3, NULL, NULL, NULL, NULL, NULL, 1.7976931348623157e308, 1e-37, NULL, NULL, 1e100, NULL, NULL, NULL, \
            NULL, NULL, NULL, NULL, NULL);",
    );
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    assert!(
        summary_line(&report, "public.moods").contains("straight into blue's table, text"),
        "{report}"
    );
    assert!(
        summary_line(&report, "public.builtins").contains("straight into blue's table, binary"),
        "{report}"
    );
    for table in ["moods", "builtins"] {
        let q = format!("SELECT * FROM {table}");
        assert_eq!(digest(&pair.green, &q), digest(&pair.blue, &q), "{table} differs");
    }
    // Value by value, as each type prints, NULLs included.
    let every =
        "SELECT id, t, ts, d, b, j, f::text, r::text, a, ta, n::text, nd::text, u, i, bo, c, v, ip, tm FROM builtins";
    assert_eq!(
        crate::support::bridge::rows(&pair.green, &format!("({every})")),
        crate::support::bridge::rows(&pair.blue, &format!("({every})"))
    );
}

const EVENTS: &str = r#"target = "public.events"
[columns]
day   = { expr = "at::date" }
label = { expr = "upper(name) || ' ' || at::text" }
"#;

/// What blue's events should hold, computed on green by this test in blue's zone.
const EVENTS_EXPECTED: &str = "SELECT id, at::date, upper(name) || ' ' || at::text, round(amount, 1) FROM events";

#[test]
fn an_expression_evaluated_on_green_equals_the_stage_route() {
    let pair = example_pair();
    // Blue's zone is not green's: evaluating on green in green's own settings would differ.
    pair.blue
        .psql(DB, "ALTER DATABASE postgres SET timezone = 'Pacific/Chatham'");
    pair.green
        .psql(DB, "ALTER DATABASE postgres SET timezone = 'America/St_Johns'");
    pair.green.psql(
        DB,
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, name text, amount numeric(10,3)); \
         INSERT INTO events SELECT i, timestamptz '2024-03-09 18:00:00+00' + i * interval '37 minutes', 'event ' || i, \
                i / 20.0 + 0.005 FROM generate_series(1, 4000) i",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE events (id bigint PRIMARY KEY, day date, label text, amount numeric(8,1))",
    );
    mappings(&pair, &[("events.toml", EVENTS)]);
    fill_green(&pair, 1_000);
    let expected = |c: &crate::support::Cluster| {
        c.psql(
            DB,
            &format!(
                "SET TimeZone = 'Pacific/Chatham'; SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t::text)) \
                 FROM ({EVENTS_EXPECTED}) t"
            ),
        )
    };
    let on_blue = |c: &crate::support::Cluster| {
        c.psql(
            DB,
            "SET TimeZone = 'Pacific/Chatham'; SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t::text)) \
             FROM (SELECT id, day, label, amount FROM events) t",
        )
    };

    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = summary_line(&text(&out), "public.events");
    assert!(line.contains("straight into blue's table"), "green evaluates: {line}");
    let from_green = on_blue(&pair.blue);

    // Blue holds rows now (all of them wrong): the mapping is evaluated on blue.
    pair.blue
        .psql(DB, "UPDATE events SET day = '2000-01-01', label = 'x', amount = 0");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = summary_line(&text(&out), "public.events");
    assert!(line.contains("through a stage on blue"), "blue evaluates: {line}");
    let from_blue = on_blue(&pair.blue);

    assert_eq!(from_green, from_blue, "both routes store the same rows");
    assert_eq!(
        from_green,
        expected(&pair.green),
        "and they are green's through the mapping"
    );
    assert_example_equal(&pair);
}

#[test]
fn an_expression_green_must_not_evaluate_goes_through_the_stage() {
    let pair = example_pair();
    // One function name, two bodies: only blue's may be used.
    pair.green.psql(
        DB,
        "CREATE FUNCTION shout(t text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT 'green ' || t $$",
    );
    pair.blue.psql(
        DB,
        "CREATE FUNCTION shout(t text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT 'blue ' || t $$",
    );
    pair.green.psql(
        DB,
        "CREATE TABLE notes (id int PRIMARY KEY, body text); \
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 2000) i; \
         CREATE TABLE draws (id int PRIMARY KEY, n int); \
         INSERT INTO draws SELECT i, i * 7 FROM generate_series(1, 2000) i;",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE notes (id int PRIMARY KEY, shown text); CREATE TABLE draws (id int PRIMARY KEY, pick int);",
    );
    mappings(
        &pair,
        &[
            (
                "notes.toml",
                "target = \"public.notes\"\n[columns]\nshown = { expr = \"shout(body)\" }\n",
            ),
            (
                "draws.toml",
                "target = \"public.draws\"\n[columns]\npick = { expr = \"n + (random() * 0)::int\" }\n",
            ),
        ],
    );
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    let notes = summary_line(&report, "public.notes");
    assert!(
        notes.contains("through a stage on blue") && notes.contains("shout"),
        "{notes}"
    );
    let draws = summary_line(&report, "public.draws");
    assert!(
        draws.contains("through a stage on blue") && draws.contains("volatile"),
        "{draws}"
    );
    assert_eq!(
        digest(&pair.green, "SELECT id, 'blue ' || body FROM notes"),
        digest(&pair.blue, "SELECT id, shown FROM notes")
    );
    assert_eq!(
        digest(&pair.green, "SELECT id, n FROM draws"),
        digest(&pair.blue, "SELECT id, pick FROM draws")
    );
}
