//! The fault suite: under continuous writes on green, through a mapping (a renamed column, a
//! computed column, a keyless history table that shows any doubled or lost insert), each kind
//! of fault is injected repeatedly; afterwards `pgbridge wait` and `pgbridge verify` must find
//! blue identical to green through the mapping.
//!
//! `PGBRIDGE_SOAK=N` multiplies every repetition count by N for a longer soak. Each test prints
//! what it injected (`faults: ...` lines, shown with `--nocapture`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::Rng;

use crate::support::bridge::{text, wait_for, Pair, Running, DB, SLOT};
use crate::support::proxy::Proxy;
use crate::support::ClusterOptions;

const GREEN_SCHEMA: &str = "
CREATE TABLE acct (id int PRIMARY KEY, holder text NOT NULL, cents bigint NOT NULL,
                   touched timestamptz NOT NULL DEFAULT now());
CREATE TABLE hist (acct int NOT NULL, delta bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
ALTER TABLE hist REPLICA IDENTITY FULL;
INSERT INTO acct (id, holder, cents) SELECT g, 'holder ' || g, 0 FROM generate_series(1, 200) g;
";

const BLUE_SCHEMA: &str = "
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL,
                   touched timestamptz NOT NULL);
CREATE TABLE hist (acct int NOT NULL, delta bigint NOT NULL, at timestamptz NOT NULL);
";

const ACCT_MAPPING: &str = r#"
target = "public.acct"
[columns]
owner = { from = "holder" }
balance = { expr = "cents / 100.0" }
"#;

/// Ten transactions per call: an upsert of a random account, a history row, now and then a
/// delete.
const LOAD: &str = "DO $$ DECLARE a int; d int; BEGIN FOR i IN 1..10 LOOP
  a := 1 + floor(random() * 250)::int; d := floor(random() * 1000)::int - 500;
  INSERT INTO acct (id, holder, cents) VALUES (a, 'holder ' || a, d)
    ON CONFLICT (id) DO UPDATE SET cents = acct.cents + d, touched = now();
  INSERT INTO hist (acct, delta) VALUES (a, d);
  IF random() < 0.05 THEN DELETE FROM acct WHERE id = 1 + floor(random() * 250)::int; END IF;
  COMMIT;
END LOOP; END $$";

