//! pgbridge as roles that are not superusers (README, "Least-privilege setup"): the whole flow
//! with exactly the documented grants, authenticated with SCRAM passwords over TCP; what each
//! optional privilege changes; and the password never showing in anything pgbridge prints or
//! serves.

use std::process::Output;
use std::time::Duration;

use crate::support::bridge::{text, wait_for, Pair, Running, DB};
use crate::support::{pg_client_bin_dir, ClusterOptions};
use crate::telemetry::http_get;

/// The role pgbridge logs in as, on both sides.
const ROLE: &str = "bridge";
/// Distinctive, so that any appearance in output is a leak; only URL-unreserved characters, so
/// the DSN holds it as it is.
const PW: &str = "Pw-7f3a9c-s3cret";

const SCHEMA: &str = "CREATE TABLE public.accounts (id serial PRIMARY KEY, name text NOT NULL);
     CREATE TABLE public.entries (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES public.accounts,
                                  amount numeric(12,2), note text);";

/// How the least-privilege pair is prepared.
#[derive(Clone, Copy)]
struct Grants {
    /// The publication exists, created by the tables' owner (postgres).
    publication: bool,
    /// Blue: GRANT SET ON PARAMETER session_replication_role.
    replica_role: bool,
    /// Blue: EXECUTE on the replication origin functions (tagging blue's commits).
    origin: bool,
    /// Blue: schema pgbridge created for the role; otherwise the role gets CREATE on the
    /// database and setup creates the schema.
    schema_precreated: bool,
}

/// The origin functions README's "Least-privilege setup" grants.
const ORIGIN_GRANT: &str =
    "GRANT EXECUTE ON FUNCTION pg_replication_origin_oid(text), pg_replication_origin_create(text), \
     pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone), \
     pg_replication_origin_drop(text) TO \"bridge\"";

const DOCUMENTED: Grants = Grants {
    publication: true,
    replica_role: true,
    origin: true,
    schema_precreated: true,
};

/// Green and blue where role `bridge` must log in with its SCRAM password over TCP (the
/// replication connection too), holding only the grants README's "Least-privilege setup"
/// lists; the tables belong to postgres. The configuration uses `bridge` on both sides.
fn least_privilege_pair(grants: Grants) -> Pair {
    let scram = |kinds: &[&str]| ClusterOptions {
        settings: vec![],
        hba: kinds
            .iter()
            .map(|db| format!("host {db} {ROLE} 127.0.0.1/32 scram-sha-256"))
            .collect(),
        ..Default::default()
    };
    let pair = Pair::start_with(scram(&["all", "replication"]), scram(&["all"]));
    pair.both(SCHEMA);
    pair.green.psql(
        DB,
        &format!(
            "CREATE ROLE {ROLE} LOGIN REPLICATION PASSWORD '{PW}';
             GRANT SELECT ON public.accounts, public.entries TO {ROLE};
             GRANT SELECT ON SEQUENCE public.accounts_id_seq, public.entries_id_seq TO {ROLE};"
        ),
    );
    if grants.publication {
        pair.green.psql(
            DB,
            "CREATE PUBLICATION pgbridge FOR TABLE public.accounts, public.entries",
        );
    }
    pair.blue.psql(
        DB,
        &format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{PW}';
             GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.accounts, public.entries TO {ROLE};
             GRANT SELECT, UPDATE ON SEQUENCE public.accounts_id_seq, public.entries_id_seq TO {ROLE};"
        ),
    );
    if grants.schema_precreated {
        pair.blue
            .psql(DB, &format!("CREATE SCHEMA pgbridge AUTHORIZATION {ROLE}"));
    } else {
        pair.blue.psql(DB, &format!("GRANT CREATE ON DATABASE {DB} TO {ROLE}"));
    }
    if grants.replica_role {
        grant_replica_role(&pair);
    }
    if grants.origin {
        pair.blue.psql(DB, ORIGIN_GRANT);
    }
    for side in [&pair.green, &pair.blue] {
        assert_eq!(
            side.psql(
                DB,
                &format!(
                    "SELECT rolsuper::text || ' ' || left(rolpassword, 14) FROM pg_authid WHERE rolname = '{ROLE}'"
                )
            ),
            "false SCRAM-SHA-256$"
        );
    }
    pair.write_config_with(
        &pair.green.dsn_as(ROLE, Some(PW), DB),
        &pair.blue.dsn_as(ROLE, Some(PW), DB),
        "",
    );
    pair
}

