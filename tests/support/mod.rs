//! Helpers shared by the integration-test modules.
//!
//! Each test module uses a subset of them, so unused-item warnings would depend on which modules
//! exist; they are silenced here rather than in every caller.
#![allow(dead_code)]

pub mod bridge;
pub mod cluster;
pub mod pgbouncer;
pub mod proxy;

pub use cluster::{pg_client_bin_dir, pg_version_bin_dir, Cluster, ClusterOptions};
