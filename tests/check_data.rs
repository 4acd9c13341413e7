//! What a rollback would lose (issue 17): `check`'s "rollback loses" section on the example
//! mapping; `check --data` finding every kind of row blue would refuse, by key, without
//! writing blue; `check --roundtrip` proving a mapping pair inverse, or naming the column and
//! key where it is not.

use crate::copy::example_pair;
use crate::support::bridge::{text, Pair, DB};

/// Writes `files` (name, text) into directory `dir` below the pair's directory.
fn write_mappings(pair: &Pair, dir: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = pair.dir.path().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

#[test]
fn check_lists_what_a_rollback_loses_on_the_example_mapping() {
    let pair = example_pair();
    for args in [&["check"][..], &["check", "--sql"][..]] {
        let out = pair.pgbridge(args);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "informational only:\n{report}");
        for expected in [
            "rollback loses (deliberate choices of the mappings; the exit code does not change):",
            "  public.customers:\n    - green column preferences is not carried (ignored)",
            "    - location is computed by an expression (location_structured ->> 'city'): prove with check --roundtrip",
            "  public.jobs:\n    - quantity <- quantity: numeric(10,2) -> integer narrows: ",
        ] {
            assert!(report.contains(expected), "{args:?}: no {expected:?} in:\n{report}");
        }
        assert!(!report.contains("public.purchases -> public.orders:\n"), "{report}");
    }
}

const GREEN_PEOPLE: &str = "
    CREATE TYPE mood AS ENUM ('ok', 'sad', 'ecstatic');
    CREATE TABLE people (id int PRIMARY KEY, name text, age int, score bigint, code text, mood mood, email text);
    CREATE TABLE events (id int PRIMARY KEY, note text);
    INSERT INTO people VALUES
      (1, 'ann', 30, 10, 'a', 'ok', 'dup@example.com'),
      (2, NULL, 30, 10, 'b', 'ok', 'two@example.com'),
      (3, 'cid', -1, 10, 'c', 'ok', 'three@example.com'),
      (4, 'dee', 30, 3000000000, 'd', 'ok', 'four@example.com'),
      (5, 'eve', 30, 10, 'toolong', 'ok', 'five@example.com'),
      (6, 'fay', 30, 10, 'f', 'ecstatic', 'six@example.com'),
      (7, 'gus', 30, 10, 'g', 'sad', NULL),
      (8, 'hal', 30, 10, 'h', 'ok', 'dup@example.com');
    INSERT INTO people SELECT i, 'p' || i, 40, i, 'x', 'ok', 'p' || i || '@example.com' FROM generate_series(9, 40) i;
    INSERT INTO events SELECT i, 'event ' || i FROM generate_series(1, 5000) i;
    ANALYZE events;";

const BLUE_PEOPLE: &str = "
    CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, age int CONSTRAINT age_not_negative CHECK (age >= 0),
                         score integer, code varchar(5), mood mood, email text UNIQUE,
                         legacy text NOT NULL DEFAULT 'x');
    CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
    INSERT INTO people VALUES (100, 'kept', 1, 1, 'k', 'ok', 'kept@example.com', 'y');";

