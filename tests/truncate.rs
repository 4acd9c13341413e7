//! TRUNCATE (CORRECTNESS.md case 15): single table, several tables in one statement, CASCADE
//! (green lists the cascaded tables explicitly) and RESTART IDENTITY, each followed by new rows
//! so that blue is shown to keep streaming after it.

use crate::support::bridge::{rows, Pair, Running, DB};

const TABLES: &str = "
CREATE TABLE public.single (id int PRIMARY KEY, v text);
CREATE TABLE public.a (id int PRIMARY KEY);
CREATE TABLE public.b (id int PRIMARY KEY, v text);
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES public.parent);
CREATE TABLE public.ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n serial, v text);
";

const ALL: [&str; 6] = [
    "public.single",
    "public.a",
    "public.b",
    "public.parent",
    "public.child",
    "public.ident",
];

/// A pair with [`TABLES`] on both sides, some rows in each, streaming and caught up.
fn start() -> (Pair, Running) {
    let pair = Pair::start();
    pair.both(TABLES);
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO public.single SELECT i, 'v' || i FROM generate_series(1, 5) i;
         INSERT INTO public.a SELECT generate_series(1, 3);
         INSERT INTO public.b SELECT i, 'b' || i FROM generate_series(1, 3) i;
         INSERT INTO public.parent SELECT generate_series(1, 3);
         INSERT INTO public.child SELECT i, i % 3 + 1 FROM generate_series(1, 6) i;
         INSERT INTO public.ident (v) SELECT 'r' || i FROM generate_series(1, 3) i;",
    );
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(count(&pair, "public.child"), 6);
    (pair, bridge)
}

fn assert_all_same(pair: &Pair) {
    for table in ALL {
        pair.assert_same(table);
    }
}

/// Rows of `table` on blue.
fn count(pair: &Pair, table: &str) -> usize {
    rows(&pair.blue, table).len()
}

#[test]
fn truncate_single_table() {
    let (pair, bridge) = start();
    pair.green.psql(DB, "TRUNCATE public.single");
    pair.wait_caught_up(&bridge);
    assert_eq!(count(&pair, "public.single"), 0);
    assert_eq!(
        count(&pair, "public.b"),
        3,
        "a table green did not truncate was emptied"
    );

    // Ids that existed before the truncate, and a truncate between inserts of one transaction.
    pair.green
        .psql(DB, "INSERT INTO public.single VALUES (1, 'again'), (6, 'new')");
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO public.single VALUES (7, 'gone'); TRUNCATE public.single;
         INSERT INTO public.single VALUES (2, 'after'); COMMIT;",
    );
    pair.green.psql(DB, "INSERT INTO public.single VALUES (3, 'later')");
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(rows(&pair.blue, "public.single"), ["(2,after)", "(3,later)"]);
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn truncate_several_tables_in_one_statement() {
    let (pair, bridge) = start();
    pair.green.psql(DB, "TRUNCATE public.a, public.b");
    pair.wait_caught_up(&bridge);
    assert_eq!((count(&pair, "public.a"), count(&pair, "public.b")), (0, 0));
    assert_eq!(count(&pair, "public.single"), 5);

    pair.green.psql(
        DB,
        "INSERT INTO public.a VALUES (1), (10); INSERT INTO public.b VALUES (2, 'new')",
    );
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(rows(&pair.blue, "public.a"), ["(1)", "(10)"]);
    assert_eq!(rows(&pair.blue, "public.b"), ["(2,new)"]);
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn truncate_cascade_empties_the_referencing_table() {
    let (pair, bridge) = start();
    pair.green.psql(DB, "TRUNCATE public.parent CASCADE");
    pair.wait_caught_up(&bridge);
    assert_eq!((count(&pair, "public.parent"), count(&pair, "public.child")), (0, 0));

    pair.green.psql(
        DB,
        "INSERT INTO public.parent VALUES (1), (4); INSERT INTO public.child VALUES (1, 4), (7, 1)",
    );
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(rows(&pair.blue, "public.child"), ["(1,4)", "(7,1)"]);
    assert_eq!(bridge.terminate(), 0);
}

/// `last_value,is_called` of the sequence behind `public.ident.column` on blue.
fn blue_sequence(pair: &Pair, column: &str) -> String {
    let seq = pair.blue.psql(
        DB,
        &format!("SELECT pg_get_serial_sequence('public.ident', '{column}')"),
    );
    pair.blue
        .psql(DB, &format!("SELECT last_value || ',' || is_called FROM {seq}"))
}

#[test]
fn truncate_restart_identity_restarts_blue_sequences() {
    let (pair, bridge) = start();
    // Blue was written to before the cutover: its sequences are well ahead of green's.
    pair.blue.psql(
        DB,
        "SELECT setval(pg_get_serial_sequence('public.ident', 'id'), 100);
         SELECT setval(pg_get_serial_sequence('public.ident', 'n'), 200);",
    );

    // Without RESTART IDENTITY the sequences continue.
    pair.green.psql(DB, "TRUNCATE public.ident");
    pair.wait_caught_up(&bridge);
    assert_eq!(count(&pair, "public.ident"), 0);
    assert_eq!(blue_sequence(&pair, "id"), "100,true");
    assert_eq!(blue_sequence(&pair, "n"), "200,true");

    pair.green.psql(DB, "INSERT INTO public.ident (v) VALUES ('continued')");
    pair.green.psql(DB, "TRUNCATE public.ident RESTART IDENTITY");
    pair.wait_caught_up(&bridge);
    assert_eq!(count(&pair, "public.ident"), 0);
    assert_eq!(blue_sequence(&pair, "id"), "1,false");
    assert_eq!(blue_sequence(&pair, "n"), "1,false");

    pair.green
        .psql(DB, "INSERT INTO public.ident (v) VALUES ('first'), ('second')");
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(rows(&pair.blue, "public.ident"), ["(1,1,first)", "(2,2,second)"]);
    // Rows arrive with green's values, so blue's sequences stay where the restart left them.
    assert_eq!(blue_sequence(&pair, "id"), "1,false");
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn truncate_cascade_leaves_blue_only_tables_alone() {
    let (pair, bridge) = start();
    // A table green's migration dropped; blue still has it, referencing parent.
    pair.blue.psql(
        DB,
        "CREATE TABLE public.legacy_audit (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
         INSERT INTO public.legacy_audit VALUES (1, 1), (2, 2);",
    );
    pair.green.psql(DB, "TRUNCATE public.parent CASCADE");
    // Green lists every table it cascaded to (parent, child); PostgreSQL's own apply worker
    // replays exactly those without CASCADE (worker.c: "we explicitly default to replaying
    // changes without further cascading") and so stops on legacy_audit's foreign key instead
    // of deleting rows green never had. pgbridge runs `TRUNCATE ONLY parent, child CASCADE`.
    let (code, log) = bridge.wait_exit(std::time::Duration::from_secs(30));
    assert_eq!(code, 2, "{log}");
    assert_eq!(count(&pair, "public.legacy_audit"), 2);
}
