//! Transactions green streams while still in progress (protocol 2, `streaming 'on'`): green runs
//! with `logical_decoding_work_mem = 64kB`, so every transaction of more than a few hundred rows
//! arrives in blocks, interleaved with other transactions, before its commit or abort.
//!
//! Several green sessions are driven step by step from one thread, so the interleaving is
//! exactly the seeded schedule; keys are partitioned between sessions so no session ever waits
//! for another on green.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::support::bridge::{wait_for, Pair, DB, SLOT};
use crate::support::{Cluster, ClusterOptions};

const SCHEMA: &str = "
CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
CREATE TABLE small (id bigint PRIMARY KEY, v text);
CREATE TABLE hist (k bigint, v text);
";
const TABLES: [&str; 3] = ["big", "small", "hist"];
/// Rows committed before streaming starts; session `s` may change those with `id % 4 == s`,
/// and also the rows of `small` with `id % 4 == s`, which the autocommit session keeps
/// inserting: so a streamed block often changes rows that whole transactions received just
/// before it inserted.
const BASE_ROWS: i64 = 6_000;

/// A pair whose green streams in-progress transactions past 64 kB, with [`SCHEMA`] and
/// [`BASE_ROWS`] rows in `big`.
fn bed() -> Pair {
    let green = ClusterOptions {
        settings: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..Default::default()
    };
    let pair = Pair::start_with(green, ClusterOptions::default());
    // On PostgreSQL 15 skipping transactions by origin means receiving them whole (see
    // pipeline::for_server); these tests are about streaming them in progress.
    pair.set_green_option("origin", "\"any\"");
    pair.both(SCHEMA);
    pair.green.psql(DB, "ALTER TABLE hist REPLICA IDENTITY FULL");
    pair.setup();
    pair.green.psql(
        DB,
        &format!("INSERT INTO big SELECT i, repeat(md5(i::text), 3), 0 FROM generate_series(1, {BASE_ROWS}) i"),
    );
    pair
}

/// Open sessions (on green unless said otherwise), each driven statement by statement.
struct Sessions {
    rt: Runtime,
    clients: Vec<Client>,
}

impl Sessions {
    fn open(pair: &Pair, n: usize) -> Sessions {
        Sessions::open_on(&pair.green, n)
    }

    fn open_on(cluster: &Cluster, n: usize) -> Sessions {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dsn = cluster.dsn(DB);
        let clients = (0..n)
            .map(|_| {
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await.expect("connect");
                    tokio::spawn(conn);
                    client
                })
            })
            .collect();
        Sessions { rt, clients }
    }

    fn run(&self, session: usize, sql: &str) {
        self.rt
            .block_on(self.clients[session].batch_execute(sql))
            .unwrap_or_else(|e| panic!("session {session}: {sql}: {e}"));
    }
}

/// How many transactions green streamed in progress through pgbridge's slot.
fn streamed_transactions(pair: &Pair) -> i64 {
    pair.green
        .psql(
            DB,
            &format!("SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = '{SLOT}'"),
        )
        .parse()
        .unwrap()
}

fn assert_all_same(pair: &Pair) {
    for table in TABLES {
        pair.assert_same(table);
    }
}

/// One session's random large transaction: inserts of new keys, updates and deletes of its own
/// rows, savepoints released or rolled back (nested), rows in the keyless table; it ends in a
/// commit or (one time in four) an abort.
struct Script {
    session: usize,
    next_id: i64,
    savepoints: Vec<String>,
    steps: usize,
    finished: bool,
}

impl Script {
    fn new(session: usize, round: usize) -> Script {
        Script {
            session,
            next_id: 1_000_000 * (session as i64 + 1) + 100_000 * round as i64,
            savepoints: Vec::new(),
            steps: 0,
            finished: false,
        }
    }

