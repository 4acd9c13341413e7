//! Nothing that changes blue's meaning passes silently (DESIGN.md rule 9): green or blue changes
//! during the window (a table dropped and created again, a column renamed, turned generated or
//! retyped, partitions attached or detached, blue's DDL) either still map exactly or stop `run`
//! with exit 2 naming the table and columns, leave the checkpoint where it was, keep stopping
//! on every restart until the change is accepted, and make `check`, `status` and `verify`
//! report it. Also: partitioned tables in every shape, publication row filters and column
//! lists, and `setup` refusing what `check` refuses before it creates anything.
//!
//! Blue's rows are asserted against values written out here, not computed by pgbridge code.

use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, Running, DB};

/// Both catalogs are compared with the accepted plan this often in these tests.
const FAST_CHECK: &str = "schema_check_interval = \"200ms\"\n";

/// A pair with `green_sql` and `blue_sql` run, mapping files written, and `[mapping]` extras.
fn pair_with(green_sql: &str, blue_sql: &str, files: &[(&str, &str)], mapping_extra: &str) -> Pair {
    let pair = Pair::start();
    pair.green.psql(DB, green_sql);
    pair.blue.psql(DB, blue_sql);
    write_mappings(&pair, files, mapping_extra);
    pair
}

fn write_mappings(pair: &Pair, files: &[(&str, &str)], mapping_extra: &str) {
    let dir = pair.dir.path().join("mappings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    pair.write_config(&format!(
        "[mapping]\ndir = \"{}\"\n{FAST_CHECK}{mapping_extra}",
        dir.display()
    ));
}

/// The same `schema` on both sides, set up and streaming, with `rows` written on green and
/// applied on blue.
fn streaming(schema: &str, mapping_extra: &str, rows: &str) -> (Pair, Running) {
    let pair = pair_with(schema, schema, &[], mapping_extra);
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, rows);
    pair.wait_caught_up(&bridge);
    (pair, bridge)
}

/// `check` passes and plans `line` (`blue public.m <- green public.m_1`).
fn check_plans(pair: &Pair, line: &str) {
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(line), "no {line:?} in:\n{}", text(&out));
}

/// `pgbridge ARGS` (`setup`, accepting the plan as it is now, or `setup --copy`) must succeed;
/// then `run` streams and has caught up.
fn accept_and_run(pair: &Pair, args: &[&str]) -> Running {
    let out = pair.pgbridge(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", text(&out));
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    bridge
}

/// `run` must stop by itself with exit 2; returns its log.
fn stops(bridge: Running) -> String {
    let (code, log) = bridge.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 2, "run should stop with exit 2:\n{log}");
    log
}

/// After a stop: the checkpoint stays, a restart stops again with the same finding (so a
/// supervisor restarting it absorbs nothing), and `check`, `status` and `verify` name `words`.
fn stays_stopped(pair: &Pair, words: &[&str]) {
    let at_stop = blue_contents(pair);
    let log = stops(pair.run());
    for w in words {
        assert!(log.contains(w), "restart should stop naming {w:?}:\n{log}");
    }
    // The checkpoint may pass WAL without changes for blue (a Relation stop meets the change
    // at the same place again); no row moves.
    assert_eq!(blue_contents(pair), at_stop, "a restart carried changes past the stop");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "check:\n{}", text(&out));
    let out = pair.pgbridge(&["status"]);
    assert_eq!(out.status.code(), Some(0), "status:\n{}", text(&out));
    assert!(
        text(&out).contains("schema_drift           YES"),
        "status:\n{}",
        text(&out)
    );
    let out = pair.pgbridge(&["wait", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "wait:\n{}", text(&out));
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "verify:\n{}", text(&out));
    for w in words {
        assert!(text(&out).contains(w), "verify should name {w:?}:\n{}", text(&out));
    }
}

