//! Row semantics against real servers: CORRECTNESS.md cases 1-5 and 7.

use crate::support::bridge::{Pair, Wire, DB};
use crate::workload;

/// Case 1: 1,000 random transactions over several tables, part of them written while pgbridge
/// was down (a backlog), part while it streamed: green and blue equal row by row.
#[test]
fn random_transactions_converge() {
    random_transactions(Wire::Binary);
}

/// Case 1 with green's values as text (`PGBRIDGE_BINARY=off`).
#[test]
fn random_transactions_converge_in_text() {
    random_transactions(Wire::Text);
}

fn random_transactions(wire: Wire) {
    let pair = Pair::start();
    workload::create(&pair);
    pair.setup();
    workload::run(&pair, 1, 300);
    let bridge = pair.run_in(wire);
    workload::run(&pair, 2, 700);
    pair.wait_caught_up(&bridge);
    bridge.assert_wire(wire);
    workload::assert_converged(&pair);
    let count: i64 = pair.green.psql(DB, "SELECT count(*) FROM accounts").parse().unwrap();
    assert!(count > 50, "the workload should leave rows behind, found {count}");
    assert_eq!(bridge.terminate(), 0);
    assert_eq!(
        pair.checkpoint(),
        pair.confirmed_flush(),
        "a clean stop confirms exactly the checkpoint"
    );
}

fn toast_case(identity_full: bool, wire: Wire) {
    let pair = Pair::start();
    pair.both("CREATE TABLE docs (id int PRIMARY KEY, title text, body text); ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;");
    if identity_full {
        pair.green.psql(DB, "ALTER TABLE docs REPLICA IDENTITY FULL");
    }
    pair.setup();
    let bridge = pair.run_in(wire);
    // 20 kB of incompressible text, stored out of line.
    pair.green.psql(
        DB,
        "INSERT INTO docs SELECT g, 'v1', (SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 640) i) \
         FROM generate_series(1, 3) g",
    );
    pair.wait_caught_up(&bridge);
    pair.green.psql(DB, "UPDATE docs SET title = 'v2' WHERE id IN (1, 2)");
    pair.green
        .psql(DB, "UPDATE docs SET id = 10, title = 'moved' WHERE id = 3");
    pair.wait_caught_up(&bridge);
    pair.assert_same("docs");
    let lengths = pair.blue.psql(
        DB,
        "SELECT string_agg(id || ':' || title || ':' || length(body), ',' ORDER BY id) FROM docs",
    );
    assert_eq!(lengths, "1:v2:20480,2:v2:20480,10:moved:20480");
    bridge.assert_wire(wire);
}

/// Case 2: an update that leaves a TOASTed column unchanged ('u') keeps blue's value, also
/// when the same update changes the key.
#[test]
fn unchanged_toast_is_kept() {
    toast_case(false, Wire::Binary);
}

#[test]
fn unchanged_toast_is_kept_in_text() {
    toast_case(false, Wire::Text);
}

/// Case 3: the same under REPLICA IDENTITY FULL.
#[test]
fn unchanged_toast_is_kept_under_replica_identity_full() {
    toast_case(true, Wire::Binary);
}

#[test]
fn unchanged_toast_is_kept_under_replica_identity_full_in_text() {
    toast_case(true, Wire::Text);
}

/// Case 4: key-changing updates, and two rows swapping keys inside one transaction.
#[test]
fn key_changes_and_swaps() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE k (id int PRIMARY KEY, v text); CREATE TABLE kk (a int, b int, v text, PRIMARY KEY (a, b));",
    );
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO k VALUES (1, 'one'), (2, 'two'), (3, 'three'); INSERT INTO kk VALUES (1, 1, 'x'), (1, 2, 'y');",
    );
    pair.green.psql(DB, "UPDATE k SET id = 30 WHERE id = 3");
    pair.green.psql(
        DB,
        "BEGIN; UPDATE k SET id = -1 WHERE id = 1; UPDATE k SET id = 1 WHERE id = 2; UPDATE k SET id = 2 WHERE id = -1; COMMIT;",
    );
    pair.green.psql(
        DB,
        "BEGIN; UPDATE kk SET b = 3 WHERE b = 2; UPDATE kk SET b = 2, v = 'z' WHERE b = 1; COMMIT;",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("k");
    pair.assert_same("kk");
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM k"),
        "1=two,2=one,30=three"
    );
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT string_agg(a || '/' || b || '=' || v, ',' ORDER BY b) FROM kk"
        ),
        "1/2=z,1/3=y"
    );
}