fn grant_replica_role(pair: &Pair) {
    pair.blue.psql(
        DB,
        &format!("GRANT SET ON PARAMETER session_replication_role TO {ROLE}"),
    );
}

/// Runs `pgbridge ARGS`, asserts exit code `code`, returns stdout and stderr.
fn expect(pair: &Pair, args: &[&str], code: i32) -> String {
    let out = pair.pgbridge(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "pgbridge {args:?} exited with {:?}:\n{}",
        out.status.code(),
        text(&out)
    );
    text(&out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a stretch of mixed green transactions (inserts into both tables, updates, deletes,
/// each iteration committed on its own) as postgres, in the background.
fn green_writes(pair: &Pair, iterations: u32) -> std::thread::JoinHandle<Output> {
    let dsn = pair.green.dsn(DB);
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{iterations} LOOP
           INSERT INTO public.accounts (name) VALUES ('live ' || i);
           INSERT INTO public.entries (account_id, amount, note)
             SELECT max(id), i * 1.25, 'live entry ' || i FROM public.accounts;
           UPDATE public.entries SET amount = amount + 1, note = note || ' +' WHERE id % 7 = i % 7;
           UPDATE public.accounts SET name = name || ' (renamed)' WHERE id = i;
           DELETE FROM public.entries WHERE id = (SELECT min(id) FROM public.entries WHERE id % 5 = i % 5);
           COMMIT;
         END LOOP; END $$"
    );
    std::thread::spawn(move || {
        std::process::Command::new(pg_client_bin_dir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &dsn, "-c", &sql])
            .output()
            .expect("run psql")
    })
}

fn join_writes(writes: std::thread::JoinHandle<Output>) {
    let out = writes.join().expect("writer thread");
    assert!(out.status.success(), "green writes failed: {}", stderr(&out));
}

/// The last value of a sequence.
fn last_value(side: &crate::support::Cluster, seq: &str) -> i64 {
    side.psql(DB, &format!("SELECT last_value FROM {seq}"))
        .parse()
        .expect("a number")
}

/// Waits until the bridge answers /readyz with 200.
fn wait_ready(pair: &Pair, bridge: &Running) {
    wait_for(
        Duration::from_secs(60),
        || http_get(pair.metrics_port, "/readyz").is_some_and(|(code, _)| code == 200),
        || format!("the bridge never became ready:\n{}", bridge.log()),
    );
}

const WARNING: &str = "blue refused session_replication_role = replica";

#[test]
fn privileges_least_privilege_roles_run_the_whole_flow() {
    let pair = least_privilege_pair(DOCUMENTED);
    // Rows for the initial copy, children included.
    pair.green.psql(
        DB,
        "INSERT INTO public.accounts (name) SELECT 'acct ' || g FROM generate_series(1, 50) g;
         INSERT INTO public.entries (account_id, amount, note)
           SELECT 1 + g % 50, g * 0.5, 'copied ' || g FROM generate_series(1, 300) g;",
    );
    // The schema path: the role may not create schemas on blue, only tables in its own.
    assert_eq!(
        pair.blue.psql(
            DB,
            &format!("SELECT has_database_privilege('{ROLE}', '{DB}', 'CREATE')")
        ),
        "f"
    );

    let out = expect(&pair, &["check"], 0);
    assert!(out.contains("no problems"), "{out}");
    let out = expect(&pair, &["setup", "--copy"], 0);
    assert!(out.contains("copied 2 table(s)"), "{out}");
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM public.entries"), "300");

    let bridge = pair.run();
    let writes = green_writes(&pair, 150);
    wait_ready(&pair, &bridge);
    // The walsender streaming to pgbridge was authenticated as the role itself.
    assert_eq!(
        pair.green.psql(
            DB,
            "SELECT usename FROM pg_stat_replication WHERE application_name = 'pgbridge'"
        ),
        ROLE
    );
    // Gates while green is being written.
    expect(&pair, &["lag"], 0);
    let status = expect(&pair, &["status", "--json"], 0);
    assert!(status.contains("\"state\": \"streaming\""), "{status}");
    join_writes(writes);
    pair.green.psql(
        DB,
        "TRUNCATE public.entries; INSERT INTO public.entries (account_id, amount, note) VALUES (2, 9.99, 'after truncate');
         DELETE FROM public.accounts WHERE id = 3;",
    );

    let out = expect(&pair, &["wait", "--timeout", "60s"], 0);
    assert!(out.contains("caught up"), "{out}");
    let out = expect(&pair, &["verify"], 0);
    assert!(out.contains("identical: 2 table(s)"), "{out}");
    let out = expect(&pair, &["lag", "--max-seconds", "60"], 0);
    assert!(out.starts_with("lag_bytes="), "{out}");
    expect(&pair, &["status"], 0);
    let out = expect(&pair, &["sync-sequences"], 0);
    assert!(out.contains("2 moved"), "{out}");
    for seq in ["public.accounts_id_seq", "public.entries_id_seq"] {
        assert!(
            last_value(&pair.blue, seq) >= last_value(&pair.green, seq),
            "{seq} on blue is behind green's"
        );
    }
    let log = bridge.log();
    assert!(!log.contains(WARNING), "the grant was ignored:\n{log}");
    let log_path = bridge.log_path().to_path_buf();
    assert_eq!(bridge.terminate(), 0, "not a clean stop");
    let log = std::fs::read_to_string(log_path).expect("run log");
    assert!(log.contains("stopped cleanly"), "{log}");

    pair.assert_same("public.accounts");
    pair.assert_same("public.entries");
    assert_eq!(
        pair.blue.psql(DB, "SELECT count(*) > 150 FROM public.accounts"),
        "t",
        "the live inserts did not arrive"
    );

    // Teardown drops the slot and the checkpoint row; the publication belongs to postgres,
    // which keeps it and says who may drop it.
    let out = expect(&pair, &["teardown"], 0);
    assert!(
        out.contains("kept: owned by postgres") && out.contains("DROP PUBLICATION \"pgbridge\""),
        "{out}"
    );
    assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM pg_publication"), "1");
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM pgbridge.checkpoint"), "0");
}

#[test]
fn privileges_session_replication_role_grant_decides_the_warning_and_triggers() {
    let pair = least_privilege_pair(Grants {
        replica_role: false,
        schema_precreated: false,
        ..DOCUMENTED
    });
    // A blue trigger shows whether blue's triggers fire for replicated rows.
    pair.blue.psql(
        DB,
        "CREATE TABLE public.fired (n int);
         CREATE FUNCTION public.note_insert() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
           AS $$ BEGIN INSERT INTO public.fired VALUES (1); RETURN NEW; END $$;
         CREATE TRIGGER note_insert AFTER INSERT ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.note_insert();",
    );
    let fired = || pair.blue.psql(DB, "SELECT count(*) FROM public.fired");

    // The copy writes tables in parallel: without the grant, the foreign key between them
    // would reject rows, so setup --copy refuses before creating anything.
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    for words in [
        "entries_account_id_fkey",
        "public.entries",
        "GRANT SET ON PARAMETER session_replication_role TO \"bridge\"",
        "nothing was created",
    ] {
        assert!(err.contains(words), "the error does not mention {words:?}: {err}");
    }
    assert_eq!(pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgbridge'"),
        "0"
    );

    // Streaming works without the grant: a warning, and blue applies in green's order, so the
    // foreign key holds; blue's trigger fires.
    expect(&pair, &["setup"], 0);
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgbridge'"
        ),
        ROLE
    );
    let bridge = pair.run();
    wait_for(
        Duration::from_secs(60),
        || bridge.log().contains(WARNING),
        || format!("no warning about session_replication_role:\n{}", bridge.log()),
    );
    let log = bridge.log();
    let warning = log.lines().find(|l| l.contains(WARNING)).expect("warning line");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("GRANT SET ON PARAMETER session_replication_role TO \"bridge\""),
        "{warning}"
    );
    pair.green.psql(
        DB,
        "INSERT INTO public.accounts (name) VALUES ('a'), ('b');
         INSERT INTO public.entries (account_id, amount, note) VALUES (1, 1, 'x'), (2, 2, 'y');",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("public.accounts");
    pair.assert_same("public.entries");
    assert_eq!(fired(), "2", "blue's trigger did not fire without the grant");
    assert_eq!(bridge.terminate(), 0);

    // With the grant: no warning, and blue's trigger stays quiet for replicated rows.
    grant_replica_role(&pair);
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO public.accounts (name) VALUES ('c'); INSERT INTO public.entries (account_id, amount) VALUES (3, 3);",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("public.accounts");
    pair.assert_same("public.entries");
    assert_eq!(
        fired(),
        "2",
        "blue's trigger fired under session_replication_role = replica"
    );
    let log = bridge.log();
    assert!(!log.contains(WARNING), "warning despite the grant:\n{log}");
    assert_eq!(bridge.terminate(), 0);
}