/// Every row of every table in blue's public schema, as one digest per table.
fn blue_contents(pair: &Pair) -> String {
    let tables = pair.blue.psql(
        DB,
        "SELECT string_agg(quote_ident(tablename), ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    tables
        .split_whitespace()
        .map(|t| {
            pair.blue.psql(
                DB,
                &format!("SELECT '{t}:' || count(*) || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') FROM {t} r"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn blue(pair: &Pair, sql: &str) -> String {
    pair.blue.psql(DB, sql)
}

fn metric(pair: &Pair, name: &str) -> Option<f64> {
    let (_, body) = crate::telemetry::http_get(pair.metrics_port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn table_recreated_outside_a_for_table_publication_stops_and_is_reported() {
    let schema = "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);";
    let pair = pair_with(schema, schema, &[], "");
    pair.setup();
    let bridge = pair.run();
    pair.green
        .psql(DB, "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1, 'x');");
    pair.wait_caught_up(&bridge);
    wait_for(
        Duration::from_secs(30),
        || metric(&pair, "pgbridge_schema_drift") == Some(0.0),
        || format!("pgbridge_schema_drift not 0 while nothing changed\n{}", bridge.log()),
    );
    // Blue held back, so the bridge is still up (and reporting) when the drift is found.
    let lock = crate::gates::BlueLock::take(&pair, "a");
    // What a migration tool does: the new b is not in the publication, so its rows and the
    // old b's disappearance never reach blue.
    pair.green.psql(
        DB,
        "DROP TABLE b; CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b VALUES (2, 'new'); \
         INSERT INTO a VALUES (2, 'y');",
    );
    wait_for(
        Duration::from_secs(30),
        || metric(&pair, "pgbridge_schema_drift") == Some(1.0),
        || format!("pgbridge_schema_drift never became 1\n{}", bridge.log()),
    );
    lock.release();
    let log = stops(bridge);
    assert!(
        log.contains("green table public.b is no longer streamed") && log.contains("publication pgbridge"),
        "{log}"
    );
    assert_eq!(
        blue(&pair, "SELECT string_agg(id::text, ',' ORDER BY id) FROM a"),
        "1,2"
    );
    stays_stopped(&pair, &["public.b"]);

    // The fix: publish it again, re-synchronize, accept. Then everything is identical again.
    pair.green.psql(DB, "ALTER PUBLICATION pgbridge ADD TABLE b");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("accepted as changed"), "{}", text(&out));
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM b"),
        "2new"
    );
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO b VALUES (3, 'more')");
    pair.assert_caught_up_and_verified(&bridge, "after re-synchronizing");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM b"),
        "2new,3more"
    );
}

#[test]
fn table_recreated_inside_a_for_all_tables_publication_stops_at_its_first_change() {
    let schema = "CREATE TABLE a (id int PRIMARY KEY, v text);";
    let pair = pair_with(schema, schema, &[], "");
    pair.green.psql(DB, "CREATE PUBLICATION pgbridge FOR ALL TABLES");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO a VALUES (1, 'old'), (2, 'old')");
    pair.wait_caught_up(&bridge);
    let before = pair.checkpoint();
    // The DROP is not replicated: blue would keep rows 1 and 2 next to the new table's rows.
    pair.green.psql(
        DB,
        "DROP TABLE a; CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (3, 'new');",
    );
    let log = stops(bridge);
    assert!(
        log.contains("green table public.a was dropped and created again"),
        "{log}"
    );
    assert_eq!(
        blue(&pair, "SELECT string_agg(id::text, ',' ORDER BY id) FROM a"),
        "1,2"
    );
    assert!(
        blue(
            &pair,
            &format!("SELECT '{before}'::pg_lsn <= lsn FROM pgbridge.checkpoint")
        ) == "t",
        "checkpoint went backwards"
    );
    stays_stopped(&pair, &["public.a", "dropped and created again"]);
}

#[test]
fn column_renamed_under_a_lenient_implicit_mapping_stops_until_mapped_and_accepted() {
    let (pair, bridge) = streaming(
        "CREATE TABLE c (id int PRIMARY KEY, email text);",
        "strict = false\n",
        "INSERT INTO c VALUES (1, 'a@x')",
    );
    pair.green.psql(
        DB,
        "ALTER TABLE c RENAME COLUMN email TO email_address; INSERT INTO c VALUES (2, 'b@x'); \
         UPDATE c SET email_address = 'a2@x' WHERE id = 1;",
    );
    let log = stops(bridge);
    assert!(
        log.contains("blue column public.c.email is no longer fed (it was fed from green column email"),
        "{log}"
    );
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || email, ',' ORDER BY id) FROM c"),
        "1a@x"
    );
    stays_stopped(&pair, &["blue column public.c.email is no longer fed"]);

    // The fix: map the new name and accept it; what was held back then arrives.
    write_mappings(
        &pair,
        &[(
            "c.toml",
            "target = \"c\"\n[columns]\nemail = { from = \"email_address\" }\n",
        )],
        "strict = false\n",
    );
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    pair.assert_caught_up_and_verified(&bridge, "after mapping the renamed column");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || email, ',' ORDER BY id) FROM c"),
        "1a2@x,2b@x"
    );
}

#[test]
fn column_turned_generated_stops_and_verify_compares_it() {
    let (pair, bridge) = streaming(
        "CREATE TABLE o (id int PRIMARY KEY, qty int, total int);",
        "",
        "INSERT INTO o VALUES (1, 2, 20)",
    );
    pair.green.psql(
        DB,
        "ALTER TABLE o DROP COLUMN total; ALTER TABLE o ADD COLUMN total int GENERATED ALWAYS AS (qty * 3) STORED; \
         INSERT INTO o (id, qty) VALUES (2, 5);",
    );
    let log = stops(bridge);
    assert!(log.contains("blue column public.o.total is no longer fed"), "{log}");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || ':' || total, ',' ORDER BY id) FROM o"),
        "1:20"
    );
    // check names the generated namesake, and verify compares blue's total with green's.
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("generated column"), "{}", text(&out));
    let out = pair.pgbridge(&["verify", "--table", "o"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing 1, extra 0, different 1"), "{}", text(&out));
    stays_stopped(&pair, &["public.o.total"]);
}

#[test]
fn used_column_retyped_on_green_or_blue_stops_and_an_unused_new_column_carries_on() {
    let schema = "CREATE TABLE t (id int PRIMARY KEY, n int, amount numeric(10,2));";
    let pair = pair_with(schema, schema, &[], "strict = false\n");
    pair.setup();
    let bridge = pair.run();
    // A green column nothing maps: every blue value is computed as before.
    pair.green.psql(
        DB,
        "ALTER TABLE t ADD COLUMN note text; INSERT INTO t VALUES (1, 1, 1.50, 'ignored');",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT id || ':' || n || ':' || amount FROM t"), "1:1:1.50");
    // Blue's DDL: a fed column changes type (values would be rounded).
    pair.blue
        .psql(DB, "ALTER TABLE t ALTER COLUMN amount TYPE numeric(10,0)");
    let log = stops(bridge);
    assert!(
        log.contains("blue column public.t.amount changed type from numeric(10,2) to numeric(10,0)"),
        "{log}"
    );
    pair.blue
        .psql(DB, "ALTER TABLE t ALTER COLUMN amount TYPE numeric(10,2)");
    // Undone, the change stays on record (rows written meanwhile were rounded) until a plan
    // is accepted again.
    let log = stops(pair.run());
    assert!(log.contains("run stopped for drift at"), "{log}");
    let out = pair.pgbridge(&["status"]);
    assert!(text(&out).contains("schema_drift           YES"), "{}", text(&out));
    let bridge = accept_and_run(&pair, &["setup"]);
    // Green's DDL on a used column.
    pair.green.psql(
        DB,
        "ALTER TABLE t ALTER COLUMN n TYPE bigint; INSERT INTO t VALUES (2, 2, 2)",
    );
    let log = stops(bridge);
    assert!(
        log.contains("green column public.t.n, which feeds blue column public.t.n, changed type from pg_catalog.int4 to pg_catalog.int8"),
        "{log}"
    );
    assert_eq!(blue(&pair, "SELECT count(*) FROM t"), "1");
}

#[test]
fn green_partitioned_into_blue_plain_published_through_the_root() {
    let green = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k); \
                 CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (0) TO (100); \
                 CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (100) TO (200); \
                 INSERT INTO m VALUES (1, 5, 'before');";
    let blue_sql = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k));";
    let pair = pair_with(green, blue_sql, &[], "");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("blue public.m <- green public.m"), "{}", text(&out));
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        pair.green
            .psql(DB, "SELECT pubviaroot FROM pg_publication WHERE pubname = 'pgbridge'"),
        "t"
    );
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO m VALUES (2, 50, 'a'), (3, 150, 'b'); UPDATE m SET k = 120 WHERE id = 2; \
         UPDATE m SET v = 'c' WHERE id = 3; DELETE FROM m WHERE id = 1;",
    );
    pair.assert_caught_up_and_verified(&bridge, "green partitioned into blue plain");
    assert_eq!(
        blue(
            &pair,
            "SELECT string_agg(id || ':' || k || ':' || v, ',' ORDER BY id) FROM m"
        ),
        "2:120:a,3:150:c"
    );
    // A new, empty partition changes nothing on blue: the bridge takes it into the plan and
    // streams its rows.
    let plan = || blue(&pair, "SELECT signature FROM pgbridge.accepted_plan");
    let accepted = plan();
    pair.green
        .psql(DB, "CREATE TABLE m_4 PARTITION OF m FOR VALUES FROM (300) TO (400)");
    wait_for(
        Duration::from_secs(30),
        || plan() != accepted,
        || format!("the new partition never joined the plan\n{}", bridge.log()),
    );
    pair.green.psql(DB, "INSERT INTO m VALUES (7, 350, 'g')");
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT v FROM m WHERE id = 7"), "g");
    pair.green.psql(DB, "DELETE FROM m WHERE id = 7");
    // A TRUNCATE of the whole table is replicated; one of a single partition is not (through
    // the root), and only its storage tells.
    let plan = || blue(&pair, "SELECT signature FROM pgbridge.accepted_plan");
    let accepted = plan();
    pair.green.psql(DB, "TRUNCATE m; INSERT INTO m VALUES (4, 10, 'd')");
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT string_agg(id::text, ',') FROM m"), "4");
    // The bridge takes the partitions' new storage as explained by the TRUNCATE it applied.
    wait_for(
        Duration::from_secs(30),
        || plan() != accepted,
        || format!("the accepted plan never took the new storage\n{}", bridge.log()),
    );
    pair.green.psql(DB, "TRUNCATE m_1");
    let log = stops(bridge);
    assert!(
        log.contains("partition(s) public.m_1 of green table public.m were truncated or rewritten"),
        "{log}"
    );
    assert_eq!(blue(&pair, "SELECT string_agg(id::text, ',') FROM m"), "4");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(blue(&pair, "SELECT count(*) FROM m"), "0");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    // A partition attached with rows (not replicated).
    pair.green.psql(
        DB,
        "CREATE TABLE m_3 (id int, k int, v text, PRIMARY KEY (id, k)); INSERT INTO m_3 VALUES (9, 250, 'z'); \
         ALTER TABLE m ATTACH PARTITION m_3 FOR VALUES FROM (200) TO (300);",
    );
    let log = stops(bridge);
    assert!(
        log.contains("partition(s) public.m_3 were attached to green table public.m"),
        "{log}"
    );
    stays_stopped(&pair, &["public.m_3 were attached"]);

    // Re-synchronized and accepted; then a partition detached (its rows leave green's table
    // but would stay in blue's).
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(blue(&pair, "SELECT string_agg(id::text, ',' ORDER BY id) FROM m"), "9");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.green.psql(DB, "ALTER TABLE m DETACH PARTITION m_3");
    let log = stops(bridge);
    assert!(
        log.contains("partition(s) public.m_3 were detached from green table public.m"),
        "{log}"
    );
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("extra 1"), "{}", text(&out));
}

