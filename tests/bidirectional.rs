//! Both directions at once, and `pgbridge switchover` between them (issue 8): a bridge from
//! blue to green (`to_green.toml`, with a mapping in that direction) and one from green to
//! blue (the pair's `pgbridge.toml`). Each tags what it writes with its replication origin and
//! skips what the other wrote, so nothing echoes; on PostgreSQL 16+ green filters with
//! `origin 'none'`, on 15 pgbridge drops transactions by their Origin message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::bridge::{text, wait_for, Pair, Running, DB};
use crate::support::{pg_client_bin_dir, ClusterOptions};

/// Blue's schema; green renamed `email` and added `score`.
const BLUE_SCHEMA: &str = "
    CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, note text);
    CREATE TABLE events (id bigserial PRIMARY KEY, side text NOT NULL, n bigint NOT NULL);
    CREATE TABLE accounts (aid int PRIMARY KEY, abalance int NOT NULL DEFAULT 0);
    INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 1000) i;";
const GREEN_SCHEMA: &str = "
    CREATE TABLE customers (id bigint PRIMARY KEY, email_address text NOT NULL, note text,
                            score int NOT NULL DEFAULT 0);
    CREATE TABLE events (id bigserial PRIMARY KEY, side text NOT NULL, n bigint NOT NULL);
    CREATE TABLE accounts (aid int PRIMARY KEY, abalance int NOT NULL DEFAULT 0);
    INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 1000) i;";

/// The application's role on both sides.
const APP: &str = "app";

/// Green and blue with both bridges configured (neither set up): `pgbridge.toml` streams green
/// to blue, `to_green.toml` blue to green.
struct Both {
    pair: Pair,
    to_green: PathBuf,
}

impl Both {
    fn start() -> Both {
        Both::start_on(Pair::start())
    }

    /// Both servers stream every transaction of more than a few hundred rows in progress.
    fn start_streaming() -> Both {
        let small = || ClusterOptions {
            settings: vec![("logical_decoding_work_mem".into(), "64kB".into())],
            ..ClusterOptions::default()
        };
        Both::start_on(Pair::start_with(small(), small()))
    }

