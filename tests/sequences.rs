//! `pgbridge sync-sequences`: blue's sequences end up ahead of green's (by name, through the
//! `[sequences]` renames, descending ones too), never move backwards, and a rerun changes nothing.

use crate::support::bridge::{text, Pair, DB};

fn last_values(pair: &Pair) -> String {
    pair.blue.psql(
        DB,
        "SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'null'), ' ' ORDER BY sequencename) FROM pg_sequences",
    )
}

#[test]
fn sync_sequences_moves_blue_ahead_of_green() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE items (id serial PRIMARY KEY); CREATE SEQUENCE countdown INCREMENT -1; CREATE SEQUENCE ahead",
    );
    pair.green.psql(
        DB,
        "CREATE SEQUENCE purchase_ids; CREATE SEQUENCE green_only; \
         INSERT INTO items SELECT FROM generate_series(1, 50); \
         SELECT count(nextval('purchase_ids')) FROM generate_series(1, 120); \
         SELECT count(nextval('countdown')) FROM generate_series(1, 10); \
         SELECT count(nextval('ahead')) FROM generate_series(1, 5); SELECT nextval('green_only');",
    );
    pair.blue.psql(
        DB,
        "CREATE SEQUENCE order_ids; SELECT setval('items_id_seq', 10); SELECT setval('ahead', 100);",
    );
    pair.write_config("[sequences]\n\"public.purchase_ids\" = \"public.order_ids\"");
    let out = pair.pgbridge(&["sync-sequences", "--margin", "10"]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        last_values(&pair),
        "ahead=100 countdown=-20 items_id_seq=60 order_ids=130",
        "{report}"
    );
    assert!(report.contains("public.purchase_ids -> public.order_ids"), "{report}");
    assert!(
        report.contains("public.green_only") && report.contains("no such sequence on blue"),
        "{report}"
    );
    assert!(
        report.contains("sequences: 3 moved, 1 already ahead or unused, 1 not on blue"),
        "{report}"
    );

    let out = pair.pgbridge(&["sync-sequences", "--margin", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("sequences: 0 moved"), "{}", text(&out));
    assert_eq!(
        last_values(&pair),
        "ahead=100 countdown=-20 items_id_seq=60 order_ids=130"
    );
}
