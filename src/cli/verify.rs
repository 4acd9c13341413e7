//! `pgbridge verify`: compare green through the mapping with blue ([`crate::ops::verify`]).

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config, table: Option<String>, json: bool, examples: usize) -> Result<i32> {
    crate::ops::verify::run(config, table, json, examples).await
}