    fn start_on(pair: Pair) -> Both {
        pair.blue.psql(DB, BLUE_SCHEMA);
        pair.green.psql(DB, GREEN_SCHEMA);
        let dir = pair.dir.path();
        std::fs::create_dir_all(dir.join("mappings")).unwrap();
        std::fs::write(
            dir.join("mappings/customers.toml"),
            "target = \"public.customers\"\nignore = [\"score\"]\n\n[columns]\nemail = { from = \"email_address\" }\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("mappings_to_green")).unwrap();
        std::fs::write(
            dir.join("mappings_to_green/customers.toml"),
            "target = \"public.customers\"\n\n[columns]\nemail_address = { from = \"email\" }\nscore = { omit = true }\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let to_green = dir.join("to_green.toml");
        std::fs::write(
            &to_green,
            format!(
                "[green]\ndsn = \"{}\"\npublication = \"pgbridge_to_green\"\nslot = \"pgbridge_to_green\"\n\n\
                 [blue]\ndsn = \"{}\"\n\n[mapping]\ndir = \"mappings_to_green\"\n\n\
                 [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
                pair.blue.dsn(DB),
                pair.green.dsn(DB)
            ),
        )
        .unwrap();
        for cluster in [&pair.green, &pair.blue] {
            cluster.psql(
                DB,
                &format!(
                    "CREATE ROLE {APP} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};
                     GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP}"
                ),
            );
        }
        Both { pair, to_green }
    }

    /// Before cutover: green is the standby, where the application may not write, and the
    /// bridge blue -> green is set up (not running).
    fn before_cutover() -> Both {
        let both = Both::start();
        both.pair.green.psql(
            DB,
            &format!("ALTER ROLE {APP} IN DATABASE {DB} SET default_transaction_read_only = on"),
        );
        both.expect(both.to_green(&["setup"]), 0, "setup blue -> green");
        both
    }

    fn to_green(&self, args: &[&str]) -> std::process::Output {
        self.pair.command_with(&self.to_green, args).output().unwrap()
    }

    fn expect(&self, out: std::process::Output, code: i32, what: &str) -> String {
        assert_eq!(out.status.code(), Some(code), "{what}:\n{}", text(&out));
        text(&out)
    }

    /// `pgbridge run` blue -> green, once it streams.
    fn run_to_green(&self) -> Running {
        let running = self.pair.spawn_logged_with(&self.to_green, &["run"], &[]);
        wait_streaming(&self.pair.blue, "pgbridge_to_green", &running);
        running
    }

    /// `pgbridge run` green -> blue, once it streams.
    fn run_to_blue(&self) -> Running {
        let running = self.pair.run();
        wait_streaming(&self.pair.green, "pgbridge_to_blue", &running);
        running
    }

    /// Both directions caught up (each `wait` twice, so that an echo of an echo would be in).
    fn wait_both(&self) {
        for _ in 0..2 {
            self.expect(self.to_green(&["wait", "--timeout", "60s"]), 0, "wait blue -> green");
            self.expect(
                self.pair.pgbridge(&["wait", "--timeout", "60s"]),
                0,
                "wait green -> blue",
            );
        }
    }

    fn verify_both(&self) {
        self.expect(self.to_green(&["verify"]), 0, "verify blue -> green");
        self.expect(self.pair.pgbridge(&["verify"]), 0, "verify green -> blue");
    }
}

fn wait_streaming(source: &crate::support::Cluster, slot: &str, running: &Running) {
    wait_for(
        Duration::from_secs(60),
        || {
            source.psql(
                DB,
                &format!(
                    "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
                          WHERE s.slot_name = '{slot}' AND r.state = 'streaming'"
                ),
            ) == "1"
        },
        || format!("the bridge of slot {slot} is not streaming:\n{}", running.log()),
    );
}

/// Writes of one transaction whose rows still have that transaction's xmin: nothing rewrote
/// them since.
fn untouched_since(cluster: &crate::support::Cluster, xid: &str, ids: &str) -> String {
    cluster.psql(
        DB,
        &format!(
            "SELECT count(*) FILTER (WHERE xmin::text <> '{xid}') || '/' || count(*) FROM customers WHERE id {ids}"
        ),
    )
}

/// Both bridges set up and running; then one transaction of `n` rows on each side (ids 1..n on
/// blue, `green_from`+1.. on green), each carried once to the other side and never echoed back.
fn write_both_ways(both: &Both, n: u32, green_from: u32) -> (Running, Running) {
    both.pair.setup();
    both.expect(both.to_green(&["setup"]), 0, "setup blue -> green");
    let to_blue = both.run_to_blue();
    let to_green = both.run_to_green();
    let blue_xid = both.pair.blue.psql(
        DB,
        &format!(
            "BEGIN; INSERT INTO customers SELECT i, 'b' || i || '@x', 'from blue' FROM generate_series(1, {n}) i;
             SELECT txid_current(); COMMIT;"
        ),
    );
    let green_xid = both.pair.green.psql(
        DB,
        &format!(
            "BEGIN; INSERT INTO customers SELECT i, 'g' || i || '@x', 'from green', i
             FROM generate_series({}, {}) i; SELECT txid_current(); COMMIT;",
            green_from + 1,
            green_from + n
        ),
    );
    both.wait_both();
    // Each row was written once on its own side and once, through the mapping, on the other;
    // an echo would have rewritten the originals.
    let all = format!("0/{n}");
    assert_eq!(untouched_since(&both.pair.blue, &blue_xid, &format!("<= {n}")), all);
    assert_eq!(
        untouched_since(&both.pair.green, &green_xid, &format!("> {green_from}")),
        all
    );
    (to_blue, to_green)
}

#[test]
fn both_directions_at_once_carry_each_write_once_without_echo() {
    let both = Both::start();
    let (mut to_blue, mut to_green) = write_both_ways(&both, 200, 1000);
    both.verify_both();

    // Real changes on either side of rows from the other still travel, once.
    both.pair
        .green
        .psql(DB, "UPDATE customers SET note = 'changed on green' WHERE id <= 10");
    both.pair
        .blue
        .psql(DB, "DELETE FROM customers WHERE id BETWEEN 1001 AND 1005");
    both.pair
        .blue
        .psql(DB, "UPDATE accounts SET abalance = abalance + 1 WHERE aid <= 100");
    both.pair
        .green
        .psql(DB, "UPDATE accounts SET abalance = abalance + 1 WHERE aid > 900");
    both.wait_both();
    both.verify_both();
    assert_eq!(
        both.pair
            .blue
            .psql(DB, "SELECT count(*) FROM customers WHERE note = 'changed on green'"),
        "10"
    );
    assert_eq!(both.pair.green.psql(DB, "SELECT count(*) FROM customers"), "395");
    assert_eq!(
        both.pair.blue.psql(DB, "SELECT sum(abalance) FROM accounts"),
        "200",
        "an update travelled back and was applied twice"
    );

    // Each side records the position its bridge replays, under the bridge's origin.
    for (cluster, origin) in [
        (&both.pair.blue, "pgbridge_pgbridge_to_blue"),
        (&both.pair.green, "pgbridge_pgbridge_to_green"),
    ] {
        assert_eq!(
            cluster.psql(
                DB,
                &format!(
                    "SELECT remote_lsn > '0/0' FROM pg_replication_origin_status s JOIN pg_replication_origin o \
                     ON o.roident = s.local_id WHERE o.roname = '{origin}'"
                )
            ),
            "t"
        );
    }
    assert!(to_blue.alive() && to_green.alive());
    assert_eq!(to_blue.terminate(), 0);
    assert_eq!(to_green.terminate(), 0);
    let first = both.expect(both.pair.pgbridge(&["teardown"]), 0, "teardown");
    assert!(first.contains("publication") && first.contains("dropped"), "{first}");
    // Run again, it says what is already gone instead of claiming to drop it.
    let again = both.expect(both.pair.pgbridge(&["teardown"]), 0, "second teardown");
    for what in ["publication", "slot", "checkpoint"] {
        assert!(
            again.lines().any(|l| l.contains(what) && l.ends_with("absent")),
            "{what} should be reported absent:\n{again}"
        );
    }
    assert_eq!(
        both.pair.blue.psql(
            DB,
            "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgbridge_pgbridge_to_blue%'"
        ),
        "0"
    );
}

/// Large transactions both ways, which each source streams in progress: on PostgreSQL 15,
/// where green names no origin for those, the marker each bridge begins its transactions with
/// keeps them from echoing; on 16+ `origin 'none'` does.
#[test]
fn large_transactions_both_ways_stream_in_progress_without_echo() {
    let both = Both::start_streaming();
    let (to_blue, to_green) = write_both_ways(&both, 5000, 10000);
    both.verify_both();
    // Each bridge received the other side's own transaction in progress, and on 15 the echo
    // too (16+ filters it on the sending side).
    let expected = if both.pair.green.version_num() < 160000 { 2 } else { 1 };
    for (cluster, slot) in [
        (&both.pair.green, "pgbridge_to_blue"),
        (&both.pair.blue, "pgbridge_to_green"),
    ] {
        let streamed = cluster.psql(
            DB,
            &format!("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = '{slot}'"),
        );
        assert!(
            streamed.parse::<i64>().unwrap_or(0) >= expected,
            "slot {slot} streamed {streamed:?} transactions in progress"
        );
    }
    assert_eq!(to_blue.terminate(), 0);
    assert_eq!(to_green.terminate(), 0);
}

/// The application: inserts events one at a time on whichever side accepts writes, trying the
/// other side after any failure. Records when each insert committed, and where.
struct App {
    stop: Arc<AtomicBool>,
    commits: Arc<Mutex<Vec<(Instant, &'static str)>>>,
    duplicates: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    fn start(blue: String, green: String) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(Mutex::new(Vec::new()));
        let duplicates = Arc::new(Mutex::new(Vec::new()));
        let (s, c, d) = (stop.clone(), commits.clone(), duplicates.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sides = [("blue", blue), ("green", green)];
                let mut current = 0;
                let mut n: i64 = 0;
                while !s.load(Ordering::Relaxed) {
                    let (side, dsn) = &sides[current];
                    let Ok((client, conn)) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await else {
                        current = 1 - current;
                        continue;
                    };
                    tokio::spawn(conn);
                    while !s.load(Ordering::Relaxed) {
                        n += 1;
                        match client
                            .execute("INSERT INTO events (side, n) VALUES ($1, $2)", &[side, &n])
                            .await
                        {
                            Ok(_) => c.lock().unwrap().push((Instant::now(), *side)),
                            Err(e) => {
                                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                                    d.lock().unwrap().push(format!("{side}: {e}"));
                                }
                                break;
                            }
                        }
                    }
                    current = 1 - current;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        });
        App {
            stop,
            commits,
            duplicates,
            thread: Some(thread),
        }
    }

