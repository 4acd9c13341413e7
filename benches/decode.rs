//! Decoder and statement-building throughput, on messages captured from PostgreSQL 15
//! (tests/fixtures/pgoutput). Run with `cargo bench --bench decode`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pgbridge::mapping::statements::{build, Shape};
use pgbridge::mapping::{ColumnPlan, KeyPlan, TablePlan};
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
    let columns = (0..12)
        .map(|i| ColumnPlan {
            green_index: i,
            green_name: format!("column_{i}"),
            blue_name: format!("column_{i}"),
            blue_type: "\"pg_catalog\".\"text\"".into(),
            comparable: true,
        })
        .collect();
    let plan = TablePlan {
        green_oid: 1,
        green_name: "public.orders".into(),
        blue_name: "public.orders".into(),
        blue_sql: "\"public\".\"orders\"".into(),
        green_columns: 12,
        columns,
        key: KeyPlan::Unique(vec![0]),
        replica_identity: ReplicaIdentity::Default,
        overriding_system_value: false,
        blue_partitioned: false,
    };
    c.bench_function("build_upsert_12_columns", |b| {
        b.iter(|| std::hint::black_box(build(&plan, &Shape::Upsert)))
    });
}

criterion_group!(benches, decoding, statements);
criterion_main!(benches);
