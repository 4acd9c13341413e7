//! Decoder and statement-building throughput, on messages captured from PostgreSQL 15
//! (tests/fixtures/pgoutput). Run with `cargo bench --bench decode`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pgbridge::mapping::catalog::{BlueColumn, BlueTable};
use pgbridge::mapping::statements::{build, Shape};
use pgbridge::mapping::{plan, GreenColumn, GreenTable};
use pgbridge::protocol::pgoutput::{decode, ReplicaIdentity};

fn fixture(name: &str) -> Vec<Bytes> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/pgoutput/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let bytes: Vec<u8> = (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                .collect();
            Bytes::from(bytes)
        })
        .collect()
}

fn decoding(c: &mut Criterion) {
    let messages = fixture("insert_update_delete");
    let bytes: usize = messages.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("insert_update_delete", |b| {
        b.iter(|| {
            for m in &messages {
                std::hint::black_box(decode(m.clone(), false).expect("valid fixture"));
            }
        })
    });
    group.finish();
}

fn statements(c: &mut Criterion) {
    let green = GreenTable {
        oid: 1,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: (0..12)
            .map(|i| GreenColumn {
                name: format!("column_{i}"),
                type_sql: "\"pg_catalog\".\"text\"".into(),
                is_key: i == 0,
            })
            .collect(),
        facts: None,
    };
    let blue = BlueTable {
        oid: 1,
        schema: "public".into(),
        name: "orders".into(),
        partitioned: false,
        columns: (0..12)
            .map(|i| BlueColumn {
                name: format!("column_{i}"),
                type_sql: "\"pg_catalog\".\"text\"".into(),
                declared: "text".into(),
                attnum: i as i16 + 1,
                stored_type: "\"pg_catalog\".\"text\"".into(),
                not_null: i == 0,
                has_default: false,
                identity_always: false,
                generated: false,
                comparable: true,
            })
            .collect(),
        key: Some(vec!["column_0".into()]),
        unique_keys: vec![vec!["column_0".into()]],
    };
    let plan = plan(&green, &blue, None, true).expect("plan");
    c.bench_function("build_upsert_12_columns", |b| {
        b.iter(|| std::hint::black_box(build(&plan, &Shape::Upsert)))
    });
}

criterion_group!(benches, decoding, statements);
criterion_main!(benches);