/// Case 5: a table without a primary key under REPLICA IDENTITY FULL, holding duplicate rows:
/// an update or delete of one of them changes exactly one row on blue.
#[test]
fn keyless_duplicates_change_one_row() {
    keyless_duplicates(Wire::Binary);
}

#[test]
fn keyless_duplicates_change_one_row_in_text() {
    keyless_duplicates(Wire::Text);
}

fn keyless_duplicates(wire: Wire) {
    let pair = Pair::start();
    pair.both("CREATE TABLE dup (a int, b text, j json)");
    pair.green.psql(DB, "ALTER TABLE dup REPLICA IDENTITY FULL");
    pair.setup();
    let bridge = pair.run_in(wire);
    pair.green.psql(DB, "INSERT INTO dup VALUES (1, 'same', '{\"a\": 1}'), (1, 'same', '{\"a\": 1}'), (1, 'same', '{\"a\": 1}'), (2, NULL, NULL)");
    pair.green.psql(
        DB,
        "UPDATE dup SET b = 'changed' WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1)",
    );
    pair.green.psql(
        DB,
        "DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE b = 'same' LIMIT 1)",
    );
    pair.green.psql(DB, "UPDATE dup SET a = 3 WHERE b IS NULL");
    pair.wait_caught_up(&bridge);
    pair.assert_same("dup");
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT string_agg(a || ':' || coalesce(b, 'null'), ',' ORDER BY a, b) FROM dup"
        ),
        "1:changed,1:same,3:null"
    );
    bridge.assert_wire(wire);
}

/// Case 7: a green table dropped and recreated (new OID), even when put back in the
/// publication at once, stops the bridge naming it; re-synchronized, it streams again.
#[test]
fn recreated_table_gets_a_new_oid() {
    let pair = Pair::start();
    pair.both("CREATE TABLE r (id int PRIMARY KEY, v text)");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO r VALUES (1, 'before')");
    pair.wait_caught_up(&bridge);
    let old_oid = pair.green.psql(DB, "SELECT 'r'::regclass::oid");
    pair.green.psql(
        DB,
        "DROP TABLE r; CREATE TABLE r (id int PRIMARY KEY, v text); ALTER PUBLICATION pgbridge ADD TABLE r; \
         INSERT INTO r VALUES (1, 'after'), (2, 'new');",
    );
    assert_ne!(old_oid, pair.green.psql(DB, "SELECT 'r'::regclass::oid"));
    // The DROP is not replicated: blue would keep the old table's rows beside the new one's,
    // so the bridge stops at the new table's first change instead (rule 9).
    let (code, log) = bridge.wait_exit(std::time::Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("green table public.r was dropped and created again"),
        "{log}"
    );
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM r"),
        "1=before"
    );
    // Re-synchronized and accepted, blue follows the new table.
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::support::bridge::text(&out));
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO r VALUES (3, 'later')");
    pair.assert_caught_up_and_verified(&bridge, "re-created table after setup --copy");
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM r"),
        "1=after,2=new,3=later"
    );
}