fn soak() -> usize {
    std::env::var("PGBRIDGE_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Writes on green from a thread until stopped; errors (green restarting) are retried.
struct Load {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(pair: &Arc<Pair>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let thread = {
            let (pair, stop, batches) = (pair.clone(), stop.clone(), batches.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match pair.green.try_psql(DB, LOAD) {
                        Ok(_) => {
                            batches.fetch_add(1, Ordering::SeqCst);
                        }
                        // Green is restarting: try again shortly.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        Load {
            stop,
            batches,
            thread: Some(thread),
        }
    }

    fn batches(&self) -> u64 {
        self.batches.load(Ordering::SeqCst)
    }

    /// Waits until green has committed `n` more load batches (10 transactions each).
    fn wait_more(&self, n: u64, what: impl Fn() -> String) {
        let target = self.batches() + n;
        wait_for(Duration::from_secs(120), || self.batches() >= target, what);
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        self.batches()
    }
}

/// A pair with the mapping, copied with `setup --copy`; `green_port`/`blue_port` override the
/// ports in the DSNs (a proxy's).
fn bed(green: ClusterOptions, blue: ClusterOptions) -> Arc<Pair> {
    let pair = Pair::start_with(green, blue);
    pair.green.psql(DB, GREEN_SCHEMA);
    pair.blue.psql(DB, BLUE_SCHEMA);
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("acct.toml"), ACCT_MAPPING).unwrap();
    configure(&pair, None, None);
    let out = pair.pgbridge(&["setup", "--copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Arc::new(pair)
}

fn configure(pair: &Pair, green_port: Option<u16>, blue_port: Option<u16>) {
    let dsn = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/{DB}");
    let mapping = format!("[mapping]\ndir = \"{}\"\n", pair.dir.path().join("mappings").display());
    pair.write_config_with(
        &dsn(green_port.unwrap_or(pair.green.port())),
        &dsn(blue_port.unwrap_or(pair.blue.port())),
        &mapping,
    );
}

/// With the load stopped: `wait` until blue has everything, then `verify` must find blue
/// identical to green through the mapping (the keyless history compared as a multiset).
fn assert_identical(pair: &Pair, bridge: &Running, what: &str) {
    pair.assert_caught_up_and_verified(bridge, what);
    let counts = pair
        .green
        .psql(DB, "SELECT (SELECT count(*) FROM hist) || ' history rows'");
    eprintln!("faults: {what}: blue identical to green after the faults ({counts})");
}

fn walsender_pid(pair: &Pair) -> String {
    pair.green.psql(
        DB,
        "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_replication WHERE application_name = 'pgbridge'",
    )
}

/// The walsender serving pgbridge, once it streams. One still in its start-up (between
/// connecting and START_REPLICATION) waits for commands without any timeout of its own, so
/// stalling it would test pgbridge's answer timeout rather than `wal_sender_timeout`.
fn streaming_walsender(pair: &Pair, bridge: &Running) -> String {
    let mut pid = String::new();
    wait_for(
        Duration::from_secs(60),
        || {
            pid = pair.green.psql(
                DB,
                "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_replication \
                 WHERE application_name = 'pgbridge' AND state IN ('catchup', 'streaming')",
            );
            !pid.is_empty() && pid == walsender_pid(pair)
        },
        || format!("pgbridge is not streaming\n{}", bridge.log()),
    );
    pid
}

/// SIGKILL at random moments, at least 20 times, each followed by a restart.
#[test]
fn faults_sigkill_at_random_moments() {
    let pair = bed(ClusterOptions::default(), ClusterOptions::default());
    let load = Load::start(&pair);
    let mut rng = rand::thread_rng();
    let kills = 20 * soak();
    for round in 0..kills {
        let bridge = pair.run();
        let before = pair.checkpoint();
        wait_for(
            Duration::from_secs(60),
            || pair.checkpoint() != before,
            || format!("round {round}: no progress\n{}", bridge.log()),
        );
        // A random moment within the next 300 ms of applying.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        bridge.kill();
    }
    let batches = load.stop();
    let bridge = pair.run();
    assert_identical(
        &pair,
        &bridge,
        &format!("{kills} SIGKILLs under about {batches}0 transactions"),
    );
    assert_eq!(bridge.terminate(), 0);
}

/// `pg_ctl stop -m immediate` and start, of blue and of green, while both write and stream.
#[test]
fn faults_immediate_restarts_of_blue_and_green() {
    let pair = bed(ClusterOptions::default(), ClusterOptions::default());
    let load = Load::start(&pair);
    let bridge = pair.run();
    // A transient failure before the first start exits (it is most likely configuration):
    // the restarts begin once the bridge streams.
    wait_for(
        Duration::from_secs(60),
        || bridge.log().contains("streaming from green"),
        || format!("the bridge did not start streaming:\n{}", bridge.log()),
    );
    let rounds = 3 * soak();
    for round in 0..rounds {
        load.wait_more(5, || format!("round {round}: green takes no writes"));
        pair.blue.restart_immediate();
        load.wait_more(5, || format!("round {round}: green takes no writes"));
        pair.green.restart_immediate();
    }
    load.wait_more(5, || "green takes no writes after its restart".into());
    let batches = load.stop();
    let log = bridge.log();
    assert!(log.contains("reconnecting from the checkpoint"), "{log}");
    assert_identical(
        &pair,
        &bridge,
        &format!("{rounds} immediate restarts of blue and {rounds} of green under about {batches}0 transactions"),
    );
    assert_eq!(bridge.terminate(), 0);
}

/// Connections cut and stalled between pgbridge and each side, through a TCP proxy. Green's
/// stalls outlast its wal_sender_timeout; during blue's, green's walsender must survive
/// (pgbridge keeps answering keepalives while blue takes nothing).
#[test]
fn faults_network_cuts_and_stalls() {
    let green = ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "2s".into())],
        ..Default::default()
    };
    let pair = bed(green, ClusterOptions::default());
    let green_proxy = Proxy::start(pair.green.port());
    let blue_proxy = Proxy::start(pair.blue.port());
    configure(&pair, Some(green_proxy.port()), Some(blue_proxy.port()));
    let load = Load::start(&pair);
    let bridge = pair.run();
    // Blue has everything green committed up to now.
    let progress = || {
        let lsn = pair.green.psql(DB, "SELECT pg_current_wal_lsn()");
        pair.wait_checkpoint_at_least(&lsn, &bridge);
    };
    progress();
    let rounds = 3 * soak();
    let (mut cuts, mut stalls) = (0, 0);
    for round in 0..rounds {
        green_proxy.cut();
        cuts += 1;
        progress();
        blue_proxy.cut();
        cuts += 1;
        progress();

        // Green stalled past wal_sender_timeout: the walsender gives up on its side.
        let before = streaming_walsender(&pair, &bridge);
        green_proxy.stall(true);
        wait_for(
            Duration::from_secs(60),
            || walsender_pid(&pair) != before,
            || format!("round {round}: green's walsender outlived the stall\n{}", bridge.log()),
        );
        green_proxy.stall(false);
        stalls += 1;
        progress();

        // Blue stalled while green keeps writing: keepalives go on, the walsender stays.
        let before = streaming_walsender(&pair, &bridge);
        blue_proxy.stall(true);
        load.wait_more(30, || format!("round {round}: green takes no writes"));
        let during = walsender_pid(&pair);
        blue_proxy.stall(false);
        stalls += 1;
        assert_eq!(
            during, before,
            "round {round}: green's walsender must survive a blue stall"
        );
        progress();
    }
    let batches = load.stop();
    assert_identical(
        &pair,
        &bridge,
        &format!(
            "{cuts} connection cuts and {stalls} stalls (green's beyond wal_sender_timeout) under about {batches}0 transactions, {} connections through the proxies",
            green_proxy.accepted() + blue_proxy.accepted()
        ),
    );
    assert_eq!(bridge.terminate(), 0);
}

/// Blue refuses writes for a while: read-only (the disk-full stand-in), then a lock held on a
/// target table past green's wal_sender_timeout. pgbridge waits and retries; nothing is lost.
#[test]
fn faults_blue_rejects_writes_for_a_while() {
    let green = ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "2s".into())],
        ..Default::default()
    };
    let pair = bed(green, ClusterOptions::default());
    let load = Load::start(&pair);
    let bridge = pair.run();
    pair.wait_caught_up(&bridge);
    let rounds = 2 * soak();
    for round in 0..rounds {
        pair.blue.psql(
            DB,
            "ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf();",
        );
        let refusals = bridge.log().matches("read-only transaction").count();
        wait_for(
            Duration::from_secs(60),
            || bridge.log().matches("read-only transaction").count() > refusals,
            || format!("round {round}: blue's refusal never showed\n{}", bridge.log()),
        );
        load.wait_more(10, || format!("round {round}: green takes no writes"));
        pair.blue.psql(
            DB,
            "ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();",
        );
        pair.wait_caught_up(&bridge);

        // A lock on a target table, held while green writes past wal_sender_timeout.
        let before = streaming_walsender(&pair, &bridge);
        let locker = {
            let pair = pair.clone();
            std::thread::spawn(move || {
                pair.blue.psql(
                    DB,
                    "BEGIN; LOCK TABLE acct IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;",
                )
            })
        };
        load.wait_more(20, || format!("round {round}: green takes no writes"));
        locker.join().expect("locker");
        pair.wait_caught_up(&bridge);
        assert_eq!(
            walsender_pid(&pair),
            before,
            "round {round}: keepalives must continue while blue is locked\n{}",
            bridge.log()
        );
    }
    let batches = load.stop();
    assert_identical(
        &pair,
        &bridge,
        &format!("{rounds} read-only periods and {rounds} table locks on blue under about {batches}0 transactions"),
    );
    assert_eq!(bridge.terminate(), 0);
}

