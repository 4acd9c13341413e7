//! `pgbridge wait`: write a marker on green and wait for blue to apply it
//! ([`crate::ops::wait`]); exit 1 on timeout.

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::ops::wait;

pub async fn run(config: &Config, timeout: Duration) -> Result<i32> {
    let w = wait::wait(config, timeout).await?;
    let (lsn, marker, seconds) = (w.checkpoint, w.marker, w.elapsed.as_secs_f64());
    if w.caught_up {
        println!("caught up in {seconds:.3}s: blue's checkpoint {lsn} is past the marker {marker}");
        Ok(0)
    } else {
        println!(
            "timed out after {seconds:.3}s: blue's checkpoint {lsn} has not reached the marker {marker} ({} bytes behind)",
            lsn.bytes_until(marker)
        );
        Ok(1)
    }
}
