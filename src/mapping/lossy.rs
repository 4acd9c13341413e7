//! Whether converting a green column's values to a blue column's type can lose information:
//! what `check` lists under "rollback loses" and what `draft` marks on a cast it writes.
//!
//! Pure and deliberately conservative: both types are given exactly as
//! `format_type(atttypid, atttypmod)` prints them (`numeric(12,2)`, `character varying(40)`,
//! `timestamp(3) with time zone`, `integer[]`), and a pair it has no rule for is
//! [`Cast::Unknown`], never assumed safe. "Narrowing" means some value of the source type does
//! not come through unchanged: it is refused (out of range, too long, does not parse), rounded,
//! cut, or changes meaning (a time zone offset dropped).

/// What converting values of one column type to another does to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cast {
    /// The same type and modifier.
    Same,
    /// Every value of the source type comes through unchanged.
    Widening,
    /// Some values are refused, rounded, cut or change meaning; the text says which.
    Narrowing(String),
    /// No rule covers this pair (user-defined types, domains, ...): a person must judge.
    Unknown,
}

impl Cast {
    /// Whether a value may not come through unchanged (narrowing, or not known to be safe).
    pub fn may_lose(&self) -> bool {
        matches!(self, Cast::Narrowing(_) | Cast::Unknown)
    }
}

/// How values of type `from` fare when converted to type `to`.
pub fn classify(from: &str, to: &str) -> Cast {
    if from.trim() == to.trim() {
        return Cast::Same;
    }
    let (f, t) = (parse(from), parse(to));
    match (f.array, t.array) {
        (true, true) => element(&f.kind, &t.kind, from, to),
        (false, false) => element(&f.kind, &t.kind, from, to),
        // An array printed as text comes back whole; anything else is a change of shape.
        (true, false) if matches!(t.kind, Kind::Text(Text::Unbounded)) => Cast::Widening,
        (true, false) | (false, true) => Cast::Unknown,
    }
}

