//! Which tables can be compared by key-range checksums, and the SQL computing them.
//!
//! A range's checksum is its row count and the md5 of its rows' texts joined in key order,
//! computed on each side by its own server: on green over the values the mapping gives blue
//! ([`crate::mapping::on_green`]), cast to blue's column type with its modifier (what blue
//! stores), on blue over blue's columns, each column printed by its output function under the
//! evaluation environment (both sessions carry it), the row as a record of those texts (so a
//! NULL, an empty string and the text `NULL` print differently and column boundaries are
//! quoted). Equal checksums mean the full comparison finds nothing in that range: it compares
//! exactly those texts by key. Unequal ones (or an error computing one, such as a value blue's
//! type cannot hold) only mean the range is compared row by row.
//!
//! Range membership is the same on both sides because blue's key columns are green's key
//! columns copied unchanged (same type, no modifier that changes them), ordered on both sides
//! by the type's btree order, text keys by bytes (`COLLATE "C"`): a row and its blue row are
//! always in the same range, whatever the ranges are. Both sides scan a range through a btree
//! index on the key with that order, so a range costs its rows, not the table.

use tokio_postgres::Client;

use super::table::{Range, Table};
use crate::error::Error;
use crate::mapping::{KeyPlan, TablePlan};
use crate::sql;

/// Set on both sessions for the checksum pass: a range is read through the key index whatever
/// the statistics say (a table just copied has none, and a sequential scan per range would
/// read the whole table for each); the index gives key order, so nothing is sorted.
pub(super) const THROUGH_INDEX: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off";
/// Undoes [`THROUGH_INDEX`] (blue's session compares row by row next, green's asks its catalog).
pub(super) const PLAN_AS_USUAL: &str = "RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_sort";

/// A range's rows and their digest on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Sums {
    pub(super) rows: i64,
    pub(super) digest: Option<String>,
}

/// What one side's catalog says about a table's key: per key column (in key order) its
/// attnum, whether its type is collatable and whether it is built in; per btree index, its
/// columns and their collations.
#[derive(Debug, Default)]
pub(super) struct KeyFacts {
    pub(super) columns: Vec<Option<(i16, bool, bool)>>,
    pub(super) indexes: Vec<(Vec<i16>, Vec<String>)>,
}

const COLUMNS_SQL: &str = "
SELECT a.attname::text, a.attnum, t.typcollation <> 0, t.typnamespace = 'pg_catalog'::regnamespace
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped";

const INDEXES_SQL: &str = "
SELECT string_to_array(i.indkey::text, ' ')::int2[],
       ARRAY(SELECT coalesce(c.collname::text, '') FROM unnest(i.indcollation::oid[]) WITH ORDINALITY AS u(coll, n)
             LEFT JOIN pg_collation c ON c.oid = u.coll ORDER BY u.n)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = to_regclass($1) AND am.amname = 'btree' AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL";

impl KeyFacts {
    /// Reads the facts of table `table` (quoted, qualified) and its key columns `names`.
    pub(super) async fn read(
        client: &Client,
        table: &str,
        names: &[String],
    ) -> std::result::Result<KeyFacts, tokio_postgres::Error> {
        let rows = client.query(COLUMNS_SQL, &[&table, &names]).await?;
        let columns = names
            .iter()
            .map(|n| {
                rows.iter()
                    .find(|r| r.get::<_, String>(0) == *n)
                    .map(|r| (r.get(1), r.get(2), r.get(3)))
            })
            .collect();
        let indexes = client
            .query(INDEXES_SQL, &[&table])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(KeyFacts { columns, indexes })
    }

