//! Binary values (`binary 'true'`) and their fallback to text: which form green's values travel
//! in is decided for the whole stream from the published columns' types on both sides, `check`
//! names it table by table, and either way blue ends up with green's rows.
//!
//! Blue gets a filler type first, so every user-defined type has another OID there than on
//! green, as between any two real servers: an array of an enum then embeds an element OID
//! that blue's `array_recv` would refuse unless pgbridge rewrites it.

use std::time::Duration;

use crate::support::bridge::{text, Pair, Running, Wire, DB};

/// Types and tables on both sides; `public.plain` only has built-in types.
const SCHEMA: &str = "
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'it''s \"great\"');
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);
CREATE TABLE public.plain (id bigint PRIMARY KEY, v text, n numeric(10,2), at timestamptz);
CREATE TABLE public.moods (id int PRIMARY KEY, m public.mood, ms public.mood[], ps public.posint[], tags text[]);
";

/// Rows for `plain` (a backlog of many, in one transaction: batched) and `moods`.
const WRITES: &str = "
INSERT INTO public.plain SELECT i, 'v' || i, i / 7.0, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute'
    FROM generate_series(1, 3000) i;
UPDATE public.plain SET v = NULL, n = -n WHERE id % 10 = 0;
DELETE FROM public.plain WHERE id % 13 = 0;
INSERT INTO public.moods VALUES
    (1, 'ok', ARRAY['sad', 'ok', 'it''s \"great\"']::public.mood[], '{1,2,3}', '{a,NULL,\"b c\"}'),
    (2, NULL, '{}', NULL, '{}'),
    (3, 'sad', '{{sad,ok},{ok,sad}}', '{7}', NULL);
UPDATE public.moods SET ms = ms || 'ok'::public.mood WHERE id = 1;
";

fn start_pair() -> Pair {
    let pair = Pair::start();
    pair.blue.psql(
        DB,
        "CREATE TYPE public.filler AS ENUM ('x'); CREATE TYPE public.filler2 AS (a int);",
    );
    pair.both(SCHEMA);
    let oid = |c: &crate::support::Cluster| c.psql(DB, "SELECT 'public.mood'::regtype::oid");
    assert_ne!(
        oid(&pair.green),
        oid(&pair.blue),
        "the enum should have different OIDs on green and blue"
    );
    pair
}

/// `check`'s line for `table` in its "values from green" section.
fn check_line(pair: &Pair, table: &str) -> String {
    let out = pair.pgbridge(&["check"]);
    let all = text(&out);
    let section = all
        .split("values from green: ")
        .nth(1)
        .unwrap_or_else(|| panic!("check printed no 'values from green' section:\n{all}"));
    let prefix = format!("  {table}: ");
    section
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("check printed no line for {table}:\n{all}"))
        .to_string()
}

fn converge(pair: &Pair, bridge: &Running, tables: &[&str]) {
    pair.wait_caught_up(bridge);
    for t in tables {
        pair.assert_same(t);
    }
}

#[test]
fn wire_enum_and_domain_arrays_travel_in_binary_with_blues_element_oids() {
    let pair = start_pair();
    pair.setup();
    assert_eq!(check_line(&pair, "public.plain"), "binary");
    let moods = check_line(&pair, "public.moods");
    assert!(
        moods.starts_with("binary; a backlog") && moods.contains("(ms, ps, tags)"),
        "{moods}"
    );
    let bridge = pair.run();
    pair.green.psql(DB, WRITES);
    converge(&pair, &bridge, &["public.plain", "public.moods"]);
    bridge.assert_wire(Wire::Binary);
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT ms::text || ' ' || array_ndims(ms) FROM public.moods WHERE id = 3"
        ),
        "{{sad,ok},{ok,sad}} 2"
    );
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT count(*) FILTER (WHERE v IS NULL) || ' ' || count(*) FROM public.plain"
        ),
        "277 2770"
    );

    // A composite column added while streaming: the session ends before applying anything of
    // it and the next one decides again, in text; that one stops at the schema change as any
    // session does, and once the new plan is accepted streams on in text, nothing lost.
    pair.both("CREATE TYPE public.pair AS (a int, b text); ALTER TABLE public.moods ADD COLUMN p public.pair;");
    pair.green.psql(
        DB,
        "INSERT INTO public.moods VALUES (4, 'ok', '{ok}', '{4}', '{x}', ROW(4, 'four')); \
         UPDATE public.moods SET p = ROW(1, 'one') WHERE id = 1; INSERT INTO public.plain VALUES (5000, 'after');",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("restarting the stream to decide again"), "{log}");
    assert!(log.contains("values travel as text"), "{log}");
    assert!(check_line(&pair, "public.moods").contains("column p: public.pair is a composite type"));
    pair.setup();
    let bridge = pair.run();
    converge(&pair, &bridge, &["public.plain", "public.moods"]);
    bridge.assert_wire(Wire::Text);
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn wire_a_composite_column_keeps_the_whole_stream_in_text() {
    let pair = start_pair();
    pair.both(
        "CREATE TYPE public.pair AS (a int, b public.mood); \
         CREATE TABLE public.shapes (id int PRIMARY KEY, p public.pair, ps public.pair[]);",
    );
    pair.setup();
    let shapes = check_line(&pair, "public.shapes");
    assert!(
        shapes.starts_with("text, and so is the whole stream: column p: public.pair is a composite type"),
        "{shapes}"
    );
    assert_eq!(
        check_line(&pair, "public.plain"),
        "text (green sends one form for the whole stream, and table public.shapes needs text)"
    );
    let bridge = pair.run();
    pair.green.psql(DB, WRITES);
    pair.green.psql(
        DB,
        "INSERT INTO public.shapes VALUES (1, ROW(1, 'ok'), ARRAY[ROW(2, 'sad')::public.pair]), (2, NULL, '{}'); \
         UPDATE public.shapes SET p = ROW(3, NULL) WHERE id = 2;",
    );
    converge(&pair, &bridge, &["public.plain", "public.moods", "public.shapes"]);
    bridge.assert_wire(Wire::Text);
    assert!(bridge.log().contains("values travel as text"), "{}", bridge.log());
    assert_eq!(bridge.terminate(), 0);

    // The switch: text whatever the types, and check says why.
    let out = pair
        .command(&["check"])
        .env("PGBRIDGE_BINARY", "off")
        .output()
        .expect("check");
    assert!(
        text(&out).contains("values from green: text (PGBRIDGE_BINARY=off)"),
        "{}",
        text(&out)
    );
}
