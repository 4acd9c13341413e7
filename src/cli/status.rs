//! `pgbridge status`: positions, lag and state ([`crate::ops::status`]).

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config, json: bool) -> Result<i32> {
    crate::ops::status::run(config, json).await
}