#[test]
fn privileges_origin_functions_are_named_by_check_and_setup() {
    let pair = least_privilege_pair(Grants {
        origin: false,
        ..DOCUMENTED
    });
    let out = expect(&pair, &["check"], 1);
    assert!(
        out.contains("tagging blue's commits with replication origin pgbridge_pgbridge_to_blue"),
        "{out}"
    );
    assert!(
        out.contains(ORIGIN_GRANT),
        "check does not name the statement to run:\n{out}"
    );
    let out = expect(&pair, &["setup"], 2);
    assert!(out.contains(ORIGIN_GRANT), "{out}");
    // The statement it names is all that was missing.
    pair.blue.psql(DB, ORIGIN_GRANT);
    expect(&pair, &["check"], 0);
    expect(&pair, &["setup"], 0);
}

#[test]
fn privileges_setup_without_publication_names_the_statement_to_run() {
    let pair = least_privilege_pair(Grants {
        publication: false,
        ..DOCUMENTED
    });
    let out = expect(&pair, &["check"], 1);
    assert!(out.contains("publication pgbridge does not exist on green"), "{out}");

    let out = pair.pgbridge(&["setup"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    const STATEMENT: &str = "CREATE PUBLICATION \"pgbridge\" FOR TABLE \"public\".\"accounts\", \"public\".\"entries\"";
    for words in [
        "publication pgbridge",
        "role bridge may not create it",
        "does not own public.accounts, public.entries",
        "lacks CREATE on database postgres",
        STATEMENT,
        "nothing was created",
    ] {
        assert!(line.contains(words), "the error does not mention {words:?}: {line}");
    }
    assert_eq!(
        pair.green.psql(
            DB,
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)"
        ),
        "0"
    );
    assert_eq!(
        pair.blue.psql(DB, "SELECT to_regclass('pgbridge.checkpoint') IS NULL"),
        "t"
    );

    // The statement it names, run by the tables' owner, is all setup was missing.
    pair.green.psql(DB, STATEMENT);
    expect(&pair, &["setup"], 0);
    assert!(!pair.checkpoint().is_empty(), "setup wrote no checkpoint");
}

/// Everything pgbridge printed or served, labelled, for the leak search.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.0.push((label.into(), text.into()));
    }

    /// Runs `pgbridge ARGS`, records its output and returns its exit code.
    fn run(&mut self, pair: &Pair, label: &str, args: &[&str]) -> Option<i32> {
        let out = pair.pgbridge(args);
        self.add(format!("{label}: pgbridge {}", args.join(" ")), text(&out));
        out.status.code()
    }

    fn assert_absent(&self, needle: &str, what: &str) {
        for (label, text) in &self.0 {
            assert!(!text.contains(needle), "{what} {needle:?} appears in {label}:\n{text}");
        }
    }
}

