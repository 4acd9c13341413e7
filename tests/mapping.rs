//! Mappings against real servers: the example scenario, each mapping feature, the unchanged-TOAST
//! and filter transitions, a green DDL change mid-stream, and one test per `check` problem.
//! Blue's contents are asserted against values written out here, not computed by pgbridge code.

use std::path::Path;
use std::time::Duration;

use crate::support::bridge::{text, Pair, DB};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/example");

fn example_pair() -> Pair {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        &std::fs::read_to_string(Path::new(EXAMPLE).join("green.sql")).unwrap(),
    );
    pair.blue.psql(
        DB,
        &std::fs::read_to_string(Path::new(EXAMPLE).join("blue.sql")).unwrap(),
    );
    pair.write_config(&format!("[mapping]\ndir = \"{EXAMPLE}\"\n"));
    pair
}

/// Writes mapping files into the pair's own mapping directory and points the config at it.
fn with_mappings(pair: &Pair, files: &[(&str, &str)], extra: &str) {
    let dir = pair.dir.path().join("mappings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n{extra}", dir.display()));
}

fn blue_rows(pair: &Pair, sql: &str) -> String {
    pair.blue.psql(DB, sql)
}

#[test]
fn example_mapping_streams_renames_retypes_and_reshapes() {
    let pair = example_pair();
    let check = pair.pgbridge(&["check", "--sql"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = text(&check);
    assert!(out.contains("blue public.orders <- green public.purchases"), "{out}");
    assert!(out.contains("email") && out.contains("<- email_address"), "{out}");
    assert!(out.contains("expr location_structured ->> 'city'"), "{out}");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO customers (id, name, email_address, location_structured, preferences, created_at) VALUES \
           (1, 'Ana', 'ana@example.com', '{\"city\": \"Porto\", \"zip\": \"4000\"}', '{\"theme\": \"dark\"}', '2026-01-02 03:04:05+00'), \
           (2, 'Rui', 'rui@example.com', NULL, '{}', '2026-01-02 03:04:05+00'); \
         INSERT INTO jobs VALUES (10, 1, 2.50, 'paint'), (11, 2, 7.00, NULL); \
         INSERT INTO purchases VALUES (100, 1, 19.99, 'new'), (101, 2, 5.00, 'new');",
    );
    pair.green.psql(
        DB,
        "UPDATE customers SET email_address = 'ana@new.example', location_structured = '{\"city\": \"Faro\"}' WHERE id = 1; \
         UPDATE jobs SET quantity = 3.49 WHERE id = 11; \
         UPDATE purchases SET status = 'paid' WHERE id = 100; DELETE FROM purchases WHERE id = 101;",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(&pair, "SELECT string_agg(format('%s|%s|%s|%s|%s', id, name, email, location, created_at AT TIME ZONE 'UTC'), ';' ORDER BY id) FROM customers"),
        "1|Ana|ana@new.example|Faro|2026-01-02 03:04:05;2|Rui|rui@example.com||2026-01-02 03:04:05"
    );
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s|%s', id, quantity, description), ';' ORDER BY id) FROM jobs"
        ),
        "10|3|paint;11|3|"
    );
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s|%s', id, total, status), ';' ORDER BY id) FROM orders"
        ),
        "100|19.99|paid"
    );
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn renamed_key_insert_only_and_omitted_columns() {
    let pair = Pair::start();
    pair.green
        .psql(DB, "CREATE TABLE acct (uid int PRIMARY KEY, label text)");
    pair.blue.psql(
        DB,
        "CREATE TABLE acct (id int PRIMARY KEY, label text, origin text, legacy text NOT NULL DEFAULT 'kept')",
    );
    with_mappings(
        &pair,
        &[(
            "acct.toml",
            "target = \"acct\"\n[columns]\nid = { from = \"uid\" }\norigin = { expr = \"'bridge'\", on = \"insert\" }\n\
             legacy = { omit = true }\n[key]\nid = \"uid\"\n",
        )],
        "",
    );
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO acct VALUES (1, 'one'), (2, 'two')");
    pair.wait_caught_up(&bridge);
    pair.blue.psql(
        DB,
        "UPDATE acct SET origin = 'manual', legacy = 'edited on blue' WHERE id = 1",
    );
    pair.green.psql(
        DB,
        "UPDATE acct SET label = 'uno' WHERE uid = 1; UPDATE acct SET uid = 20 WHERE uid = 2;",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s|%s|%s', id, label, origin, legacy), ';' ORDER BY id) FROM acct"
        ),
        "1|uno|manual|edited on blue;20|two|bridge|kept"
    );
}

