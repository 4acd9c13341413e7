//! `pgbridge setup`: create what the bridge needs ([`crate::ops::setup`]), optionally with the
//! initial copy; prints a line per object the operation created or found.

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config, copy: bool, jobs: usize) -> Result<i32> {
    crate::ops::setup::run(config, copy, jobs, &mut |line| println!("{line}")).await
}
