//! `pgbridge verify`: finds a changed value, a missing row and an extra row by key in a
//! 100,000-row table; reports identical tables after streaming through the example mapping.

use crate::copy::{example_pair, fill_green};
use crate::support::bridge::{text, Pair, DB};

#[test]
fn verify_reports_changed_missing_and_extra_rows_by_key() {
    let pair = example_pair();
    fill_green(&pair, 100_000);
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("identical: 4 table(s)"), "{}", text(&out));

    pair.blue.psql(
        DB,
        "UPDATE orders SET total = total + 1 WHERE id = 77777; DELETE FROM orders WHERE id = 4242; \
         INSERT INTO orders VALUES (2000000, 1, 1, 'extra');",
    );
    let out = pair.pgbridge(&["verify"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = report
        .lines()
        .find(|l| l.starts_with("public.purchases -> public.orders"))
        .unwrap_or_else(|| panic!("no line for orders:\n{report}"));
    assert!(line.contains("green     100000  blue     100000"), "{line}");
    assert!(line.contains("missing 1, extra 1, different 1"), "{line}");
    assert!(report.contains("missing on blue: id=4242"), "{report}");
    assert!(report.contains("extra on blue: id=2000000"), "{report}");
    assert!(report.contains("different: id=77777"), "{report}");
    assert!(report.contains("DIFFERENT: 1 of 4 table(s) differ"), "{report}");

    let out = pair.pgbridge(&["verify", "--table", "orders", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["identical"], false);
    let tables = json["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "--table selects one table");
    let t = &tables[0];
    assert_eq!(t["blue_table"], "public.orders");
    assert_eq!(
        (t["missing"].as_i64(), t["extra"].as_i64(), t["different"].as_i64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(t["examples"]["different"][0], "id=77777");

    let out = pair.pgbridge(&["verify", "--table", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn verify_is_clean_after_streaming_the_example_mapping() {
    let pair = example_pair();
    pair.setup();
    let bridge = pair.run();
    fill_green(&pair, 3_000);
    pair.green.psql(
        DB,
        "INSERT INTO log SELECT i, 'n' || i FROM generate_series(1, 500) i; \
         UPDATE customers SET location_structured = '{\"city\": \"Braga\"}' WHERE id % 7 = 0; \
         UPDATE jobs SET quantity = 1.5 WHERE id % 5 = 0; DELETE FROM purchases WHERE id % 11 = 0; \
         DELETE FROM log WHERE n % 3 = 0;",
    );
    pair.wait_caught_up(&bridge);
    // The bridge is running: any chunk that looked different would be rechecked.
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A keyless table is compared as a multiset: a duplicated row is found.
    drop(bridge);
    pair.blue.psql(DB, "INSERT INTO log VALUES (1, 'n1')");
    let out = pair.pgbridge(&["verify", "--table", "public.log"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("missing 0, extra 1, different 0"), "{report}");
    assert!(report.contains("(1,n1)"), "{report}");
}

/// Many small chunks over a text key: chunk ranges follow byte order ("C") on both sides, so
/// mixed-case keys and keys past either end are placed right.
#[test]
fn verify_chunks_text_keys_in_byte_order() {
    let pair = crate::support::bridge::Pair::start();
    pair.both("CREATE TABLE tags (name text PRIMARY KEY, n int)");
    pair.setup();
    let fill = "INSERT INTO tags SELECT CASE WHEN i % 2 = 0 THEN upper(md5(i::text)) ELSE md5(i::text) END, i \
                FROM generate_series(1, 300) i";
    pair.green.psql(DB, fill);
    pair.blue.psql(DB, fill);
    let verify = |args: &[&str]| {
        pair.command(args)
            .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "7")
            .output()
            .expect("pgbridge")
    };
    let out = verify(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    pair.blue.psql(
        DB,
        "DELETE FROM tags WHERE n = 150; UPDATE tags SET n = -n WHERE n = 151; \
         INSERT INTO tags VALUES ('0000 first', 0), ('zzzz last', 0), ('Mmmm middle', 0);",
    );
    let out = verify(&["verify"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("green        300  blue        302  missing 1, extra 3, different 1"),
        "{report}"
    );
    assert!(
        report.contains("name=0000 first; name=Mmmm middle; name=zzzz last"),
        "{report}"
    );
}

/// Writes `files` (name, text) into a mapping directory and points the configuration at it.
fn use_mappings(pair: &Pair, files: &[(&str, &str)]) {
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
}

/// Green's `qty * price` (numeric with four or more decimals) into blue's `numeric(12,2)`, and
/// a `timestamptz` with microseconds into a `timestamp(0)`: blue rounds on assignment, and
/// `verify` compares the mapped value as blue stores it, so an exact bridge is identical.
#[test]
fn verify_compares_values_as_blue_stores_them() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE lines (id int PRIMARY KEY, qty numeric, price numeric, at timestamptz)",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE lines (id int PRIMARY KEY, amount numeric(12,2), at timestamp(0))",
    );
    use_mappings(
        &pair,
        &[(
            "lines.toml",
            "target = \"lines\"\nignore = [\"qty\", \"price\"]\n[columns]\namount = { expr = \"qty * price\" }\n",
        )],
    );
    let fill = |from: i32, to: i32| {
        pair.green.psql(
            DB,
            &format!(
                "INSERT INTO lines SELECT i, 1.5 + i * 0.137, 1.0735 + i * 0.0101, \
                 timestamptz '2024-01-01 00:00:00.5+00' + i * interval '1.3 seconds' FROM generate_series({from}, {to}) i"
            ),
        )
    };
    fill(1, 500);
    pair.green
        .psql(DB, "INSERT INTO lines VALUES (2000001, 2, 18.3425, NULL)");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bridge = pair.run();
    fill(501, 1000);
    pair.green
        .psql(DB, "UPDATE lines SET price = price * 1.0303 WHERE id % 4 = 0");
    pair.wait_caught_up(&bridge);
    drop(bridge);

    // Blue holds green's values rounded as the types say, computed here independently.
    let zone = pair.blue.psql(DB, "SHOW TimeZone");
    let digest = |cluster: &crate::support::Cluster, q: &str| {
        cluster.psql(
            DB,
            &format!("SET DateStyle = ISO; SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM ({q}) t"),
        )
    };
    assert_eq!(
        digest(&pair.blue, "SELECT id, amount, at FROM lines"),
        digest(
            &pair.green,
            &format!(
                "SELECT id, round(qty * price, 2) AS amount, \
                 date_trunc('second', (at AT TIME ZONE '{zone}') + interval '0.5 second') AS at FROM lines"
            )
        )
    );
    assert_eq!(
        pair.blue.psql(DB, "SELECT amount FROM lines WHERE id = 2000001"),
        "36.69"
    );
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("identical: 1 table(s)"), "{}", text(&out));

    pair.blue
        .psql(DB, "UPDATE lines SET amount = amount + 0.01 WHERE id = 42");
    let out = pair.pgbridge(&["verify"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("missing 0, extra 0, different 1"), "{report}");
    assert!(report.contains("different: id=42"), "{report}");
}

/// `verify --table` takes a table name as mapping files write `target` and `source`: quoted
/// parts keep case and spaces, unquoted ones fold to lower case, the schema may be left out;
/// green's or blue's name. A name that fits no mapped table exits 2 and says so.
#[test]
fn verify_table_takes_names_as_mapping_files_write_them() {
    let pair = Pair::start();
    pair.both(
        "CREATE SCHEMA \"Sales Dept\"; CREATE TABLE \"Sales Dept\".\"Order\" (id int PRIMARY KEY, \"Total\" numeric); \
         CREATE TABLE other (id int PRIMARY KEY); \
         INSERT INTO \"Sales Dept\".\"Order\" SELECT i, i * 1.5 FROM generate_series(1, 100) i; \
         INSERT INTO other SELECT generate_series(1, 10);",
    );
    pair.green.psql(
        DB,
        "CREATE TABLE \"Sales Dept\".\"Refund\" (id int PRIMARY KEY, note text)",
    );
    pair.blue.psql(
        DB,
        "CREATE SCHEMA legacy; CREATE TABLE legacy.\"Refund Rows\" (id int PRIMARY KEY, note text)",
    );
    use_mappings(
        &pair,
        &[(
            "refunds.toml",
            "target = 'legacy.\"Refund Rows\"'\nsource = '\"Sales Dept\".\"Refund\"'\n",
        )],
    );
    pair.setup();
    let verify = |name: &str| pair.pgbridge(&["verify", "--table", name]);
    for name in ["\"Sales Dept\".\"Order\"", "\"Order\"", "Sales Dept.Order"] {
        let out = verify(name);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {report}");
        assert!(report.contains("identical: 1 table(s)"), "{name}: {report}");
        assert!(report.contains("Sales Dept.Order"), "{name}: {report}");
        assert!(report.contains("green        100  blue        100"), "{name}: {report}");
    }
    // Green's name or blue's, quoted or not where SQL allows.
    for name in [
        "legacy.\"Refund Rows\"",
        "\"legacy\".\"Refund Rows\"",
        "\"Sales Dept\".\"Refund\"",
    ] {
        let out = verify(name);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {report}");
        assert!(
            report.contains("Sales Dept.Refund -> legacy.Refund Rows"),
            "{name}: {report}"
        );
    }
    // The table it names is the one compared.
    pair.blue
        .psql(DB, "UPDATE \"Sales Dept\".\"Order\" SET \"Total\" = 0 WHERE id = 7");
    let out = verify("\"Sales Dept\".\"Order\"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different: id=7"), "{}", text(&out));

    for (name, says) in [
        (
            "\"sales dept\".\"order\"",
            "no mapped table is called \"sales dept\".\"order\"",
        ),
        ("Sales Dept.\"Order", "is not a table name"),
        ("a.b.c", "is not a table name"),
    ] {
        let out = verify(name);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(text(&out).contains(says), "{name}: {}", text(&out));
    }
}

/// Green rows whose mapped values blue cannot hold (a `bigint` past blue's `integer`, an enum
/// label blue lacks: rows the bridge dead-letters) are reported by key and reason, each chunk's
/// other rows are compared as usual, and the other tables are still compared: exit 1, not 2.
/// Blue's row under the key of such a row (the row before the change) is not also extra.
#[test]
fn verify_reports_rows_blue_cannot_hold_and_goes_on() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TYPE order_status AS ENUM ('new', 'paid', 'refunded'); \
         CREATE TABLE line_items (id int PRIMARY KEY, qty bigint, note text)",
    );
    pair.blue.psql(
        DB,
        "CREATE TYPE order_status AS ENUM ('new', 'paid'); \
         CREATE TABLE line_items (id int PRIMARY KEY, qty int, note text)",
    );
    pair.both(
        "CREATE TABLE orders (id int PRIMARY KEY, status order_status, total numeric); \
         CREATE TABLE customers (id int PRIMARY KEY, name text); \
         INSERT INTO line_items SELECT i, i * 10, 'n' || i FROM generate_series(1, 100) i; \
         INSERT INTO orders SELECT i, 'paid', i * 1.5 FROM generate_series(1, 100) i; \
         INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 50) i;",
    );
    pair.setup();
    pair.green.psql(
        DB,
        "UPDATE line_items SET qty = 3000000000 WHERE id = 50; \
         INSERT INTO line_items VALUES (101, 5000000000, 'big'); \
         UPDATE line_items SET note = 'changed' WHERE id = 70; \
         UPDATE orders SET status = 'refunded' WHERE id = 7;",
    );
    pair.blue.psql(DB, "UPDATE customers SET name = 'renamed' WHERE id = 9");
    let verify = |args: &[&str]| {
        pair.command(args)
            .env("PGBRIDGE_VERIFY_CHUNK_ROWS", "30")
            .output()
            .expect("pgbridge")
    };
    let out = verify(&["verify"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = |table: &str| {
        report
            .lines()
            .find(|l| l.starts_with(table))
            .unwrap_or_else(|| panic!("no line for {table}:\n{report}"))
            .to_string()
    };
    let items = line("public.line_items");
    assert!(items.contains("green        101  blue        100"), "{items}");
    assert!(
        items.contains("missing 0, extra 0, different 1, cannot be stored on blue 2"),
        "{items}"
    );
    assert!(
        report.contains("cannot be stored on blue: id=101 (integer out of range)"),
        "{report}"
    );
    assert!(
        report.contains("cannot be stored on blue: id=50 (integer out of range)"),
        "{report}"
    );
    assert!(
        report.contains("different: id=70 (note: green changed / blue n70)"),
        "{report}"
    );
    let orders = line("public.orders");
    assert!(
        orders.contains("missing 0, extra 0, different 0, cannot be stored on blue 1"),
        "{orders}"
    );
    assert!(
        report.contains("cannot be stored on blue: id=7 (invalid input value for enum order_status: \"refunded\")"),
        "{report}"
    );
    // The other tables are compared: a real difference is found too.
    assert!(
        line("public.customers").contains("missing 0, extra 0, different 1"),
        "{report}"
    );
    assert!(
        report.contains("different: id=9 (name: green c9 / blue renamed)"),
        "{report}"
    );
    assert!(report.contains("DIFFERENT: 3 of 3 table(s) differ"), "{report}");

    let out = verify(&["verify", "--table", "orders", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let t = &json["tables"][0];
    assert_eq!(t["unstorable"], 1, "{t}");
    assert_eq!(t["green_rows"], 100, "{t}");
    assert_eq!(t["examples"]["unstorable"][0], "id=7", "{t}");
    assert_eq!(
        t["examples"]["unstorable_reasons"][0], "invalid input value for enum order_status: \"refunded\"",
        "{t}"
    );
}

/// `verify --json` with a small range size (`PGBRIDGE_VERIFY_CHUNK_ROWS`) and up to 20
/// examples per kind: exit code and the table's JSON.
fn verify_json(pair: &Pair, args: &[&str], chunk_rows: &str) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["verify", "--json", "--examples", "20"];
    all.extend_from_slice(args);
    let out = pair
        .command(&all)
        .env("PGBRIDGE_VERIFY_CHUNK_ROWS", chunk_rows)
        .output()
        .expect("pgbridge");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON expected:\n{}", text(&out)));
    (out.status.code(), json)
}

/// Counts and example keys (sorted) of a table's JSON: what must not depend on the method.
fn findings(t: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = ["green_rows", "blue_rows", "missing", "extra", "different", "unstorable"]
        .iter()
        .map(|k| format!("{k}={}", t[k]))
        .collect();
    for kind in ["missing", "extra", "different", "different_columns", "unstorable"] {
        let mut keys: Vec<String> = t["examples"][kind]
            .as_array()
            .unwrap_or_else(|| panic!("examples.{kind} in {t}"))
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        keys.sort();
        out.push(format!("{kind}: {}", keys.join("; ")));
    }
    out
}

/// The table called `name` in a verify JSON report.
fn table<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["blue_table"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

/// 20,000 rows in ranges of 500: identical tables are found so by checksums alone (no row
/// moved); a missing, an extra and a different row in the first, a middle and the last range
/// (extra rows below green's first key and past its last included, NULL against '' and the
/// text 'NULL') are reported exactly as `--full` reports them, moving only a few ranges' rows.
#[test]
fn verify_checksums_find_what_full_finds_in_first_middle_and_last_range() {
    let pair = Pair::start();
    pair.both("CREATE TABLE big (id int PRIMARY KEY, name text, note text, amount numeric(12,2))");
    pair.setup();
    let fill = "INSERT INTO big SELECT i * 2, 'name ' || i, \
                CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'NULL' ELSE 'n' || i END, i * 0.25 \
                FROM generate_series(1, 20000) i";
    pair.green.psql(DB, fill);
    pair.blue.psql(DB, fill);
    let (code, json) = verify_json(&pair, &[], "500");
    assert_eq!(code, Some(0), "{json}");
    let t = table(&json, "public.big");
    assert_eq!(t["method"], "checksums", "{t}");
    assert!(t["ranges_compared"].as_u64().unwrap() >= 40, "{t}");
    assert_eq!(t["rows_moved"], 0, "{t}");
    assert_eq!(
        (t["green_rows"].as_i64(), t["blue_rows"].as_i64()),
        (Some(20000), Some(20000))
    );

    pair.blue.psql(
        DB,
        "DELETE FROM big WHERE id IN (4, 20002, 39998); \
         INSERT INTO big VALUES (-5, 'below', NULL, 1), (20001, 'middle', '', 2), (50000, 'past', 'x', 3); \
         UPDATE big SET name = 'changed' WHERE id IN (14, 39990); \
         UPDATE big SET note = '' WHERE id = 20000; UPDATE big SET note = NULL WHERE id = 20004;",
    );
    let (code, sums) = verify_json(&pair, &[], "500");
    assert_eq!(code, Some(1), "{sums}");
    let (code, full) = verify_json(&pair, &["--full"], "500");
    assert_eq!(code, Some(1), "{full}");
    let (s, f) = (table(&sums, "public.big"), table(&full, "public.big"));
    assert_eq!(findings(s), findings(f), "checksums:\n{s}\nfull:\n{f}");
    assert_eq!(
        (s["missing"].as_i64(), s["extra"].as_i64(), s["different"].as_i64()),
        (Some(3), Some(3), Some(4)),
        "{s}"
    );
    let keys = |kind: &str| -> Vec<String> {
        let mut keys: Vec<String> = s["examples"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys("missing"), ["id=20002", "id=39998", "id=4"]);
    assert_eq!(keys("extra"), ["id=-5", "id=20001", "id=50000"]);
    let different = keys("different");
    assert_eq!(different, ["id=14", "id=20000", "id=20004", "id=39990"]);
    assert_eq!(
        (s["green_rows"].as_i64(), s["blue_rows"].as_i64()),
        (Some(20000), Some(20000))
    );
    assert_eq!(s["method"], "checksums", "{s}");
    assert_eq!(f["method"], "rows", "{f}");
    assert_eq!(f["rows_because"], "--full", "{f}");
    assert_eq!(f["rows_moved"], 20000, "{f}");
    let moved = s["rows_moved"].as_u64().unwrap();
    assert!(moved > 0 && moved <= 500, "only the differing ranges' rows move: {s}");
}

/// Text keys in byte order: a key column declared `COLLATE "C"` is ranged by checksums even
/// though ICU orders its mixed-case and accented keys otherwise; one under an ICU collation has
/// no index in byte order and is compared row by row. Both report what `--full` reports.
#[test]
fn verify_ranges_text_keys_in_byte_order_or_compares_them_row_by_row() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE words_c (name text COLLATE \"C\" PRIMARY KEY, n int); \
         CREATE TABLE words_icu (name text COLLATE \"und-x-icu\" PRIMARY KEY, n int);",
    );
    pair.setup();
    // ICU sorts 'apple' < 'Apple' < 'äpple' < 'Zebra'; bytes sort 'Apple' < 'Zebra' < 'apple' < 'äpple'.
    assert_eq!(
        pair.green.psql(
            DB,
            "SELECT string_agg(w, ' ' ORDER BY w COLLATE \"und-x-icu\") FROM unnest(ARRAY['Zebra', 'äpple', 'Apple', 'apple']) w"
        ),
        "apple Apple äpple Zebra"
    );
    for t in ["words_c", "words_icu"] {
        let fill = format!(
            "INSERT INTO {t} SELECT (ARRAY['a', 'A', 'ä', 'Ä', 'z', 'Z', 'é', 'É', '_', '0'])[i % 10 + 1] || md5(i::text), i \
             FROM generate_series(1, 3000) i"
        );
        pair.green.psql(DB, &fill);
        pair.blue.psql(DB, &fill);
        pair.blue.psql(
            DB,
            &format!(
                "DELETE FROM {t} WHERE n IN (1, 1500, 2999); UPDATE {t} SET n = -n WHERE n IN (2, 1501, 3000); \
                 INSERT INTO {t} VALUES ('', 0), ('Ämiddle', 0), ('Émiddle', 0), ('ü last', 0), ('\u{10ffff}', 0);"
            ),
        );
    }
    let (code, sums) = verify_json(&pair, &[], "100");
    assert_eq!(code, Some(1), "{sums}");
    let (code, full) = verify_json(&pair, &["--full"], "100");
    assert_eq!(code, Some(1), "{full}");
    for t in ["public.words_c", "public.words_icu"] {
        let (s, f) = (table(&sums, t), table(&full, t));
        assert_eq!(findings(s), findings(f), "checksums:\n{s}\nfull:\n{f}");
        assert_eq!(
            (s["missing"].as_i64(), s["extra"].as_i64(), s["different"].as_i64()),
            (Some(3), Some(5), Some(3)),
            "{s}"
        );
    }
    let c = table(&sums, "public.words_c");
    assert_eq!(c["method"], "checksums", "{c}");
    assert!(c["ranges_compared"].as_u64().unwrap() >= 30, "{c}");
    let icu = table(&sums, "public.words_icu");
    assert_eq!(icu["method"], "rows", "{icu}");
    assert!(icu["rows_because"].as_str().unwrap().contains("COLLATE \"C\""), "{icu}");
}

/// Tables checksums cannot serve are compared row by row, saying why: a value computed by a
/// function green does not have, a table without a unique key on blue.
#[test]
fn verify_compares_row_by_row_what_checksums_cannot_serve() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE people (id int PRIMARY KEY, name text); CREATE TABLE notes (n int, note text); \
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 300) i;",
    );
    pair.green.psql(
        DB,
        "ALTER TABLE notes REPLICA IDENTITY FULL; INSERT INTO people SELECT i, 'p' || i FROM generate_series(1, 300) i",
    );
    pair.blue.psql(
        DB,
        "CREATE FUNCTION shout(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)'; \
         INSERT INTO people SELECT i, 'P' || i FROM generate_series(1, 300) i",
    );
    use_mappings(
        &pair,
        &[(
            "people.toml",
            "target = \"people\"\n[columns]\nname = { expr = \"shout(name)\" }\n",
        )],
    );
    pair.setup();
    let (code, json) = verify_json(&pair, &[], "50");
    assert_eq!(code, Some(0), "{json}");
    for t in ["public.people", "public.notes"] {
        let t = table(&json, t);
        assert_eq!(t["method"], "rows", "{t}");
        assert_eq!(t["ranges_compared"], 0, "{t}");
        assert_eq!(t["rows_moved"], 300, "{t}");
    }
    for (t, why) in [
        ("public.notes", "no unique key"),
        ("public.people", "not computable on green"),
    ] {
        let because = table(&json, t)["rows_because"].as_str().unwrap_or_default().to_string();
        assert!(because.contains(why), "{t}: {json}");
    }
    pair.blue.psql(
        DB,
        "UPDATE people SET name = 'p7' WHERE id = 7; DELETE FROM notes WHERE n = 9;",
    );
    let (code, json) = verify_json(&pair, &[], "50");
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(
        table(&json, "public.people")["examples"]["different"],
        serde_json::json!(["id=7"])
    );
    assert_eq!(table(&json, "public.notes")["missing"], 1, "{json}");
}

/// A table green computes blue's values for (a cast) is compared by checksums, and its first
/// range row by row as well, blue evaluating the mapping itself: the two evaluations are
/// compared on real rows, so a difference between them cannot pass unseen when `setup --copy`
/// computed on green too.
#[test]
fn verify_spot_checks_the_first_range_of_a_table_green_computes() {
    let pair = Pair::start();
    pair.green.psql(
        DB,
        "CREATE TABLE jobs (id int PRIMARY KEY, qty numeric(10,2)); \
         INSERT INTO jobs SELECT i, i + 0.25 FROM generate_series(1, 1000) i",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE jobs (id int PRIMARY KEY, qty int); \
         INSERT INTO jobs SELECT i, i FROM generate_series(1, 1000) i",
    );
    pair.setup();
    let (code, json) = verify_json(&pair, &[], "100");
    assert_eq!(code, Some(0), "{json}");
    let t = table(&json, "public.jobs");
    assert_eq!(t["method"], "checksums", "{t}");
    assert_eq!(t["rows_moved"], 100, "the first range, row by row: {t}");
    // A value blue holds otherwise in a later range is found by its checksum.
    pair.blue.psql(DB, "UPDATE jobs SET qty = 0 WHERE id = 777");
    let (code, json) = verify_json(&pair, &[], "100");
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(
        table(&json, "public.jobs")["examples"]["different"][0],
        "id=777",
        "{json}"
    );
}

/// Before `setup` there is nothing to compare, which is not "identical": a gate on verify's
/// exit code must not pass.
#[test]
fn verify_before_setup_compares_nothing_and_says_so() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to compare: publication pgbridge does not exist on green")
            && text(&out).contains("run `pgbridge setup` first"),
        "{}",
        text(&out)
    );
}