#[test]
fn filter_transitions_insert_and_delete_on_blue() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, tenant_id int NOT NULL, v text)");
    pair.green.psql(DB, "ALTER TABLE t REPLICA IDENTITY FULL");
    with_mappings(
        &pair,
        &[("t.toml", "target = \"t\"\n[filter]\nwhere = \"tenant_id = 42\"\n")],
        "",
    );
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO t VALUES (1, 42, 'in'), (2, 7, 'out'), (3, 42, 'leaves'), (4, 42, 'deleted')",
    );
    pair.green.psql(
        DB,
        "UPDATE t SET tenant_id = 42, v = 'entered' WHERE id = 2; UPDATE t SET tenant_id = 7 WHERE id = 3; \
         UPDATE t SET v = 'stayed' WHERE id = 1; DELETE FROM t WHERE id = 4; INSERT INTO t VALUES (5, 7, 'never');",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s|%s', id, tenant_id, v), ';' ORDER BY id) FROM t"
        ),
        "1|42|stayed;2|42|entered"
    );
}

/// Green `d(id, title, doc jsonb)` with `doc` stored out of line, blue `d` as `blue_ddl`, the
/// mapping `columns`; one row inserted and applied, its doc TOASTed.
fn toast_pair(full: bool, blue_ddl: &str, columns: &str) -> (Pair, crate::support::bridge::Running) {
    let pair = Pair::start();
    pair.green.psql(DB, "CREATE TABLE d (id int PRIMARY KEY, title text, doc jsonb); ALTER TABLE d ALTER COLUMN doc SET STORAGE EXTERNAL;");
    if full {
        pair.green.psql(DB, "ALTER TABLE d REPLICA IDENTITY FULL");
    }
    pair.blue.psql(DB, blue_ddl);
    let mapping = format!("target = \"d\"\nignore = [\"doc\"]\n[columns]\n{columns}");
    with_mappings(&pair, &[("d.toml", mapping.as_str())], "");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO d SELECT 1, 't1', jsonb_build_object('city', 'Braga', 'pad', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i))",
    );
    pair.wait_caught_up(&bridge);
    (pair, bridge)
}

fn toast_expression_case(full: bool) -> (Pair, crate::support::bridge::Running) {
    toast_pair(
        full,
        "CREATE TABLE d (id int PRIMARY KEY, title text, city text, label text)",
        "city = { expr = \"doc ->> 'city'\" }\nlabel = { expr = \"title || '@' || (doc ->> 'city')\" }\n",
    )
}

/// A blue column whose expression reads only an unchanged TOAST value is left alone; one that
/// reads changed and unchanged columns stops the bridge unless green sends full rows.
#[test]
fn unchanged_toast_through_expressions() {
    let (pair, bridge) = toast_expression_case(false);
    let before = pair.checkpoint();
    pair.green.psql(DB, "UPDATE d SET title = 't2' WHERE id = 1");
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("public.d.label") && log.contains("REPLICA IDENTITY FULL"),
        "{log}"
    );
    assert_eq!(
        pair.checkpoint(),
        before,
        "nothing after the last good transaction is confirmed"
    );
    assert_eq!(
        blue_rows(&pair, "SELECT format('%s|%s|%s', title, city, label) FROM d"),
        "t1|Braga|t1@Braga"
    );

    let (pair, bridge) = toast_expression_case(true);
    pair.green.psql(DB, "UPDATE d SET title = 't2' WHERE id = 1");
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(&pair, "SELECT format('%s|%s|%s', title, city, label) FROM d"),
        "t2|Braga|t2@Braga"
    );
}

