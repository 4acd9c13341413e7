//! Blue's partition bounds for `check --data`: a row no partition of blue's table accepts
//! is refused by blue ("no partition of relation ... found for row"), so the temporary copy
//! the rows are checked against is partitioned as blue's table is, with a temporary partition
//! per blue partition (the same bounds, `pg_get_expr(relpartbound)`, sub-partitions
//! recursively, a default partition accepting what the others do not), each with the CHECK
//! and NOT NULL constraints blue declares on that partition alone.

use tokio_postgres::Client;

use super::stage::{temp, TARGET};
use crate::mapping::TablePlan;
use crate::sql::ident;

/// A table of blue's partition tree (the root first, parents before their partitions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub oid: u32,
    /// The partitioned table it is a partition of; `None` for the root.
    pub parent: Option<u32>,
    /// `schema.table`, quoted where needed.
    pub blue_name: String,
    /// `pg_get_partkeydef` when it is partitioned itself (`RANGE (id)`).
    pub key: Option<String>,
    /// `pg_get_expr(relpartbound)`: `FOR VALUES ...` or `DEFAULT`; `None` for the root.
    pub bound: Option<String>,
    /// Its own CHECK constraints, as `CONSTRAINT name CHECK (...)`.
    pub checks: Vec<String>,
    /// Columns NOT NULL on it but not on its parent.
    pub not_null: Vec<String>,
    /// The columns of its partition key (the root's: their NOT NULL is never dropped, as
    /// PostgreSQL refuses that for a range key).
    pub key_columns: Vec<String>,
    /// It has a unique index of its own (not one of its parent's): not checked.
    pub own_unique: bool,
}

/// The name of partition `i`'s temporary copy.
pub fn temp_name(i: usize) -> String {
    format!("pgbridge_check_part_{i}")
}

/// Blue's partition tree of `plan`'s table: just the root (without a key) when it is not
/// partitioned.
pub async fn read(blue: &Client, plan: &TablePlan) -> Result<Vec<Partition>, tokio_postgres::Error> {
    let rows = blue
        .query(
            "SELECT t.relid::oid, t.parentrelid::oid, format('%I.%I', n.nspname, c.relname), \
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, \
                    CASE WHEN t.level > 0 THEN pg_get_expr(c.relpartbound, c.oid) END, \
                    array(SELECT format('CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)) \
                          FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'c' AND k.conislocal \
                            AND k.coninhcount = 0 AND t.level > 0 ORDER BY k.conname), \
                    array(SELECT a.attname::text FROM pg_attribute a JOIN pg_attribute pa \
                            ON pa.attrelid = t.parentrelid AND pa.attname = a.attname \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull \
                            AND NOT pa.attnotnull ORDER BY a.attnum), \
                    array(SELECT a.attname::text FROM pg_partitioned_table p \
                            CROSS JOIN unnest(p.partattrs::int2[]) AS k(attnum) \
                            JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum \
                          WHERE p.partrelid = c.oid), \
                    t.level > 0 AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique \
                      AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)) \
             FROM pg_partition_tree(to_regclass($1)) AS t JOIN pg_class c ON c.oid = t.relid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY t.level, c.oid",
            &[&plan.blue_sql],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Partition {
            oid: r.get(0),
            parent: r.get(1),
            blue_name: r.get(2),
            key: r.get(3),
            bound: r.get(4),
            checks: r.get(5),
            not_null: r.get(6),
            key_columns: r.get(7),
            own_unique: r.get(8),
        })
        .collect())
}

/// ` PARTITION BY ...` for the target copy, when blue's table is partitioned.
pub fn root_clause(tree: &[Partition]) -> String {
    match tree.first().and_then(|root| root.key.as_ref()) {
        Some(key) => format!(" PARTITION BY {key}"),
        None => String::new(),
    }
}

/// The root's partition key columns (their NOT NULL stays).
pub fn root_key_columns(tree: &[Partition]) -> &[String] {
    tree.first().map_or(&[], |root| root.key_columns.as_slice())
}