    /// Why ranges cannot be formed over this side's key in byte order through an index, if so.
    pub(super) fn refusal(&self, side: &str, names: &[String]) -> Option<String> {
        let mut attnums = Vec::new();
        let mut collatable = Vec::new();
        for (name, column) in names.iter().zip(&self.columns) {
            let Some((attnum, coll, builtin)) = column else {
                return Some(format!("{side} key column {name} was not found"));
            };
            if !builtin {
                return Some(format!(
                    "{side} key column {name} has a type that is not built in (its order may differ between servers)"
                ));
            }
            attnums.push(*attnum);
            collatable.push(*coll);
        }
        let usable = self.indexes.iter().any(|(cols, collations)| {
            cols.len() >= attnums.len()
                && cols[..attnums.len()] == attnums[..]
                && collatable
                    .iter()
                    .enumerate()
                    .all(|(i, c)| !c || collations.get(i).is_some_and(|n| n == "C"))
        });
        if usable {
            return None;
        }
        Some(if collatable.contains(&true) {
            format!(
                "{side} has no btree index on key ({}) with COLLATE \"C\" (text keys are ranged in byte order)",
                names.join(", ")
            )
        } else {
            format!("{side} has no btree index on key ({})", names.join(", "))
        })
    }
}

/// Why `plan` cannot be compared by checksums, as far as the plan alone tells.
pub(super) fn plan_refusal(plan: &TablePlan) -> Option<String> {
    let KeyPlan::Unique(key) = &plan.key else {
        return Some("blue has no unique key".into());
    };
    if plan.filter.is_some() || crate::mapping::statements::published_rows(plan).is_some() {
        return Some("filtered (blue rows count only where green has their key)".into());
    }
    let unquote = |s: &str| s.replace('"', "");
    for k in key {
        let t = &plan.targets[k.target];
        let green_type = &plan.green.columns[k.green].type_sql;
        if t.value.copied() != Some(k.green) || unquote(&t.stored_type) != unquote(green_type) {
            return Some(format!(
                "blue key column {} is not green's column copied unchanged",
                t.blue_name
            ));
        }
    }
    None
}

/// One table's checksum SQL: green's value texts (per target, in [`Checksums::targets`] order)
/// and the table's range conditions.
pub(super) struct Checksums<'a> {
    pub(super) table: &'a Table<'a>,
    /// Key targets, then the compared ones.
    targets: Vec<usize>,
    /// Per entry of `targets`: SQL over green's table yielding blue's stored value.
    green_values: Vec<String>,
}

impl<'a> Checksums<'a> {
    /// `select`: per target of the plan, SQL over green's table yielding the value as blue's
    /// column type (without its modifier).
    pub(super) fn new(table: &'a Table<'a>, compared: &[usize], select: &[String]) -> Checksums<'a> {
        let plan = table.plan();
        let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
        let mut targets = key.clone();
        targets.extend(compared.iter().copied().filter(|t| !key.contains(t)));
        let green_values = targets
            .iter()
            .map(|&t| format!("CAST(({}) AS {})", select[t], plan.targets[t].stored_type))
            .collect();
        Checksums {
            table,
            targets,
            green_values,
        }
    }

    fn green_table(&self) -> String {
        let g = &self.table.plan().green;
        sql::qualified(&g.namespace, &g.name)
    }

    fn blue_order(&self) -> String {
        let plan = self.table.plan();
        let cols: Vec<String> = plan
            .key
            .columns()
            .iter()
            .enumerate()
            .map(|(i, k)| format!("b.{}{}", sql::ident(&plan.targets[k.target].blue_name), self.table.c(i)))
            .collect();
        cols.join(", ")
    }

    /// The checksum of `range` on green.
    pub(super) fn green_sql(&self, range: &Range) -> String {
        let texts: Vec<String> = self.green_values.iter().map(|v| format!("({v})::text")).collect();
        digest_sql(
            &texts,
            &self.green_table(),
            &self.table.range_condition(false, range),
            &self.table.green_order("", false),
        )
    }

    /// The checksum of `range` on blue.
    pub(super) fn blue_sql(&self, range: &Range) -> String {
        let plan = self.table.plan();
        let texts: Vec<String> = self
            .targets
            .iter()
            .map(|&t| format!("b.{}::text", sql::ident(&plan.targets[t].blue_name)))
            .collect();
        digest_sql(
            &texts,
            &format!("{} AS b", plan.blue_sql),
            &self.table.range_condition(true, range),
            &self.blue_order(),
        )
    }

    /// Green's key columns, each as `{prefix}"column"{suffix}`, joined by commas.
    fn key_columns(&self, prefix: &str, suffix: &str) -> String {
        let plan = self.table.plan();
        let cols: Vec<String> = plan
            .key
            .columns()
            .iter()
            .map(|k| format!("{prefix}{}{suffix}", sql::ident(&plan.green.columns[k.green].name)))
            .collect();
        cols.join(", ")
    }

    /// Green's key (as text) `$1` rows past `lo` (`$1` counting from 0), in key order.
    pub(super) fn bound_sql(&self, lo: &Range) -> String {
        // Ordered by the qualified columns: a bare name would sort by the text output column.
        format!(
            "SELECT {} FROM {} AS g WHERE {} ORDER BY {} OFFSET $1 LIMIT 1",
            self.key_columns("", "::text"),
            self.green_table(),
            self.table.range_condition(false, lo),
            self.table.green_order("g.", false)
        )
    }

    /// Green's keys (as text) of every `$1`th row of `range`, in key order, short of `$2`.
    pub(super) fn split_sql(&self, range: &Range) -> String {
        format!(
            "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS pgbridge_n FROM {} WHERE {}) AS s \
             WHERE s.pgbridge_n % $1 = 0 AND s.pgbridge_n < $2 ORDER BY s.pgbridge_n",
            self.key_columns("s.", "::text"),
            self.key_columns("", ""),
            self.table.green_order("", false),
            self.green_table(),
            self.table.range_condition(false, range)
        )
    }

    /// Green's rows in `range`, reading keys only.
    pub(super) fn count_sql(&self, range: &Range) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {}",
            self.green_table(),
            self.table.range_condition(false, range)
        )
    }
}