/// Only the expression over the unchanged column: blue keeps its value.
#[test]
fn expression_over_unchanged_toast_only_is_left_alone() {
    let (pair, bridge) = toast_pair(
        false,
        "CREATE TABLE d (id int PRIMARY KEY, title text, city text)",
        "city = { expr = \"doc ->> 'city'\" }\n",
    );
    pair.green.psql(DB, "UPDATE d SET title = 't2' WHERE id = 1");
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(&pair, "SELECT format('%s|%s', title, city) FROM d"),
        "t2|Braga"
    );
}

/// Green's shape changes between transactions: an added column under strict stops the bridge
/// with the fix named, nothing after the last good transaction is confirmed, and ignoring the
/// column lets it go on.
#[test]
fn green_ddl_mid_stream_is_rechecked() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    with_mappings(&pair, &[("t.toml", "target = \"t\"\n")], "");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'a')");
    pair.wait_caught_up(&bridge);
    let good = pair.checkpoint();
    pair.green.psql(
        DB,
        "ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (2, 'b', 5);",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("public.t.extra") && log.contains("t.toml"), "{log}");
    assert_eq!(pair.checkpoint(), good);
    assert_eq!(blue_rows(&pair, "SELECT count(*) FROM t"), "1");

    with_mappings(&pair, &[("t.toml", "target = \"t\"\nignore = [\"extra\"]\n")], "");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t"),
        "1a,2b"
    );

    // A column the mapping uses disappears: stop, naming it.
    pair.green.psql(
        DB,
        "ALTER TABLE t RENAME COLUMN v TO w; INSERT INTO t VALUES (3, 'c', 1);",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("public.t.w"), "{log}");
    assert_eq!(blue_rows(&pair, "SELECT count(*) FROM t"), "2");
}

/// Green and blue for the `check` problem tests: blue differs from green in ways a mapping
/// must handle (a type mismatch, a generated column, a NOT NULL column green lacks), and green
/// has an enum blue lacks.
fn check_pair() -> Pair {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TYPE mood AS ENUM ('ok', 'sad'); \
         CREATE TABLE c (id int PRIMARY KEY, name text, doc jsonb, m mood, code int); \
         CREATE TABLE other (id int PRIMARY KEY);",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE c (id int PRIMARY KEY, name text NOT NULL, doc jsonb, m text, code int, \
           gen int GENERATED ALWAYS AS (id * 2) STORED, must text NOT NULL); \
         CREATE TABLE other (id int PRIMARY KEY);",
    );
    pair
}

/// A mapping that fits [`check_pair`]: m's enum exists only on green, so m is ignored.
const FITS: &str = "target = \"c\"\nignore = [\"m\"]\n[columns]\nmust = { expr = \"'x'\" }\n";

/// Runs `pgbridge check` with `c.toml` = `body`: exit 1 and every word of `words` in the output.
fn check_fails_with(pair: &Pair, body: &str, words: &[&str]) {
    with_mappings(pair, &[("c.toml", body)], "");
    let out = pair.pgbridge(&["check"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1\n{said}");
    for w in words {
        assert!(said.contains(w), "check output lacks {w:?}\n{said}");
    }
}

#[test]
fn check_passes_a_fitting_mapping() {
    let pair = check_pair();
    with_mappings(&pair, &[("c.toml", FITS)], "");
    let out = pair.pgbridge(&["check", "--sql"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("INSERT INTO \"public\".\"c\""), "{}", text(&out));
}

#[test]
fn check_type_not_assignable() {
    let pair = check_pair();
    pair.blue
        .psql(DB, "ALTER TABLE c ALTER COLUMN doc TYPE integer USING NULL");
    check_fails_with(&pair, FITS, &["do not prepare on blue", "\"doc\" is of type integer"]);
}

#[test]
fn check_unknown_blue_column() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}nope = {{ from = \"name\" }}\n"),
        &["c.toml:5", "columns.nope", "has no column nope"],
    );
}

#[test]
fn check_unknown_green_column() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}name = {{ from = \"nme\" }}\n"),
        &["columns.name", "no column nme"],
    );
}