#[test]
fn green_partitions_published_one_by_one_map_through_their_root() {
    let green = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k); \
                 CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (0) TO (100); \
                 CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (100) TO (200); \
                 CREATE PUBLICATION pgbridge FOR TABLE m;";
    let blue_sql = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k));";
    let pair = pair_with(green, blue_sql, &[], "");
    check_plans(&pair, "blue public.m <- green public.m_1");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO m VALUES (1, 5, 'a'), (2, 50, 'b'), (3, 150, 'c'); UPDATE m SET k = 110 WHERE id = 1; \
         DELETE FROM m WHERE id = 2;",
    );
    pair.assert_caught_up_and_verified(&bridge, "partitions published one by one");
    assert_eq!(
        blue(
            &pair,
            "SELECT string_agg(id || ':' || k || ':' || v, ',' ORDER BY id) FROM m"
        ),
        "1:110:a,3:150:c"
    );
    // A TRUNCATE of the whole table arrives as one of every partition: blue's table empties.
    pair.green
        .psql(DB, "TRUNCATE m; INSERT INTO m VALUES (5, 5, 'e'), (6, 150, 'f')");
    pair.wait_caught_up(&bridge);
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM m"),
        "5e,6f"
    );
    // A partition created empty joins (its rows stream); one attached with rows stops.
    let new_partition = || {
        blue(
            &pair,
            "SELECT count(*) FROM pgbridge.accepted_plan WHERE green_table = 'public.m_3'",
        )
    };
    pair.green
        .psql(DB, "CREATE TABLE m_3 PARTITION OF m FOR VALUES FROM (200) TO (300)");
    wait_for(
        Duration::from_secs(30),
        || new_partition() == "1",
        || format!("the new partition never joined the plan\n{}", bridge.log()),
    );
    pair.green.psql(DB, "INSERT INTO m VALUES (8, 250, 'h')");
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT v FROM m WHERE id = 8"), "h");
    pair.green.psql(
        DB,
        "DELETE FROM m WHERE id = 8; CREATE TABLE m_9 (id int, k int, v text, PRIMARY KEY (id, k)); \
         INSERT INTO m_9 VALUES (9, 950, 'z'); ALTER TABLE m ATTACH PARTITION m_9 FOR VALUES FROM (900) TO (1000);",
    );
    let log = stops(bridge);
    assert!(
        log.contains("partition public.m_9 was attached to green table public.m with rows"),
        "{log}"
    );
    let bridge = accept_and_run(&pair, &["setup", "--copy"]);
    // One partition's TRUNCATE cannot be told apart on blue.
    pair.green.psql(DB, "TRUNCATE m_2");
    let log = stops(bridge);
    assert!(
        log.contains("green truncated partition public.m_2 of public.m"),
        "{log}"
    );
    assert_eq!(
        blue(&pair, "SELECT string_agg(id::text, ',' ORDER BY id) FROM m"),
        "5,6,9",
        "the copy holds every partition's rows, and nothing of the TRUNCATE applied"
    );
}

