//! Operator mistakes: every one must stop with exit code 2 and one error that names the problem
//! and its fix, and must leave nothing half-made behind (no publication or slot on green, no
//! checkpoint on blue). Also the positive side of authentication: SCRAM-SHA-256 and MD5 over
//! the replication connection, which pgbridge speaks itself.

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::bridge::{text, wait_for, Pair, DB, SLOT};
use crate::support::{pg_client_bin_dir, ClusterOptions};

/// The error pgbridge printed: the one stderr line starting with `error: `. Asserts exit
/// code 2, exactly one such line and no continuation lines after it.
fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "expected exit code 2:\n{}", text(out));
    error_of(&String::from_utf8_lossy(&out.stderr), &text(out))
}

fn error_of(stderr: &str, everything: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("error: ")).collect();
    assert_eq!(
        starts.len(),
        1,
        "expected exactly one `error:` line on stderr:\n{everything}"
    );
    let next = lines.get(starts[0] + 1).copied().unwrap_or_default();
    assert!(
        next.is_empty() || !next.starts_with(char::is_whitespace),
        "the error goes on over several lines:\n{everything}"
    );
    eprintln!("pgbridge said: {}", lines[starts[0]]);
    lines[starts[0]].to_string()
}

/// Asserts that `message` contains every word of `words` (case-insensitive).
fn assert_mentions(message: &str, words: &[&str]) {
    let lower = message.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "error does not mention {w:?}: {message}"
        );
    }
}

/// Nothing of pgbridge's exists: no publication, no slot on green; no schema on blue.
fn assert_nothing_created(pair: &Pair) {
    assert_eq!(
        pair.green.psql(DB, "SELECT count(*) FROM pg_publication"),
        "0",
        "a publication was created"
    );
    assert_eq!(
        pair.green.psql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "a slot was created"
    );
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgbridge'"),
        "0",
        "blue got pgbridge's schema"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A pair with table `public.t` on both sides.
fn pair_with_table(green: ClusterOptions) -> Pair {
    let pair = Pair::start_with(green, ClusterOptions::default());
    pair.both("CREATE TABLE public.t (id int PRIMARY KEY, v text)");
    pair
}

/// A green DSN on a closed port, and the port.
fn closed_green() -> (String, String) {
    let port = closed_port().to_string();
    (format!("postgres://postgres@127.0.0.1:{port}/{DB}"), port)
}

#[test]
fn bad_input_unreachable_green_setup_exits_2_and_creates_nothing() {
    let pair = pair_with_table(ClusterOptions::default());
    let (dsn, port) = closed_green();
    pair.write_config_with(&dsn, &pair.blue.dsn(DB), "");
    let started = Instant::now();
    let err = failure(&pair.pgbridge(&["setup"]));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "setup took {:?}",
        started.elapsed()
    );
    assert_mentions(&err, &["green", "connect", &port, "green.dsn"]);
    assert_nothing_created(&pair);
}

/// A daemon started while green is unreachable waits for it (issue 16: connection refused is
/// transient at start as later), saying on every attempt what it cannot reach and how to fix
/// it; the checkpoint does not move and SIGTERM ends the wait cleanly.
#[test]
fn bad_input_unreachable_green_run_waits_saying_how_to_fix_and_keeps_the_checkpoint() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.setup();
    let checkpoint = pair.checkpoint();
    let (dsn, port) = closed_green();
    pair.write_config_with(&dsn, &pair.blue.dsn(DB), "");
    let mut bridge = pair.run();
    let attempts = |log: &str| log.matches("cannot start yet; waiting for the databases").count();
    wait_for(
        Duration::from_secs(60),
        || attempts(&bridge.log()) >= 2,
        || bridge.log(),
    );
    assert!(bridge.alive(), "{}", bridge.log());
    let log = bridge.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot start yet"))
        .expect("an attempt is logged");
    assert_mentions(line, &["green", "connect", &port, "green.dsn"]);
    assert_eq!(pair.checkpoint(), checkpoint);
    assert_eq!(bridge.terminate(), 0);
}

const WRONG: &str = "Wr0ng-Pa55word";
const RIGHT: &str = "right";

