//! How a table is cut into parts, each copied in its own blue transaction by whichever worker
//! is free, so a big table spreads over `--jobs` workers.
//!
//! * Blue's table is empty: green's rows are cut by block ranges (TID range scans, cheap and
//!   keyless); each part only adds rows.
//! * Blue's table holds rows and its key starts with an integer column copied as it is, which
//!   green indexes: the parts are ranges of that column, the same condition on both sides, so
//!   each part upserts green's rows of its range and deletes blue's rows of that range green
//!   does not have; the first and last ranges are open, so blue rows beyond green's smallest
//!   and largest keys are reached too.
//! * Otherwise (no key, another key type, no index on green): one part for the whole table,
//!   since removing blue's rows green lacks needs every green key at once.

use crate::mapping::{KeyPlan, TablePlan};
use crate::sql;

/// Green's block size (PostgreSQL's default); only used to cut tables into parts.
pub const BLOCK_SIZE: u64 = 8192;
/// About this much of green's table per part.
pub const PART_BYTES: u64 = 8 << 20;
pub const MAX_PARTS: u64 = 1024;

/// The rows of a table one part covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    Whole,
    /// Green blocks [from, to), `to` open for the last part.
    Blocks {
        from: u64,
        to: Option<u64>,
    },
    /// Rows whose key's first column (an integer, the same value on both sides) is in
    /// [from, to), an end open when `None`.
    Keys {
        from: Option<i64>,
        to: Option<i64>,
    },
}