/// Keyless rows on a partitioned blue table: ctid repeats across partitions, so an update or
/// delete must still hit exactly one row (matched by tableoid and ctid).
#[test]
fn keyless_rows_on_a_partitioned_blue_table() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE p (a int, b text); ALTER TABLE p REPLICA IDENTITY FULL;",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE p (a int, b text) PARTITION BY LIST (a); \
         CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1); CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2);",
    );
    pair.setup();
    let bridge = pair.run();
    // Each partition's first row sits at ctid (0,1).
    pair.green.psql(DB, "INSERT INTO p VALUES (1, 'x'), (2, 'x')");
    pair.green.psql(DB, "UPDATE p SET b = 'y' WHERE a = 2");
    pair.green.psql(DB, "DELETE FROM p WHERE a = 1");
    pair.wait_caught_up(&bridge);
    assert_eq!(pair.blue.psql(DB, "SELECT string_agg(a || b, ',') FROM p"), "2y");
    pair.green.psql(
        DB,
        "INSERT INTO p VALUES (1, 'z'); TRUNCATE p; INSERT INTO p VALUES (2, 'after');",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("p");
}

/// Two rows swap keys under a DEFERRABLE primary key on green. Applied row by row, the first
/// move meets the other row's key on blue: pgbridge must stop loudly rather than overwrite it.
#[test]
fn deferred_key_swap_fails_loudly_instead_of_overwriting() {
    let pair = Pair::start();
    // A deferrable key cannot be the replica identity, so green needs FULL.
    pair.green.psql(
        DB,
        "CREATE TABLE s (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text); ALTER TABLE s REPLICA IDENTITY FULL;",
    );
    pair.blue.psql(DB, "CREATE TABLE s (id int PRIMARY KEY, v text)");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO s VALUES (1, 'a'), (2, 'b')");
    pair.wait_caught_up(&bridge);
    pair.green.psql(DB, "UPDATE s SET id = 3 - id");
    let (code, log) = bridge.wait_exit(std::time::Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("public.s") && log.contains("duplicate key"), "{log}");
    assert_eq!(
        pair.blue.psql(DB, "SELECT string_agg(id || v, ',' ORDER BY id) FROM s"),
        "1a,2b",
        "blue is left as it was"
    );
}

/// The exact-order reference path (PGBRIDGE_APPLY=exact: one statement per row, in green's
/// order) on the same seeded workload as the set-based default above: both must equal green,
/// hence each other.
#[test]
fn random_transactions_converge_on_the_exact_order_path() {
    let pair = Pair::start();
    workload::create(&pair);
    pair.setup();
    workload::run(&pair, 1, 300);
    let bridge = pair.run_with_env(&[("PGBRIDGE_APPLY", "exact")]);
    workload::run(&pair, 2, 700);
    pair.wait_caught_up(&bridge);
    workload::assert_converged(&pair);
}

/// Batched inserts go to blue as plain INSERTs (no ON CONFLICT). When blue already holds a row
/// a green insert brings (written on blue by hand, or a setup over existing rows), the group
/// is rolled back and replayed with upserts: blue ends equal to green, nothing stops.
#[test]
fn inserts_meeting_rows_already_on_blue_are_upserted() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY, v text)");
    pair.setup();
    pair.blue
        .psql(DB, "INSERT INTO t SELECT g, 'stale' FROM generate_series(990, 1010) g");
    // A backlog, so inserts are batched: two transactions into t, one into other.
    pair.green.psql(
        DB,
        "INSERT INTO t SELECT g, 'first ' || g FROM generate_series(1, 1000) g",
    );
    pair.green
        .psql(DB, "INSERT INTO other SELECT g, 'o' FROM generate_series(1, 1000) g");
    pair.green.psql(
        DB,
        "INSERT INTO t SELECT g, 'second ' || g FROM generate_series(1001, 2000) g",
    );
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
    pair.assert_same("other");
    let log = bridge.log();
    assert!(
        log.contains("already exists on blue") && log.contains("public.t"),
        "the switch to upserts is logged with the table:\n{log}"
    );
    // Later inserts into t keep working (now as upserts), and updates too.
    pair.green.psql(
        DB,
        "INSERT INTO t VALUES (5000, 'late'); UPDATE t SET v = 'changed' WHERE id = 995",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
    assert_eq!(bridge.terminate(), 0);
}