#[test]
fn check_data_names_every_row_blue_would_refuse_by_key() {
    let pair = Pair::start();
    pair.green.psql(DB, GREEN_PEOPLE);
    pair.blue.psql(DB, BLUE_PEOPLE);
    let blue_before = pair
        .blue
        .psql(DB, "SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM people p");
    // Chunks of 3 rows: the duplicate email of rows 1 and 8 is found across chunks.
    let check = |args: &[&str]| {
        pair.command(args)
            .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "3")
            .output()
            .expect("pgbridge")
    };
    let out = check(&["check", "--data"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let refused = |id: u32| {
        let prefix = format!("  REFUSED public.people id={id}: ");
        report
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("id={id} not refused:\n{report}"))
    };
    for (id, parts) in [
        (
            2,
            &[
                "null value in column \"name\" of blue table public.people violates not-null constraint",
                "[column name]",
            ][..],
        ),
        (
            3,
            &[
                "new row for blue table public.people violates check constraint \"age_not_negative\"",
                "[constraint age_not_negative]",
            ][..],
        ),
        (4, &["integer out of range [column score]"][..]),
        (5, &["value too long for type character varying(5) [column code]"][..]),
        (
            6,
            &["invalid input value for enum mood: \"ecstatic\" [column mood]"][..],
        ),
        (
            8,
            &["duplicate key value violates unique constraint \"people_email_key\" \
                 (Key (email)=(dup@example.com) already exists.) [constraint people_email_key]"][..],
        ),
    ] {
        let line = refused(id);
        for part in parts {
            assert!(line.contains(part), "no {part:?} in {line}");
        }
    }
    assert!(
        report.contains("REFUSED: blue would refuse 6 row(s) in 1 of 2 table(s)"),
        "{report}"
    );
    let people = report
        .lines()
        .find(|l| l.starts_with("public.people "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(people.contains("40 row(s) checked  6 refused"), "{people}");
    let events = report
        .lines()
        .find(|l| l.starts_with("public.events "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(events.contains("5000 row(s) checked  0 refused"), "{events}");
    for clean in ["id=1:", "id=7:", "id=9:"] {
        assert!(
            !report.contains(&format!("public.people {clean}")),
            "{clean} refused:\n{report}"
        );
    }
    // Progress goes to stderr, per table.
    assert!(String::from_utf8_lossy(&out.stderr).contains("check --data: public.events (about 5000 rows)"));

    // Nothing was written to blue, and no temporary object is left.
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM people p"),
        blue_before
    );
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM events"), "0");
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbridge_check%') \
                  + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgbridge_check%')"
        ),
        "0"
    );

    // A sample: at most N rows per table (a Bernoulli sample of the analyzed events).
    let out = check(&["check", "--data", "--sample", "4"]);
    let report = text(&out);
    let events = report
        .lines()
        .find(|l| l.starts_with("public.events "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(events.contains(" 4 row(s) checked  0 refused"), "{events}");
    let people = report
        .lines()
        .find(|l| l.starts_with("public.people "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(people.contains(" 4 row(s) checked"), "{people}");

    // Green's rows fixed: nothing refused, exit 0.
    pair.green.psql(
        DB,
        "UPDATE people SET name = 'bo' WHERE id = 2; UPDATE people SET age = 1 WHERE id = 3; \
         UPDATE people SET score = 4 WHERE id = 4; UPDATE people SET code = 'short' WHERE id = 5; \
         UPDATE people SET mood = 'sad' WHERE id = 6; UPDATE people SET email = NULL WHERE id = 8;",
    );
    let out = check(&["check", "--data"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("data: blue would accept and store unchanged every row checked (2 table(s))"),
        "{}",
        text(&out)
    );

    // It cannot run: exit 2.
    pair.write_config_with(&pair.green.dsn(DB), "postgres://nobody@127.0.0.1:1/none", "");
    let out = check(&["check", "--data"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn check_roundtrip_proves_an_inverse_pair_and_names_what_does_not_come_back() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE items (id int PRIMARY KEY, label text, price numeric(14,2)); \
         CREATE TABLE measures (id int PRIMARY KEY, note text);",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), legacy text); \
         CREATE TABLE measures (id int PRIMARY KEY, note text); \
         INSERT INTO items SELECT i, 'item ' || i, i * 1.25, 'only on blue' FROM generate_series(1, 50) i; \
         INSERT INTO measures SELECT i, 'm' || i % 10 FROM generate_series(1, 50) i;",
    );
    // Green to blue: a rename and a cast that narrows (numeric(14,2) into numeric(12,2)).
    let forward = write_mappings(
        &pair,
        "mappings",
        &[(
            "items.toml",
            "target = \"items\"\n[columns]\nname = { from = \"label\" }\n",
        )],
    );
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", forward.display()));
    // Blue to green: the rename back, a widening cast; blue's legacy column is not carried,
    // and measures.note is cut to three characters.
    let reverse_dir = write_mappings(
        &pair,
        "mappings_to_green",
        &[
            (
                "items.toml",
                "target = \"items\"\nignore = [\"legacy\"]\n[columns]\nlabel = { from = \"name\" }\n",
            ),
            (
                "measures.toml",
                "target = \"measures\"\n[columns]\nnote = { expr = \"left(note, 3)\" }\n",
            ),
        ],
    );
    let reverse = pair.dir.path().join("to_green.toml");
    std::fs::write(
        &reverse,
        format!(
            "[green]\ndsn = \"{}\"\npublication = \"pgbridge_to_green\"\nslot = \"pgbridge_to_green\"\n\n\
             [blue]\ndsn = \"{}\"\n\n[mapping]\ndir = \"{}\"\n",
            pair.blue.dsn(DB),
            pair.green.dsn(DB),
            reverse_dir.display()
        ),
    )
    .unwrap();
    let roundtrip = |extra: &[&str]| {
        let mut args = vec!["check", "--roundtrip", "--reverse", reverse.to_str().unwrap()];
        args.extend_from_slice(extra);
        pair.command(&args)
            .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "7")
            .output()
            .expect("pgbridge")
    };
    let out = roundtrip(&[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("roundtrip: every row compared comes back equal (2 table(s))"),
        "{report}"
    );
    let items = report
        .lines()
        .find(|l| l.starts_with("public.items "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(items.contains("50 row(s) compared  0 difference(s)"), "{items}");

    // A note longer than three characters does not come back: named by key and column.
    pair.blue.psql(DB, "UPDATE measures SET note = 'abcdef' WHERE id = 42");
    let out = roundtrip(&[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("DIFFERENT public.measures id=42: column note: blue has abcdef, comes back as abc"),
        "{report}"
    );
    assert!(
        report.contains("DIFFERENT: 1 of 2 table(s) do not come back equal"),
        "{report}"
    );
    let out = roundtrip(&["--sample", "5"]);
    let items = text(&out);
    let items = items
        .lines()
        .find(|l| l.starts_with("public.items "))
        .unwrap_or_else(|| panic!("{items}"));
    assert!(items.contains(" 5 row(s) compared"), "{items}");

    // Nothing written on either side, nothing left behind.
    assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM items"), "0");
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT count(*) FROM items WHERE legacy = 'only on blue'"),
        "50"
    );
    for cluster in [&pair.green, &pair.blue] {
        assert_eq!(
            cluster.psql(
                DB,
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbridge_roundtrip%'"
            ),
            "0"
        );
    }
    let out = pair.pgbridge(&["check", "--roundtrip", "--reverse", "nosuch.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Guards the blind spots `run` does not share: distinct green rows landing on one blue key
/// (a narrowing cast, a case-insensitive char(n) key), across chunks; blue's defaults for the
/// columns the mapping does not feed (a CHECK reading one), without advancing blue's
/// sequences; a unique index's collation and expressions.
#[test]
fn check_data_finds_collisions_defaults_and_index_collations_as_blue_would() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE nums (id numeric(5,1) PRIMARY KEY, note text);
         INSERT INTO nums VALUES (1.2, 'a'), (2.0, 'b'), (1.4, 'c');
         CREATE TABLE words (w text PRIMARY KEY);
         INSERT INTO words VALUES ('ab'), ('AB'), ('ab  '), ('cd');
         CREATE TABLE stamped (id int PRIMARY KEY, n int, email text);
         INSERT INTO stamped VALUES (1, 3, 'a@x'), (2, 7, 'b@x'), (3, 1, 'A@X');",
    );
    pair.blue.psql(
        DB,
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE nums (id int PRIMARY KEY, note text);
         CREATE TABLE words (w char(4) COLLATE ci PRIMARY KEY);
         CREATE DOMAIN nn_int AS int NOT NULL;
         CREATE TABLE stamped (id int PRIMARY KEY, n int, email text, made nn_int DEFAULT 5,
                               serial bigserial NOT NULL CHECK (serial > 0), CHECK (n < made));
         CREATE UNIQUE INDEX stamped_email_lower ON stamped (lower(email));",
    );
    let out = pair
        .command(&["check", "--data"])
        .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "1")
        .output()
        .expect("pgbridge");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "REFUSED public.nums id=1.4: maps to the same blue key as green row id=1.2: blue would keep only one",
        "REFUSED public.words w=AB: maps to the same blue key as green row w=ab: blue would keep only one",
        "REFUSED public.words w=ab  : maps to the same blue key as green row w=ab: blue would keep only one",
        "REFUSED public.stamped id=2: new row for blue table public.stamped violates check constraint \"stamped_check\"",
        "REFUSED public.stamped id=3: duplicate key value violates unique constraint \"stamped_email_lower\"",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    for clean in [
        "nums id=1.2:",
        "nums id=2.0:",
        "words w=ab:",
        "words w=cd:",
        "stamped id=1:",
    ] {
        assert!(
            !report.contains(&format!("public.{clean}")),
            "{clean} refused:\n{report}"
        );
    }
    assert!(report.contains("REFUSED: blue would refuse 5 row(s)"), "{report}");
    // Blue's sequence was not advanced.
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT last_value || ' ' || is_called FROM stamped_serial_seq"),
        "1 false"
    );
}

/// Guards the round trip's comparison against a column's collation: a case-insensitive column
/// first in the list once made every column of its table compare case-insensitively.
#[test]
fn check_roundtrip_compares_bytes_not_a_columns_collation() {
    let pair = Pair::start();
    pair.green
        .psql(DB, "CREATE TABLE tags (id int PRIMARY KEY, tag text, note text);");
    pair.blue.psql(
        DB,
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE tags (id int PRIMARY KEY, tag text COLLATE ci, note text);
         INSERT INTO tags VALUES (1, 'x', 'MiXed'), (2, 'y', 'lower');",
    );
    let reverse_dir = write_mappings(
        &pair,
        "mappings_to_green",
        &[(
            "tags.toml",
            "target = \"tags\"\n[columns]\nnote = { expr = \"lower(note)\" }\n",
        )],
    );
    let reverse = pair.dir.path().join("to_green.toml");
    std::fs::write(
        &reverse,
        format!(
            "[green]\ndsn = \"{}\"\npublication = \"pgbridge_to_green\"\nslot = \"pgbridge_to_green\"\n\n\
             [blue]\ndsn = \"{}\"\n\n[mapping]\ndir = \"{}\"\n",
            pair.blue.dsn(DB),
            pair.green.dsn(DB),
            reverse_dir.display()
        ),
    )
    .unwrap();
    let out = pair.pgbridge(&["check", "--roundtrip", "--reverse", reverse.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("DIFFERENT public.tags id=1: column note: blue has MiXed, comes back as mixed"),
        "{report}"
    );
    assert!(!report.contains("id=2"), "{report}");
}

/// Writes the configuration of the bridge in the other direction (blue to green), its
/// mappings in `dir`; returns its path.
fn write_reverse(pair: &Pair, dir: &std::path::Path) -> std::path::PathBuf {
    let reverse = pair.dir.path().join("to_green.toml");
    std::fs::write(
        &reverse,
        format!(
            "[green]\ndsn = \"{}\"\npublication = \"pgbridge_to_green\"\nslot = \"pgbridge_to_green\"\n\n\
             [blue]\ndsn = \"{}\"\n\n[mapping]\ndir = \"{}\"\n",
            pair.blue.dsn(DB),
            pair.green.dsn(DB),
            dir.display()
        ),
    )
    .unwrap();
    reverse
}

/// Guards the round trip against one row aborting everything: a blue row the reverse mapping
/// cannot convert on green (a division by zero, 'Infinity' into numeric(10,2)) or that this
/// mapping cannot convert back on blue is a difference named by key, with PostgreSQL's
/// message, and the rest of the page and the other tables are still compared. Also guards
/// identical xml comparing equal (`::text` keeps an XML declaration the trip drops).
#[test]
fn check_roundtrip_names_rows_a_mapping_refuses_and_goes_on() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE amounts (id int PRIMARY KEY, a numeric(10,2));
         CREATE TABLE back (id int PRIMARY KEY, n int);
         CREATE TABLE docs (id int PRIMARY KEY, body xml);
         CREATE TABLE ratios (id int PRIMARY KEY, v int);",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE amounts (id int PRIMARY KEY, a numeric);
         CREATE TABLE back (id int PRIMARY KEY, n int);
         CREATE TABLE docs (id int PRIMARY KEY, body xml);
         CREATE TABLE ratios (id int PRIMARY KEY, v int);
         INSERT INTO amounts VALUES (1, 1.50), (2, 'Infinity'), (3, 2.25), (4, 7.00);
         INSERT INTO back VALUES (1, 10), (2, 0), (3, 10);
         INSERT INTO docs VALUES (1, '<?xml version=\"1.0\"?><a/>'), (2, '<b> x </b>'), (3, NULL);
         INSERT INTO ratios SELECT i, i FROM generate_series(1, 10) i;",
    );
    let forward = write_mappings(
        &pair,
        "mappings",
        &[(
            "back.toml",
            "target = \"back\"\n[columns]\nn = { expr = \"CAST(100 / n AS integer)\" }\n",
        )],
    );
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", forward.display()));
    let reverse_dir = write_mappings(
        &pair,
        "mappings_to_green",
        &[(
            "ratios.toml",
            "target = \"ratios\"\n[columns]\nv = { expr = \"v + 0 * (1 / (v - 5))\" }\n",
        )],
    );
    let reverse = write_reverse(&pair, &reverse_dir);
    let out = pair
        .command(&["check", "--roundtrip", "--reverse", reverse.to_str().unwrap()])
        .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "3")
        .output()
        .expect("pgbridge");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "DIFFERENT public.amounts id=2: refused by the reverse mapping on green: numeric field overflow",
        "DIFFERENT public.ratios id=5: refused by the reverse mapping on green: division by zero",
        "DIFFERENT public.back id=2: comes back, but this mapping refuses it on blue: division by zero",
        "DIFFERENT: 3 of 4 table(s) do not come back equal",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    for (table, rows, differences) in [("amounts", 4, 1), ("back", 3, 1), ("docs", 3, 0), ("ratios", 10, 1)] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("public.{table} ")))
            .unwrap_or_else(|| panic!("{table} not compared:\n{report}"));
        assert!(
            line.contains(&format!(" {rows} row(s) compared  {differences} difference(s)")),
            "{line}"
        );
    }
    assert!(!report.contains("does not come back"), "{report}");
}

/// Guards `check`'s "rollback loses" against green tables nothing carries at all: a user
/// table outside the publication and not in `[mapping] exclude` (as `ready` lists it; nothing
/// before the publication exists), and an UNLOGGED one, which logical decoding never sees.
#[test]
fn check_lists_green_tables_no_row_of_which_reaches_blue() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE kept (id int PRIMARY KEY); CREATE TABLE newt (id int PRIMARY KEY);
         CREATE TABLE skipped (id int PRIMARY KEY); CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);",
    );
    pair.blue.psql(DB, "CREATE TABLE kept (id int PRIMARY KEY);");
    pair.write_config("[mapping]\nexclude = [\"public.skipped\"]\n");
    let newt = "    - green table public.newt is not carried: not in publication pgbridge; add it \
                (ALTER PUBLICATION pgbridge ADD TABLE public.newt, then `pgbridge setup --copy` for its rows) \
                or list it in [mapping] exclude";
    let scratch = "    - green table public.scratch is not carried: it is UNLOGGED";
    let report = text(&pair.pgbridge(&["check"]));
    assert!(
        !report.contains("public.newt is not carried"),
        "before setup:\n{report}"
    );
    assert!(report.contains(scratch), "{report}");
    pair.green.psql(DB, "CREATE PUBLICATION pgbridge FOR TABLE kept");
    let out = pair.pgbridge(&["check"]);
    let report = text(&out);
    assert!(
        report.contains(&format!("  green tables not carried:\n{newt}\n{scratch}")),
        "{report}"
    );
    assert!(!report.contains("skipped"), "{report}");
}

