//! Crashes, restarts and errors: CORRECTNESS.md cases 8-12, repeated SIGKILL under load, and a
//! 200 MB transaction in bounded memory.

use std::time::Duration;

use rand::Rng;

use crate::support::bridge::{rows, wait_for, Pair, DB, SLOT};
use crate::workload;

fn lsn_ge(pair: &Pair, a: &str, b: &str) -> bool {
    pair.green.psql(DB, &format!("SELECT '{a}'::pg_lsn >= '{b}'::pg_lsn")) == "t"
}

fn crash_at(failpoint: &str) -> Pair {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE log (a int, b text);");
    pair.green.psql(DB, "ALTER TABLE log REPLICA IDENTITY FULL");
    pair.setup();
    let bridge = pair.run_with_env(&[("PGBRIDGE_FAILPOINT", failpoint)]);
    pair.green.psql(
        DB,
        "BEGIN; INSERT INTO t VALUES (1, 'one'); INSERT INTO log VALUES (1, 'once'); COMMIT;",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_ne!(code, 0, "the failpoint must end the process:\n{log}");
    let name = failpoint.split(':').next().unwrap();
    assert!(log.contains(&format!("failpoint {name} reached")), "{log}");
    pair
}

/// Case 8: killed after the blue commit but before the feedback reached green, so the slot
/// still holds the transaction. The restart asks green to start at blue's checkpoint (green
/// starts at the later of that and confirmed_flush) and anything at or below the checkpoint
/// that still arrives is skipped: the transaction is on blue exactly once.
#[test]
fn crash_after_blue_commit_skips_the_resent_transaction() {
    let pair = crash_at("after_blue_commit:1");
    let checkpoint = pair.checkpoint();
    let confirmed = pair.confirmed_flush();
    assert!(
        !lsn_ge(&pair, &confirmed, &checkpoint),
        "feedback must not have reached green: confirmed {confirmed}, checkpoint {checkpoint}"
    );
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM log"), "1");

    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO log VALUES (2, 'after')");
    pair.wait_caught_up(&bridge);
    assert!(
        bridge.log().contains(&format!("from={checkpoint}")),
        "must resume from blue checkpoint {checkpoint} (confirmed {confirmed}):\n{}",
        bridge.log()
    );
    assert_eq!(
        pair.blue.psql(DB, "SELECT string_agg(a || b, ',' ORDER BY a) FROM log"),
        "1once,2after"
    );
    pair.assert_same("t");
}

/// Case 9: killed before the blue commit: nothing of the transaction is on blue, and after a
/// restart it is applied exactly once.
#[test]
fn crash_before_blue_commit_applies_once_after_restart() {
    let pair = crash_at("before_blue_commit:1");
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM log"), "0");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    assert_eq!(pair.blue.psql(DB, "SELECT string_agg(a || b, ',') FROM log"), "1once");
    pair.assert_same("t");
}

/// SIGKILL at random moments under load, five times, each followed by a restart: nothing lost
/// or doubled (the keyless `events` table would show a doubled insert).
#[test]
fn sigkill_under_load_loses_and_doubles_nothing() {
    let pair = std::sync::Arc::new(Pair::start());
    workload::create(&pair);
    pair.setup();
    let writer = {
        let pair = pair.clone();
        std::thread::spawn(move || workload::run(&pair, 7, 1500))
    };
    let mut rng = rand::thread_rng();
    for round in 0..5 {
        let bridge = pair.run();
        let before = pair.checkpoint();
        // Let it apply something, then kill it at a random moment.
        wait_for(
            Duration::from_secs(60),
            || pair.checkpoint() != before || writer.is_finished(),
            || format!("round {round}: no progress\n{}", bridge.log()),
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        bridge.kill();
    }
    writer.join().expect("workload");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    workload::assert_converged(&pair);
}

/// Case 10: `pg_ctl stop -m immediate` of green and of blue while streaming: pgbridge
/// reconnects with backoff and converges.
#[test]
fn immediate_restarts_of_green_and_blue() {
    let pair = std::sync::Arc::new(Pair::start());
    workload::create(&pair);
    pair.setup();
    let bridge = pair.run();

    // Blue crashes while green keeps writing.
    let writer = {
        let pair = pair.clone();
        std::thread::spawn(move || workload::run(&pair, 11, 600))
    };
    let start = pair.checkpoint();
    wait_for(Duration::from_secs(60), || pair.checkpoint() != start, || bridge.log());
    pair.blue.restart_immediate();
    writer.join().expect("workload");

    // Green crashes right after a burst.
    workload::run(&pair, 12, 300);
    pair.green.restart_immediate();
    workload::run(&pair, 13, 100);

    pair.wait_caught_up(&bridge);
    workload::assert_converged(&pair);
    let log = bridge.log();
    assert!(log.contains("reconnecting from the checkpoint"), "{log}");
    assert_eq!(bridge.terminate(), 0);
}

/// Case 11: blue rejects a row: pgbridge stops with exit 2 naming table and LSN, and neither
/// the checkpoint nor the slot moves past the last good transaction. After the fix it resumes.
#[test]
fn apply_error_keeps_slot_and_checkpoint() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue
        .psql(DB, "ALTER TABLE t ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'good')");
    pair.wait_caught_up(&bridge);
    let good = pair.checkpoint();
    pair.green.psql(
        DB,
        "INSERT INTO t VALUES (2, 'bad'); INSERT INTO t VALUES (3, 'later');",
    );
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("public.t") && log.contains("no_bad"),
        "the error names table and constraint:\n{log}"
    );
    assert_eq!(pair.checkpoint(), good);
    assert!(
        lsn_ge(&pair, &good, &pair.confirmed_flush()),
        "the slot must not pass the last good transaction"
    );

    pair.blue.psql(DB, "ALTER TABLE t DROP CONSTRAINT no_bad");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
}

