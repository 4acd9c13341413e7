//! Crash injection for the test suite.
//!
//! `PGBRIDGE_FAILPOINT=name:N` aborts the process (as SIGKILL would end it: no cleanup, no
//! final status update) the N-th time the named point is reached. The points sit around the
//! blue commit, where a crash decides whether a transaction is applied once or twice:
//! `before_blue_commit` and `after_blue_commit`. Unset, a failpoint costs one relaxed load.
//! A few points skip a check instead ([`active`]): `skip_pooler_probe`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let value = std::env::var("PGBRIDGE_FAILPOINT").ok()?;
        let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
        Some((name.to_string(), n.parse().unwrap_or(1)))
    })
}

/// Aborts the process if the configured failpoint `name` is reached for the N-th time.
pub fn hit(name: &str) {
    if let Some((wanted, n)) = spec() {
        if wanted == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            eprintln!("pgbridge: failpoint {name} reached, aborting");
            std::process::abort();
        }
    }
}

/// Whether the configured failpoint is `name`: for points that skip a check rather than abort,
/// so a test can show what stands behind it.
pub fn active(name: &str) -> bool {
    spec().as_ref().is_some_and(|(wanted, _)| wanted == name)
}