/// Guards `check --data` against ignoring blue's partition bounds (`run` dead-letters a row
/// no partition accepts): the temporary copy is partitioned as blue's table is, sub-partitions
/// and a partition's own CHECK constraint included; a default partition accepts the rest.
#[test]
fn check_data_refuses_rows_no_partition_of_blue_accepts() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE t_part (id int, kind text, n int, PRIMARY KEY (id, kind));
         INSERT INTO t_part VALUES (50, 'a', 1), (150, 'a', 1), (150, 'b', 9), (50, 'b', 1), (250, 'a', 1);
         CREATE TABLE t_def (id int PRIMARY KEY);
         INSERT INTO t_def VALUES (5), (500);",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE t_part (id int, kind text, n int, PRIMARY KEY (id, kind)) PARTITION BY RANGE (id);
         CREATE TABLE t_part_low PARTITION OF t_part FOR VALUES FROM (1) TO (101) PARTITION BY LIST (kind);
         CREATE TABLE t_part_low_a PARTITION OF t_part_low FOR VALUES IN ('a');
         CREATE TABLE t_part_high PARTITION OF t_part FOR VALUES FROM (101) TO (201);
         ALTER TABLE t_part_high ADD CONSTRAINT high_small CHECK (n < 5);
         CREATE TABLE t_def (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE t_def_1 PARTITION OF t_def FOR VALUES FROM (1) TO (10);
         CREATE TABLE t_def_other PARTITION OF t_def DEFAULT;",
    );
    let out = pair
        .command(&["check", "--data"])
        .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "2")
        .output()
        .expect("pgbridge");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "REFUSED public.t_part id=250, kind=a: no partition of blue table public.t_part accepts it",
        "REFUSED public.t_part id=50, kind=b: no partition of blue table public.t_part_low accepts it",
        "REFUSED public.t_part id=150, kind=b: new row for blue table public.t_part_high violates check constraint \"high_small\"",
        "REFUSED: blue would refuse 3 row(s) in 1 of 2 table(s)",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    assert!(!report.contains("REFUSED public.t_def"), "{report}");
}

