//! The one integration-test binary: one module per concern, each starting its own PostgreSQL
//! clusters through `support`.

mod support;

mod harness_selftest;
mod streaming;
mod workload;