/// The slot is invalidated while pgbridge is down (max_slot_wal_keep_size exceeded): pgbridge
/// refuses to go on, says the slot is lost and how to recover, and moves nothing; the recovery
/// it names (`setup --copy`) brings blue back to green.
#[test]
fn faults_invalidated_slot_is_reported_never_skipped() {
    let green = ClusterOptions {
        settings: vec![
            ("max_slot_wal_keep_size".into(), "1MB".into()),
            ("max_wal_size".into(), "32MB".into()),
            ("min_wal_size".into(), "32MB".into()),
        ],
        ..Default::default()
    };
    let pair = bed(green, ClusterOptions::default());
    let bridge = pair.run();
    pair.green.psql(DB, LOAD);
    pair.wait_caught_up(&bridge);
    assert_eq!(bridge.terminate(), 0);
    let checkpoint = pair.checkpoint();

    // Churn while pgbridge is down, until green gives up the slot's WAL.
    wait_for(
        Duration::from_secs(120),
        || {
            pair.green.psql(
                DB,
                "INSERT INTO hist SELECT 1, g FROM generate_series(1, 20000) g; SELECT pg_switch_wal(); CHECKPOINT;",
            );
            pair.green.psql(
                DB,
                &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
            ) == "lost"
        },
        || "the slot was never invalidated".into(),
    );

    let out = pair.pgbridge(&["run"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    eprintln!(
        "faults: on the invalidated slot, pgbridge run said: {}",
        all.lines().last().unwrap_or("")
    );
    for words in [SLOT, "lost", "setup --copy"] {
        assert!(all.contains(words), "the error must say {words:?}:\n{all}");
    }
    assert_eq!(pair.checkpoint(), checkpoint, "blue's checkpoint must not move");
    let status = pair.pgbridge(&["status"]);
    assert!(
        text(&status).contains("lost"),
        "status shows the lost slot:\n{}",
        text(&status)
    );

    // The recovery the message names.
    for args in [&["teardown"][..], &["setup", "--copy"]] {
        let out = pair.pgbridge(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    let bridge = pair.run();
    pair.green.psql(DB, LOAD);
    assert_identical(&pair, &bridge, "a slot invalidated and recovered with setup --copy");
    assert_eq!(bridge.terminate(), 0);
}