/// Green requires SCRAM for role `app` (password `right`); blue trusts everyone.
fn password_pair() -> Pair {
    let pair = pair_with_table(ClusterOptions {
        settings: vec![],
        hba: vec!["host all app 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    pair.green.psql(
        DB,
        &format!("CREATE ROLE app LOGIN REPLICATION PASSWORD '{RIGHT}'; ALTER TABLE public.t OWNER TO app; GRANT CREATE ON DATABASE {DB} TO app"),
    );
    pair
}

fn assert_no_secret(out: &str, secret: &str) {
    assert!(
        !out.contains(secret),
        "the password {secret:?} appears in pgbridge's output:\n{out}"
    );
}

#[test]
fn bad_input_wrong_password_exits_2_names_the_password_and_never_prints_it() {
    let pair = password_pair();
    let wrong = pair.green.dsn_as("app", Some(WRONG), DB);
    pair.write_config_with(&wrong, &pair.blue.dsn(DB), "");

    let out = pair.pgbridge(&["setup"]);
    assert_no_secret(&text(&out), WRONG);
    let err = failure(&out);
    assert_mentions(&err, &["green", "password", "app", "check the password in green.dsn"]);
    assert_nothing_created(&pair);

    for args in [&["status"][..], &["status", "--json"], &["teardown"]] {
        let out = pair.pgbridge(args);
        assert_no_secret(&text(&out), WRONG);
        let err = failure(&out);
        assert_mentions(&err, &["password"]);
    }

    // `run` authenticates on the replication connection, which pgbridge speaks itself.
    pair.write_config_with(&pair.green.dsn(DB), &pair.blue.dsn(DB), "");
    pair.setup();
    let checkpoint = pair.checkpoint();
    pair.write_config_with(&wrong, &pair.blue.dsn(DB), "");
    let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
    assert_no_secret(&log, WRONG);
    assert_eq!(code, 2, "{log}");
    let err = error_of(&log, &log);
    assert_mentions(&err, &["green", "password", "dsn"]);
    assert_eq!(pair.checkpoint(), checkpoint);
}

/// `setup`, `run` and one replicated row as `role` with `password`; no command prints it.
fn setup_run_replicate_as(pair: &Pair, role: &str, password: &str) {
    let dsn = pair.green.dsn_as(role, Some(password), DB);
    pair.write_config_with(&dsn, &pair.blue.dsn(DB), "");
    let out = pair.pgbridge(&["setup"]);
    assert!(out.status.success(), "setup as {role} failed:\n{}", text(&out));
    assert_no_secret(&text(&out), password);
    let bridge = pair.run();
    pair.green
        .psql(DB, &format!("INSERT INTO public.t VALUES (1, '{role}')"));
    pair.wait_caught_up(&bridge);
    assert_eq!(
        pair.blue.psql(DB, "SELECT id || ':' || v FROM public.t"),
        format!("1:{role}")
    );
    pair.assert_same("public.t");
    let status = pair.pgbridge(&["status", "--json"]);
    assert!(status.status.success(), "status as {role} failed:\n{}", text(&status));
    assert_no_secret(&text(&status), password);
    // The walsender streaming to pgbridge was authenticated as the role itself.
    assert_eq!(
        pair.green.psql(
            DB,
            "SELECT usename FROM pg_stat_replication WHERE application_name = 'pgbridge'"
        ),
        role
    );
    let log_path = bridge.log_path().to_path_buf();
    assert_eq!(bridge.terminate(), 0);
    let log = std::fs::read_to_string(log_path).expect("run log");
    assert_no_secret(&log, password);
}

#[test]
fn bad_input_scram_sha_256_password_works_for_setup_and_run() {
    let pair = password_pair();
    let password = "S3c:r@t/ p%w";
    pair.green.psql(DB, &format!("ALTER ROLE app PASSWORD '{password}'"));
    assert!(pair
        .green
        .psql(DB, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .starts_with("SCRAM-SHA-256$"));
    setup_run_replicate_as(&pair, "app", password);
}

#[test]
fn bad_input_md5_password_works_for_setup_and_run() {
    let pair = pair_with_table(ClusterOptions {
        settings: vec![],
        hba: vec!["host all app_md5 127.0.0.1/32 md5".into()],
        ..Default::default()
    });
    let password = "m:d5@pass/ word";
    pair.green.psql(
        DB,
        &format!(
            "SET password_encryption = 'md5'; CREATE ROLE app_md5 LOGIN REPLICATION PASSWORD '{password}'; \
             ALTER TABLE public.t OWNER TO app_md5; GRANT CREATE ON DATABASE {DB} TO app_md5"
        ),
    );
    assert!(pair
        .green
        .psql(DB, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_md5'")
        .starts_with("md5"));
    setup_run_replicate_as(&pair, "app_md5", password);
}

#[test]
fn bad_input_wal_level_replica_is_refused_by_setup() {
    let pair = pair_with_table(ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        hba: vec![],
        ..Default::default()
    });
    let err = failure(&pair.pgbridge(&["setup"]));
    assert_mentions(
        &err,
        &["green", "wal_level = replica", "wal_level = logical", "restart"],
    );
    assert_nothing_created(&pair);
}

#[test]
fn bad_input_role_without_replication_is_refused_by_setup() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.green.psql(
        DB,
        &format!(
            "CREATE ROLE norep LOGIN; ALTER TABLE public.t OWNER TO norep; GRANT CREATE ON DATABASE {DB} TO norep"
        ),
    );
    pair.write_config_with(&pair.green.dsn_as("norep", None, DB), &pair.blue.dsn(DB), "");
    let err = failure(&pair.pgbridge(&["setup"]));
    assert!(err.contains("REPLICATION"), "{err}");
    assert_mentions(&err, &["norep", "ALTER ROLE"]);
    assert_nothing_created(&pair);
}

/// Starts a second `pgbridge run` while another holds the slot; returns its error message.
fn second_run_error(pair: &Pair) -> String {
    let started = Instant::now();
    let (code, log) = pair.run().wait_exit(Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(code, 2, "{log}");
    // `run` may wait up to 30 s at start-up for a walsender that is still letting go.
    assert!(
        took < Duration::from_secs(45),
        "the second run took {took:?} to give up:\n{log}"
    );
    // While it waits, its lag poller must not take the first bridge's progress for blue's loss.
    assert!(!log.contains("beyond blue's checkpoint"), "{log}");
    error_of(&log, &log)
}

/// Runs about ten small green transactions a second into `public.t` (ids from 1000) for
/// about `seconds`, in the background.
fn green_load(pair: &Pair, seconds: u32) -> std::thread::JoinHandle<Output> {
    let dsn = pair.green.dsn(DB);
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{} LOOP INSERT INTO public.t VALUES (1000 + i, 'load'); COMMIT; \
         PERFORM pg_sleep(0.01); END LOOP; END $$",
        seconds * 100
    );
    std::thread::spawn(move || {
        std::process::Command::new(pg_client_bin_dir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &dsn, "-c", &sql])
            .output()
            .expect("run psql")
    })
}

#[test]
fn bad_input_slot_in_use_by_another_run_exits_2_naming_the_slot() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.setup();
    let first = pair.run();
    pair.green.psql(DB, "INSERT INTO public.t VALUES (1, 'first')");
    pair.wait_caught_up(&first);

    // Under load the first bridge keeps moving blue's checkpoint and the slot while the second
    // starts: the second must still see a busy slot, not "blue is missing changes" (it read
    // the checkpoint a moment before the slot's position).
    let load = green_load(&pair, 3);
    wait_for(
        Duration::from_secs(30),
        || pair.blue.psql(DB, "SELECT count(*) > 10 FROM public.t") == "t",
        || format!("the load never reached blue:\n{}", first.log()),
    );
    let err = second_run_error(&pair);
    assert_mentions(&err, &[SLOT]);
    assert!(!err.contains("beyond blue's checkpoint"), "{err}");
    let lower = err.to_lowercase();
    assert!(lower.contains("active") || lower.contains("in use"), "{err}");

    // The first bridge never noticed.
    let out = load.join().expect("load thread");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pair.green
        .psql(DB, "INSERT INTO public.t VALUES (2, 'still streaming')");
    pair.wait_caught_up(&first);
    pair.assert_same("public.t");
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM public.t"), "302");
    assert_eq!(first.terminate(), 0);
}