#[test]
fn check_generated_blue_column_written() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}gen = {{ expr = \"1\" }}\n"),
        &["columns.gen", "generated"],
    );
}

#[test]
fn check_not_null_column_unfed() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        "target = \"c\"\nignore = [\"m\"]\n",
        &["c.must", "NOT NULL without a default"],
    );
}

#[test]
fn check_key_outside_replica_identity() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}[key]\nid = \"code\"\n"),
        &["replica identity", "REPLICA IDENTITY FULL"],
    );
}

#[test]
fn check_filter_outside_replica_identity() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}[filter]\nwhere = \"code > 1\"\n"),
        &["filter.where", "replica identity"],
    );
}

#[test]
fn check_expression_that_does_not_prepare() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}name = {{ expr = \"upper(name\" }}\n"),
        &["do not prepare on blue", "syntax error"],
    );
}

#[test]
fn check_column_with_two_feeds() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        &format!("{FITS}name = {{ from = \"name\", expr = \"x\" }}\n"),
        &["c.toml:5", "only one of"],
    );
}

#[test]
fn check_unknown_key_in_file() {
    let pair = check_pair();
    check_fails_with(&pair, "target = \"c\"\nsorce = \"c\"\n", &["c.toml:2", "sorce"]);
}

#[test]
fn check_source_not_streamed() {
    let pair = check_pair();
    check_fails_with(
        &pair,
        "target = \"c\"\nsource = \"missing\"\n",
        &["public.missing", "not among the green tables"],
    );
}

#[test]
fn check_green_type_missing_on_blue() {
    let pair = check_pair();
    let reads_m = "target = \"c\"\n[columns]\nmust = { expr = \"'x'\" }\n";
    check_fails_with(
        &pair,
        reads_m,
        &["public.c.m has type public.mood, which does not exist on blue"],
    );
    pair.blue.psql(DB, "CREATE TYPE mood AS ENUM ('ok', 'sad')");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "with the type on blue everything fits:\n{}",
        text(&out)
    );
}

/// A row blue rejects: under `dead_letter` it is parked with table, key, row, error and LSN
/// and the stream goes on; under `stop` the bridge stops naming the same facts.
#[test]
fn rejected_rows_are_dead_lettered_or_stop_with_their_key() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue
        .psql(DB, "ALTER TABLE t ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    with_mappings(&pair, &[], "[apply]\non_error = \"dead_letter\"\n");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO t VALUES (1, 'good'), (2, 'bad'), (3, 'good'); COMMIT;",
    );
    let bad_tx_lsn = pair.green.psql(DB, "SELECT pg_current_wal_lsn()");
    pair.green.psql(DB, "INSERT INTO t VALUES (4, 'after')");
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t"),
        "1good,3good,4after"
    );
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT format('%s|%s|%s|%s|%s|%s', slot_name, green_table, blue_table, key, row_data, sqlstate) FROM pgbridge.dead_letter"
        ),
        "pgbridge_to_blue|public.t|public.t|{\"id\": \"2\"}|{\"v\": \"bad\", \"id\": \"2\"}|23514"
    );
    let parked = blue_rows(
        &pair,
        &format!("SELECT error LIKE '%no_bad%' AND lsn < '{bad_tx_lsn}' FROM pgbridge.dead_letter"),
    );
    assert_eq!(
        parked, "t",
        "the error names the constraint and the LSN is the green transaction's"
    );
    assert!(bridge.log().contains("row parked in dead_letter"), "{}", bridge.log());
    assert_eq!(bridge.terminate(), 0);

    // The same rejection under `stop`.
    with_mappings(&pair, &[], "");
    let bridge = pair.run();
    let before = pair.checkpoint();
    pair.green.psql(DB, "INSERT INTO t VALUES (5, 'fine'), (6, 'bad')");
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("no_bad") && log.contains("{\"id\":\"6\"}") && log.contains("public.t"),
        "{log}"
    );
    assert_eq!(pair.checkpoint(), before);
    assert_eq!(blue_rows(&pair, "SELECT count(*) FROM t WHERE id >= 5"), "0");
}

