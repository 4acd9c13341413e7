//! A connection pooler between pgbridge and blue (issue 16): PgBouncer in transaction or
//! statement mode breaks the session state pgbridge relies on, so `check`, `setup` and `run`
//! refuse it with a message that says how to fix it, touching neither slot nor checkpoint;
//! in session mode, and through a plain TCP proxy, pgbridge works as with a direct connection.
//! The checkpoint guard, which catches a session that moves only later, is shown on its own.

use std::time::{Duration, Instant};

use crate::support::bridge::{text, Pair, DB, SLOT};
use crate::support::pgbouncer::PgBouncer;
use crate::support::proxy::Proxy;
use crate::support::{Cluster, ClusterOptions};

/// What every refusal starts with, after naming blue.
const REFUSED: &str = "is reached through a connection pooler in transaction or statement mode";

fn assert_refused(output: &str, what: &str) {
    for part in [REFUSED, "session_replication_role = replica", "pool_mode = session"] {
        assert!(output.contains(part), "{what}: expected {part:?} in:\n{output}");
    }
}

/// PgBouncer in transaction mode, then in statement mode, in front of blue: `check`, `setup`
/// and `run` exit 2 with the refusal, and nothing moves: no row on blue, the checkpoint and
/// the slot where they were.
#[test]
fn a_transaction_or_statement_pooler_in_front_of_blue_is_refused() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.setup();
    pair.green
        .psql(DB, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g");
    let (checkpoint, confirmed) = (pair.checkpoint(), pair.confirmed_flush());
    for mode in ["transaction", "statement"] {
        let bouncer = PgBouncer::start(pair.blue.port(), mode);
        pair.write_config_with(&pair.green.dsn(DB), &bouncer.dsn(DB), "");
        for command in ["check", "setup"] {
            let out = pair.pgbridge(&[command]);
            assert_eq!(out.status.code(), Some(2), "{mode}: {command}\n{}", text(&out));
            assert_refused(&text(&out), &format!("{mode}: {command}"));
        }
        let (code, log) = pair.run().wait_exit(Duration::from_secs(120));
        assert_eq!(code, 2, "{mode}: run\n{log}");
        assert_refused(&log, &format!("{mode}: run"));
        assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM t"), "0", "{mode}");
        assert_eq!(pair.checkpoint(), checkpoint, "{mode}: the checkpoint moved");
        assert_eq!(pair.confirmed_flush(), confirmed, "{mode}: the slot moved");
    }
}

/// PgBouncer in session mode keeps one server connection per client connection: `setup`,
/// `run`, `wait` and `verify` all go through it, and the session state holds (a blue trigger
/// that would reject every row stays silent under the replica role). Then a plain TCP proxy
/// in front of blue is not taken for a pooler either.
#[test]
fn a_session_pooler_or_a_tcp_proxy_in_front_of_blue_works() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue.psql(
        DB,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE 'not under the replica role'; END$$; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    let bouncer = PgBouncer::start(pair.blue.port(), "session");
    pair.write_config_with(&pair.green.dsn(DB), &bouncer.dsn(DB), "");
    pair.setup();
    pair.green
        .psql(DB, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g");
    let bridge = pair.run();
    for round in 0..20 {
        pair.green.psql(
            DB,
            &format!(
                "UPDATE t SET v = v || '.{round}' WHERE id % 7 = {}; DELETE FROM t WHERE id = {}; \
                 INSERT INTO t VALUES ({}, 'new')",
                round % 7,
                round * 3 + 1,
                1000 + round
            ),
        );
    }
    pair.assert_caught_up_and_verified(&bridge, "through a session-mode pgbouncer");
    pair.assert_same("t");
    assert_eq!(bridge.terminate(), 0);
    assert_eq!(pair.checkpoint(), pair.confirmed_flush());

    let proxy = Proxy::start(pair.blue.port());
    pair.write_config_with(
        &pair.green.dsn(DB),
        &format!("postgres://postgres@127.0.0.1:{}/{DB}", proxy.port()),
        "",
    );
    let out = pair.pgbridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "through a TCP proxy\n{}", text(&out));
}