#[test]
fn green_plain_into_blue_partitioned_moves_rows_between_partitions() {
    let green = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)); INSERT INTO m VALUES (1, 5, 'x');";
    let blue_sql = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k); \
                    CREATE TABLE m_lo PARTITION OF m FOR VALUES FROM (0) TO (100); \
                    CREATE TABLE m_hi PARTITION OF m FOR VALUES FROM (100) TO (200);";
    let pair = pair_with(green, blue_sql, &[], "");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO m VALUES (2, 10, 'y'); UPDATE m SET k = 150 WHERE id = 1; UPDATE m SET v = 'w' WHERE id = 2;",
    );
    pair.assert_caught_up_and_verified(&bridge, "green plain into blue partitioned");
    assert_eq!(blue(&pair, "SELECT string_agg(id || ':' || v, ',') FROM m_hi"), "1:x");
    assert_eq!(blue(&pair, "SELECT string_agg(id || ':' || v, ',') FROM m_lo"), "2:w");
}

#[test]
fn publication_row_filter_and_column_list_bound_copy_stream_and_verify() {
    // Row filters may only read replica-identity columns (else green refuses updates).
    let green = "CREATE TABLE t (id int PRIMARY KEY, tenant int, v text, secret text); \
                 INSERT INTO t VALUES (1, 1, 'a', 's'), (2, 2, 'b', 's'); \
                 CREATE PUBLICATION pgbridge FOR TABLE t (id, tenant, v) WHERE (id % 2 = 1);";
    let pair = pair_with(
        green,
        "CREATE TABLE t (id int PRIMARY KEY, tenant int, v text);",
        &[],
        "",
    );
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t"), "1a");
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO t VALUES (3, 1, 'c', 's'), (4, 2, 'd', 's'); UPDATE t SET v = 'a2' WHERE id = 1; \
         UPDATE t SET v = 'b2' WHERE id = 2;",
    );
    pair.assert_caught_up_and_verified(&bridge, "row filter and column list");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t"),
        "1a2,3c"
    );
    drop(bridge);

    // A blue column fed by a green column the column list leaves out is a problem.
    pair.blue.psql(DB, "ALTER TABLE t ADD COLUMN secret text");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("blue column public.t.secret has a same-named green column public.t.secret")
            && text(&out).contains("left out by the column list of publication pgbridge"),
        "{}",
        text(&out)
    );
}

