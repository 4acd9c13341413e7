//! One evaluation environment (DESIGN.md rule 10, CORRECTNESS.md "Semantics" 18): a green
//! `timestamptz` stored into a blue `timestamp` (by name and with `from`) and an expression
//! `at::date` depend on the session's TimeZone. Rows copied by `setup --copy`, rows streamed by
//! `run` (on the main blue session and on the lane of a transaction green streams while in
//! progress) and `verify` must all evaluate them in the same zone: blue's default for the
//! bridge's database, or `[blue] timezone` when set, never UTC and never green's.
//!
//! Green runs in another zone with day-month dates, blue with German dates, so any session
//! that kept a server default would show.

use std::path::Path;

use crate::support::bridge::{text, Pair, DB};
use crate::support::ClusterOptions;

/// A zone far from UTC (+14:00): its dates differ from UTC's for ten hours a day.
const KIRITIMATI: &str = "Pacific/Kiritimati";
/// A zone with a half-hour offset and daylight saving time (-03:30 / -02:30).
const ST_JOHNS: &str = "America/St_Johns";

const GREEN_SQL: &str = "CREATE TABLE visits (id int PRIMARY KEY, at timestamptz NOT NULL, note text);";
const BLUE_SQL: &str =
    "CREATE TABLE visits (id int PRIMARY KEY, at timestamp NOT NULL, seen timestamp, day date NOT NULL, note text);";
/// `at` maps by name (timestamptz into timestamp), `seen` with `from`, `day` by expression.
const MAPPING: &str = r#"
target = "public.visits"

[columns]
seen = { from = "at" }
day  = { expr = "at::date" }
"#;