/// The families of built-in types this module knows.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// smallint, integer, bigint: the number of decimal digits of the largest value.
    Int {
        bits: u32,
    },
    /// numeric, with `(precision, scale)` when constrained.
    Numeric(Option<(u32, u32)>),
    /// real (24) or double precision (53).
    Float {
        bits: u32,
    },
    Text(Text),
    Bool,
    Date,
    /// timestamp or time, with or without time zone, with fractional-second precision.
    Clock {
        date: bool,
        zoned: bool,
        precision: u32,
    },
    Interval,
    Json,
    Jsonb,
    Uuid,
    Other(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Text {
    /// text, varchar without a length.
    Unbounded,
    /// varchar(n).
    Varying(u32),
    /// char(n): blank-padded.
    Padded(u32),
}

struct Parsed {
    kind: Kind,
    array: bool,
}

fn parse(declared: &str) -> Parsed {
    let mut s = declared.trim();
    let array = s.ends_with("[]");
    while let Some(stripped) = s.strip_suffix("[]") {
        s = stripped.trim_end();
    }
    let (base, mods) = match (s.find('('), s.find(')')) {
        (Some(open), Some(close)) if open < close => {
            let mods: Vec<u32> = s[open + 1..close]
                .split(',')
                .filter_map(|m| m.trim().parse().ok())
                .collect();
            (format!("{} {}", s[..open].trim(), s[close + 1..].trim()), mods)
        }
        _ => (s.to_string(), Vec::new()),
    };
    let base = base.trim().trim_start_matches("pg_catalog.").to_string();
    Parsed {
        kind: kind(&base, &mods).unwrap_or_else(|| Kind::Other(s.to_string())),
        array,
    }
}

/// The family of a built-in type; `None` for any other (compared by its whole declaration).
fn kind(base: &str, mods: &[u32]) -> Option<Kind> {
    let precision = mods.first().copied().unwrap_or(6);
    Some(match base {
        "smallint" => Kind::Int { bits: 16 },
        "integer" => Kind::Int { bits: 32 },
        "bigint" => Kind::Int { bits: 64 },
        "numeric" => Kind::Numeric(match mods {
            [p, s] => Some((*p, *s)),
            [p] => Some((*p, 0)),
            _ => None,
        }),
        "real" => Kind::Float { bits: 24 },
        "double precision" => Kind::Float { bits: 53 },
        "text" => Kind::Text(Text::Unbounded),
        "character varying" => Kind::Text(mods.first().map_or(Text::Unbounded, |n| Text::Varying(*n))),
        // `character` without a length is char(1).
        "character" | "bpchar" => Kind::Text(Text::Padded(mods.first().copied().unwrap_or(1))),
        "boolean" => Kind::Bool,
        "date" => Kind::Date,
        "timestamp without time zone" => Kind::Clock {
            date: true,
            zoned: false,
            precision,
        },
        "timestamp with time zone" => Kind::Clock {
            date: true,
            zoned: true,
            precision,
        },
        "time without time zone" => Kind::Clock {
            date: false,
            zoned: false,
            precision,
        },
        "time with time zone" => Kind::Clock {
            date: false,
            zoned: true,
            precision,
        },
        "interval" => Kind::Interval,
        "json" => Kind::Json,
        "jsonb" => Kind::Jsonb,
        "uuid" => Kind::Uuid,
        _ => return None,
    })
}

fn narrowing(why: impl Into<String>) -> Cast {
    Cast::Narrowing(why.into())
}

fn element(from: &Kind, to: &Kind, from_text: &str, to_text: &str) -> Cast {
    if from == to {
        return Cast::Widening;
    }
    match (from, to) {
        (_, Kind::Text(text)) => to_text_type(from, text),
        (Kind::Text(_), Kind::Other(name)) if name == "name" => narrowing("values longer than 63 bytes are cut"),
        // A type this module has no rule for ("char", a user type) may cut as well as refuse.
        (Kind::Text(_), Kind::Other(_)) => Cast::Unknown,
        (Kind::Text(_), _) => narrowing(format!("text that is not a valid {} is refused", to_text.trim())),
        (Kind::Int { .. } | Kind::Numeric(_) | Kind::Float { .. }, _) => number(from, to),
        (Kind::Clock { .. } | Kind::Date, _) => clock(from, to),
        (Kind::Jsonb, Kind::Json) => Cast::Widening,
        (Kind::Json, Kind::Jsonb) => narrowing("whitespace, key order and duplicate keys are not kept"),
        (Kind::Bool | Kind::Interval | Kind::Uuid | Kind::Json | Kind::Jsonb, _) => {
            narrowing(format!("{} is a different kind of value", from_text.trim()))
        }
        (Kind::Other(_), _) => Cast::Unknown,
    }
}

/// Characters the text form of a value can need, when bounded.
fn text_width(kind: &Kind) -> Option<u32> {
    match kind {
        Kind::Int { bits: 16 } => Some(6),
        Kind::Int { bits: 32 } => Some(11),
        Kind::Int { .. } => Some(20),
        Kind::Numeric(Some((p, s))) => Some(p + 2 + u32::from(*s > 0)),
        Kind::Bool => Some(5),
        Kind::Uuid => Some(36),
        Kind::Date => Some(13),
        Kind::Text(Text::Varying(n) | Text::Padded(n)) => Some(*n),
        _ => None,
    }
}

fn to_text_type(from: &Kind, to: &Text) -> Cast {
    match (from, to) {
        (Kind::Text(Text::Padded(_)), Text::Unbounded | Text::Varying(_)) => {
            narrowing("trailing blanks of character(n) values are dropped")
        }
        (Kind::Other(_), Text::Unbounded) => Cast::Unknown,
        (_, Text::Unbounded) => Cast::Widening,
        (_, Text::Varying(n) | Text::Padded(n)) => match text_width(from) {
            Some(w) if w <= *n && !matches!(to, Text::Padded(_)) => Cast::Widening,
            Some(w) if w == *n && matches!(from, Kind::Text(Text::Padded(_))) => Cast::Widening,
            _ if matches!(to, Text::Padded(_)) => narrowing(format!(
                "values are blank-padded to {n} characters, longer ones are refused, and blanks beyond {n} are cut without an error"
            )),
            // PostgreSQL cuts trailing blanks beyond the length instead of refusing the value.
            _ => narrowing(format!(
                "values longer than {n} characters are refused, except that trailing blanks beyond {n} are cut \
                 without an error"
            )),
        },
    }
}

/// Decimal digits before the point that a type holds without loss, and digits after it.
fn digits(kind: &Kind) -> Option<(u32, u32)> {
    match kind {
        // The largest value of each has one digit more than every value below it holds.
        Kind::Int { bits: 16 } => Some((5, 0)),
        Kind::Int { bits: 32 } => Some((10, 0)),
        Kind::Int { .. } => Some((19, 0)),
        Kind::Numeric(Some((p, s))) => Some((p.saturating_sub(*s), *s)),
        _ => None,
    }
}

fn number(from: &Kind, to: &Kind) -> Cast {
    match (from, to) {
        (Kind::Int { bits: a }, Kind::Int { bits: b }) if a <= b => Cast::Widening,
        (Kind::Int { .. }, Kind::Int { bits }) => {
            let (max, name) = if *bits == 16 {
                ("32767", "smallint")
            } else {
                ("2147483647", "integer")
            };
            narrowing(format!("values beyond ±{max} do not fit {name}"))
        }
        (Kind::Int { .. } | Kind::Numeric(_), Kind::Numeric(None)) => Cast::Widening,
        (Kind::Numeric(None), Kind::Numeric(Some(_)) | Kind::Int { .. }) => {
            let s = if let Kind::Numeric(Some((_, s))) = to { *s } else { 0 };
            narrowing(format!(
                "values are rounded to {s} decimal places and large ones are refused"
            ))
        }
        (Kind::Int { .. } | Kind::Numeric(_), Kind::Numeric(_) | Kind::Int { .. }) => bounded(from, to),
        (Kind::Float { bits: 24 }, Kind::Float { bits: 53 }) => Cast::Widening,
        (Kind::Float { .. }, Kind::Float { .. }) => narrowing("real keeps about 6 significant digits"),
        (Kind::Int { bits: 16 }, Kind::Float { .. }) | (Kind::Int { bits: 32 }, Kind::Float { bits: 53 }) => {
            Cast::Widening
        }
        (_, Kind::Float { bits }) => {
            let kept = if *bits == 24 { 6 } else { 15 };
            narrowing(format!("floating point keeps about {kept} significant digits"))
        }
        (Kind::Float { .. }, _) => narrowing("floating point values are rounded, and NaN and infinity are refused"),
        _ => Cast::Unknown,
    }
}

/// Between integers and constrained numerics: compare digits before and after the point.
fn bounded(from: &Kind, to: &Kind) -> Cast {
    let (Some((fi, fs)), Some((ti, ts))) = (digits(from), digits(to)) else {
        return Cast::Unknown;
    };
    // An integer type holds every value with one digit fewer than its largest value.
    let to_whole = if matches!(to, Kind::Int { .. }) { ti - 1 } else { ti };
    if fs > ts {
        narrowing(format!("values are rounded to {ts} decimal places"))
    } else if fi > to_whole {
        narrowing(format!("values of 10^{to_whole} or more do not fit"))
    } else {
        Cast::Widening
    }
}

fn clock(from: &Kind, to: &Kind) -> Cast {
    match (from, to) {
        (
            Kind::Date,
            Kind::Clock {
                date: true,
                zoned: false,
                ..
            },
        ) => Cast::Widening,
        (
            Kind::Date,
            Kind::Clock {
                date: true,
                zoned: true,
                ..
            },
        ) => narrowing("dates become midnight in the session's time zone"),
        (Kind::Clock { date: true, .. }, Kind::Date) => narrowing("the time of day is dropped"),
        (
            Kind::Clock {
                date: fd,
                zoned: fz,
                precision: fp,
            },
            Kind::Clock {
                date: td,
                zoned: tz,
                precision: tp,
            },
        ) => {
            if fd != td {
                narrowing("the date is dropped or made up")
            } else if *fz && !tz {
                narrowing("the time zone offset is dropped: values become wall-clock times in the session's time zone")
            } else if !fz && *tz {
                narrowing("wall-clock times are read in the session's time zone; times skipped or repeated by a daylight-saving change move")
            } else if tp < fp {
                narrowing(format!("fractions of a second are rounded to {tp} digits"))
            } else {
                Cast::Widening
            }
        }
        _ => narrowing("a different kind of value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lossy(from: &str, to: &str) -> bool {
        matches!(classify(from, to), Cast::Narrowing(_))
    }

    #[test]
    fn same_and_widening() {
        assert_eq!(classify("integer", "integer"), Cast::Same);
        assert_eq!(classify("numeric(12,2)", "numeric(12,2)"), Cast::Same);
        for (from, to) in [
            ("integer", "bigint"),
            ("smallint", "integer"),
            ("numeric(10,2)", "numeric(12,2)"),
            ("numeric(10,2)", "numeric(12,4)"),
            ("numeric(10,2)", "numeric"),
            ("integer", "numeric(10,0)"),
            ("numeric(9,0)", "integer"),
            ("character varying(40)", "character varying(80)"),
            ("character varying(40)", "text"),
            ("text", "character varying"),
            ("integer", "text"),
            ("jsonb", "text"),
            ("jsonb", "json"),
            ("uuid", "character varying(36)"),
            ("real", "double precision"),
            ("integer", "double precision"),
            ("date", "timestamp without time zone"),
            ("timestamp(3) with time zone", "timestamp with time zone"),
            ("integer[]", "bigint[]"),
            ("integer[]", "text"),
        ] {
            assert_eq!(classify(from, to), Cast::Widening, "{from} -> {to}");
        }
    }

    #[test]
    fn narrowing_casts_say_why() {
        for (from, to) in [
            ("bigint", "integer"),
            ("integer", "smallint"),
            ("numeric(12,2)", "numeric(10,2)"),
            ("numeric(10,2)", "numeric(10,1)"),
            ("numeric(10,2)", "integer"),
            ("numeric(10,0)", "integer"),
            ("numeric", "numeric(12,2)"),
            ("bigint", "numeric(10,0)"),
            ("text", "character varying(20)"),
            ("character varying(80)", "character varying(40)"),
            ("character(10)", "text"),
            ("text", "character(10)"),
            ("timestamp with time zone", "timestamp without time zone"),
            ("timestamp without time zone", "timestamp with time zone"),
            ("timestamp with time zone", "timestamp(0) with time zone"),
            ("timestamp with time zone", "date"),
            ("text", "jsonb"),
            ("json", "jsonb"),
            ("jsonb", "character varying(100)"),
            ("text", "integer"),
            ("double precision", "real"),
            ("bigint", "double precision"),
            ("double precision", "numeric"),
            ("double precision", "integer"),
            ("bigint[]", "integer[]"),
            ("boolean", "integer"),
            ("text", "name"),
        ] {
            assert!(lossy(from, to), "{from} -> {to}: {:?}", classify(from, to));
        }
        let Cast::Narrowing(why) = classify("numeric(12,2)", "numeric(10,2)") else {
            panic!("numeric(12,2) -> numeric(10,2) narrows");
        };
        assert_eq!(why, "values of 10^8 or more do not fit");
        let Cast::Narrowing(why) = classify("numeric(10,2)", "integer") else {
            panic!("numeric(10,2) -> integer narrows");
        };
        assert_eq!(why, "values are rounded to 0 decimal places");
    }

    #[test]
    fn unknown_types_are_never_assumed_safe() {
        assert_eq!(classify("public.mood", "text"), Cast::Unknown);
        assert_eq!(classify("public.mood", "public.feeling"), Cast::Unknown);
        assert!(classify("public.mood", "text").may_lose());
        assert_eq!(classify("integer[]", "integer"), Cast::Unknown);
        assert_eq!(classify("bit(3)", "bit(5)"), Cast::Unknown);
        assert_eq!(classify("text", "public.mood"), Cast::Unknown);
        assert_eq!(classify("text", "\"char\""), Cast::Unknown);
    }
}