#[test]
fn setup_refuses_what_check_refuses_and_creates_nothing() {
    let cases: [(&str, &str); 4] = [
        (
            "target = \"t\"\nignore = [\"v\"]\n[columns]\nlabel = { expr = \"upper(v\" }\n",
            "do not prepare on blue",
        ),
        (
            "target = \"t\"\nignore = [\"v\"]\n[columns]\nlabel = { expr = \"upper(nosuch)\" }\n",
            "nosuch",
        ),
        (
            "target = \"t\"\n[columns]\nlabel = { from = \"v\" }\n[filter]\nwhere = \"id >>> 1\"\n",
            "do not prepare on blue",
        ),
        (
            "target = \"t\"\nignore = [\"v\"]\n",
            "blue column public.t.label is NOT NULL without a default",
        ),
    ];
    for (mapping, words) in cases {
        let pair = pair_with(
            "CREATE TABLE t (id int PRIMARY KEY, v text);",
            "CREATE TABLE t (id int PRIMARY KEY, label text NOT NULL);",
            &[("t.toml", mapping)],
            "",
        );
        let out = pair.pgbridge(&["check"]);
        assert_eq!(out.status.code(), Some(1), "check for {mapping:?}:\n{}", text(&out));
        let out = pair.pgbridge(&["setup"]);
        assert_eq!(out.status.code(), Some(2), "setup for {mapping:?}:\n{}", text(&out));
        assert!(
            text(&out).contains(words),
            "setup for {mapping:?} should say {words:?}:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("nothing was created"), "{}", text(&out));
        assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM pg_publication"), "0");
        assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"), "0");
        assert_eq!(
            pair.blue
                .psql(DB, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgbridge'"),
            "0"
        );
    }
}

#[test]
fn same_partitions_on_both_sides_map_partition_to_partition() {
    let schema = "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k); \
                  CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (0) TO (100); \
                  CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (100) TO (200);";
    let pair = pair_with(
        &format!("{schema} CREATE PUBLICATION pgbridge FOR TABLE m;"),
        schema,
        &[],
        "",
    );
    check_plans(&pair, "blue public.m_2 <- green public.m_2");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO m VALUES (1, 5, 'a'), (2, 150, 'b'); UPDATE m SET k = 105 WHERE id = 1; TRUNCATE m_2; \
         INSERT INTO m VALUES (3, 6, 'c');",
    );
    pair.assert_caught_up_and_verified(&bridge, "same partitions on both sides");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || v, ',' ORDER BY id) FROM m_1"),
        "3c"
    );
    assert_eq!(blue(&pair, "SELECT count(*) FROM m_2"), "0");
}

