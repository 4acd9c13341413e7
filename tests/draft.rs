//! `pgbridge draft` against real servers: the example schema (forward, and `--reverse` from the
//! example's mappings), a schema with every kind of change streamed end to end once a person
//! settled the one decision, and the refusals (existing files, an unwritable --out, an
//! unreachable database). Expected file contents are written out here, not computed by
//! pgbridge code.

use std::path::{Path, PathBuf};

use crate::support::bridge::{text, Pair, DB};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/example");

/// Green and blue with the example schema; the configuration's mapping directory is `dir`.
fn example_pair(dir: &str) -> Pair {
    let pair = Pair::start();
    let sql = |f: &str| std::fs::read_to_string(Path::new(EXAMPLE).join(f)).unwrap();
    pair.green.psql(DB, &sql("green.sql"));
    pair.blue.psql(DB, &sql("blue.sql"));
    pair.write_config(&format!("[mapping]\ndir = \"{dir}\"\n"));
    pair
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The entry of column `name` in a drafted file (the line `name = { ... }`).
fn entry<'a>(file: &'a str, name: &str) -> &'a str {
    file.lines()
        .find(|l| l.starts_with(&format!("{name} = {{")))
        .unwrap_or_else(|| panic!("no entry for {name} in:\n{file}"))
}

