//! The one integration-test binary: one module per concern, each starting its own PostgreSQL
//! clusters through `support`.

mod support;

mod bad_config;
mod bad_input;
mod bidirectional;
mod blue_failover;
mod check_data;
mod copy;
mod draft;
mod drift;
mod environment;
mod failover;
mod faults;
mod gates;
mod harness_selftest;
mod in_progress;
mod layout;
mod mapping;
mod on_green;
mod ops;
mod pooler;
mod privileges;
mod ready;
mod recovery;
mod scale;
mod sequences;
mod streaming;
mod telemetry;
mod tls;
mod truncate;
mod types;
mod verify;
mod versions;
mod workload;