#[test]
fn column_an_expression_reads_renamed_stops_naming_both() {
    let pair = pair_with(
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "CREATE TABLE t (id int PRIMARY KEY, label text);",
        &[("t.toml", "target = \"t\"\n[columns]\nlabel = { expr = \"upper(v)\" }\n")],
        "strict = false\n",
    );
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'a')");
    pair.wait_caught_up(&bridge);
    pair.green
        .psql(DB, "ALTER TABLE t RENAME COLUMN v TO w; INSERT INTO t VALUES (2, 'b')");
    let log = stops(bridge);
    assert!(
        log.contains(
            "green column public.t.v, which expression upper(v) for blue column public.t.label reads, is gone"
        ),
        "{log}"
    );
    assert_eq!(blue(&pair, "SELECT string_agg(id || label, ',') FROM t"), "1A");
}

#[test]
fn publication_that_stops_carrying_deletes_stops_the_bridge() {
    let (pair, bridge) = streaming(
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    );
    // Green's deletes would no longer reach blue.
    pair.green.psql(
        DB,
        "ALTER PUBLICATION pgbridge SET (publish = 'insert, update'); DELETE FROM t WHERE id = 1",
    );
    let log = stops(bridge);
    assert!(
        log.contains("the publication no longer carries delete, truncate for green table public.t"),
        "{log}"
    );
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("publication pgbridge does not carry delete, truncate for green table public.t"),
        "{}",
        text(&out)
    );
    // A publication that carries nothing at all is no exception.
    pair.green.psql(DB, "ALTER PUBLICATION pgbridge SET (publish = '')");
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not carry insert, update, delete, truncate for green table public.t"),
        "{}",
        text(&out)
    );
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The next bug of the kind of issue 14's case 7: a key blue stores with a narrower type
/// modifier than green's is found by the value blue stored (green's 1.005 is blue's 1.01), so
/// updates and deletes reach their row instead of silently missing it.
#[test]
fn keys_narrowed_by_blues_type_modifier_still_find_their_rows() {
    let pair = pair_with(
        "CREATE TABLE k (id numeric PRIMARY KEY, v text);",
        "CREATE TABLE k (id numeric(12,2) PRIMARY KEY, v text);",
        &[],
        "",
    );
    pair.setup();
    let bridge = pair.run_with_env(&[("PGBRIDGE_APPLY", "exact")]);
    pair.green.psql(DB, "INSERT INTO k VALUES (1.005, 'a'), (2.5, 'b')");
    pair.green.psql(DB, "UPDATE k SET v = 'a2' WHERE id = 1.005");
    pair.green.psql(DB, "UPDATE k SET id = 3.005 WHERE id = 1.005");
    pair.green.psql(DB, "DELETE FROM k WHERE id = 2.5");
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT string_agg(id || '=' || v, ',') FROM k"), "3.01=a2");
    pair.green.psql(DB, "DELETE FROM k WHERE id = 3.005");
    pair.wait_caught_up(&bridge);
    assert_eq!(blue(&pair, "SELECT count(*) FROM k"), "0");
    drop(bridge);
    // The batched path, where deletes go out as one statement per table.
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO k SELECT g + 0.005, 'x' FROM generate_series(10, 400) g; DELETE FROM k WHERE id > 100;",
    );
    pair.assert_caught_up_and_verified(&bridge, "narrowed keys");
    assert_eq!(blue(&pair, "SELECT count(*) FROM k"), "90");
}