/// Case 12: WAL written only to an unpublished table, while published tables are idle: the
/// keepalive positions move the checkpoint, the slot's confirmed and restart LSNs, so green does
/// not retain the WAL. Size with PGBRIDGE_TEST_CHURN_MB (default 2048, the full case).
#[test]
fn idle_publication_does_not_retain_wal() {
    let churn_mb: u64 = std::env::var("PGBRIDGE_TEST_CHURN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let pair = Pair::start();
    pair.both("CREATE TABLE published (id int PRIMARY KEY)");
    pair.setup();
    pair.green.psql(DB, "CREATE TABLE churn (id int, pad text)");
    let bridge = pair.run();
    let start = pair.green.psql(
        DB,
        &format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
    );
    // Churn in 100,000-row batches until the WAL written since the start reaches the target.
    let written = format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint / 1048576");
    while pair.green.psql(DB, &written).parse::<u64>().unwrap() < churn_mb {
        pair.green.psql(
            DB,
            "INSERT INTO churn SELECT g, repeat('x', 500) FROM generate_series(1, 100000) g",
        );
        pair.green.psql(DB, "TRUNCATE churn");
    }
    let end = pair.green.psql(DB, "SELECT pg_current_wal_lsn()");
    // The slot has let go of the churn once its restart_lsn is within a WAL segment or so of
    // where the churn ended (restart_lsn moves at running-xacts records, which checkpoints log).
    let released = format!(
        "SELECT confirmed_flush_lsn >= '{end}' AND restart_lsn > '{start}' \
                AND pg_wal_lsn_diff('{end}', restart_lsn) < 32 * 1024 * 1024 \
         FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    );
    let mut polls = 0;
    wait_for(
        Duration::from_secs(120),
        || {
            polls += 1;
            if polls % 25 == 0 {
                pair.green.psql(DB, "CHECKPOINT");
            }
            pair.green.psql(DB, &released) == "t"
        },
        || {
            let slot = pair.green.psql(
                DB,
                &format!(
                    "SELECT confirmed_flush_lsn, restart_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
                ),
            );
            format!("slot did not let go of the WAL up to {end}: {slot}\n{}", bridge.log())
        },
    );
    assert!(
        lsn_ge(&pair, &pair.checkpoint(), &end),
        "blue's checkpoint follows the idle position"
    );
    let churned = pair.green.psql(
        DB,
        &format!("SELECT pg_wal_lsn_diff('{end}', '{start}')::bigint / 1048576"),
    );
    eprintln!("{churned} MB of WAL on an unpublished table; the slot released it while published tables were idle");
}

/// A 200 MB transaction is applied while pgbridge's resident memory stays under 200 MB.
#[test]
fn large_transaction_in_bounded_memory() {
    let pair = Pair::start();
    pair.both("CREATE TABLE big (id int PRIMARY KEY, pad text)");
    pair.setup();
    let bridge = pair.run();
    // 400,000 rows of 512 characters: about 200 MB of row data in one transaction.
    pair.green.psql(
        DB,
        "INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 400000) g",
    );
    pair.wait_caught_up(&bridge);
    let peak_kb = bridge.peak_rss_kb();
    eprintln!(
        "pgbridge peak RSS while applying a 200 MB transaction: {} MB",
        peak_kb / 1024
    );
    assert_eq!(
        pair.blue.psql(DB, "SELECT count(*), sum(length(pad)) FROM big"),
        "400000|204800000"
    );
    assert!(peak_kb > 0 && peak_kb < 200 * 1024, "peak RSS {peak_kb} kB");
    assert_eq!(bridge.terminate(), 0);
}

/// Case 13: blue blocks the apply for longer than green's wal_sender_timeout, with more
/// changes waiting than the reader's channel holds: the feedback task keeps the stream alive
/// (same walsender before and after, no reconnect) and nothing is lost.
#[test]
fn blocked_blue_does_not_time_out_the_stream() {
    let green = crate::support::ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "2s".into())],
        ..Default::default()
    };
    let pair = std::sync::Arc::new(Pair::start_with(green, Default::default()));
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t VALUES (0, 'first')");
    pair.wait_caught_up(&bridge);
    let walsender = |p: &Pair| {
        p.green.psql(
            DB,
            "SELECT pid FROM pg_stat_replication WHERE application_name = 'pgbridge'",
        )
    };
    let before = walsender(&pair);
    assert!(!before.is_empty(), "pgbridge should be streaming");

    let locker = {
        let pair = pair.clone();
        std::thread::spawn(move || {
            pair.blue.psql(
                DB,
                "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;",
            )
        })
    };
    wait_for(
        Duration::from_secs(10),
        || {
            pair.blue.psql(
                DB,
                "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 't'::regclass",
            ) == "1"
        },
        || "lock not taken".into(),
    );
    // 20,000 single-row transactions: far more messages than the reader's channel holds.
    pair.green.psql(
        DB,
        "DO $$ BEGIN FOR i IN 1..20000 LOOP INSERT INTO t VALUES (i, 'row ' || i); COMMIT; END LOOP; END $$",
    );
    locker.join().expect("locker");
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
    assert_eq!(
        walsender(&pair),
        before,
        "the replication connection must have survived:\n{}",
        bridge.log()
    );
    assert!(!bridge.log().contains("reconnecting"), "{}", bridge.log());
}