    /// The next statement of this session, or `None` once it has ended.
    fn step(&mut self, rng: &mut StdRng) -> Option<String> {
        if self.finished {
            return None;
        }
        self.steps += 1;
        let s = self.session as i64;
        if self.steps == 1 {
            return Some("BEGIN".into());
        }
        if self.steps > 12 && rng.gen_ratio(1, 4) {
            self.finished = true;
            return Some(if rng.gen_ratio(1, 4) { "ROLLBACK" } else { "COMMIT" }.into());
        }
        Some(match rng.gen_range(0..11) {
            9 => format!("UPDATE small SET v = v || 's{s}' WHERE id % 4 = {s}"),
            10 => format!(
                "DELETE FROM small WHERE id % 4 = {s} AND id % 3 = {}",
                rng.gen_range(0..3)
            ),
            0..=2 => {
                let (from, n) = (self.next_id, rng.gen_range(200..1500));
                self.next_id += n;
                format!(
                    "INSERT INTO big SELECT i, repeat(md5(i::text), 3), {s} FROM generate_series({from}, {}) i",
                    from + n - 1
                )
            }
            3 => format!(
                "UPDATE big SET n = n + 1, v = v || 'u' WHERE id % 4 = {s} AND id % {} = 0",
                rng.gen_range(2..9)
            ),
            4 => format!(
                "DELETE FROM big WHERE id % 4 = {s} AND id % {} = 1",
                rng.gen_range(5..40)
            ),
            5 => format!(
                "INSERT INTO hist SELECT {s}, md5(i::text) FROM generate_series(1, {}) i",
                rng.gen_range(1..400)
            ),
            6 => format!("UPDATE hist SET v = v || 'h' WHERE k = {s} AND v < '4'"),
            7 => {
                let name = format!("sp{}", self.steps);
                self.savepoints.push(name.clone());
                format!("SAVEPOINT {name}")
            }
            _ if self.savepoints.is_empty() => "SELECT 1".into(),
            _ => {
                let at = rng.gen_range(0..self.savepoints.len());
                let name = self.savepoints[at].clone();
                if rng.gen_bool(0.5) {
                    // The savepoint stays after ROLLBACK TO; those set after it are gone.
                    self.savepoints.truncate(at + 1);
                    format!("ROLLBACK TO SAVEPOINT {name}")
                } else {
                    self.savepoints.truncate(at);
                    format!("RELEASE SAVEPOINT {name}")
                }
            }
        })
    }
}

/// Runs `sessions` random large transactions at once, interleaved step by step with small
/// autocommit transactions on the last session, and returns when all have ended.
fn interleave(green: &Sessions, seed: u64, round: usize, sessions: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scripts: Vec<Script> = (0..sessions).map(|s| Script::new(s, round)).collect();
    let small = green.clients.len() - 1;
    let mut small_id = 1_000_000 * round as i64;
    while scripts.iter().any(|s| !s.finished) {
        let pick = rng.gen_range(0..scripts.len() + 1);
        if pick == scripts.len() {
            small_id += 1;
            green.run(
                small,
                &format!(
                    "INSERT INTO small VALUES ({small_id}, 'x'); UPDATE big SET n = n + 10 WHERE id = {}",
                    rng.gen_range(0..BASE_ROWS / 4) * 4 + 3
                ),
            );
            continue;
        }
        if let Some(sql) = scripts[pick].step(&mut rng) {
            green.run(pick, &sql);
        }
    }
}

/// Random large transactions, several in progress at once and interleaved with small ones,
/// with nested savepoints rolled back and released and some top-level aborts: blue ends equal
/// to green. Green must have streamed them in progress for the test to mean anything.
#[test]
fn in_progress_transactions_interleaved_with_savepoints_converge() {
    let pair = bed();
    let bridge = pair.run();
    let green = Sessions::open(&pair, 4);
    for (round, seed) in [11u64, 12, 13].into_iter().enumerate() {
        interleave(&green, seed, round, 3);
        pair.wait_caught_up(&bridge);
        assert_all_same(&pair);
    }
    let streamed = streamed_transactions(&pair);
    assert!(streamed >= 6, "green streamed only {streamed} transactions in progress");
    let log = bridge.log();
    assert!(!log.contains("sent whole"), "no fallback expected:\n{log}");
    assert_eq!(bridge.terminate(), 0);
    pair.assert_caught_up_and_verified(&pair.run(), "after a restart");
}