/// Blue's default time zone changed during the window: streamed `timestamptz -> timestamp`
/// values would change meaning from then on, so the bridge stops; pinning the zone with
/// `[blue] timezone` keeps what was accepted.
#[test]
fn blue_default_time_zone_changed_during_the_window_stops_the_bridge() {
    let pair = pair_with(
        "CREATE TABLE e (id int PRIMARY KEY, at timestamptz);",
        "CREATE TABLE e (id int PRIMARY KEY, at timestamp);",
        &[],
        "",
    );
    let zone = pair.blue.psql(DB, "SHOW timezone");
    pair.setup();
    let bridge = pair.run();
    pair.green
        .psql(DB, "INSERT INTO e VALUES (1, '2026-01-01 12:00:00+00')");
    pair.wait_caught_up(&bridge);
    pair.blue
        .psql(DB, "ALTER DATABASE postgres SET timezone = 'Asia/Tokyo'");
    let log = stops(bridge);
    assert!(
        log.contains("other session settings now") && log.contains("TimeZone=Asia/Tokyo"),
        "{log}"
    );
    // Pinned to the zone the plan was accepted with (and the stop acknowledged), the bridge
    // streams as before.
    let config = std::fs::read_to_string(pair.config_path()).unwrap();
    std::fs::write(
        pair.config_path(),
        config.replace(
            "schema = \"pgbridge\"\n",
            &format!("schema = \"pgbridge\"\ntimezone = \"{zone}\"\n"),
        ),
    )
    .unwrap();
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    pair.green
        .psql(DB, "INSERT INTO e VALUES (2, '2026-01-01 12:00:00+00')");
    pair.assert_caught_up_and_verified(&bridge, "zone pinned");
    assert_eq!(
        blue(&pair, "SELECT string_agg(at::text, ',' ORDER BY id) FROM e"),
        pair.green.psql(
            DB,
            &format!("SELECT string_agg((at AT TIME ZONE '{zone}')::text, ',' ORDER BY id) FROM e")
        )
    );
}

