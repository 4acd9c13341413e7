//! Many tables: a few hundred across tenant schemas, most mapped by name, some through mapping
//! files (a renamed column, an expression, a renamed table). `check`, `setup --copy`, `run`
//! (with its periodic schema check reading every table's catalog at once) and `verify` work
//! table by table as before: blue equals green, and a change to one blue table among hundreds
//! stops the bridge naming that table. Scale figures come from `scripts/scale.sh`; no timing
//! is asserted here.

use std::time::Duration;

use crate::support::bridge::{text, Pair, DB};

const SCHEMAS: usize = 30;

/// `SCHEMAS` tenant schemas of ten tables each on both sides (blue's differing where the
/// mapping files say), rows on green only.
fn tenants(pair: &Pair) {
    let side = |green: bool| {
        let (contacts, lines, items) = if green {
            ("email_address text", "", "items_v2")
        } else {
            ("email text", ", total numeric(12,2)", "items")
        };
        format!(
            "DO $$ BEGIN FOR s IN 0..{last} LOOP
               EXECUTE format('CREATE SCHEMA %I', 'tenant_' || s);
               FOR t IN 0..6 LOOP
                 EXECUTE format('CREATE TABLE %I.%I (id bigint PRIMARY KEY, a int NOT NULL, b text)', 'tenant_' || s, 't' || t);
               END LOOP;
               EXECUTE format('CREATE TABLE %I.contacts (id bigint PRIMARY KEY, name text, {contacts})', 'tenant_' || s);
               EXECUTE format('CREATE TABLE %I.lines (id bigint PRIMARY KEY, qty int, price numeric(10,2){lines})', 'tenant_' || s);
               EXECUTE format('CREATE TABLE %I.{items} (id bigint PRIMARY KEY, label text)', 'tenant_' || s);
             END LOOP; END $$",
            last = SCHEMAS - 1
        )
    };
    pair.green.psql(DB, &side(true));
    pair.blue.psql(DB, &side(false));
    pair.green.psql(
        DB,
        &format!(
            "DO $$ BEGIN FOR s IN 0..{last} LOOP
               FOR t IN 0..6 LOOP
                 EXECUTE format('INSERT INTO %I.%I SELECT g, g + $1, md5(g::text) FROM generate_series(1, 3) g', 'tenant_' || s, 't' || t) USING s;
               END LOOP;
               EXECUTE format('INSERT INTO %I.contacts SELECT g, ''n'' || g, g || ''@example.com'' FROM generate_series(1, 3) g', 'tenant_' || s);
               EXECUTE format('INSERT INTO %I.lines SELECT g, g, g * 1.25 FROM generate_series(1, 3) g', 'tenant_' || s);
               EXECUTE format('INSERT INTO %I.items_v2 SELECT g, ''item '' || g FROM generate_series(1, 3) g', 'tenant_' || s);
             END LOOP; END $$",
            last = SCHEMAS - 1
        ),
    );
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    for s in 0..SCHEMAS {
        let write = |name: &str, body: String| std::fs::write(dir.join(format!("{name}_{s}.toml")), body).unwrap();
        write(
            "contacts",
            format!("target = \"tenant_{s}.contacts\"\n[columns]\nemail = {{ from = \"email_address\" }}\n"),
        );
        write(
            "lines",
            format!("target = \"tenant_{s}.lines\"\n[columns]\ntotal = {{ expr = \"qty * price\" }}\n"),
        );
        write(
            "items",
            format!("target = \"tenant_{s}.items\"\nsource = \"tenant_{s}.items_v2\"\n"),
        );
    }
    pair.write_config(&format!(
        "[mapping]\ndir = \"{}\"\nschema_check_interval = \"1s\"\n",
        dir.display()
    ));
}

/// Changes every table of every tenant on green, one transaction per tenant.
fn write_everywhere(pair: &Pair, round: i32) {
    pair.green.psql(
        DB,
        &format!(
            "DO $$ BEGIN FOR s IN 0..{last} LOOP
               FOR t IN 0..6 LOOP
                 EXECUTE format('UPDATE %I.%I SET a = a + {round} WHERE id = 1', 'tenant_' || s, 't' || t);
                 EXECUTE format('INSERT INTO %I.%I VALUES (100 + {round}, {round}, ''new'')', 'tenant_' || s, 't' || t);
               END LOOP;
               EXECUTE format('UPDATE %I.contacts SET email_address = ''x{round}@example.com'' WHERE id = 2', 'tenant_' || s);
               EXECUTE format('INSERT INTO %I.lines VALUES (100 + {round}, {round}, 2.5)', 'tenant_' || s);
               EXECUTE format('DELETE FROM %I.items_v2 WHERE id = {round}', 'tenant_' || s);
               COMMIT;
             END LOOP; END $$",
            last = SCHEMAS - 1
        ),
    );
}

#[test]
fn hundreds_of_tables_check_copy_stream_and_verify_table_by_table() {
    let pair = Pair::start();
    tenants(&pair);
    let tables = SCHEMAS * 10;

    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "check:\n{}", text(&out));
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "setup --copy:\n{}", text(&out));
    assert!(
        text(&out).contains(&format!("copied {tables} table(s)")),
        "setup --copy:\n{}",
        text(&out)
    );

    let bridge = pair.run();
    write_everywhere(&pair, 1);
    // A few periodic checks of all the tables' catalogs pass without a finding.
    std::thread::sleep(Duration::from_secs(3));
    write_everywhere(&pair, 2);
    pair.wait_caught_up(&bridge);
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "verify:\n{}\n{}", text(&out), bridge.log());
    assert!(
        text(&out).contains(&format!("identical: {tables} table(s)")),
        "verify:\n{}",
        text(&out)
    );
    pair.assert_same("tenant_7.t3");

    // One blue table among hundreds changes: the periodic check names it, and only it.
    pair.blue
        .psql(DB, "ALTER TABLE tenant_17.lines ALTER COLUMN total TYPE numeric(14,4)");
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "run should stop for the changed blue table:\n{log}");
    let changed: Vec<&str> = log.lines().filter(|l| l.contains("changed type")).collect();
    assert!(!changed.is_empty(), "{log}");
    assert!(
        changed
            .iter()
            .all(|l| l.contains("blue column tenant_17.lines.total changed type")),
        "{log}"
    );
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "check:\n{}", text(&out));
    assert!(text(&out).contains("tenant_17.lines"), "check:\n{}", text(&out));
}