#[test]
fn bad_input_busy_slot_error_says_how_to_fix() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.setup();
    let first = pair.run();
    pair.wait_caught_up(&first);
    // Observed: "error: starting replication on green (...): replication slot
    // \"pgbridge_to_blue\" is active for PID N". pipeline::session calls
    // `check_slot(..).await?`, so check_slot's 55006 error leaves the session before the
    // match that adds "another pgbridge or a subscription is streaming slot ...; stop it first".
    let err = second_run_error(&pair);
    assert_mentions(&err, &[SLOT, "stop it first"]);
    assert_eq!(first.terminate(), 0);
}

/// Sends `signal` (STOP, CONT, KILL) to a process this test started.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

#[test]
fn bad_input_run_waits_for_the_previous_walsender_to_let_go() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.setup();
    let first = pair.run();
    pair.wait_caught_up(&first);
    // A hung pgbridge: its walsender holds the slot until the process dies.
    signal(first.pid(), "STOP");
    let mut second = pair.run();
    let log_path = second.log_path().to_path_buf();
    wait_for(
        Duration::from_secs(30),
        || second.log().contains("is active for PID") || !second.alive(),
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("the second run never met the busy slot:\n{log}")
        },
    );
    // Observed: the second run has already exited with code 2. check_slot now reports an
    // active slot as SQLSTATE 55006 and pipeline::session propagates it with `?`, skipping the
    // SLOT_BUSY_GRACE retry loop that only wraps SourceHandle::start. So a restart right after
    // a crash (systemd Restart=always, a SIGKILL-and-restart test) fails instead of waiting.
    assert!(second.alive(), "the second run gave up at once:\n{}", second.log());
    first.kill();
    pair.green.psql(DB, "INSERT INTO public.t VALUES (1, 'after takeover')");
    pair.wait_caught_up(&second);
    pair.assert_same("public.t");
    assert_eq!(second.terminate(), 0);
}