/// A column the mapping uses is retyped on green (here into something blue's column cannot
/// even take): the bridge stops at the Relation message naming table, column and both types,
/// and confirms nothing after the last good transaction.
#[test]
fn green_column_retyped_mid_stream_stops_the_bridge() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, n int)");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 1)");
    pair.wait_caught_up(&bridge);
    let good = pair.checkpoint();
    pair.green.psql(
        DB,
        "ALTER TABLE t ALTER COLUMN n TYPE point USING point(n, n); INSERT INTO t VALUES (2, '(2,2)');",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("green column public.t.n, which feeds blue column public.t.n, changed type from pg_catalog.int4 to pg_catalog.point"),
        "{log}"
    );
    assert_eq!(pair.checkpoint(), good);
    assert_eq!(blue_rows(&pair, "SELECT count(*) FROM t"), "1");
}

/// Blue's key is an ALWAYS identity that only `[key]` feeds (no `[columns]` entry, no green
/// column of its name): green's values are inserted over the identity, as for a mapped column.
#[test]
fn always_identity_key_fed_by_key_alone() {
    let pair = Pair::start();
    pair.green
        .psql(DB, "CREATE TABLE orders (order_id int PRIMARY KEY, qty int)");
    pair.blue.psql(
        DB,
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, qty int)",
    );
    with_mappings(
        &pair,
        &[("orders.toml", "target = \"orders\"\n[key]\nid = \"order_id\"\n")],
        "",
    );
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO orders VALUES (7, 1), (9, 2); UPDATE orders SET qty = 5 WHERE order_id = 7; \
         DELETE FROM orders WHERE order_id = 9; INSERT INTO orders VALUES (11, 3);",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s', id, qty), ';' ORDER BY id) FROM orders"
        ),
        "7|5;11|3"
    );
    assert_eq!(bridge.terminate(), 0);
}

/// Blue keeps a surrogate identity key that green never had; `[key]` names blue's natural
/// unique key instead. Also a keyless blue table whose column type differs from green's: the
/// old values are matched as blue stored them.
#[test]
fn natural_key_beside_a_surrogate_and_keyless_retyped_match() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE items (code text PRIMARY KEY, v text); \
         CREATE TABLE qty (job int, quantity numeric(10,2)); ALTER TABLE qty REPLICA IDENTITY FULL;",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE items (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, code text NOT NULL UNIQUE, v text); \
         CREATE TABLE qty (job int, quantity integer);",
    );
    with_mappings(
        &pair,
        &[("items.toml", "target = \"items\"\n[key]\ncode = \"code\"\n")],
        "",
    );
    let check = pair.pgbridge(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO items VALUES ('a', '1'), ('b', '2'); INSERT INTO qty VALUES (1, 2.50), (2, 7.25);",
    );
    pair.green.psql(
        DB,
        "UPDATE items SET v = 'one' WHERE code = 'a'; UPDATE items SET code = 'c' WHERE code = 'b'; \
         UPDATE qty SET quantity = 4.40 WHERE job = 1; DELETE FROM qty WHERE job = 2;",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s|%s', id, code, v), ';' ORDER BY id) FROM items"
        ),
        "1|a|one;2|c|2"
    );
    assert_eq!(
        blue_rows(
            &pair,
            "SELECT string_agg(format('%s|%s', job, quantity), ';' ORDER BY job) FROM qty"
        ),
        "1|4"
    );
}