/// `count(*)` and the md5 of the rows' `texts` as records joined in `order`: the rows are
/// read in key order through the index and joined in that order.
fn digest_sql(texts: &[String], from: &str, condition: &str, order: &str) -> String {
    format!(
        "SELECT count(*), md5(string_agg(pgbridge_r, E'\\n')) \
         FROM (SELECT ROW({})::text AS pgbridge_r FROM {from} WHERE {condition} ORDER BY {order}) AS pgbridge_s",
        texts.join(", ")
    )
}

/// Whether `e` comes from the values of the rows (a value blue's type cannot hold, a digest
/// beyond PostgreSQL's limits): the range is then compared row by row, which names them.
pub(super) fn from_values(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| ["22", "23", "54"].contains(&&c.code()[..2]))
}

/// `e` as an error of verifying the table, on `side`.
pub(super) fn on(side: &str, what: &str, e: &tokio_postgres::Error) -> Error {
    Error::postgres(format!("{what}: computing checksums on {side}"), e).into_definite()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(indexes: Vec<(Vec<i16>, Vec<&str>)>, collatable: bool) -> KeyFacts {
        KeyFacts {
            columns: vec![Some((1, collatable, true)), Some((2, false, true))],
            indexes: indexes
                .into_iter()
                .map(|(c, n)| (c, n.into_iter().map(String::from).collect()))
                .collect(),
        }
    }

    #[test]
    fn ranges_need_an_index_on_the_key_in_byte_order() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            facts(vec![(vec![1, 2], vec!["", ""])], false).refusal("green", &names),
            None
        );
        assert_eq!(
            facts(vec![(vec![1, 2, 3], vec!["C", "", ""])], true).refusal("blue", &names),
            None
        );
        let refused = facts(vec![(vec![1, 2], vec!["en_US", ""])], true).refusal("blue", &names);
        assert!(refused.is_some_and(|r| r.contains("COLLATE \"C\"")));
        assert!(facts(vec![(vec![2, 1], vec!["", ""])], false)
            .refusal("green", &names)
            .is_some());
        let mut missing = facts(vec![(vec![1, 2], vec!["", ""])], false);
        missing.columns[1] = None;
        assert!(missing
            .refusal("green", &names)
            .is_some_and(|r| r.contains("not found")));
        let mut user_type = facts(vec![(vec![1, 2], vec!["", ""])], false);
        user_type.columns[0] = Some((1, false, false));
        assert!(user_type
            .refusal("green", &names)
            .is_some_and(|r| r.contains("not built in")));
    }
}