/// The guard in every checkpoint statement: run on another server process than the one the
/// session was set up on (as a pooler would run it), it fails, so the blue transaction rolls
/// back whole, and the error reads as the refusal; on the session's own backend it writes.
#[test]
fn the_checkpoint_guard_refuses_another_backend() {
    use pgbridge::state::checkpoint;
    use tokio_postgres::types::{ToSql, Type};
    let blue = Cluster::start(ClusterOptions::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&blue.dsn(DB), tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    let config = pgbridge::config::Config::parse(
        &format!(
            "[green]\ndsn = \"{}\"\n[blue]\ndsn = \"{}\"\n",
            blue.dsn(DB),
            blue.dsn(DB)
        ),
        std::path::Path::new("pgbridge.toml"),
        &|_| None,
    )
    .expect("config");
    rt.block_on(async {
        client.batch_execute(&checkpoint::create_sql("pgbridge")).await.unwrap();
        let start: pgbridge::lsn::Lsn = "0/10".parse().unwrap();
        checkpoint::insert_if_missing(&client, "pgbridge", SLOT, start)
            .await
            .unwrap();
        let own: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let statements = |backend: i32| {
            [
                (
                    checkpoint::advance_sql("pgbridge", false, backend),
                    vec![SLOT, "0/20", "0", "0/10"],
                ),
                (
                    checkpoint::advance_idle_sql("pgbridge", backend),
                    vec![SLOT, "0/20", "0/10"],
                ),
                (checkpoint::touch_sql("pgbridge", backend), vec![SLOT]),
            ]
        };
        let prepare = |sql: String, params: usize| {
            let client = &client;
            async move { client.prepare_typed(&sql, &vec![Type::TEXT; params]).await.unwrap() }
        };
        for (sql, params) in statements(own + 1) {
            let statement = prepare(sql.clone(), params.len()).await;
            client.batch_execute("BEGIN").await.unwrap();
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            let err = client.execute(&statement, &params).await.expect_err(&sql);
            client.batch_execute("ROLLBACK").await.unwrap();
            let err = pgbridge::error::Error::postgres("updating the checkpoint on blue", &err);
            let refusal = pgbridge::pooler::explain(err, &config.blue).to_string();
            assert_refused(&refusal, &sql);
            assert!(refusal.contains("another server process"), "{refusal}");
        }
        let lsn = || async {
            let row = client
                .query_one("SELECT lsn::text FROM pgbridge.checkpoint", &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        };
        assert_eq!(lsn().await, "0/10", "a refused statement wrote");
        let (sql, params) = statements(own).into_iter().next().unwrap();
        let statement = prepare(sql, params.len()).await;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        assert_eq!(client.execute(&statement, &params).await.unwrap(), 1);
        assert_eq!(lsn().await, "0/20");
    });
}

/// Behind the probe: with it skipped, pgbridge streams through PgBouncer in transaction mode,
/// on whichever server connection the pool hands it (its own other connections to blue may
/// already move it), and the pool replaces its server connections (`RECONNECT` on PgBouncer's
/// console; `server_lifetime` or a busy pool do the same), so a transaction of pgbridge runs
/// on a server without its session. It stops with
/// exit 2 and the refusal; no blue transaction committed without its session state (a blue
/// trigger, silent under the replica role, would have recorded it), and pointed at blue
/// directly it carries everything, nothing lost or doubled.
#[test]
fn a_session_moved_by_a_pooler_stops_the_bridge_without_a_wrong_commit() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue.psql(
        DB,
        "CREATE TABLE fired (id int); \
         CREATE FUNCTION record() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO fired VALUES (NEW.id); RETURN NEW; END$$; \
         CREATE TRIGGER record BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION record();",
    );
    pair.setup();
    let bouncer = PgBouncer::start(pair.blue.port(), "transaction");
    pair.write_config_with(&pair.green.dsn(DB), &bouncer.dsn(DB), "");
    let mut bridge = pair.run_with_env(&[("PGBRIDGE_FAILPOINT", "skip_pooler_probe")]);
    // Replaced only once pgbridge streams (or stopped already): a server connection closed
    // while it logs in makes PgBouncer refuse logins for a while, which is not the point here.
    let started = Instant::now();
    while bridge.alive() && !bridge.log().contains("streaming from green") {
        assert!(started.elapsed() < Duration::from_secs(120), "{}", bridge.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while bridge.alive() && Instant::now() < deadline {
        bouncer.reconnect();
        for _ in 0..20 {
            pair.green.psql(DB, &format!("INSERT INTO t VALUES ({next}, 'v')"));
            next += 1;
            if !bridge.alive() {
                break;
            }
        }
    }
    let (code, log) = bridge.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 2, "pgbridge should have stopped once its session moved\n{log}");
    assert_refused(&log, &format!("a moved session; pgbouncer's log:\n{}", bouncer.log()));
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM fired"), "0", "{log}");

    // The pooler's server connections end with it, and with them the origin one had selected.
    drop(bouncer);
    pair.write_config("");
    let bridge = pair.run();
    pair.assert_caught_up_and_verified(&bridge, "directly, after the pooler");
    pair.assert_same("t");
    assert_eq!(pair.blue.psql(DB, "SELECT count(*) FROM fired"), "0");
    assert_eq!(bridge.terminate(), 0);
}
