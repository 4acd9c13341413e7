//! `pgbridge wait`: write a marker on green and wait for blue to apply it ([`crate::ops::wait`]).

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config, timeout: Duration) -> Result<i32> {
    crate::ops::wait::run(config, timeout).await
}
