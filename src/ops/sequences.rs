//! `pgbridge sync-sequences`: logical replication never carries sequences, so after a
//! rollback blue's sequences would hand out values green already used. This moves every blue
//! sequence to at least green's last value (plus `--margin`), never backwards; running it again
//! changes nothing. Sequences map by name, or through the `[sequences]` table of the config.

use tokio_postgres::Client;

use crate::config::Config;
use crate::connect::{blue_err, green_err};
use crate::error::{Error, Result};
use crate::sql;

struct Seq {
    schema: String,
    name: String,
    /// The last value handed out (`None`: never used, or not readable).
    last: Option<i64>,
    increment: i64,
    start: i64,
    min: i64,
    max: i64,
    /// The role may read `last_value` (SELECT or USAGE); pg_sequences shows NULL otherwise,
    /// which must not pass for "never used".
    readable: bool,
    /// The role may setval() it (UPDATE).
    updatable: bool,
}

const SEQUENCES_SQL: &str = "SELECT schemaname::text, sequencename::text, last_value, increment_by, start_value, \
                             min_value, max_value, \
                             has_sequence_privilege(quote_ident(schemaname) || '.' || quote_ident(sequencename), 'SELECT,USAGE'), \
                             has_sequence_privilege(quote_ident(schemaname) || '.' || quote_ident(sequencename), 'UPDATE') \
                             FROM pg_sequences ORDER BY 1, 2";

async fn sequences(client: &Client) -> std::result::Result<Vec<Seq>, tokio_postgres::Error> {
    Ok(client
        .query(SEQUENCES_SQL, &[])
        .await?
        .iter()
        .map(|r| Seq {
            schema: r.get(0),
            name: r.get(1),
            last: r.get(2),
            increment: r.get(3),
            start: r.get(4),
            min: r.get(5),
            max: r.get(6),
            readable: r.get(7),
            updatable: r.get(8),
        })
        .collect())
}

/// A blue sequence `sync` moved, and how to put it back.
pub struct Moved {
    /// Qualified, quoted name.
    pub sql_name: String,
    /// The last value it had handed out (`None`: unused, next value `start`).
    pub previous: Option<i64>,
    pub start: i64,
}

impl Moved {
    /// Puts the sequence back where `sync` found it.
    pub async fn restore(&self, blue: &Client) -> std::result::Result<(), tokio_postgres::Error> {
        let (value, called) = match self.previous {
            Some(last) => (last, true),
            None => (self.start, false),
        };
        blue.execute(
            "SELECT setval($1::text::regclass, $2, $3)",
            &[&self.sql_name, &value, &called],
        )
        .await
        .map(drop)
    }
}

/// Connects to both sides and moves blue's sequences past green's (`sync-sequences`),
/// reporting a line per sequence and a summary.
pub async fn sync_all(config: &Config, margin: i64, report: &mut dyn FnMut(String)) -> Result<Vec<Moved>> {
    if margin < 0 {
        return Err(Error::definite("--margin must be 0 or more"));
    }
    let (green, blue) = crate::connect::both(config).await?;
    sync(config, &green, &blue, margin, report).await
}