#[test]
fn privileges_passwords_never_leak() {
    // The documented default listens on loopback only.
    let minimal = "[green]\ndsn = \"postgres://bridge@green/app\"\n[blue]\ndsn = \"postgres://bridge@blue/app\"\n";
    let config = pgbridge::config::Config::parse(minimal, std::path::Path::new("pgbridge.toml"), &|_| None)
        .expect("a minimal configuration parses");
    let listen: std::net::SocketAddr = config.metrics_listen.parse().expect("an address");
    assert!(listen.ip().is_loopback(), "[metrics] listen defaults to {listen}");

    let pair = least_privilege_pair(DOCUMENTED);
    let row_value = "Row-Data-91e2c4-private";
    pair.green.psql(
        DB,
        &format!("INSERT INTO public.accounts (name) VALUES ('{row_value}'), ('plain')"),
    );
    let mut seen = Seen::default();

    // The whole flow, successful.
    for args in [&["check"][..], &["setup", "--copy"]] {
        assert_eq!(seen.run(&pair, "ok", args), Some(0));
    }
    let bridge = pair.run();
    wait_ready(&pair, &bridge);
    pair.green.psql(
        DB,
        &format!(
            "INSERT INTO public.entries (account_id, amount, note) VALUES (1, 1, '{row_value}');
             UPDATE public.accounts SET name = name || ' {row_value}' WHERE id = 2;"
        ),
    );
    pair.wait_caught_up(&bridge);
    for args in [
        &["wait"][..],
        &["verify"],
        &["verify", "--json"],
        &["lag"],
        &["lag", "--json"],
        &["status"],
        &["status", "--json"],
        &["sync-sequences"],
    ] {
        assert_eq!(seen.run(&pair, "ok", args), Some(0));
    }
    let mut served = Vec::new();
    for path in ["/metrics", "/status", "/healthz", "/readyz"] {
        let (code, body) = http_get(pair.metrics_port, path).unwrap_or_else(|| panic!("{path} does not answer"));
        assert_eq!(code, 200, "{path}: {body}");
        seen.add(format!("GET {path}"), body.clone());
        served.push((path, body));
    }
    let status = &served.iter().find(|(p, _)| *p == "/status").expect("/status").1;
    let doc: serde_json::Value = serde_json::from_str(status).expect("/status is JSON");
    assert_eq!(doc["tables"]["public.entries"]["insert"], 1, "{status}");
    for (path, body) in &served {
        assert!(!body.contains(row_value), "{path} shows row data:\n{body}");
    }
    let log_path = bridge.log_path().to_path_buf();
    assert_eq!(bridge.terminate(), 0);
    seen.add("run log (text)", std::fs::read_to_string(log_path).expect("run log"));

    // The JSON log format.
    let bridge = pair.run_with_args(&["--log-format", "json", "run"]);
    wait_ready(&pair, &bridge);
    pair.green
        .psql(DB, "INSERT INTO public.accounts (name) VALUES ('json')");
    pair.wait_caught_up(&bridge);
    let (code, metrics) = http_get(pair.metrics_port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    seen.add("GET /metrics (second run)", metrics);
    let log_path = bridge.log_path().to_path_buf();
    assert_eq!(bridge.terminate(), 0);
    let log = std::fs::read_to_string(log_path).expect("run log");
    let first = log.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not a JSON log line: {first}"
    );
    seen.add("run log (json)", log);

    // Failures: each must fail, and none may print the password.
    let green_ok = pair.green.dsn_as(ROLE, Some(PW), DB);
    let blue_ok = pair.blue.dsn_as(ROLE, Some(PW), DB);
    let wrong = "Wr0ng-7f3a9c-pw";
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let unreachable = format!("postgres://{ROLE}:{PW}@127.0.0.1:{closed}/{DB}");
    let cases = [
        (
            "wrong green password",
            pair.green.dsn_as(ROLE, Some(wrong), DB),
            blue_ok.clone(),
        ),
        (
            "wrong blue password",
            green_ok.clone(),
            pair.blue.dsn_as(ROLE, Some(wrong), DB),
        ),
        ("unreachable green", unreachable.clone(), blue_ok.clone()),
        ("unreachable blue", green_ok.clone(), unreachable),
    ];
    for (label, green, blue) in &cases {
        pair.write_config_with(green, blue, "");
        for args in [
            &["check"][..],
            &["setup"],
            &["status", "--json"],
            &["lag", "--json"],
            &["verify"],
            &["teardown"],
        ] {
            assert_eq!(seen.run(&pair, label, args), Some(2), "{label}: pgbridge {args:?}");
        }
        let log = if label.starts_with("unreachable") {
            // A daemon waits for a database that is down, logging each attempt (issue 16).
            let bridge = pair.run();
            let waiting = |log: &str| log.contains("cannot start yet; waiting for the databases");
            wait_for(Duration::from_secs(60), || waiting(&bridge.log()), || bridge.log());
            let log_path = bridge.log_path().to_path_buf();
            assert_eq!(bridge.terminate(), 0, "{label}: run");
            std::fs::read_to_string(log_path).expect("run log")
        } else {
            let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
            assert_eq!(code, 2, "{label}: run\n{log}");
            log
        };
        seen.add(format!("{label}: run log"), log);
    }

    pair.write_config_with(&green_ok, &blue_ok, "");
    let mappings = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).expect("mappings dir");
    std::fs::write(
        mappings.join("accounts.toml"),
        "target = \"public.accounts\"\n\n[columns]\nname = { from = \"no_such_column\" }\n",
    )
    .expect("mapping file");
    assert_eq!(seen.run(&pair, "bad mapping", &["check"]), Some(1));
    for args in [&["setup"][..], &["verify"]] {
        assert_eq!(seen.run(&pair, "bad mapping", args), Some(2));
    }
    let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "bad mapping: run\n{log}");
    seen.add("bad mapping: run log", log);

    seen.assert_absent(PW, "the password");
    seen.assert_absent(wrong, "the wrong password");
    // The server did see the wrong password attempts: the failures were about authentication.
    let wrong_green = seen
        .0
        .iter()
        .find(|(l, _)| l.starts_with("wrong green password: pgbridge setup"))
        .expect("recorded");
    assert!(
        wrong_green.1.contains("password authentication failed"),
        "{}",
        wrong_green.1
    );
}