/// Blue transactions are pipelined: the next group is sent before the previous COMMIT has
/// returned. When one of them fails, none after it may commit (the checkpoint update is
/// guarded), so blue never holds a later green transaction without an earlier one.
#[test]
fn nothing_commits_after_a_rejected_pipelined_group() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue
        .psql(DB, "ALTER TABLE t ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    // One green transaction per blue transaction, so the backlog becomes many groups.
    pair.write_config("[apply]\nmax_batch_rows = 1");
    pair.setup();
    pair.green.psql(DB, "INSERT INTO t VALUES (1, 'good')");
    pair.green.psql(DB, "INSERT INTO t VALUES (2, 'bad')");
    pair.green.psql(
        DB,
        "DO $$ BEGIN FOR i IN 3..300 LOOP INSERT INTO t VALUES (i, 'later'); COMMIT; END LOOP; END $$",
    );
    let bridge = pair.run();
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("no_bad"), "the error names the constraint:\n{log}");
    assert_eq!(rows(&pair.blue, "t"), vec!["(1,good)".to_string()], "{log}");
    assert!(
        lsn_ge(&pair, &pair.checkpoint(), &pair.confirmed_flush()),
        "the slot must not pass blue's checkpoint"
    );

    pair.blue.psql(DB, "ALTER TABLE t DROP CONSTRAINT no_bad");
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    pair.assert_same("t");
}