/// Changes the stream cannot show because green or blue rewrites values in place without a
/// replicated change: a green column dropped and added again under the same name, a green
/// column's modifier narrowed, a blue column renamed away and replaced, a blue table replaced.
#[test]
fn values_rewritten_in_place_on_either_side_stop_the_bridge() {
    let (pair, bridge) = streaming(
        "CREATE TABLE r (id int PRIMARY KEY, first text, price numeric(12,2));",
        "",
        "INSERT INTO r VALUES (1, 'ann', 10.55)",
    );
    pair.green.psql(
        DB,
        "BEGIN; ALTER TABLE r DROP COLUMN price; ALTER TABLE r ADD COLUMN price numeric(12,2); COMMIT;",
    );
    let log = stops(bridge);
    assert!(
        log.contains("green column public.r.price is another column now"),
        "{log}"
    );
    assert_eq!(blue(&pair, "SELECT price FROM r"), "10.55");
    assert_eq!(
        pair.green.psql(DB, "SELECT coalesce(price::text, 'null') FROM r"),
        "null"
    );

    // Re-synchronized and accepted; then the modifier narrows (green rounds its values).
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    pair.green.psql(DB, "UPDATE r SET price = 10.55");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.green
        .psql(DB, "ALTER TABLE r ALTER COLUMN price TYPE numeric(12,0)");
    let log = stops(bridge);
    assert!(
        log.contains("green column public.r.price changed its declared type from numeric(12,2) to numeric(12,0)"),
        "{log}"
    );

    // Blue: a column renamed away and a new one of the same name, and a table replaced.
    pair.green
        .psql(DB, "ALTER TABLE r ALTER COLUMN price TYPE numeric(12,2)");
    let bridge = accept_and_run(&pair, &["setup", "--copy"]);
    pair.blue.psql(
        DB,
        "BEGIN; ALTER TABLE r RENAME COLUMN first TO first_old; ALTER TABLE r ADD COLUMN first text; COMMIT;",
    );
    let log = stops(bridge);
    assert!(
        log.contains("blue column public.r.first is another column now"),
        "{log}"
    );
    pair.blue.psql(
        DB,
        "BEGIN; ALTER TABLE r DROP COLUMN first; ALTER TABLE r RENAME COLUMN first_old TO first; COMMIT;",
    );
    let bridge = accept_and_run(&pair, &["setup"]);
    pair.blue.psql(
        DB,
        "BEGIN; ALTER TABLE r RENAME TO r_old; CREATE TABLE r (LIKE r_old INCLUDING ALL); COMMIT;",
    );
    let log = stops(bridge);
    assert!(
        log.contains("blue table public.r was dropped and created again"),
        "{log}"
    );
}

/// A change made while `run` is down, with rows written before it: `run` applies what was
/// written before the change under the accepted plan and stops exactly at the change; the
/// mapping fixed and accepted, it goes on from there.
#[test]
fn change_made_while_run_is_down_is_met_at_its_place_in_the_stream() {
    let (pair, bridge) = streaming(
        "CREATE TABLE t (id int PRIMARY KEY, a text);",
        "",
        "INSERT INTO t VALUES (1, 'one')",
    );
    assert_eq!(bridge.terminate(), 0);
    pair.green.psql(
        DB,
        "INSERT INTO t VALUES (2, 'two'); UPDATE t SET a = 'uno' WHERE id = 1; \
         ALTER TABLE t RENAME COLUMN a TO a_new; INSERT INTO t VALUES (3, 'three');",
    );
    let log = stops(pair.run());
    assert!(log.contains("public.t.a_new"), "{log}");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || a, ',' ORDER BY id) FROM t"),
        "1uno,2two",
        "what was written before the change is applied:\n{log}"
    );
    write_mappings(
        &pair,
        &[("t.toml", "target = \"t\"\n[columns]\na = { from = \"a_new\" }\n")],
        "",
    );
    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    pair.assert_caught_up_and_verified(&bridge, "after the change made while down");
    assert_eq!(
        blue(&pair, "SELECT string_agg(id || a, ',' ORDER BY id) FROM t"),
        "1uno,2two,3three"
    );
}

/// What no catalog shows, `verify` still sees: green rewrites values in place to ones its
/// type calls equal (interval '36 hours' becomes '1 day 12:00:00', numeric 1.5 becomes
/// 1.5000), which blue does not get. Compared by text, they differ.
#[test]
fn verify_sees_values_rewritten_in_place_that_equality_calls_equal() {
    let (pair, bridge) = streaming(
        "CREATE TABLE r (id int PRIMARY KEY, d interval, n numeric);",
        "",
        "INSERT INTO r VALUES (1, '36 hours', 1.5), (2, '30 days', 2)",
    );
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    pair.green.psql(
        DB,
        "ALTER TABLE r ALTER COLUMN d TYPE interval USING justify_interval(d), \
         ALTER COLUMN n TYPE numeric USING n::numeric(20,4)",
    );
    pair.wait_caught_up(&bridge);
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different 2"), "{}", text(&out));
}