/// Guards a silent "0 refused" for what the temporary copy does not reproduce: an exclusion
/// constraint and a trigger that fires under the bridge (ENABLE ALWAYS) are named as not
/// checked on the table's line, so a clean result says what it does not cover.
#[test]
fn check_data_names_exclusion_constraints_and_bridge_triggers_as_not_checked() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE ex (id int PRIMARY KEY, slot int); INSERT INTO ex VALUES (1, 7), (2, 7);",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE ex (id int PRIMARY KEY, slot int, EXCLUDE USING btree (slot WITH =));
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
         CREATE TRIGGER audit BEFORE INSERT ON ex FOR EACH ROW EXECUTE FUNCTION refuse();
         ALTER TABLE ex ENABLE ALWAYS TRIGGER audit;",
    );
    let out = pair.pgbridge(&["check", "--data"]);
    let report = text(&out);
    for expected in [
        "    note: exclusion constraint ex_slot_excl is not checked",
        "    note: trigger audit is not run (it fires under the bridge: ENABLE ALWAYS)",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}

/// Guards the silent change `run` and `ready` do not see: blue's `varchar(n)` (a domain over
/// one, an array of them) cuts trailing blanks beyond `n` on assignment instead of refusing
/// the value, so the row goes in changed. Found in a clean chunk and in one checked row by row.
#[test]
fn check_data_names_values_blue_would_store_cut() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE notes (id int PRIMARY KEY, note text, tags text[], code text);
         INSERT INTO notes VALUES
           (1, repeat('y', 48) || repeat(' ', 10), NULL, NULL),
           (2, 'fine   ', '{ab}', 'abc'),
           (3, repeat('x', 51), NULL, NULL),
           (4, 'ok', '{ab,\"cd     \"}', 'abc      ');",
    );
    pair.blue.psql(
        DB,
        "CREATE DOMAIN short_code AS varchar(5);
         CREATE TABLE notes (id int PRIMARY KEY, note varchar(50), tags varchar(3)[], code short_code);",
    );
    let out = pair
        .command(&["check", "--data"])
        .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "2")
        .output()
        .expect("pgbridge");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "CHANGED public.notes id=1: blue would store column note cut to 50 characters (trailing blanks)\n",
        "CHANGED public.notes id=4: blue would store column tags cut to 3 characters (trailing blanks) in an element; \
         column code cut to 5 characters (trailing blanks)\n",
        "REFUSED public.notes id=3: value too long for type character varying(50)",
        "1 refused  2 changed",
        "REFUSED: blue would refuse 1 row(s) in 1 of 1 table(s)",
        "CHANGED: blue would store 2 row(s) changed, without an error, in 1 of 1 table(s)",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    assert!(!report.contains("public.notes id=2:"), "{report}");
    // Guards: rows shown are capped per kind (--examples), the rest counted.
    let out = pair
        .command(&["check", "--data", "--examples", "1"])
        .output()
        .expect("pgbridge");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report.matches("  CHANGED public.notes ").count(), 1, "{report}");
    for expected in [
        "  ... and 1 more row(s) changed of public.notes\n",
        "1 refused  2 changed",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}

