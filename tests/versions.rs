//! Mixed PostgreSQL versions: green on a newer major version than blue, and the reverse, with
//! the example mapping: copy, stream (inserts, updates, a key change, deletes), wait, verify.
//!
//! The default server (`PGBRIDGE_PG_BIN`, or Debian's PostgreSQL 15) is one side; the other
//! comes from `PGBRIDGE_PG16_BIN`, `PGBRIDGE_PG17_BIN` or `PGBRIDGE_PG18_BIN` (set by
//! scripts/test.sh from scripts/ensure-postgres-version.sh). Versions without a variable are
//! reported as not tested. The whole suite also runs on one version with `PGBRIDGE_PG_BIN`.

use std::path::{Path, PathBuf};

use crate::support::bridge::{text, Pair, DB};
use crate::support::{pg_version_bin_dir, ClusterOptions};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/example");

fn on(bin: Option<&PathBuf>) -> ClusterOptions {
    ClusterOptions {
        bin: bin.cloned(),
        ..Default::default()
    }
}

/// The example flow between a green and a blue started from `green_bin` / `blue_bin`.
fn example_flow(green_bin: Option<&PathBuf>, blue_bin: Option<&PathBuf>) -> String {
    let pair = Pair::start_with(on(green_bin), on(blue_bin));
    let versions = format!("green {} -> blue {}", pair.green.version_num(), pair.blue.version_num());
    let sql = |name: &str| std::fs::read_to_string(Path::new(EXAMPLE).join(name)).unwrap();
    pair.green.psql(DB, &sql("green.sql"));
    pair.blue.psql(DB, &sql("blue.sql"));
    pair.write_config(&format!("[mapping]\ndir = \"{EXAMPLE}\"\n"));
    pair.green.psql(
        DB,
        "INSERT INTO customers (id, name, email_address, location_structured, created_at)
           SELECT i, 'customer ' || i, 'c' || i || '@example.com', jsonb_build_object('city', 'city ' || i), now()
           FROM generate_series(1, 500) i;
         INSERT INTO jobs SELECT i, i, i + 0.5, 'job ' || i FROM generate_series(1, 200) i;",
    );
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{versions}: {}", text(&out));
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO customers (id, name, email_address, location_structured, created_at)
           SELECT i, 'customer ' || i, 'c' || i || '@example.com', jsonb_build_object('city', 'town ' || i), now()
           FROM generate_series(501, 800) i;
         UPDATE customers SET email_address = 'new' || id || '@example.com' WHERE id % 7 = 0;
         UPDATE customers SET id = id + 10000 WHERE id = 3;
         DELETE FROM customers WHERE id % 11 = 0;
         UPDATE jobs SET quantity = quantity + 1 WHERE id <= 50;
         INSERT INTO purchases (id, customer_id, total, status) SELECT i, i, i * 1.5, 'new' FROM generate_series(1, 100) i;",
    );
    pair.assert_caught_up_and_verified(&bridge, &versions);
    assert_eq!(bridge.terminate(), 0, "{versions}");
    versions
}

#[test]
fn versions_newer_green_to_older_blue_and_back() {
    let mut tested = Vec::new();
    let mut missing = Vec::new();
    for major in [16, 17, 18] {
        match pg_version_bin_dir(major) {
            Some(bin) => {
                tested.push(example_flow(Some(&bin), None));
                tested.push(example_flow(None, Some(&bin)));
            }
            None => missing.push(format!("PGBRIDGE_PG{major}_BIN")),
        }
    }
    eprintln!("versions tested: {}", tested.join("; "));
    if !missing.is_empty() {
        eprintln!(
            "versions not tested ({} unset; see scripts/ensure-postgres-version.sh)",
            missing.join(", ")
        );
    }
}