/// The same schedule with in-progress streaming switched off converges too: both paths give
/// blue the same rows (each is compared with green).
#[test]
fn in_progress_schedule_converges_without_streaming() {
    let pair = bed();
    let bridge = pair.run_with_env(&[("PGBRIDGE_STREAMING", "off")]);
    let green = Sessions::open(&pair, 4);
    interleave(&green, 11, 0, 3);
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(streamed_transactions(&pair), 0, "streaming was off");
}

/// Blue never shows part of a transaction: while one is in progress on green (and streamed),
/// its rows are invisible on blue. SIGKILL of pgbridge then drops blue's open transaction;
/// after a restart green streams it again from its start, and it commits exactly once.
#[test]
fn in_progress_transaction_survives_sigkill_and_is_never_half_visible() {
    let pair = bed();
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    let green = Sessions::open(&pair, 1);
    green.run(
        0,
        "BEGIN; INSERT INTO big SELECT i, repeat(md5(i::text), 3), 7 FROM generate_series(100000, 111999) i",
    );
    // A lane holds the transaction open on blue, with rows written (batches of 5,000).
    let lane_open = || {
        pair.blue.psql(
            DB,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbridge' \
             AND state = 'idle in transaction' AND backend_xid IS NOT NULL",
        ) != "0"
    };
    wait_for(Duration::from_secs(60), lane_open, || {
        format!("no blue transaction holds the streamed rows\n{}", bridge.log())
    });
    assert_eq!(
        pair.blue.psql(DB, "SELECT count(*) FROM big WHERE id >= 100000"),
        "0",
        "rows of an uncommitted green transaction are visible on blue"
    );
    bridge.kill();
    wait_for(
        Duration::from_secs(30),
        || !lane_open(),
        || "blue kept the killed lane".into(),
    );
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM big WHERE id >= 100000"), "0");

    green.run(
        0,
        "UPDATE big SET n = n + 1 WHERE id % 3 = 0; \
         INSERT INTO big SELECT i, 'late', 7 FROM generate_series(112000, 112999) i; COMMIT",
    );
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(
        pair.blue.psql(DB, "SELECT count(*) FROM big WHERE id >= 100000"),
        "13000"
    );
    assert!(
        streamed_transactions(&pair) >= 2,
        "the transaction was not streamed in progress"
    );
}

/// A row blue rejects inside a streamed transaction: the session falls back to receiving that
/// transaction whole, where the ordinary path names the table, constraint and LSN and stops
/// with exit 2; nothing of it is on blue and neither the checkpoint nor the slot has passed it.
#[test]
fn in_progress_rejected_row_is_reported_by_the_ordinary_path() {
    let pair = bed();
    pair.blue
        .psql(DB, "ALTER TABLE big ADD CONSTRAINT n_small CHECK (n < 1000)");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO big SELECT i, repeat(md5(i::text), 3), 0 FROM generate_series(200000, 203999) i; \
         UPDATE big SET n = 5000 WHERE id = 203000; COMMIT;",
    );
    let after_commit = pair.green.psql(DB, "SELECT pg_current_wal_lsn()");
    let (code, log) = bridge.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("sent whole"),
        "the streamed attempt should fall back:\n{log}"
    );
    let error = log.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(
        error.contains("public.big") && error.contains("n_small") && error.contains("0/"),
        "the error names table, constraint and LSN: {error}\n{log}"
    );
    // Idle positions may move both while green decodes the transaction, never past its commit.
    for (what, lsn) in [("checkpoint", pair.checkpoint()), ("slot", pair.confirmed_flush())] {
        let before = pair
            .green
            .psql(DB, &format!("SELECT '{lsn}'::pg_lsn < '{after_commit}'::pg_lsn"));
        assert_eq!(
            before, "t",
            "the {what} ({lsn}) passed the rejected transaction ({after_commit})"
        );
    }
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM big WHERE id >= 200000"), "0");

    pair.blue.psql(DB, "ALTER TABLE big DROP CONSTRAINT n_small");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
}

