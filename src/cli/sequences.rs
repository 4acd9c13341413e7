//! `pgbridge sync-sequences`: move blue's sequences to green's values ([`crate::ops::sequences`]),
//! printing a line per sequence.

use crate::config::Config;
use crate::error::Result;
use crate::ops::sequences;

pub async fn run(config: &Config, margin: i64) -> Result<i32> {
    sequences::sync_all(config, margin, &mut |line| println!("{line}")).await?;
    Ok(0)
}