#[test]
fn draft_finds_the_examples_renames_and_type_changes() {
    let pair = example_pair("mappings");
    let out_dir = pair.dir.path().join("drafted");
    let out_arg = out_dir.display().to_string();
    let out = pair.pgbridge(&["draft", "--out", &out_arg]);
    let printed = text(&out);
    println!("{printed}");
    assert_eq!(out.status.code(), Some(0), "{printed}");
    for words in [
        "wrote ",
        "customers.toml: blue public.customers <- green public.customers",
        "rename  email <- email_address (guess",
        "rename  location <- location_structured (guess",
        "ignore  preferences: green-only",
        "cast    quantity: LOSSY cast numeric(10,2) -> integer",
        "orders.toml: blue public.orders <- green public.purchases",
        "rename  table public.orders <- public.purchases (guess",
        "draft: 3 file(s) written",
        "0 decision(s) left",
    ] {
        assert!(printed.contains(words), "missing {words:?} in:\n{printed}");
    }
    let customers = read(&out_dir.join("customers.toml"));
    assert!(customers.starts_with("# Drafted by `pgbridge draft`"), "{customers}");
    assert_eq!(entry(&customers, "email"), "email = { from = \"email_address\" }");
    assert_eq!(
        entry(&customers, "location"),
        "location = { expr = \"CAST(location_structured AS text)\" }"
    );
    assert!(customers.contains("# guess: renamed from email_address"), "{customers}");
    assert!(
        customers.contains("\"preferences\",  # green-only (jsonb)"),
        "{customers}"
    );
    let jobs = read(&out_dir.join("jobs.toml"));
    assert_eq!(
        entry(&jobs, "quantity"),
        "quantity = { expr = \"CAST(quantity AS integer)\" }"
    );
    assert!(jobs.contains("# LOSSY cast numeric(10,2) -> integer"), "{jobs}");
    let orders = read(&out_dir.join("orders.toml"));
    assert!(orders.contains("target = \"public.orders\"\n"), "{orders}");
    assert!(orders.contains("\nsource = \"public.purchases\"\n"), "{orders}");
    assert!(
        orders.contains("# guess: green table public.purchases is blue's public.orders renamed"),
        "{orders}"
    );

    // The drafts are a valid mapping: check passes on them.
    pair.write_config(&format!("[mapping]\ndir = \"{out_arg}\"\n"));
    let check = pair.pgbridge(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // Never overwrites without --force; with it, the file is drafted again.
    std::fs::write(out_dir.join("jobs.toml"), "target = \"jobs\"\n# edited by a person\n").unwrap();
    let again = pair.pgbridge(&["draft", "--out", &out_arg]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        err.contains("nothing written") && err.contains("jobs.toml exists") && err.contains("--force"),
        "{err}"
    );
    assert!(read(&out_dir.join("jobs.toml")).contains("edited by a person"));
    let forced = pair.pgbridge(&["draft", "--out", &out_arg, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert!(read(&out_dir.join("jobs.toml")).contains("CAST(quantity AS integer)"));

    // A second file for a table already mapped is refused even with --force.
    std::fs::write(out_dir.join("my_jobs.toml"), "target = \"jobs\"\n").unwrap();
    let dup = pair.pgbridge(&["draft", "--out", &out_arg, "--force"]);
    assert_eq!(dup.status.code(), Some(2), "{}", text(&dup));
    assert!(
        text(&dup).contains("my_jobs.toml") && text(&dup).contains("both map blue table public.jobs"),
        "{}",
        text(&dup)
    );

    // --out that cannot be a directory.
    let bad = pair.dir.path().join("pgbridge.toml").join("sub");
    let out = pair.pgbridge(&["draft", "--out", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot create") && text(&out).contains("--out"),
        "{}",
        text(&out)
    );
}

#[test]
fn draft_reverse_inverts_the_examples_mappings() {
    let pair = example_pair(EXAMPLE);
    let out = pair.pgbridge(&["draft", "--reverse"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--reverse needs --out"), "{}", text(&out));

    let out_dir = pair.dir.path().join("reverse");
    let out = pair.pgbridge(&["draft", "--reverse", "--out", &out_dir.display().to_string()]);
    let printed = text(&out);
    println!("{printed}");
    // The location expression cannot be inverted by a program: one decision.
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("green public.purchases <- blue public.orders"),
        "{printed}"
    );
    assert!(printed.contains("1 decision(s) left"), "{printed}");
    let customers = read(&out_dir.join("customers.toml"));
    assert_eq!(
        entry(&customers, "email_address"),
        "email_address = { from = \"email\" }"
    );
    let location = entry(&customers, "location_structured");
    assert!(
        location.contains("decide = ") && location.contains("location = location_structured ->> 'city'"),
        "{customers}"
    );
    // Ignored forward, green has a default: the reverse leaves it to green.
    assert_eq!(entry(&customers, "preferences"), "preferences = { omit = true }");
    let jobs = read(&out_dir.join("jobs.toml"));
    assert_eq!(
        entry(&jobs, "quantity"),
        "quantity = { expr = \"CAST(quantity AS numeric(10,2))\" }"
    );
    assert!(jobs.contains("LOSSY cast integer -> numeric(10,2)"), "{jobs}");
    let purchases = read(&out_dir.join("purchases.toml"));
    assert!(
        purchases.contains("target = \"public.purchases\"") && purchases.contains("source = \"public.orders\""),
        "{purchases}"
    );
    // The reverse bridge's check names the decision: a configuration from blue to green.
    let reverse = pair.dir.path().join("reverse.toml");
    std::fs::write(
        &reverse,
        format!(
            "[green]\ndsn = \"{}\"\npublication = \"back\"\nslot = \"back\"\n\n[blue]\ndsn = \"{}\"\nschema = \"pgbridge\"\n\n\
             [mapping]\ndir = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            pair.blue.dsn(DB),
            pair.green.dsn(DB),
            out_dir.display()
        ),
    )
    .unwrap();
    let check = pair.command_with(&reverse, &["check"]).output().unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("decision left by pgbridge draft")
            && text(&check).contains("customers.toml")
            && text(&check).contains("columns.location_structured"),
        "{}",
        text(&check)
    );
}

const GREEN: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, full_name text NOT NULL, balance numeric(12,2) NOT NULL,
                       visits integer NOT NULL, seen_at timestamptz, nickname text);
CREATE TABLE shipments (id int PRIMARY KEY, parcel_code text NOT NULL, weight_g integer NOT NULL);
CREATE TABLE same_everywhere (id int PRIMARY KEY, v text);";

const BLUE: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(10,2) NOT NULL,
                       visits bigint NOT NULL, seen_at timestamp, region text NOT NULL DEFAULT 'eu', tier text);
CREATE TABLE deliveries (id int PRIMARY KEY, parcel_code text NOT NULL, weight_g integer NOT NULL);
CREATE TABLE same_everywhere (id int PRIMARY KEY, v text);";

#[test]
fn draft_every_kind_of_change_then_a_person_decides_and_rows_stream() {
    let pair = Pair::start();
    pair.green.psql(DB, GREEN);
    pair.blue.psql(DB, BLUE);
    let dir: PathBuf = pair.dir.path().join("mappings");
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
    let out = pair.pgbridge(&["draft"]);
    let printed = text(&out);
    println!("{printed}");
    assert_eq!(out.status.code(), Some(1), "{printed}");
    for words in [
        "rename  name <- full_name (guess",
        "cast    balance: LOSSY cast numeric(12,2) -> numeric(10,2)",
        "cast    visits: type integer -> bigint: every value fits",
        "cast    seen_at: LOSSY cast timestamp with time zone -> timestamp without time zone",
        "ignore  nickname: green-only",
        "omit    region: blue-only",
        "DECIDE  columns.tier: blue-only column without a default",
        "rename  table public.deliveries <- public.shipments (guess",
        "same public.same_everywhere",
        "1 decision(s) left",
    ] {
        assert!(printed.contains(words), "missing {words:?} in:\n{printed}");
    }
    let path = dir.join("accounts.toml");
    let accounts = read(&path);
    assert_eq!(entry(&accounts, "name"), "name = { from = \"full_name\" }");
    assert_eq!(
        entry(&accounts, "visits"),
        "visits = { expr = \"CAST(visits AS bigint)\" }"
    );
    assert_eq!(entry(&accounts, "region"), "region = { omit = true }");
    assert!(!dir.join("same_everywhere.toml").exists());

    // check fails naming the decision, and run refuses.
    let check = pair.pgbridge(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("decision left by pgbridge draft")
            && text(&check).contains("accounts.toml:")
            && text(&check).contains("columns.tier")
            && text(&check).contains("replace it with from, expr or omit = true"),
        "{}",
        text(&check)
    );
    let setup = pair.pgbridge(&["setup"]);
    assert_eq!(setup.status.code(), Some(2), "{}", text(&setup));
    assert!(text(&setup).contains("columns.tier"), "{}", text(&setup));

    // A person decides: every account streamed from green is 'standard'.
    let tier = entry(&accounts, "tier").to_string();
    std::fs::write(&path, accounts.replace(&tier, "tier = { expr = \"'standard'\" }")).unwrap();
    let check = pair.pgbridge(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO accounts VALUES (1, 'Ana', 10.25, 3, '2026-01-02 03:04:05+00', 'an'), \
                                     (2, 'Rui', 99999999.99, 2147483647, NULL, NULL); \
         INSERT INTO shipments VALUES (7, 'P-7', 1200), (8, 'P-8', 50); \
         INSERT INTO same_everywhere VALUES (1, 'x'); \
         UPDATE accounts SET full_name = 'Ana Maria', visits = visits + 1 WHERE id = 1; \
         DELETE FROM shipments WHERE id = 8;",
    );
    pair.assert_caught_up_and_verified(&bridge, "drafted mappings");
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT string_agg(format('%s|%s|%s|%s|%s|%s', id, name, balance, visits, region, tier), ';' ORDER BY id) FROM accounts"
        ),
        "1|Ana Maria|10.25|4|eu|standard;2|Rui|99999999.99|2147483647|eu|standard"
    );
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT string_agg(format('%s|%s|%s', id, parcel_code, weight_g), ';') FROM deliveries"
        ),
        "7|P-7|1200"
    );
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT count(*) FROM accounts WHERE seen_at IS NOT NULL"),
        "1"
    );
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn draft_unreachable_database_exits_2_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = dir.path().join("pgbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[green]\ndsn = \"postgres://bridge:sekrit@127.0.0.1:{port}/{DB}\"\n\n\
             [blue]\ndsn = \"postgres://bridge:sekrit@127.0.0.1:{port}/{DB}\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbridge"))
        .arg("-c")
        .arg(&config)
        .args(["draft", "--out", &dir.path().join("out").display().to_string()])
        .env_remove("PGBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("green") && err.contains(&port.to_string()), "{err}");
    assert!(!text(&out).contains("sekrit"), "{}", text(&out));
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written when a database is unreachable"
    );
}

