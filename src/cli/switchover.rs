//! `pgbridge switchover`: move the application's writes to the target ([`crate::ops::switchover`]).

use crate::config::Config;
use crate::error::Result;
pub use crate::ops::switchover::Options;

pub async fn run(config: &Config, options: &Options) -> Result<i32> {
    crate::ops::switchover::run(config, options, &|line| println!("{line}")).await
}
