//! `mapping::on_green`: which mappings green may evaluate in blue's place, decided by green's
//! catalog, and the SQL it then runs giving blue's values.

use crate::support::bridge::{text, Pair, DB};

const GREEN: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper(t)';
CREATE TABLE plain (id int PRIMARY KEY, name text, m mood, at timestamptz);
CREATE TABLE casted (id int PRIMARY KEY, qty numeric(10,2), loc jsonb, at timestamptz);
CREATE TABLE userfn (id int PRIMARY KEY, name text);
CREATE TABLE volatile (id int PRIMARY KEY, name text);
CREATE TABLE session (id int PRIMARY KEY, name text);
CREATE TABLE other (id int PRIMARY KEY, name text);
CREATE TABLE enumread (id int PRIMARY KEY, m mood);
CREATE TABLE filtered (id int PRIMARY KEY, name text);
CREATE TABLE shadowed (id int PRIMARY KEY, name text);
CREATE TABLE collated (id int PRIMARY KEY, name text COLLATE \"C\");
INSERT INTO casted VALUES (1, 2.50, '{\"city\": \"Oslo\"}', '2026-03-01 23:30+00');";

const BLUE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper(t)';
CREATE TABLE plain (id int PRIMARY KEY, name text, m mood, at timestamptz);
CREATE TABLE casted (id int PRIMARY KEY, qty int, city text, day date);
CREATE TABLE userfn (id int PRIMARY KEY, name text);
CREATE TABLE volatile (id int PRIMARY KEY, name text, r float8);
CREATE TABLE session (id int PRIMARY KEY, name text);
CREATE TABLE other (id int PRIMARY KEY, name text, n int);
CREATE TABLE enumread (id int PRIMARY KEY, m text);
CREATE TABLE filtered (id int PRIMARY KEY, name text);
CREATE TABLE shadowed (id int PRIMARY KEY, name text);
CREATE TABLE collated (id int PRIMARY KEY, name text);
CREATE FUNCTION public.upper(t text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ''blue:'' || t';
ALTER DATABASE postgres SET search_path = public, pg_catalog;";

const MAPPINGS: &[(&str, &str)] = &[
    (
        "casted",
        "target = \"casted\"\nignore = [\"loc\", \"at\"]\n[columns]\ncity = { expr = \"loc ->> 'city'\" }\nday = { expr = \"at::date\" }\n",
    ),
    ("userfn", "target = \"userfn\"\n[columns]\nname = { expr = \"shout(name)\" }\n"),
    ("volatile", "target = \"volatile\"\n[columns]\nr = { expr = \"random()\" }\n"),
    ("session", "target = \"session\"\nignore = [\"name\"]\n[columns]\nname = { expr = \"current_user\" }\n"),
    (
        "other",
        "target = \"other\"\n[columns]\nn = { expr = \"(SELECT count(*) FROM casted)\" }\n",
    ),
    ("enumread", "target = \"enumread\"\n[columns]\nm = { from = \"m\" }\n"),
    ("filtered", "target = \"filtered\"\n[filter]\nwhere = \"id % 2 = 0\"\n"),
    ("shadowed", "target = \"shadowed\"\n[columns]\nname = { expr = \"upper(name)\" }\n"),
    ("collated", "target = \"collated\"\n[columns]\nname = { expr = \"lower(name)\" }\n"),
];

#[test]
fn on_green_stands_in_for_blue_only_where_the_result_cannot_differ() {
    let pair = Pair::start();
    pair.green.psql(DB, GREEN);
    pair.blue.psql(DB, BLUE);
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in MAPPINGS {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    pair.write_config(&format!("[mapping]\ndir = \"{}\"\n", dir.display()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let decided = rt.block_on(async {
        let config = pgbridge::config::Config::load(&pair.config_path()).expect("config");
        let (green, blue) = pgbridge::connect::both(&config).await.expect("connect");
        let report = pgbridge::ops::preflight::validate(&config, &green, &blue)
            .await
            .expect("validate");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // As the sessions that evaluate do: blue's search_path finds shout() on green too.
        let env = pgbridge::evaluation::Environment::resolve(&blue, &config)
            .await
            .unwrap();
        env.apply(&green).await.unwrap();
        env.apply(&blue).await.unwrap();
        let rules = pgbridge::mapping::on_green::text_rules(&green, &blue).await.unwrap();
        let mut decided = std::collections::BTreeMap::new();
        for t in &report.tables {
            let verdict = pgbridge::mapping::on_green::on_green(&green, &blue, &t.plan, &rules)
                .await
                .expect("asked green");
            decided.insert(t.plan.green.name.clone(), verdict);
        }
        // What green computes for `casted` is what blue's INSERT stores.
        let casted = decided["casted"].clone().expect("casted evaluates on green");
        let row = green
            .query_one(
                &format!("SELECT {}::text FROM public.casted", casted.select.join("::text, ")),
                &[],
            )
            .await
            .unwrap();
        let values: Vec<String> = (0..row.len()).map(|i| row.get(i)).collect();
        assert!(
            values.contains(&"3".to_string()),
            "numeric 2.50 to int rounds: {values:?}"
        );
        assert!(values.contains(&"Oslo".to_string()), "{values:?}");
        assert!(values.contains(&"2026-03-01".to_string()), "{values:?}");
        decided
    });
    let plain = decided["plain"].as_ref().expect("plain copies");
    assert_eq!(plain.select.len(), 4);
    let enum_at = plain.select.iter().position(|s| s == "\"m\"").unwrap();
    assert!(!plain.binary[enum_at], "a user enum goes as text: {plain:?}");
    assert_eq!(plain.binary.iter().filter(|b| **b).count(), 3, "{plain:?}");
    assert!(decided["casted"].as_ref().unwrap().all_binary());
    assert_eq!(
        decided["filtered"].as_ref().unwrap().filter.as_deref(),
        Some("id % 2 = 0")
    );
    // Why green may not stand in, per table; on `shadowed` blue's search_path finds its own
    // upper() first, which streaming computes.
    for (table, reason) in [
        ("userfn", "function shout(text), which is not built in"),
        ("volatile", "random(), which is volatile"),
        ("session", "current_user"),
        ("other", "table casted"),
        ("enumread", "green column m"),
        ("shadowed", "on blue, depends on function upper(text)"),
        ("collated", "green column name has collation C"),
    ] {
        let why = decided[table].clone().expect_err(table);
        assert!(why.contains(reason), "{table}: {why}");
    }
}

/// Databases whose collations differ (green's ctype C, blue's C.UTF-8) change case otherwise:
/// `upper('é')` is 'é' on green and 'É' on blue. `setup --copy` then computes on blue, as
/// streaming does, says why, and `verify` agrees with what streaming writes.
#[test]
fn copy_computes_on_blue_when_the_databases_collations_differ() {
    let pair = Pair::start();
    for (cluster, locale, rows) in [
        (&pair.green, "C", "INSERT INTO t VALUES (1, 'é'), (2, 'iii')"),
        (&pair.blue, "C.UTF-8", ""),
    ] {
        cluster.psql(
            DB,
            &format!("CREATE DATABASE app TEMPLATE template0 ENCODING 'UTF8' LOCALE '{locale}'"),
        );
        cluster.psql(
            "app",
            &format!("CREATE TABLE t (id int PRIMARY KEY, name text); {rows}"),
        );
    }
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("t.toml"),
        "target = \"t\"\n[columns]\nname = { expr = \"upper(name)\" }\n",
    )
    .unwrap();
    pair.write_config_with(
        &pair.green.dsn("app"),
        &pair.blue.dsn("app"),
        &format!("[mapping]\ndir = \"{}\"\n", dir.display()),
    );
    let out = pair.pgbridge(&["setup", "--copy"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("the databases' collations differ"), "{printed}");
    assert_eq!(
        pair.blue.psql("app", "SELECT string_agg(name, ',' ORDER BY id) FROM t"),
        "É,III",
        "blue's upper(), as streaming computes it"
    );
    let out = pair.pgbridge(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
