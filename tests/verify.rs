//! `pgbridge verify`: finds a changed value, a missing row and an extra row by key in a
//! 100,000-row table; reports identical tables after streaming through the example mapping.

use crate::copy::{example_pair, fill_green};
use crate::support::bridge::{text, DB};

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