/// More large transactions in progress at once than pgbridge opens blue sessions for: it falls
/// back to receiving them whole for one session, and blue still ends equal to green.
#[test]
fn in_progress_more_transactions_than_lanes_fall_back() {
    let pair = bed();
    let bridge = pair.run();
    let green = Sessions::open(&pair, 6);
    for s in 0..6 {
        green.run(s, "BEGIN");
    }
    for round in 0..3 {
        for s in 0..6i64 {
            let from = 300_000 + s * 10_000 + round * 1_000;
            green.run(
                s as usize,
                &format!(
                    "INSERT INTO big SELECT i, repeat(md5(i::text), 3), {s} FROM generate_series({from}, {}) i",
                    from + 799
                ),
            );
        }
    }
    for s in 0..6 {
        green.run(s, if s == 2 { "ROLLBACK" } else { "COMMIT" });
    }
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(
        pair.blue.psql(DB, "SELECT count(*) FROM big WHERE id >= 300000"),
        (5 * 3 * 800).to_string()
    );
    let log = bridge.log();
    assert!(log.contains("sent whole"), "expected a fallback:\n{log}");
    assert_eq!(bridge.terminate(), 0);
}

/// A streamed block that changes the key of a row a whole transaction received just before it
/// inserted, while blue is still busy with that whole transaction (an application holds a row
/// lock it needs): the block waits for it, so the row moves on blue as on green. (A key change
/// goes out at once, not batched; applied before the insert it would leave both keys.)
#[test]
fn in_progress_block_waits_for_whole_transactions_received_before_it() {
    let pair = bed();
    let bridge = pair.run();
    // Both tables described already, so the whole transaction below brings no Relation
    // message (planning one waits for blue).
    pair.green.psql(
        DB,
        "INSERT INTO small VALUES (1, 'warm'); UPDATE big SET n = n WHERE id = 4",
    );
    pair.wait_caught_up(&bridge);
    let app = Sessions::open_on(&pair.blue, 1);
    app.run(0, "BEGIN; SELECT * FROM big WHERE id = 8 FOR UPDATE");
    pair.green.psql(
        DB,
        "BEGIN; UPDATE big SET n = n + 1 WHERE id = 8; INSERT INTO small VALUES (77, 'doomed'); COMMIT",
    );
    wait_for(
        Duration::from_secs(60),
        || {
            pair.blue.psql(
                DB,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbridge' AND wait_event_type = 'Lock'",
            ) != "0"
        },
        || format!("pgbridge never waited for the application's lock\n{}", bridge.log()),
    );
    let streamed = streamed_transactions(&pair);
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO big SELECT i, repeat(md5(i::text), 3), 0 FROM generate_series(400000, 405999) i; \
         UPDATE small SET id = 78 WHERE id = 77; \
         INSERT INTO big SELECT i, 'more', 0 FROM generate_series(406000, 411999) i; COMMIT",
    );
    wait_for(
        Duration::from_secs(60),
        || streamed_transactions(&pair) > streamed,
        || "green did not stream the transaction in progress".into(),
    );
    app.run(0, "COMMIT");
    pair.wait_caught_up(&bridge);
    assert_all_same(&pair);
    assert_eq!(
        pair.blue
            .psql(DB, "SELECT string_agg(id::text, ',' ORDER BY id) FROM small"),
        "1,78"
    );
}