/// The temporary partitions of the target copy, parents first, each with its own
/// constraints.
pub fn create(tree: &[Partition]) -> Vec<String> {
    let Some(root) = tree.first().filter(|r| r.key.is_some()) else {
        return Vec::new();
    };
    let mut sql = Vec::new();
    for (i, p) in tree.iter().enumerate().skip(1) {
        let (Some(bound), Some(parent)) = (&p.bound, p.parent) else {
            continue;
        };
        let parent = if parent == root.oid {
            temp(TARGET)
        } else {
            match tree.iter().position(|q| q.oid == parent) {
                Some(at) => temp(&temp_name(at)),
                None => continue,
            }
        };
        let sub = p.key.as_ref().map_or(String::new(), |k| format!(" PARTITION BY {k}"));
        sql.push(format!(
            "CREATE TEMP TABLE {} PARTITION OF {parent} {bound}{sub}",
            ident(&temp_name(i))
        ));
        let mut alters: Vec<String> = p.checks.iter().map(|c| format!("ADD {c}")).collect();
        alters.extend(
            p.not_null
                .iter()
                .map(|c| format!("ALTER COLUMN {} SET NOT NULL", ident(c))),
        );
        if !alters.is_empty() {
            sql.push(format!("ALTER TABLE {} {}", temp(&temp_name(i)), alters.join(", ")));
        }
    }
    sql
}

/// What is not checked of blue's partitions: unique indexes a partition has of its own.
pub fn unchecked(tree: &[Partition]) -> Vec<String> {
    tree.iter()
        .filter(|p| p.own_unique)
        .map(|p| format!("unique indexes of partition {} alone are not checked", p.blue_name))
        .collect()
}

/// PostgreSQL's message with the temporary partitions' names replaced by blue's, and a row
/// no partition accepts said so.
pub fn readable(reason: String, tree: &[Partition]) -> String {
    let reason = tree.iter().enumerate().skip(1).fold(reason, |r, (i, p)| {
        r.replace(
            &format!("relation {}", ident(&temp_name(i))),
            &format!("blue table {}", p.blue_name),
        )
    });
    match reason.strip_prefix("no partition of ") {
        Some(rest) if rest.contains(" found for row") => {
            format!("no partition of {}", rest.replacen(" found for row", " accepts it", 1))
        }
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(oid: u32, parent: Option<u32>, name: &str, key: Option<&str>, bound: Option<&str>) -> Partition {
        Partition {
            oid,
            parent,
            blue_name: name.into(),
            key: key.map(Into::into),
            bound: bound.map(Into::into),
            checks: Vec::new(),
            not_null: Vec::new(),
            key_columns: vec!["id".into()],
            own_unique: false,
        }
    }

    #[test]
    fn the_target_copy_is_partitioned_as_blue_is_sub_partitions_too() {
        let mut sub = part(
            12,
            Some(10),
            "public.t_200",
            Some("LIST (kind)"),
            Some("FOR VALUES FROM (100) TO (200)"),
        );
        sub.checks = vec!["CONSTRAINT small CHECK ((n < 5))".into()];
        let tree = vec![
            part(10, None, "public.t", Some("RANGE (id)"), None),
            part(11, Some(10), "public.t_100", None, Some("FOR VALUES FROM (1) TO (100)")),
            sub,
            part(13, Some(12), "public.t_200_a", None, Some("FOR VALUES IN ('a')")),
        ];
        assert_eq!(root_clause(&tree), " PARTITION BY RANGE (id)");
        assert_eq!(
            create(&tree),
            vec![
                "CREATE TEMP TABLE \"pgbridge_check_part_1\" PARTITION OF pg_temp.\"pgbridge_check_target\" \
                 FOR VALUES FROM (1) TO (100)",
                "CREATE TEMP TABLE \"pgbridge_check_part_2\" PARTITION OF pg_temp.\"pgbridge_check_target\" \
                 FOR VALUES FROM (100) TO (200) PARTITION BY LIST (kind)",
                "ALTER TABLE pg_temp.\"pgbridge_check_part_2\" ADD CONSTRAINT small CHECK ((n < 5))",
                "CREATE TEMP TABLE \"pgbridge_check_part_3\" PARTITION OF pg_temp.\"pgbridge_check_part_2\" \
                 FOR VALUES IN ('a')",
            ]
        );
        assert_eq!(
            readable(
                "no partition of blue table public.t found for row (Partition key of the failing row contains (id) = (150).)".into(),
                &tree
            ),
            "no partition of blue table public.t accepts it (Partition key of the failing row contains (id) = (150).)"
        );
        assert_eq!(
            readable(
                "no partition of relation \"pgbridge_check_part_2\" found for row".into(),
                &tree
            ),
            "no partition of blue table public.t_200 accepts it"
        );
        let plain = vec![part(10, None, "public.t", None, None)];
        assert_eq!((root_clause(&plain), create(&plain)), (String::new(), Vec::new()));
    }
}