    fn commits_on(&self, side: &str) -> usize {
        self.commits.lock().unwrap().iter().filter(|(_, s)| *s == side).count()
    }

    /// Waits until `n` more inserts committed on `side`.
    fn wait_commits(&self, side: &str, n: usize) {
        let start = self.commits_on(side);
        wait_for(
            Duration::from_secs(60),
            || self.commits_on(side) >= start + n,
            || format!("the application did not commit {n} inserts on {side}"),
        );
    }

    /// The longest time between two commits on different sides: the write-unavailability
    /// window as the application saw it, per switch.
    fn gaps(&self) -> Vec<Duration> {
        let commits = self.commits.lock().unwrap();
        commits
            .windows(2)
            .filter(|w| w[0].1 != w[1].1)
            .map(|w| w[1].0 - w[0].0)
            .collect()
    }

    fn stop(mut self) -> (usize, Vec<String>, Vec<Duration>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let total = self.commits.lock().unwrap().len();
        let gaps = self.gaps();
        (total, self.duplicates.lock().unwrap().clone(), gaps)
    }
}

/// pgbench as the application on `dsn`'s server, updating accounts until stopped (or until
/// its sessions are terminated by the fence).
fn pgbench(cluster: &crate::support::Cluster, dir: &std::path::Path) -> std::process::Child {
    let script = dir.join("load.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 1000)\nUPDATE accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    )
    .unwrap();
    std::process::Command::new(pg_client_bin_dir().join("pgbench"))
        .args(["-n", "-c", "4", "-T", "600", "-h", "127.0.0.1", "-U", APP, "-f"])
        .arg(&script)
        .arg("-p")
        .arg(cluster.port().to_string())
        .arg(DB)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbench")
}

fn reported_window(out: &str) -> f64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("write_unavailable_seconds="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no write_unavailable_seconds in:\n{out}"))
}

#[test]
fn switchover_under_load_and_rollback_lose_nothing() {
    let both = Both::before_cutover();
    let to_green = both.run_to_green();
    let app = App::start(
        both.pair.blue.dsn_as(APP, None, DB),
        both.pair.green.dsn_as(APP, None, DB),
    );
    let mut load = pgbench(&both.pair.blue, both.pair.dir.path());
    app.wait_commits("blue", 200);

    // Cutover: writes move to green, and the bridge green -> blue is set up on the way.
    let out = both.expect(
        both.to_green(&["switchover", "--reverse", "pgbridge.toml", "--app-role", APP]),
        0,
        "cutover",
    );
    let cutover = reported_window(&out);
    for step in [
        "1/5 fenced app",
        "2/5",
        "3/5 sequences",
        "4/5 reverse bridge",
        "5/5 un-fenced app",
    ] {
        assert!(out.contains(step), "no {step:?} in:\n{out}");
    }
    let to_blue = both.run_to_blue();
    let _ = load.kill();
    let _ = load.wait();
    let mut load = pgbench(&both.pair.green, both.pair.dir.path());
    app.wait_commits("green", 200);
    assert_eq!(
        both.pair
            .blue
            .psql(DB, &format!("SELECT has_table_privilege('{APP}', 'events', 'INSERT')")),
        "t"
    );

    // Rollback: writes move back to blue with nothing lost.
    let out = both.expect(
        both.pair
            .pgbridge(&["switchover", "--reverse", "to_green.toml", "--app-role", APP]),
        0,
        "rollback",
    );
    let rollback = reported_window(&out);
    app.wait_commits("blue", 200);
    let _ = load.kill();
    let _ = load.wait();
    let (total, duplicates, gaps) = app.stop();
    assert!(duplicates.is_empty(), "inserts met ids already used: {duplicates:?}");
    both.wait_both();
    both.verify_both();
    for cluster in [&both.pair.blue, &both.pair.green] {
        assert_eq!(cluster.psql(DB, "SELECT count(*) FROM events"), total.to_string());
    }
    eprintln!(
        "write-unavailability: reported {cutover:.3}s (cutover) and {rollback:.3}s (rollback); seen by the \
         application {:?}; {total} inserts",
        gaps
    );
    assert_eq!(gaps.len(), 2, "the application switched sides {} times", gaps.len());
    drop((to_green, to_blue));
}

#[test]
fn switchover_that_cannot_finish_undoes_every_step() {
    let both = Both::before_cutover();
    // The reverse bridge's publication exists (an owner created it); switchover creates its
    // slot and checkpoint, and must take back only those.
    both.pair
        .green
        .psql(DB, "CREATE PUBLICATION pgbridge FOR TABLE accounts, customers, events");
    let _to_green = both.run_to_green();
    // Green holds a lock the bridge needs (without a transaction id, which creating a slot
    // would wait for), so blue's last write cannot reach it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (locker, conn) = rt
        .block_on(tokio_postgres::connect(&both.pair.green.dsn(DB), tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    rt.block_on(locker.batch_execute("BEGIN; LOCK TABLE accounts IN SHARE MODE"))
        .unwrap();
    both.pair
        .blue
        .psql(DB, "UPDATE accounts SET abalance = 7 WHERE aid = 1");

    let out = both.expect(
        both.to_green(&[
            "switchover",
            "--reverse",
            "pgbridge.toml",
            "--app-role",
            APP,
            "--timeout",
            "2s",
        ]),
        1,
        "switchover while green is locked",
    );
    for words in [
        "did not catch up",
        "un-fenced app",
        "reverse bridge set up by this run torn down",
        "as it was before",
    ] {
        assert!(out.contains(words), "no {words:?} in:\n{out}");
    }
    // Blue accepts the application's writes again, green still does not, and the reverse
    // bridge is gone.
    assert_eq!(
        both.pair.blue.psql(
            DB,
            "SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'app'::regrole"
        ),
        "0"
    );
    assert_eq!(
        both.pair.green.psql(
            DB,
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = 'app'::regrole"
        ),
        "default_transaction_read_only=on"
    );
    assert_eq!(
        both.pair.green.psql(
            DB,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgbridge_to_blue'"
        ),
        "0"
    );
    assert_eq!(
        both.pair
            .green
            .psql(DB, "SELECT count(*) FROM pg_publication WHERE pubname = 'pgbridge'"),
        "1",
        "the publication was there before"
    );
    assert_eq!(
        both.pair.blue.psql(
            DB,
            "SELECT count(*) FROM pgbridge.checkpoint WHERE slot_name = 'pgbridge_to_blue'"
        ),
        "0"
    );
    let app_blue = both.pair.blue.dsn_as(APP, None, DB);
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&app_blue, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .execute("INSERT INTO events (side, n) VALUES ('blue', 1)", &[])
            .await
            .expect("blue takes writes again");
    });
    rt.block_on(locker.batch_execute("COMMIT")).unwrap();
    both.expect(both.to_green(&["wait", "--timeout", "60s"]), 0, "wait after the lock");
    both.expect(both.to_green(&["verify"]), 0, "verify");

    // A source whose catalog drifted from the accepted plan: the target may lack changes, so
    // switchover refuses before it fences anything.
    both.pair.blue.psql(
        DB,
        "ALTER PUBLICATION pgbridge_to_green SET (publish = 'insert, update')",
    );
    let out = both.expect(
        both.to_green(&["switchover", "--reverse", "pgbridge.toml", "--app-role", APP]),
        2,
        "switchover after the plan drifted",
    );
    assert!(
        out.contains("no longer matches the plan") && out.contains("nothing was fenced"),
        "{out}"
    );
    assert_eq!(
        both.pair.blue.psql(
            DB,
            "SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'app'::regrole"
        ),
        "0"
    );
}