/// Moves blue's sequences past green's (see the module docs), reporting a line per sequence
/// and a summary; returns what it moved.
pub(crate) async fn sync(
    config: &Config,
    green: &Client,
    blue: &Client,
    margin: i64,
    report: &mut dyn FnMut(String),
) -> Result<Vec<Moved>> {
    let green_seqs = sequences(green).await.map_err(green_err("reading sequences"))?;
    let blue_seqs = sequences(blue).await.map_err(blue_err("reading sequences"))?;
    let blue_for = |g: &Seq| {
        config
            .sequences
            .iter()
            .find(|((s, n), _)| *s == g.schema && *n == g.name)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| (g.schema.clone(), g.name.clone()))
    };
    privilege_problems(green, blue, &green_seqs, &blue_seqs, &blue_for).await?;
    let (mut changed, mut unchanged, mut missing) = (0, 0, 0);
    let mut moved = Vec::new();
    for g in &green_seqs {
        let (bs, bn) = blue_for(g);
        let green_name = format!("{}.{}", g.schema, g.name);
        let blue_name = format!("{bs}.{bn}");
        let label = if green_name == blue_name {
            blue_name.clone()
        } else {
            format!("{green_name} -> {blue_name}")
        };
        let Some(b) = blue_seqs.iter().find(|s| s.schema == bs && s.name == bn) else {
            missing += 1;
            report(format!(
                "{label:<48} skipped: no such sequence on blue (map it in the [sequences] table of {} if it was renamed)",
                config.path.display()
            ));
            continue;
        };
        let (target, green_last) = match decide(g.last, b, margin) {
            Decision::Unused => {
                unchanged += 1;
                report(format!("{label:<48} unchanged: green has not used it"));
                continue;
            }
            Decision::Ahead { next, green_last } => {
                unchanged += 1;
                report(format!(
                    "{label:<48} unchanged: blue's next value {next} is already past green's {green_last}"
                ));
                continue;
            }
            Decision::OutOfRange { target, green_last } => {
                return Err(Error::definite(format!(
                    "blue sequence {blue_name} cannot reach {target} (green's {green_last} plus margin {margin}): its range is {}..{}; \
                     widen it on blue (ALTER SEQUENCE {} MAXVALUE ...)",
                    b.min,
                    b.max,
                    sql::qualified(&bs, &bn)
                )));
            }
            Decision::Move { target, green_last } => (target, green_last),
        };
        moved.push(set(blue, &bs, &bn, b, target).await?);
        changed += 1;
        report(format!(
            "{label:<48} {} -> {target} (green at {green_last}, margin {margin}); next value on blue {}",
            b.last.map_or("unused".to_string(), |l| l.to_string()),
            target.saturating_add(b.increment)
        ));
    }
    report(format!(
        "sequences: {changed} moved, {unchanged} already ahead or unused, {missing} not on blue ({} on green)",
        green_seqs.len()
    ));
    Ok(moved)
}

/// Moves blue sequence `schema.name` (`b`) so that it has handed out `target` last; returns
/// how to put it back.
async fn set(blue: &Client, schema: &str, name: &str, b: &Seq, target: i64) -> Result<Moved> {
    blue.execute(
        "SELECT setval($1::text::regclass, $2, true)",
        &[&sql::qualified(schema, name), &target],
    )
    .await
    .map_err(blue_err(&format!("setting sequence {schema}.{name}")))?;
    Ok(Moved {
        sql_name: sql::qualified(schema, name),
        previous: b.last,
        start: b.start,
    })
}

/// What becomes of a blue sequence given green's last value.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Green has not used its sequence.
    Unused,
    /// Blue's next value is already past green's last.
    Ahead { next: i64, green_last: i64 },
    /// The value blue must reach is outside the sequence's range.
    OutOfRange { target: i64, green_last: i64 },
    /// Move blue so that it has handed out `target` last.
    Move { target: i64, green_last: i64 },
}

/// Decides, without I/O, whether blue sequence `b` must move past green's `green_last` plus
/// `margin` (in the direction the sequence counts), never backwards.
fn decide(green_last: Option<i64>, b: &Seq, margin: i64) -> Decision {
    let Some(green_last) = green_last else {
        return Decision::Unused;
    };
    let ascending = b.increment > 0;
    // The value blue must have handed out last so that its next value is past green's.
    let target = if ascending {
        green_last.saturating_add(margin)
    } else {
        green_last.saturating_sub(margin)
    };
    // What blue would hand out next.
    let next = match b.last {
        Some(l) => l.saturating_add(b.increment),
        None => b.start,
    };
    let behind = if ascending { next <= target } else { next >= target };
    if !behind {
        Decision::Ahead { next, green_last }
    } else if target > b.max || target < b.min {
        Decision::OutOfRange { target, green_last }
    } else {
        Decision::Move { target, green_last }
    }
}