const GREEN_ODD: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ecstatic');
CREATE TYPE go_t AS ENUM ('a');
CREATE TABLE odd (id int PRIMARY KEY, tags text[], code text, flag text, label text, u uuid, ids integer[],
                  go go_t, m mood, "note
v = { expr = ""v + 4242"" }
#_a" text, v int, y int);
CREATE TABLE "a.b" (id int PRIMARY KEY, w text);
CREATE TABLE people (id int PRIMARY KEY, loyalty_points int, created_by text, new_col int, email_address text);"#;

const BLUE_ODD: &str = r#"
CREATE TYPE mood AS ENUM ('sad');
CREATE TABLE odd (id int PRIMARY KEY, tags varchar(5)[], code varchar(5), flag "char", label name, u integer,
                  ids integer, go text, m mood, v int, y int GENERATED ALWAYS AS (v + 1) STORED);
CREATE TABLE "a.b" (id int PRIMARY KEY, w varchar(3));
CREATE TABLE people (id int PRIMARY KEY, tier int NOT NULL, deleted_by text, old_col text, email text NOT NULL);"#;

/// The outside tester's findings 1 to 6 and 10 against real servers: casts keep no length
/// (arrays too), what cuts or does not convert is a decision the server told draft about,
/// names holding TOML stay in their comments and every printed line starts with its word,
/// renames need alike names, enum labels are compared, and the file names and --out errors.
#[test]
fn draft_regressions_from_the_outside_tester() {
    let pair = Pair::start();
    pair.green.psql(DB, GREEN_ODD);
    pair.blue.psql(DB, BLUE_ODD);
    let dir: PathBuf = pair.dir.path().join("mappings");
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
    let out = pair.pgbridge(&["draft"]);
    let printed = text(&out);
    println!("{printed}");
    assert_eq!(out.status.code(), Some(1), "{printed}");
    // Every line starts with a word a script can match: names with newlines stay on one line.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for line in stdout.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        assert!(
            [
                "wrote",
                "rename",
                "cast",
                "ignore",
                "omit",
                "DECIDE",
                "note",
                "same",
                "attention",
                "draft:"
            ]
            .contains(&word),
            "line without its word: {line:?}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("blue public.\"a.b\" <- green public.\"a.b\""),
        "{stdout}"
    );
    let odd = read(&dir.join("odd.toml"));
    // Finding 1: no length in a cast, arrays included.
    assert_eq!(
        entry(&odd, "tags"),
        "tags = { expr = \"CAST(tags AS character varying[])\" }"
    );
    assert_eq!(
        entry(&odd, "code"),
        "code = { expr = \"CAST(code AS character varying)\" }"
    );
    // Findings 3 and 4: decisions, asked of blue.
    for (column, why) in [
        ("flag", "keeps the first byte"),
        ("label", "63 bytes"),
        ("u", "does not convert"),
        ("ids", "does not convert"),
        ("go", "create the type on blue"),
        ("m", "'ecstatic'"),
    ] {
        let e = entry(&odd, column);
        assert!(e.contains("decide = ") && e.contains(why), "{column}: {e}\n{odd}");
    }
    // Finding 2: the odd name is one ignored entry, not a mapping line.
    assert!(!odd.lines().any(|l| l.starts_with("v = ")), "{odd}");
    assert!(
        odd.contains(r#"    "note\nv = { expr = \"v + 4242\" }\n#_a",  # green-only"#),
        "{odd}"
    );
    // Finding 10: blue computes y.
    assert!(printed.contains("ignore  y: blue computes y"), "{printed}");
    // Finding 5: no loose renames; the decision names the candidates.
    let people = read(&dir.join("people.toml"));
    assert_eq!(entry(&people, "email"), "email = { from = \"email_address\" }");
    assert!(people.contains("may be NULL"), "{people}");
    for column in ["tier", "deleted_by", "old_col"] {
        assert!(entry(&people, column).contains("decide = "), "{people}");
    }
    assert!(entry(&people, "tier").contains("loyalty_points (integer)"), "{people}");
    // check fails on the decisions and parses the rest.
    let check = pair.pgbridge(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("columns.flag"), "{}", text(&check));

    // Finding 9: --force keeps a same-named file that maps another table.
    std::fs::write(dir.join("people.toml"), "target = \"public.odd_other\"\n").unwrap();
    std::fs::remove_file(dir.join("odd.toml")).unwrap();
    let forced = pair.pgbridge(&["draft", "--force"]);
    assert_eq!(forced.status.code(), Some(1), "{}", text(&forced));
    assert!(
        text(&forced).contains("people.toml maps another table") && dir.join("people-2.toml").exists(),
        "{}",
        text(&forced)
    );
    assert_eq!(read(&dir.join("people.toml")), "target = \"public.odd_other\"\n");
    // Finding 10: --out at a file.
    let cfg = pair.config_path().display().to_string();
    let out = pair.pgbridge(&["draft", "--out", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not a directory"), "{}", text(&out));
}
