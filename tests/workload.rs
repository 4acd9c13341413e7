//! A seeded random workload on green: inserts, updates, deletes, key changes and rolled-back
//! transactions over tables with a primary key, a jsonb payload, times, intervals and floats,
//! and no key at all.
//!
//! Both databases run with awkward session defaults (CORRECTNESS.md case 22): time zones far
//! from UTC and from each other, non-ISO dates, non-default interval and float output. Green's
//! `moments.local` is a `timestamptz` that blue keeps as a `timestamp`, so blue computes it in
//! its own zone, on every path alike (DESIGN.md rule 10).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::bridge::{text, Pair, DB};

/// DDL for the workload tables; run on both sides.
pub const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE items (id bigint PRIMARY KEY, payload jsonb, added timestamptz NOT NULL DEFAULT now(), price numeric(12,2));
CREATE TABLE events (account int, kind text, amount int);
";

/// `moments`, with `local` of type `{LOCAL}`: `timestamptz` on green, `timestamp` on blue.
const MOMENTS: &str = "CREATE TABLE moments (id int PRIMARY KEY, at timestamptz NOT NULL, local {LOCAL}, day date, \
                       span interval, ratio float8);";

/// Green-only settings the workload needs.
pub const GREEN_SETUP: &str = "ALTER TABLE events REPLICA IDENTITY FULL;";

/// Tables of the same shape on both sides.
pub const TABLES: [&str; 3] = ["public.accounts", "public.items", "public.events"];

/// Blue's default zone: +05:45, far from green's.
pub const BLUE_ZONE: &str = "Asia/Kathmandu";

/// Session defaults of the workload's database on green and on blue; every session pgbridge
/// (or the workload) opens gets them unless it sets its own.
const GREEN_DEFAULTS: [(&str, &str); 3] = [
    ("TimeZone", "America/St_Johns"),
    ("DateStyle", "SQL, DMY"),
    ("IntervalStyle", "iso_8601"),
];
const BLUE_DEFAULTS: [(&str, &str); 4] = [
    ("TimeZone", BLUE_ZONE),
    ("DateStyle", "German"),
    ("IntervalStyle", "sql_standard"),
    ("extra_float_digits", "0"),
];

fn alter_database(defaults: &[(&str, &str)]) -> String {
    defaults
        .iter()
        .map(|(name, value)| format!("ALTER DATABASE {DB} SET {name} = '{value}';"))
        .collect()
}

/// Runs `transactions` random transactions on green through one connection.
pub fn run(pair: &Pair, seed: u64, transactions: usize) {
    let dsn = pair.green.dsn("postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.expect("connect green");
        tokio::spawn(conn);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_id = 100_000 + (seed % 1000) as i32 * 1000;
        for _ in 0..transactions {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.gen_range(1..=5) {
                let id = rng.gen_range(1..=300);
                let amount = rng.gen_range(-500..=500);
                let stmt = match rng.gen_range(0..13) {
                    0..=2 => format!(
                        "INSERT INTO accounts VALUES ({id}, {amount}, 'n{amount}') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1;"
                    ),
                    3 => format!("UPDATE accounts SET balance = balance + {amount}, note = note || 'x' WHERE id = {id};"),
                    4 => format!("DELETE FROM accounts WHERE id = {id};"),
                    5 => {
                        next_id += 1;
                        format!("UPDATE accounts SET id = {next_id} WHERE id = (SELECT min(id) FROM accounts WHERE id > {id});")
                    }
                    6 => format!(
                        "INSERT INTO items VALUES ({id}, '{{\"k\": {amount}, \"s\": \"it''s\"}}', now(), {amount}.25) \
                         ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, price = items.price + 1;"
                    ),
                    7 => format!("DELETE FROM items WHERE id = {id};"),
                    8 => format!("INSERT INTO events VALUES ({id}, 'k{}', {amount});", amount % 3),
                    9 => format!(
                        "INSERT INTO moments VALUES ({id}, \
                         timestamptz '2024-03-10 03:30:00.25+00' + {amount} * interval '1 day 1 hour 13 minutes 0.125 seconds', \
                         timestamptz '2024-11-03 04:30:00+00' + {amount} * interval '37 minutes', \
                         date '2024-02-29' + {amount}, {amount} * interval '1 mon 1 day 2 hours 3.5 seconds', {amount}::float8 / 7) \
                         ON CONFLICT (id) DO UPDATE SET span = moments.span + interval '1 month -3 days', \
                         ratio = moments.ratio * 1.1, local = moments.local + interval '1 hour 1 second';"
                    ),
                    10 => format!("UPDATE moments SET day = day + 1, at = at - interval '90 minutes' WHERE id = {id};"),
                    11 => format!("DELETE FROM moments WHERE id = {id};"),
                    _ => format!(
                        "UPDATE events SET amount = amount + 1 WHERE ctid = (SELECT ctid FROM events WHERE account = {id} LIMIT 1);"
                    ),
                };
                sql.push_str(&stmt);
            }
            sql.push_str(if rng.gen_ratio(1, 20) { "ROLLBACK;" } else { "COMMIT;" });
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("workload transaction failed: {e}\n{sql}"));
        }
    });
}

/// Asserts every workload table is identical on both sides (`moments.local` as green's
/// instant in blue's zone).
pub fn assert_converged(pair: &Pair) {
    for t in TABLES {
        pair.assert_same(t);
    }
    let moments = |cluster: &crate::support::Cluster, local: &str| {
        cluster.psql(
            DB,
            &format!(
                "SET TimeZone = 'UTC'; SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; \
                 SELECT coalesce(string_agg(concat_ws('|', id, at, {local}, day, span, ratio), E'\\n' ORDER BY id), '') \
                 FROM moments"
            ),
        )
    };
    let green = moments(&pair.green, &format!("local AT TIME ZONE '{BLUE_ZONE}'"));
    let blue = moments(&pair.blue, "local");
    crate::environment::assert_lines_equal(&blue, &green, "moments (green's values as blue's zone shows them)");
}

/// Sets the session defaults on both sides, then creates the workload schema there.
pub fn create(pair: &Pair) {
    pair.green.psql(DB, &alter_database(&GREEN_DEFAULTS));
    pair.blue.psql(DB, &alter_database(&BLUE_DEFAULTS));
    pair.both(SCHEMA);
    pair.green.psql(DB, &MOMENTS.replace("{LOCAL}", "timestamptz"));
    pair.blue.psql(DB, &MOMENTS.replace("{LOCAL}", "timestamp"));
    pair.green.psql(DB, GREEN_SETUP);
}

/// Case 22: rows copied by `setup --copy` and rows streamed afterwards (changing copied ones
/// too) equal green's under the awkward defaults above, and `verify` agrees.
#[test]
fn copied_and_streamed_rows_equal_under_awkward_session_defaults() {
    let pair = Pair::start();
    create(&pair);
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT current_setting('DateStyle') || ' ' || current_setting('TimeZone')"
        ),
        format!("German, DMY {BLUE_ZONE}"),
        "blue's defaults are not in effect"
    );
    run(&pair, 21, 300);
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_converged(&pair);
    let bridge = pair.run();
    run(&pair, 22, 500);
    pair.wait_caught_up(&bridge);
    assert_converged(&pair);
    let moments: i64 = pair.blue.psql(DB, "SELECT count(*) FROM moments").parse().unwrap();
    assert!(
        moments > 20,
        "the workload should leave moments behind, found {moments}"
    );
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    assert!(text(&out).contains("identical: 4 table(s)"), "{}", text(&out));
    assert_eq!(bridge.terminate(), 0);
}
