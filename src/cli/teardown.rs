//! `pgbridge teardown`: drop what `setup` created ([`crate::ops::teardown`]).

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config) -> Result<i32> {
    crate::ops::teardown::run(config, &mut |line| println!("{line}")).await
}