/// Every sequence pair must be readable on both sides and movable on blue before anything
/// changes: an unreadable `last_value` would pass for an unused sequence (and could move blue's
/// backwards).
async fn privilege_problems(
    green: &Client,
    blue: &Client,
    green_seqs: &[Seq],
    blue_seqs: &[Seq],
    blue_for: &dyn Fn(&Seq) -> (String, String),
) -> Result<()> {
    const ROLE: &str = "SELECT current_user::text";
    let green_role: String = green
        .query_one(ROLE, &[])
        .await
        .map_err(green_err("reading the role"))?
        .get(0);
    let blue_role: String = blue
        .query_one(ROLE, &[])
        .await
        .map_err(blue_err("reading the role"))?
        .get(0);
    let mut problems = Vec::new();
    for g in green_seqs {
        let (bs, bn) = blue_for(g);
        let Some(b) = blue_seqs.iter().find(|s| s.schema == bs && s.name == bn) else {
            continue;
        };
        if !g.readable {
            problems.push(format!(
                "role {green_role} may not read green sequence {}.{}; run on green: GRANT SELECT ON SEQUENCE {} TO {}",
                g.schema,
                g.name,
                sql::qualified(&g.schema, &g.name),
                sql::ident(&green_role)
            ));
        }
        let lacks: Vec<&str> = [("SELECT", !b.readable), ("UPDATE", !b.updatable)]
            .into_iter()
            .filter_map(|(p, missing)| missing.then_some(p))
            .collect();
        if !lacks.is_empty() {
            problems.push(format!(
                "role {blue_role} lacks {} on blue sequence {bs}.{bn}, which sync-sequences reads and moves; \
                 run on blue: GRANT {} ON SEQUENCE {} TO {}",
                lacks.join(", "),
                lacks.join(", "),
                sql::qualified(&bs, &bn),
                sql::ident(&blue_role)
            ));
        }
    }
    super::privileges::refuse(problems, "no sequence was changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blue(last: Option<i64>, increment: i64) -> Seq {
        Seq {
            schema: "public".into(),
            name: "s".into(),
            last,
            increment,
            start: if increment > 0 { 1 } else { -1 },
            min: if increment > 0 { 1 } else { -1000 },
            max: if increment > 0 { 1000 } else { -1 },
            readable: true,
            updatable: true,
        }
    }

    #[test]
    fn a_sequence_green_has_not_used_stays() {
        assert_eq!(decide(None, &blue(Some(5), 1), 0), Decision::Unused);
    }

    #[test]
    fn blue_moves_past_green_plus_margin_never_backwards() {
        assert_eq!(
            decide(Some(10), &blue(Some(5), 1), 0),
            Decision::Move {
                target: 10,
                green_last: 10
            }
        );
        assert_eq!(
            decide(Some(10), &blue(None, 1), 5),
            Decision::Move {
                target: 15,
                green_last: 10
            }
        );
        // Next value 11 is past 10 already.
        assert_eq!(
            decide(Some(10), &blue(Some(10), 1), 0),
            Decision::Ahead {
                next: 11,
                green_last: 10
            }
        );
        assert_eq!(
            decide(Some(10), &blue(Some(50), 1), 0),
            Decision::Ahead {
                next: 51,
                green_last: 10
            }
        );
    }

    #[test]
    fn descending_sequences_move_down() {
        assert_eq!(
            decide(Some(-10), &blue(Some(-5), -1), 2),
            Decision::Move {
                target: -12,
                green_last: -10
            }
        );
        assert_eq!(
            decide(Some(-10), &blue(Some(-20), -1), 0),
            Decision::Ahead {
                next: -21,
                green_last: -10
            }
        );
    }

    #[test]
    fn a_target_outside_the_range_is_refused() {
        assert_eq!(
            decide(Some(999), &blue(Some(5), 1), 10),
            Decision::OutOfRange {
                target: 1009,
                green_last: 999
            }
        );
    }
}