fn options(settings: &[(&str, &str)]) -> ClusterOptions {
    ClusterOptions {
        settings: settings.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// Green in St John's with SQL/DMY dates and small decoding memory (so a large transaction
/// streams in progress); blue in `blue_zone` with German dates. `blue_key` goes under
/// `[blue]` in pgbridge.toml.
fn pair(blue_zone: &str, blue_key: &str) -> Pair {
    let green = options(&[
        ("timezone", ST_JOHNS),
        ("datestyle", "SQL, DMY"),
        ("logical_decoding_work_mem", "64kB"),
    ]);
    let blue = options(&[("timezone", blue_zone), ("datestyle", "German")]);
    let pair = Pair::start_with(green, blue);
    pair.green.psql(DB, GREEN_SQL);
    pair.blue.psql(DB, BLUE_SQL);
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("visits.toml"), MAPPING).unwrap();
    configure(&pair, blue_key, &dir);
    pair
}

fn configure(pair: &Pair, blue_key: &str, mappings: &Path) {
    pair.write_config(&format!("{blue_key}\n[mapping]\ndir = \"{}\"\n", mappings.display()));
    // On PostgreSQL 15 skipping origins means receiving transactions whole (see
    // pipeline::for_server); the large one below is to stream in progress, onto a lane.
    pair.set_green_option("origin", "\"any\"");
}

/// Inserts `n` visits from `first` on, 37 minutes apart from a Saturday evening in March 2024
/// (across St John's switch to daylight saving time and every zone's midnight), in one
/// transaction.
fn visits(pair: &Pair, first: i32, n: i32, note: &str) {
    pair.green.psql(
        DB,
        &format!(
            "INSERT INTO visits SELECT i, timestamptz '2024-03-09 23:00:00.123456+00' + (i - {first}) * interval \
             '37 minutes 1.5 seconds', '{note}' FROM generate_series({first}, {first} + {n} - 1) i"
        ),
    );
}

/// Green's visits as blue must hold them in `zone`, computed by green itself.
fn expected(pair: &Pair, zone: &str) -> String {
    pair.green.psql(
        DB,
        &format!(
            "SET DateStyle = 'ISO, MDY'; SELECT string_agg(concat_ws('|', id, at AT TIME ZONE '{zone}', \
             at AT TIME ZONE '{zone}', (at AT TIME ZONE '{zone}')::date, note), E'\\n' ORDER BY id) FROM visits"
        ),
    )
}

fn on_blue(pair: &Pair) -> String {
    pair.blue.psql(
        DB,
        "SET DateStyle = 'ISO, MDY'; SELECT string_agg(concat_ws('|', id, at, seen, day, note), E'\\n' ORDER BY id) \
         FROM visits",
    )
}

/// Blue's rows against the expected ones, naming the first few that differ.
pub(crate) fn assert_lines_equal(blue: &str, want: &str, what: &str) {
    let differ: Vec<String> = blue
        .lines()
        .zip(want.lines())
        .filter(|(b, w)| b != w)
        .take(3)
        .map(|(b, w)| format!("blue {b}\n want {w}"))
        .collect();
    assert!(
        differ.is_empty() && blue.lines().count() == want.lines().count(),
        "{what}: blue has {} rows, expected {}; first differences:\n{}",
        blue.lines().count(),
        want.lines().count(),
        differ.join("\n")
    );
}

/// Copies, streams (small transactions, a large one on a lane, updates of copied rows), and
/// checks blue's rows against green's own `AT TIME ZONE zone`, then `verify`.
fn copy_stream_and_check(pair: &Pair, zone: &str) {
    visits(pair, 1, 300, "copied");
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_lines_equal(&on_blue(pair), &expected(pair, zone), "copied rows");

    let bridge = pair.run();
    visits(pair, 1001, 300, "streamed");
    visits(pair, 5001, 4000, "streamed in progress");
    pair.green.psql(
        DB,
        "UPDATE visits SET at = at + interval '10 hours 1 minute' WHERE id % 3 = 0",
    );
    pair.green.psql(DB, "DELETE FROM visits WHERE id % 7 = 0");
    pair.wait_caught_up(&bridge);
    assert!(
        bridge
            .log()
            .contains("opened a blue session for a streamed transaction"),
        "the large transaction was not applied on a lane:\n{}",
        bridge.log()
    );
    let want = expected(pair, zone);
    assert!(want.lines().count() > 3900, "{}", want.lines().count());
    assert_lines_equal(&on_blue(pair), &want, "copied and streamed rows");

    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), bridge.log());
    assert!(text(&out).contains("identical: 1 table(s)"), "{}", text(&out));
    assert_eq!(bridge.terminate(), 0);
}

/// Blue's server TimeZone is what mapping expressions see, on every path.
#[test]
fn copied_and_streamed_rows_take_blues_time_zone() {
    let pair = pair(KIRITIMATI, "");
    let out = pair.pgbridge(&["check"]);
    assert!(
        text(&out).contains(&format!("blue evaluates mappings with TimeZone={KIRITIMATI} ")),
        "{}",
        text(&out)
    );
    copy_stream_and_check(&pair, KIRITIMATI);
    // A real difference is still one.
    pair.blue.psql(DB, "UPDATE visits SET day = day + 1 WHERE id = 2");
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different: id=2"), "{}", text(&out));
}

/// `[blue] timezone` overrides blue's default; a zone blue does not know is a problem `check`
/// lists and every other command refuses, naming the key.
#[test]
fn blue_timezone_key_sets_the_zone_mappings_see() {
    let pair = pair(KIRITIMATI, "timezone = \"Mars/Olympus_Mons\"");
    let out = pair.pgbridge(&["check"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("blue.timezone = \"Mars/Olympus_Mons\" is not a time zone blue knows"),
        "{report}"
    );
    for args in [&["setup", "--copy"][..], &["verify"]] {
        let out = pair.pgbridge(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("blue.timezone"), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "setup created something"
    );

    configure(
        &pair,
        &format!("timezone = \"{ST_JOHNS}\""),
        &pair.dir.path().join("mappings"),
    );
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "blue evaluates mappings with TimeZone={ST_JOHNS} search_path="
        )),
        "{}",
        text(&out)
    );
    copy_stream_and_check(&pair, ST_JOHNS);
}
