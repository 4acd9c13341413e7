//! A seeded random workload on green: inserts, updates, deletes, key changes and rolled-back
//! transactions over tables with a primary key, a jsonb payload, and no key at all.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::bridge::Pair;

/// DDL for the workload tables; run on both sides.
pub const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE items (id bigint PRIMARY KEY, payload jsonb, added timestamptz NOT NULL DEFAULT now(), price numeric(12,2));
CREATE TABLE events (account int, kind text, amount int);
";

/// Green-only settings the workload needs.
pub const GREEN_SETUP: &str = "ALTER TABLE events REPLICA IDENTITY FULL;";

pub const TABLES: [&str; 3] = ["public.accounts", "public.items", "public.events"];

/// Runs `transactions` random transactions on green through one connection.
pub fn run(pair: &Pair, seed: u64, transactions: usize) {
    let dsn = pair.green.dsn("postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.expect("connect green");
        tokio::spawn(conn);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_id = 100_000 + (seed % 1000) as i32 * 1000;
        for _ in 0..transactions {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.gen_range(1..=5) {
                let id = rng.gen_range(1..=300);
                let amount = rng.gen_range(-500..=500);
                let stmt = match rng.gen_range(0..10) {
                    0..=2 => format!(
                        "INSERT INTO accounts VALUES ({id}, {amount}, 'n{amount}') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1;"
                    ),
                    3 => format!("UPDATE accounts SET balance = balance + {amount}, note = note || 'x' WHERE id = {id};"),
                    4 => format!("DELETE FROM accounts WHERE id = {id};"),
                    5 => {
                        next_id += 1;
                        format!("UPDATE accounts SET id = {next_id} WHERE id = (SELECT min(id) FROM accounts WHERE id > {id});")
                    }
                    6 => format!(
                        "INSERT INTO items VALUES ({id}, '{{\"k\": {amount}, \"s\": \"it''s\"}}', now(), {amount}.25) \
                         ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, price = items.price + 1;"
                    ),
                    7 => format!("DELETE FROM items WHERE id = {id};"),
                    8 => format!("INSERT INTO events VALUES ({id}, 'k{}', {amount});", amount % 3),
                    _ => format!(
                        "UPDATE events SET amount = amount + 1 WHERE ctid = (SELECT ctid FROM events WHERE account = {id} LIMIT 1);"
                    ),
                };
                sql.push_str(&stmt);
            }
            sql.push_str(if rng.gen_ratio(1, 20) { "ROLLBACK;" } else { "COMMIT;" });
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("workload transaction failed: {e}\n{sql}"));
        }
    });
}

/// Asserts every workload table is identical on both sides.
pub fn assert_converged(pair: &Pair) {
    for t in TABLES {
        pair.assert_same(t);
    }
}

/// Creates the workload schema on both sides.
pub fn create(pair: &Pair) {
    pair.both(SCHEMA);
    pair.green.psql("postgres", GREEN_SETUP);
}