/// Guards the round trip's report against drowning in one cause: differences shown per column
/// are capped (`--examples`, default 5) in key order (id=1, 2, ... not 1, 10, 100), the rest
/// counted, and a TimeZone that differs between the two bridges' evaluation settings is named
/// once when date and time columns differ.
#[test]
fn check_roundtrip_caps_examples_in_key_order_and_names_a_timezone_mismatch() {
    let pair = Pair::start();
    pair.green
        .psql(DB, "CREATE TABLE events (id int PRIMARY KEY, placed_at timestamptz);");
    pair.blue.psql(
        DB,
        "CREATE TABLE events (id int PRIMARY KEY, placed_at timestamp);
         INSERT INTO events SELECT i, timestamp '2024-01-01 00:00' + i * interval '1 hour'
           FROM generate_series(1, 12) i;",
    );
    let reverse_dir = write_mappings(&pair, "mappings_to_green", &[]);
    let reverse = pair.dir.path().join("to_green.toml");
    std::fs::write(
        &reverse,
        format!(
            "[green]\ndsn = \"{}\"\npublication = \"pgbridge_to_green\"\nslot = \"pgbridge_to_green\"\n\n\
             [blue]\ndsn = \"{}\"\ntimezone = \"Asia/Tokyo\"\n\n[mapping]\ndir = \"{}\"\n",
            pair.blue.dsn(DB),
            pair.green.dsn(DB),
            reverse_dir.display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["check", "--roundtrip", "--reverse", reverse.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = pair
            .command(&args)
            .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "5")
            .output()
            .expect("pgbridge");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        text(&out)
    };
    let report = run(&[]);
    let shown: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("  DIFFERENT public.events "))
        .collect();
    let keys: Vec<&str> = shown
        .iter()
        .map(|l| l.split(':').next().unwrap().rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(keys, ["id=1", "id=2", "id=3", "id=4", "id=5"], "{report}");
    for expected in [
        "  ... and 7 more difference(s) in column placed_at of public.events\n",
        " 12 row(s) compared  12 difference(s)",
        "    hint: 12 difference(s) in date or time columns, and blue and green evaluate with different TimeZone (",
        " here, Asia/Tokyo in the reverse bridge): set [blue] timezone to one zone in both configurations",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    let two = run(&["--examples", "2"]);
    assert_eq!(two.matches("  DIFFERENT public.events ").count(), 2, "{two}");
    assert!(
        two.contains("... and 10 more difference(s) in column placed_at"),
        "{two}"
    );
}

/// Guards plain `check` against enum labels green has and blue lacks passing as ok: a green
/// enum column copied (by name, or `from` another column, into an enum of another name, an
/// array of one, a domain over one) is listed under "rollback loses" with the labels.
#[test]
fn check_names_enum_labels_green_has_and_blue_lacks() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TYPE order_status AS ENUM ('new', 'paid', 'refunded');
         CREATE TABLE orders (id int PRIMARY KEY, status order_status, state order_status,
                              history order_status[], kept order_status);",
    );
    pair.blue.psql(
        DB,
        "CREATE TYPE order_status AS ENUM ('new', 'paid');
         CREATE TYPE status_v1 AS ENUM ('new', 'paid', 'void');
         CREATE DOMAIN status_d AS order_status;
         CREATE TABLE orders (id int PRIMARY KEY, status order_status, legacy status_v1,
                              history order_status[], kept status_d);",
    );
    let dir = write_mappings(
        &pair,
        "mappings",
        &[(
            "orders.toml",
            "target = \"orders\"\n[columns]\nlegacy = { from = \"state\" }\n",
        )],
    );
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
    let out = pair.pgbridge(&["check"]);
    let report = text(&out);
    for expected in [
        "- status: green's order_status has label(s) blue's order_status lacks: 'refunded'; rows with them will be refused",
        "- legacy: green's order_status has label(s) blue's status_v1 lacks: 'refunded';",
        "- history: green's order_status has label(s) blue's order_status lacks: 'refunded';",
        "- kept: green's order_status has label(s) blue's order_status lacks: 'refunded';",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}
