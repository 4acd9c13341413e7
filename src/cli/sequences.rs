//! `pgbridge sync-sequences`: move blue's sequences to green's values ([`crate::ops::sequences`]).

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config, margin: i64) -> Result<i32> {
    crate::ops::sequences::run(config, margin).await
}
