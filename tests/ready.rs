//! `pgbridge ready`, the rollback gate: every condition flips it to exit 1 and back to 0, it
//! exits 2 when it cannot tell, and the running bridge's `pgbridge_rollback_ready`,
//! `pgbridge_rollback_condition{condition}` and `/status` follow the same conditions.

use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, Running, DB, SLOT};
use crate::telemetry::{http_get, sample};

/// `pgbridge ready --json ARGS`: exit code and the document.
fn ready(pair: &Pair, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["ready", "--json"];
    all.extend_from_slice(args);
    let out = pair.pgbridge(&all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ready --json: {e}\n{}", text(&out)));
    (out.status.code().unwrap_or(-1), doc)
}

/// Whether `name` holds in a `ready` document (`None`: unknown); panics when it is not listed.
fn holds(doc: &serde_json::Value, name: &str) -> Option<bool> {
    let c = doc["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {doc:#}"));
    c["holds"].as_bool()
}

/// The conditions that do not hold.
fn failing(doc: &serde_json::Value) -> Vec<String> {
    doc["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter(|c| c["holds"] == false)
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `ready ARGS` exits `code` with exactly `not` failing.
fn wait_ready(pair: &Pair, args: &[&str], code: i32, not: &[&str], log: impl Fn() -> String) -> serde_json::Value {
    let last = std::cell::RefCell::new((-1, serde_json::Value::Null));
    wait_for(
        Duration::from_secs(60),
        || {
            let now = ready(pair, args);
            let done = now.0 == code && failing(&now.1) == not;
            *last.borrow_mut() = now;
            done
        },
        || {
            let (got, doc) = &*last.borrow();
            format!(
                "ready {args:?} never exited {code} with {not:?} failing: exit {got}, {doc:#}\n{}",
                log()
            )
        },
    );
    last.into_inner().1
}

/// A gauge of the running bridge; `None` while /metrics does not answer or lacks it.
fn gauge(pair: &Pair, series: &str) -> Option<f64> {
    http_get(pair.metrics_port, "/metrics").and_then(|(_, m)| sample(&m, series))
}

fn wait_gauge(pair: &Pair, series: &str, value: f64, bridge: &Running) {
    wait_for(
        Duration::from_secs(60),
        || gauge(pair, series) == Some(value),
        || {
            let metrics = http_get(pair.metrics_port, "/metrics").map(|r| r.1).unwrap_or_default();
            let status = http_get(pair.metrics_port, "/status").map(|r| r.1).unwrap_or_default();
            format!("{series} never became {value}:\n{metrics}\n{status}\n{}", bridge.log())
        },
    );
}

fn status_rollback(pair: &Pair) -> serde_json::Value {
    let (_, body) = http_get(pair.metrics_port, "/status").expect("/status answers");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("/status JSON");
    doc["rollback"].clone()
}

/// The backend holding an exclusive lock on `t` on blue, ended: the lock goes with it.
fn release_lock(pair: &Pair) {
    pair.blue.psql(
        DB,
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'",
    );
}

#[test]
fn ready_follows_the_bridge_and_its_lag_and_the_metrics_follow_it() {
    let pair = std::sync::Arc::new(Pair::start());
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.write_config("[ready]\nmax_seconds = 1\n");
    pair.setup();
    // No bridge ran yet, and green wrote nothing published: blue has everything.
    let out = pair.pgbridge(&["ready"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    for name in [
        "bridge",
        "lag_bytes",
        "lag_seconds",
        "dead_letters",
        "schema_drift",
        "slot",
    ] {
        assert!(
            printed.lines().any(|l| l.starts_with(name) && l.contains(" ok ")),
            "{name}: {printed}"
        );
    }
    assert!(
        !printed.contains("reverse"),
        "reverse is listed only with --reverse: {printed}"
    );
    assert!(
        printed.trim_end().ends_with("switchover's catch-up applies the rest"),
        "{printed}"
    );

    // Stopped with a change blue lacks.
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'a')");
    let out = pair.pgbridge(&["ready"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("bridge") && l.contains("NOT") && l.contains("pgbridge run")),
        "{printed}"
    );
    assert!(printed.contains("ready=no: not holding: bridge"), "{printed}");

    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    wait_ready(&pair, &[], 0, &[], || bridge.log());
    wait_gauge(&pair, "pgbridge_rollback_ready", 1.0, &bridge);
    let rollback = status_rollback(&pair);
    assert_eq!(rollback["ready"], true, "{rollback:#}");
    let names: Vec<&str> = rollback["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bridge",
            "lag_bytes",
            "lag_seconds",
            "dead_letters",
            "schema_drift",
            "slot"
        ]
    );

    // Blue held up by a lock: a backlog waits and ages.
    let locker = {
        let pair = pair.clone();
        std::thread::spawn(move || {
            let _ = pair
                .blue
                .try_psql(DB, "BEGIN; LOCK TABLE t; SELECT pg_sleep(300); COMMIT;");
        })
    };
    wait_for(
        Duration::from_secs(10),
        || {
            pair.blue.psql(
                DB,
                "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'",
            ) == "1"
        },
        || "no lock".into(),
    );
    pair.green
        .psql(DB, "INSERT INTO t SELECT g, 'x' FROM generate_series(2, 100) g");
    wait_ready(
        &pair,
        &["--max-bytes", "0", "--max-seconds", "3600"],
        1,
        &["lag_bytes"],
        || bridge.log(),
    );
    let doc = wait_ready(&pair, &["--max-bytes", "100000000"], 1, &["lag_seconds"], || {
        bridge.log()
    });
    let lag_seconds = doc["conditions"][2].clone();
    assert_eq!(lag_seconds["name"], "lag_seconds");
    assert!(lag_seconds["value"].as_f64().unwrap() > 1.0, "{lag_seconds}");
    assert_eq!(lag_seconds["limit"], 1.0, "[ready] max_seconds: {lag_seconds}");
    // The same backlog seen as a stuck bridge, with a stall limit under its age.
    pair.write_config("[ready]\nmax_seconds = 3600\nmax_stall = \"1s\"\n");
    let doc = wait_ready(&pair, &["--max-bytes", "100000000"], 1, &["bridge"], || bridge.log());
    let detail = doc["conditions"][0]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("stuck"), "{detail}");
    pair.write_config("[ready]\nmax_seconds = 1\n");
    wait_gauge(
        &pair,
        "pgbridge_rollback_condition{condition=\"lag_seconds\"}",
        0.0,
        &bridge,
    );
    wait_gauge(&pair, "pgbridge_rollback_ready", 0.0, &bridge);
    assert_eq!(status_rollback(&pair)["ready"], false);

    release_lock(&pair);
    locker.join().unwrap();
    pair.wait_caught_up(&bridge);
    wait_ready(&pair, &[], 0, &[], || bridge.log());
    wait_gauge(
        &pair,
        "pgbridge_rollback_condition{condition=\"lag_seconds\"}",
        1.0,
        &bridge,
    );
    wait_gauge(&pair, "pgbridge_rollback_ready", 1.0, &bridge);

    // Caught up and stopped cleanly: still nothing to lose.
    assert_eq!(bridge.terminate(), 0);
    let (code, doc) = ready(&pair, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["ready"], true);
    for c in doc["conditions"].as_array().unwrap() {
        for key in ["name", "holds", "detail"] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
    }
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM t"), "100");
}

#[test]
fn a_dead_letter_is_not_ready_until_handled_or_older_than_since() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v int)");
    pair.blue.psql(DB, "ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)");
    pair.write_config("[apply]\non_error = \"dead_letter\"\n");
    pair.setup();
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    wait_gauge(&pair, "pgbridge_rollback_ready", 1.0, &bridge);
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 5), (2, 500)");
    pair.wait_caught_up(&bridge);
    let doc = wait_ready(&pair, &[], 1, &["dead_letters"], || bridge.log());
    let detail = doc["conditions"][3]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("1 row(s) in pgbridge.dead_letter") && detail.contains("--since"),
        "{detail}"
    );
    wait_gauge(
        &pair,
        "pgbridge_rollback_condition{condition=\"dead_letters\"}",
        0.0,
        &bridge,
    );
    wait_gauge(&pair, "pgbridge_rollback_ready", 0.0, &bridge);
    assert_eq!(holds(&status_rollback(&pair), "dead_letters"), Some(false));

    // Parked within the last hour; not after now.
    wait_ready(&pair, &["--since", "1h"], 1, &["dead_letters"], || bridge.log());
    let now = pair.blue.psql(
        DB,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    wait_ready(&pair, &["--since", &now], 0, &[], || bridge.log());

    // Handled: the row is fixed on blue and its dead letter deleted.
    pair.blue.psql(
        DB,
        "ALTER TABLE t DROP CONSTRAINT small; INSERT INTO t VALUES (2, 500); DELETE FROM pgbridge.dead_letter",
    );
    wait_ready(&pair, &[], 0, &[], || bridge.log());
    wait_gauge(&pair, "pgbridge_rollback_ready", 1.0, &bridge);
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn drift_an_unhealthy_slot_a_bad_reverse_and_an_unreachable_green() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    let none = || String::new();
    wait_ready(&pair, &[], 0, &[], none);

    // The configuration of the other direction: valid, then one that would echo.
    let reverse = pair.dir.path().join("reverse.toml");
    let write_reverse = |extra: &str| {
        let text = format!(
            "[green]\ndsn = \"{}\"\npublication = \"pgbridge_back\"\nslot = \"pgbridge_back\"\n\n\
             [blue]\ndsn = \"{}\"\n\n{extra}",
            pair.blue.dsn(DB),
            pair.green.dsn(DB)
        );
        std::fs::write(&reverse, text).unwrap();
    };
    write_reverse("");
    let path = reverse.to_str().unwrap();
    let doc = wait_ready(&pair, &["--reverse", path], 0, &[], none);
    assert_eq!(holds(&doc, "reverse"), Some(true));
    write_reverse("[apply]\norigin = \"\"\n");
    let doc = wait_ready(&pair, &["--reverse", path], 1, &["reverse"], none);
    let detail = doc["conditions"][6]["detail"].to_string();
    assert!(detail.contains("echo"), "{detail}");

    // A green column the plan does not know (strict mapping: it must be used or ignored).
    pair.green.psql(DB, "ALTER TABLE t ADD COLUMN extra text");
    let doc = wait_ready(&pair, &[], 1, &["schema_drift"], none);
    let detail = doc["conditions"][4]["detail"].to_string();
    assert!(detail.contains("public.t"), "{detail}");
    pair.green.psql(DB, "ALTER TABLE t DROP COLUMN extra");
    wait_ready(&pair, &[], 0, &[], none);

    // Over the retention limit.
    pair.write_config("[ready]\nmax_retained_bytes = 0\n");
    pair.green.psql(DB, "SELECT pg_logical_emit_message(false, 'x', 'y')");
    let doc = wait_ready(&pair, &[], 1, &["slot"], none);
    assert!(doc["conditions"][5]["value"].as_u64().unwrap() > 0, "{doc:#}");
    pair.write_config("");
    wait_ready(&pair, &[], 0, &[], none);

    // Green unreachable: cannot tell, saying why.
    pair.write_config_with("postgres://postgres@127.0.0.1:1/postgres", &pair.blue.dsn(DB), "");
    let out = pair.pgbridge(&["ready"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("bridge") && l.contains("unknown") && l.contains("green.dsn")),
        "{printed}"
    );
    assert!(
        printed.lines().any(|l| l.starts_with("slot") && l.contains("unknown")),
        "{printed}"
    );
    assert!(printed.contains("ready=unknown"), "{printed}");
    let (code, doc) = ready(&pair, &[]);
    assert_eq!((code, doc["ready"].clone()), (2, serde_json::Value::Null), "{doc:#}");
    assert_eq!(holds(&doc, "dead_letters"), Some(true), "blue is still read: {doc:#}");
    pair.write_config("");

    // The slot dropped: blue misses whatever green writes from now on.
    pair.green
        .psql(DB, &format!("SELECT pg_drop_replication_slot('{SLOT}')"));
    let (code, doc) = ready(&pair, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(holds(&doc, "slot"), Some(false), "{doc:#}");
    assert_eq!(holds(&doc, "bridge"), Some(false), "{doc:#}");
}

/// Guards against green restored to an earlier state on the same timeline (a VM snapshot, a
/// cold backup) passing the gate: blue's checkpoint ahead of green's current WAL position is
/// impossible for a healthy pair. `ready` must not say ready, `lag` and `status` must not
/// report 0 for it, and `run` must refuse (exit 2) rather than skip green's new transactions.
#[test]
fn a_checkpoint_ahead_of_greens_wal_is_a_restored_green_not_zero_lag() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    let none = || String::new();
    wait_ready(&pair, &[], 0, &[], none);
    // What a restore looks like from blue: its checkpoint beyond anything green has written.
    let green_wal = pair.green.psql(DB, "SELECT pg_current_wal_lsn()::text");
    let ahead = pair.green.psql(DB, "SELECT (pg_current_wal_lsn() + 16777216)::text");
    pair.blue.psql(
        DB,
        &format!("UPDATE pgbridge.checkpoint SET lsn = '{ahead}' WHERE slot_name = '{SLOT}'"),
    );
    let (code, doc) = ready(&pair, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(holds(&doc, "slot"), Some(false), "{doc:#}");
    let slot = doc["conditions"][5]["detail"].as_str().unwrap().to_string();
    assert!(
        slot.contains("restored") && slot.contains(&ahead) && slot.contains("setup --copy"),
        "{slot}"
    );
    assert_ne!(holds(&doc, "lag_bytes"), Some(true), "no lag of 0 bytes: {doc:#}");

    let out = pair.pgbridge(&["lag"]);
    assert_eq!(out.status.code(), Some(2), "lag: {}", text(&out));
    assert!(text(&out).contains("restored"), "{}", text(&out));
    let out = pair.pgbridge(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(status["lag_bytes"].is_null(), "status: {}", text(&out));
    assert!(
        status["green_server"].as_str().unwrap_or_default().contains("restored"),
        "status: {}",
        text(&out)
    );

    let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains(&ahead) && log.contains("restored"), "{log}");
    assert!(
        log.contains(&green_wal) || log.contains("current WAL position"),
        "{log}"
    );
}

/// Guards against tables `setup` never accepted passing `schema_drift`: a user table neither
/// published nor excluded (its rows never reach blue), and one added to the publication after
/// setup (its earlier rows are not on blue), also once `run` has carried it; in `ready`,
/// `status` and the bridge's gauge, until `setup` accepts it or `[mapping] exclude` lists it.
#[test]
fn tables_setup_never_accepted_are_schema_drift_until_accepted_or_excluded() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    let none = || String::new();
    wait_ready(&pair, &[], 0, &[], none);
    let drift_detail = |doc: &serde_json::Value| doc["conditions"][4]["detail"].as_str().unwrap().to_string();

    pair.both("CREATE TABLE n (id int PRIMARY KEY, v text)");
    pair.green.psql(DB, "INSERT INTO n VALUES (1, 'before')");
    let doc = wait_ready(&pair, &[], 1, &["schema_drift"], none);
    let detail = drift_detail(&doc);
    assert!(
        detail.contains("ALTER PUBLICATION pgbridge ADD TABLE public.n") && detail.contains("[mapping] exclude"),
        "{detail}"
    );
    let out = pair.pgbridge(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(status["schema_drift"], true, "{}", text(&out));

    pair.green.psql(DB, "ALTER PUBLICATION pgbridge ADD TABLE n");
    let doc = wait_ready(&pair, &[], 1, &["schema_drift"], none);
    let detail = drift_detail(&doc);
    assert!(
        detail.contains("public.n") && detail.contains("setup --copy"),
        "{detail}"
    );
    let bridge = pair.run();
    wait_for(
        Duration::from_secs(30),
        || bridge.log().contains("new since the plan was accepted"),
        || bridge.log(),
    );
    wait_gauge(
        &pair,
        "pgbridge_rollback_condition{condition=\"schema_drift\"}",
        0.0,
        &bridge,
    );
    assert_eq!(bridge.terminate(), 0);
    let doc = wait_ready(&pair, &[], 1, &["schema_drift"], none);
    assert!(
        drift_detail(&doc).contains("public.n"),
        "carried by run, still not accepted: {doc:#}"
    );
    pair.setup();
    wait_ready(&pair, &[], 0, &[], none);

    pair.green.psql(DB, "CREATE TABLE x (id int)");
    wait_ready(&pair, &[], 1, &["schema_drift"], none);
    pair.write_config("[mapping]\nexclude = [\"public.x\"]\n");
    wait_ready(&pair, &[], 0, &[], none);

    // An UNLOGGED table can be in no publication: logical decoding never sees its rows.
    pair.green.psql(
        DB,
        "CREATE UNLOGGED TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1)",
    );
    let doc = wait_ready(&pair, &[], 1, &["schema_drift"], none);
    let detail = drift_detail(&doc);
    assert!(
        detail.contains("public.u is UNLOGGED") && detail.contains("SET LOGGED"),
        "{detail}"
    );
    pair.write_config("[mapping]\nexclude = [\"public.x\", \"public.u\"]\n");
    wait_ready(&pair, &[], 0, &[], none);
}

/// Guards against pairing by the text of the DSNs: a reverse configuration naming the same
/// servers by `localhost`, a Unix socket or another host list pairs; one naming another
/// database or server is refused, naming what each reached and never a password; one whose
/// server cannot be reached leaves `reverse` unknown, not false.
#[test]
fn reverse_pairs_by_the_server_reached_not_by_the_dsn_text() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue.psql(DB, "CREATE DATABASE other");
    pair.setup();
    let none = || String::new();
    wait_ready(&pair, &[], 0, &[], none);

    let reverse = pair.dir.path().join("reverse.toml");
    let write_reverse = |green: &str, blue: &str| {
        let text = format!(
            "[green]\ndsn = \"{green}\"\npublication = \"pgbridge_back\"\nslot = \"pgbridge_back\"\n\n\
             [blue]\ndsn = \"{blue}\"\n"
        );
        std::fs::write(&reverse, text).unwrap();
    };
    let path = reverse.to_str().unwrap();
    let localhost = |dsn: String| dsn.replace("@127.0.0.1:", "@localhost:");
    let socket = format!(
        "host={} port={} user=postgres dbname={DB}",
        pair.green.dir().display(),
        pair.green.port()
    );

    // blue by localhost where this bridge says 127.0.0.1, green by its Unix socket.
    write_reverse(&localhost(pair.blue.dsn(DB)), &socket);
    let (code, doc) = ready(&pair, &["--reverse", path]);
    assert_eq!((code, holds(&doc, "reverse")), (0, Some(true)), "{doc:#}");

    // Another database on blue's server, then green's server in blue's place.
    let reverse_detail = |doc: &serde_json::Value| doc["conditions"][6]["detail"].to_string();
    write_reverse(&localhost(pair.blue.dsn("other")), &pair.green.dsn(DB));
    let (code, doc) = ready(&pair, &["--reverse", path]);
    assert_eq!((code, holds(&doc, "reverse")), (1, Some(false)), "{doc:#}");
    let detail = reverse_detail(&doc);
    assert!(
        detail.contains("not the bridge in the other direction") && detail.contains("database other on the server"),
        "{detail}"
    );
    let secret = pair.green.dsn_as("postgres", Some("n0t-shown"), DB);
    write_reverse(&localhost(secret), &pair.green.dsn(DB));
    let (code, doc) = ready(&pair, &["--reverse", path]);
    assert_eq!((code, holds(&doc, "reverse")), (1, Some(false)), "{doc:#}");
    let detail = reverse_detail(&doc);
    assert!(detail.contains("reverse.toml [green]"), "{detail}");
    assert!(detail.contains("pgbridge.toml [blue]"), "{detail}");
    assert!(!doc.to_string().contains("n0t-shown"), "{doc:#}");

    // Blue's place named by a server that does not answer: cannot tell.
    write_reverse("postgres://postgres@localhost:1/postgres", &pair.green.dsn(DB));
    let (code, doc) = ready(&pair, &["--reverse", path]);
    assert_eq!((code, holds(&doc, "reverse")), (2, None), "{doc:#}");
    assert!(reverse_detail(&doc).contains("localhost:1"), "{doc:#}");
}