#[test]
fn bad_input_table_missing_on_blue_is_named_until_excluded() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.green
        .psql(DB, "CREATE TABLE public.only_green (id int PRIMARY KEY)");
    let err = failure(&pair.pgbridge(&["setup"]));
    assert_mentions(&err, &["public.only_green", "exclude", "blue"]);
    assert_nothing_created(&pair);

    pair.write_config("[mapping]\nexclude = [\"public.only_green\"]");
    pair.setup();
    assert_eq!(
        pair.green.psql(
            DB,
            "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'pgbridge'"
        ),
        "public.t"
    );
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO public.only_green VALUES (1); INSERT INTO public.t VALUES (1, 'x')",
    );
    pair.wait_caught_up(&bridge);
    pair.assert_same("public.t");
    assert_eq!(bridge.terminate(), 0);
}

/// Runs `pgbridge COMMAND` with a configuration file holding `text`; no server is needed:
/// the file is refused before anything connects.
fn with_config(text: &str, command: &str) -> (Output, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pgbridge.toml");
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbridge"))
        .arg("-c")
        .arg(&path)
        .arg(command)
        .env_remove("PGBRIDGE_CONFIG")
        .output()
        .expect("run pgbridge");
    (out, path.display().to_string())
}

/// A valid configuration up to its last line (line 7), pointing at closed ports.
fn base_config() -> String {
    let (g, b) = (closed_port(), closed_port());
    format!(
        "[green]\ndsn = \"postgres://postgres@127.0.0.1:{g}/{DB}\"\nslot = \"{SLOT}\"\n\n\
         [blue]\ndsn = \"postgres://postgres@127.0.0.1:{b}/{DB}\"\nschema = \"pgbridge\"\n"
    )
}

#[test]
fn bad_input_malformed_config_names_file_and_key() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "[apply]\nmax_batch_rowz = 5",
            &[":9:", "max_batch_rowz", "max_batch_rows"],
        ),
        ("[mapping]\nexclud = []", &[":9:", "exclud", "exclude"]),
        ("slot = \"in the wrong section\"", &[":8:", "slot"]),
        ("[apply\nmax_batch_rows = 5", &[":8:", "header"]),
    ];
    for (extra, words) in cases {
        let text = format!("{}{extra}\n", base_config());
        for command in ["setup", "run", "status", "teardown"] {
            let (out, file) = with_config(&text, command);
            let err = failure(&out);
            assert_mentions(&err, &[&file]);
            assert_mentions(&err, words);
        }
    }
}

#[test]
fn bad_input_config_value_of_wrong_type_names_the_key() {
    // Observed: "error: <file>:9:18: invalid type: string \"many\", expected u64". The
    // one-line form (config::toml_error) dropped the source excerpt that showed the key.
    let text = format!("{}[apply]\nmax_batch_rows = \"many\"\n", base_config());
    let (out, file) = with_config(&text, "setup");
    let err = failure(&out);
    assert_mentions(&err, &[&file, "max_batch_rows"]);
}

#[test]
fn bad_input_table_without_primary_key_suggests_replica_identity_full() {
    let pair = pair_with_table(ClusterOptions::default());
    pair.both("CREATE TABLE public.nopk (a int, b text)");
    let err = failure(&pair.pgbridge(&["setup"]));
    assert_mentions(&err, &["public.nopk", "primary key", "REPLICA IDENTITY FULL"]);
    assert_nothing_created(&pair);

    pair.green.psql(DB, "ALTER TABLE public.nopk REPLICA IDENTITY FULL");
    pair.setup();
}

#[test]
fn bad_input_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbridge"))
        .arg("-c")
        .arg(&missing)
        .arg("setup")
        .env_remove("PGBRIDGE_CONFIG")
        .output()
        .expect("run pgbridge");
    let err = failure(&out);
    assert_mentions(&err, &[&missing.display().to_string(), "-c PATH"]);
}
