//! `pgbridge ready`: whether a rollback to blue now would lose nothing ([`crate::ops::ready`]
//! reads and judges); prints one aligned line per condition and a verdict line, or JSON, and
//! exits 0 ready, 1 not ready (a condition fails, whatever else cannot be told), 2 cannot tell.

use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::ready::{self, Options};
use crate::telemetry::rollback::Readiness;

pub async fn run(config: &Config, options: &Options, json: bool) -> Result<i32> {
    let readiness = ready::evaluate(config, options).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&readiness).map_err(|e| Error::definite(e.to_string()))?
        );
    } else {
        print_text(&readiness);
    }
    Ok(match readiness.ready {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    })
}

fn print_text(r: &Readiness) {
    let mut previous = None;
    for c in &r.conditions {
        let state = match c.holds {
            Some(true) => "ok",
            Some(false) => "NOT",
            None => "unknown",
        };
        // One side out of reach leaves several conditions unknown for the same reason.
        // One line per condition: details quoting other messages may hold line breaks.
        let detail = if previous == Some(&c.detail) && c.holds.is_none() {
            "cannot tell: as above".to_string()
        } else {
            c.detail.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        println!("{:<13} {state:<8} {detail}", c.name);
        previous = Some(&c.detail);
    }
    let list = |names: Vec<&str>| names.join(", ");
    println!(
        "{}",
        match r.ready {
            Some(true) => format!(
                "ready=yes: all {} conditions hold; blue lags green by at most the limits and switchover's catch-up \
                 applies the rest",
                r.conditions.len()
            ),
            Some(false) => format!("ready=no: not holding: {}", list(r.names_where(Some(false)))),
            None => format!(
                "ready=unknown: cannot tell {}; fix what they say and run again",
                list(r.names_where(None))
            ),
        }
    );
}

/// `--since`: an RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01 14:00:00+02:00`) or a
/// duration before now (`24h`, `90m`).
pub fn parse_since(text: &str) -> std::result::Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .filter(|at| *at >= SystemTime::UNIX_EPOCH)
            .ok_or_else(|| format!("{text:?} before now is before 1970"));
    }
    let refuse = || {
        format!("{text:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) nor a duration (24h, 90m)")
    };
    // humantime reads UTC only: take a numeric offset off and apply it.
    let (local, offset) = match text.len().checked_sub(6).and_then(|at| text.get(at..).map(|o| (at, o))) {
        Some((at, o)) if at >= 19 && (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let hours: u64 = o[1..3].parse().map_err(|_| refuse())?;
            let minutes: u64 = o[4..6].parse().map_err(|_| refuse())?;
            // RFC 3339 offsets run to ±23:59.
            if hours > 23 || minutes > 59 {
                return Err(refuse());
            }
            (
                &text[..at],
                Some((o.starts_with('-'), Duration::from_secs(hours * 3600 + minutes * 60))),
            )
        }
        // Without an offset the time would be read as UTC whatever was meant: say which.
        _ => match text.strip_suffix(['Z', 'z']) {
            Some(utc) => (utc, None),
            None if humantime::parse_rfc3339_weak(text).is_ok() => {
                return Err(format!(
                    "{text:?} has no offset: end it with Z (UTC) or an offset such as +02:00"
                ))
            }
            None => return Err(refuse()),
        },
    };
    let at = humantime::parse_rfc3339_weak(local).map_err(|_| refuse())?;
    let at = match offset {
        // 14:00+02:00 is 12:00Z; 07:00-05:00 is 12:00Z.
        Some((false, d)) => at - d,
        Some((true, d)) => at + d,
        None => at,
    };
    // A time to come would count no dead letter at all: ready by a typo.
    if at > SystemTime::now() {
        return Err(format!(
            "{text:?} is in the future: --since counts dead letters parked from then on, so none would count"
        ));
    }
    Ok(at)
}

/// `--max-seconds`: a finite number of seconds of 0 or more (`inf` or `nan` would let any lag
/// pass).
pub fn parse_max_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds of 0 or more; write e.g. 10 or 2.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_with_offsets_and_durations() {
        let z = parse_since("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(parse_since("2024-05-01T14:00:00+02:00").unwrap(), z);
        assert_eq!(parse_since("2024-05-01T07:00:00-05:00").unwrap(), z);
        assert_eq!(parse_since("2024-05-01 12:00:00Z").unwrap(), z);
        assert!(parse_since("2024-05-01T12:00:00.250Z").unwrap() > z);
        let day_ago = parse_since("24h").unwrap();
        let age = SystemTime::now().duration_since(day_ago).unwrap();
        assert!(age >= Duration::from_secs(86_400) && age < Duration::from_secs(86_460));
        assert!(parse_since("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn since_refuses_a_time_without_an_offset_and_one_in_the_future() {
        assert!(parse_since("2024-05-01 12:00:00").unwrap_err().contains("no offset"));
        assert!(parse_since("2024-05-01T12:00:00").unwrap_err().contains("no offset"));
        assert!(parse_since("2999-01-01T00:00:00Z").unwrap_err().contains("future"));
        assert!(parse_since("2999-01-01T00:00:00+02:00").unwrap_err().contains("future"));
    }

    #[test]
    fn since_refuses_a_duration_before_1970_and_an_offset_past_23_59() {
        assert!(parse_since("99999999h").unwrap_err().contains("before 1970"));
        assert!(parse_since("300000y").is_err());
        assert!(parse_since("2024-05-01T12:00:00+25:00")
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(parse_since("2024-05-01T12:00:00+02:60")
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(parse_since("2024-05-01T12:00:00+23:59").is_ok());
    }

    #[test]
    fn max_seconds_refuses_non_finite_and_negative_limits() {
        for bad in ["inf", "1e400", "nan", "NaN", "-1", "-inf", "x"] {
            assert!(parse_max_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_max_seconds("2.5"), Ok(2.5));
        assert_eq!(parse_max_seconds("0"), Ok(0.0));
    }
}