impl Range {
    /// The condition selecting the part's rows of green's table, if any.
    pub fn on_green(&self, plan: &TablePlan) -> Option<String> {
        match self {
            Range::Whole => None,
            Range::Blocks { from, to: None } => Some(format!("ctid >= '({from},0)'::tid")),
            Range::Blocks { from, to: Some(to) } => {
                Some(format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid"))
            }
            Range::Keys { from, to } => {
                let k = range_key(plan)?;
                key_condition(&sql::ident(&plan.green.columns[k.green].name), *from, *to)
            }
        }
    }

    /// The condition selecting, in blue's table as `alias`, the rows the part makes match
    /// green's (key ranges only).
    pub fn on_blue(&self, plan: &TablePlan, alias: &str) -> Option<String> {
        match self {
            Range::Keys { from, to } => {
                let k = range_key(plan)?;
                let column = format!("{alias}.{}", sql::ident(&plan.targets[k.target].blue_name));
                key_condition(&column, *from, *to)
            }
            _ => None,
        }
    }
}

fn key_condition(column: &str, from: Option<i64>, to: Option<i64>) -> Option<String> {
    match (from, to) {
        (None, None) => None,
        (Some(f), None) => Some(format!("{column} >= {f}")),
        (None, Some(t)) => Some(format!("{column} < {t}")),
        (Some(f), Some(t)) => Some(format!("{column} >= {f} AND {column} < {t}")),
    }
}

/// Green's integer types (unquoted, as [`crate::mapping::GreenColumn::type_sql`] names them).
const INTEGERS: [&str; 3] = ["pg_catalog.int2", "pg_catalog.int4", "pg_catalog.int8"];

/// The key column a table holding rows on blue can be cut by: blue's unique key's first
/// column, when it is a plain copy of a green integer column of the same type (so a range of
/// it means the same rows on both sides).
pub fn range_key(plan: &TablePlan) -> Option<crate::mapping::KeyColumn> {
    let KeyPlan::Unique(key) = &plan.key else { return None };
    let first = *key.first()?;
    let target = &plan.targets[first.target];
    let integer = INTEGERS.contains(&plan.green.columns[first.green].type_sql.replace('"', "").as_str());
    (integer && target.value.copied() == Some(first.green) && target.copies_same_type(&plan.green)).then_some(first)
}

/// The parts as the summary names them ("4 key ranges"), or nothing for one part.
pub fn describe(ranges: &[Range]) -> String {
    match ranges.first() {
        Some(Range::Blocks { .. }) => format!("{} block ranges", ranges.len()),
        Some(Range::Keys { .. }) => format!("{} key ranges", ranges.len()),
        _ => String::new(),
    }
}

/// How many parts a table of about `bytes` is worth.
pub fn count(bytes: u64) -> u64 {
    (bytes / PART_BYTES).clamp(1, MAX_PARTS)
}

/// The block ranges a table of about `bytes` is copied in: [from, to) with `to` open for the
/// last part, or the whole table when small.
pub fn blocks(bytes: u64) -> Vec<Range> {
    let parts = count(bytes);
    if parts == 1 {
        return vec![Range::Whole];
    }
    let step = (bytes / BLOCK_SIZE).div_ceil(parts).max(1);
    (0..parts)
        .map(|i| Range::Blocks {
            from: i * step,
            to: (i + 1 < parts).then(|| (i + 1) * step),
        })
        .collect()
}

/// `parts` ranges of the key between green's smallest and largest values (about equal
/// widths), the first open below and the last open above; the whole table for one part.
pub fn keys(min: i64, max: i64, parts: u64) -> Vec<Range> {
    let width = i128::from(max) - i128::from(min) + 1;
    let parts = (parts as i128).clamp(1, width.max(1));
    if parts == 1 {
        return vec![Range::Whole];
    }
    let step = (width + parts - 1) / parts;
    let bound = |i: i128| i64::try_from(i128::from(min) + i * step).ok();
    (0..parts)
        .map(|i| Range::Keys {
            from: if i == 0 { None } else { bound(i) },
            to: if i + 1 == parts { None } else { bound(i + 1) },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{int_plan, KeyColumn, Value};

    #[test]
    fn a_small_table_is_one_part() {
        assert_eq!(blocks(0), vec![Range::Whole]);
        assert_eq!(blocks(PART_BYTES), vec![Range::Whole]);
    }

    #[test]
    fn a_table_is_cut_in_block_ranges_the_last_one_open() {
        let step = PART_BYTES / BLOCK_SIZE;
        assert_eq!(
            blocks(3 * PART_BYTES),
            vec![
                Range::Blocks {
                    from: 0,
                    to: Some(step)
                },
                Range::Blocks {
                    from: step,
                    to: Some(2 * step)
                },
                Range::Blocks {
                    from: 2 * step,
                    to: None
                },
            ]
        );
        assert_eq!(blocks(100_000 * PART_BYTES).len() as u64, MAX_PARTS);
    }

    #[test]
    fn key_ranges_cover_every_value_the_ends_open() {
        assert_eq!(
            keys(1, 100, 4),
            vec![
                Range::Keys {
                    from: None,
                    to: Some(26)
                },
                Range::Keys {
                    from: Some(26),
                    to: Some(51)
                },
                Range::Keys {
                    from: Some(51),
                    to: Some(76)
                },
                Range::Keys {
                    from: Some(76),
                    to: None
                },
            ]
        );
        // Never more ranges than values, never an overflow at the type's ends.
        assert_eq!(keys(5, 6, 10).len(), 2);
        assert_eq!(keys(7, 7, 10), vec![Range::Whole]);
        let wide = keys(i64::MIN, i64::MAX, 3);
        assert_eq!(wide.len(), 3);
        assert!(matches!(
            wide[2],
            Range::Keys {
                from: Some(_),
                to: None
            }
        ));
    }

    /// `public.t (id, v)` keyed on id, of `green_type` on both sides, blue's id named `Id`
    /// and fed by `value`.
    fn plan(green_type: &str, value: Value) -> TablePlan {
        let mut p = int_plan(&["id", "v"]);
        p.green.columns[0].type_sql = green_type.into();
        p.targets[0].blue_type = green_type.into();
        p.targets[0].blue_name = "Id".into();
        p.targets[0].value = value;
        p
    }

    #[test]
    fn key_ranges_need_an_integer_key_copied_as_it_is() {
        let p = plan("\"pg_catalog\".\"int8\"", Value::Green(0));
        assert_eq!(range_key(&p), Some(KeyColumn { target: 0, green: 0 }));
        let r = Range::Keys {
            from: Some(10),
            to: Some(20),
        };
        assert_eq!(r.on_green(&p).as_deref(), Some("\"id\" >= 10 AND \"id\" < 20"));
        assert_eq!(r.on_blue(&p, "b").as_deref(), Some("b.\"Id\" >= 10 AND b.\"Id\" < 20"));
        assert_eq!(range_key(&plan("pg_catalog.text", Value::Green(0))), None);
        assert_eq!(range_key(&plan("pg_catalog.int8", Value::Expr("id + 1".into()))), None);
        let mut keyless = plan("pg_catalog.int8", Value::Green(0));
        keyless.key = KeyPlan::Match(vec![KeyColumn { target: 0, green: 0 }]);
        assert_eq!(range_key(&keyless), None);
    }
}
