//! `pgbridge run`: stream until SIGINT/SIGTERM ([`crate::ops::run`]).

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: Arc<Config>) -> Result<i32> {
    crate::ops::run::run(config).await
}
