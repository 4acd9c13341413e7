//! SQL text for `check --roundtrip`: blue's rows a page at a time, through the reverse
//! mapping on green, back through this mapping on blue, compared by key. Pure.

use super::stage::{temp, typed_rows};
use crate::mapping::statements;
use crate::mapping::TablePlan;
use crate::sql::{ident, literal};

/// Blue's rows of one page, as blue holds them (on blue).
pub const ORIGINAL: &str = "pgbridge_roundtrip_blue";
/// Those rows as text, green's stage for the reverse mapping (on green).
pub const REVERSE_STAGE: &str = "pgbridge_roundtrip_stage";
/// The rows the reverse mapping computes, named and typed as green's columns (on green).
pub const ON_GREEN: &str = "pgbridge_roundtrip_green";
/// Those rows as text, blue's stage for this mapping (on blue).
pub const BACK_STAGE: &str = "pgbridge_roundtrip_back";

/// Blue's key columns of `plan` (a unique key), quoted, prefixed.
fn key_columns(plan: &TablePlan, prefix: &str) -> Vec<String> {
    plan.key
        .columns()
        .iter()
        .map(|k| format!("{prefix}{}", ident(&plan.targets[k.target].blue_name)))
        .collect()
}

/// Blue side: the page table, and the stage the rows come back into.
pub fn blue_setup(plan: &TablePlan) -> String {
    format!(
        "CREATE TEMP TABLE {} AS SELECT * FROM {} WITH NO DATA; {}",
        ident(ORIGINAL),
        plan.blue_sql,
        super::stage::text_stage(plan, BACK_STAGE)
    )
}

/// Green side: the reverse mapping's stage and the table of what it computes.
pub fn green_setup(reverse: &TablePlan) -> String {
    format!(
        "{}; CREATE TEMP TABLE {} AS {} WITH NO DATA",
        super::stage::text_stage(reverse, REVERSE_STAGE),
        ident(ON_GREEN),
        reverse_select(reverse)
    )
}

/// What the reverse mapping computes from the stage: each green column it feeds, as
/// green stores it (its type with modifier), rows outside its filter left out.
fn reverse_select(reverse: &TablePlan) -> String {
    let cols: Vec<String> = (0..reverse.targets.len())
        .map(|t| {
            format!(
                "{} AS {}",
                statements::mapped_value(reverse, t),
                ident(&reverse.targets[t].blue_name)
            )
        })
        .collect();
    let filter = reverse
        .filter
        .as_ref()
        .map_or(String::new(), |f| format!(" WHERE ({f})"));
    format!(
        "SELECT {} FROM {} AS g{filter}",
        cols.join(", "),
        typed_rows(reverse, REVERSE_STAGE, None)
    )
}

/// Fills the page table with the next `rows` of blue's rows in key order after `after`
/// (blue's text of the key columns), `sampling` right after the table.
pub fn next_page(plan: &TablePlan, sampling: &str, after: Option<&[String]>, rows: u64) -> String {
    let key = key_columns(plan, "b.");
    let condition = match after {
        None => String::new(),
        Some(values) => {
            let vals: Vec<String> = plan
                .key
                .columns()
                .iter()
                .zip(values)
                .map(|(k, v)| format!("CAST({} AS {})", literal(v), plan.targets[k.target].blue_type))
                .collect();
            format!(" WHERE ({}) > ({})", key.join(", "), vals.join(", "))
        }
    };
    format!(
        "INSERT INTO {} SELECT * FROM {} AS b{sampling}{condition} ORDER BY {} LIMIT {rows}",
        temp(ORIGINAL),
        plan.blue_sql,
        key.join(", ")
    )
}

/// The page's last key, as text of blue's key columns.
pub fn last_key(plan: &TablePlan) -> String {
    let text: Vec<String> = key_columns(plan, "o.").iter().map(|c| format!("{c}::text")).collect();
    let desc: Vec<String> = key_columns(plan, "o.").iter().map(|c| format!("{c} DESC")).collect();
    format!(
        "SELECT {} FROM {} AS o ORDER BY {} LIMIT 1",
        text.join(", "),
        temp(ORIGINAL),
        desc.join(", ")
    )
}

/// COPY of the page's columns the reverse mapping reads, out of blue.
pub fn page_out(reverse: &TablePlan) -> String {
    let cols: Vec<String> = statements::needed_columns(reverse)
        .iter()
        .map(|&g| ident(&reverse.green.columns[g].name))
        .collect();
    format!("COPY (SELECT {} FROM {}) TO STDOUT", cols.join(", "), temp(ORIGINAL))
}

/// On green: the reverse mapping over the stage, into its table.
pub fn map_on_green(reverse: &TablePlan) -> String {
    format!("INSERT INTO {} {}", temp(ON_GREEN), reverse_select(reverse))
}

/// COPY of the green columns this mapping reads, out of what the reverse mapping computed
/// (NULL for a column it does not feed).
pub fn back_out(plan: &TablePlan, reverse: &TablePlan) -> String {
    let cols: Vec<String> = statements::needed_columns(plan)
        .iter()
        .map(|&g| {
            let name = &plan.green.columns[g].name;
            if reverse.targets.iter().any(|t| &t.blue_name == name) {
                ident(name)
            } else {
                format!("NULL AS {}", ident(name))
            }
        })
        .collect();
    format!("COPY (SELECT {} FROM {}) TO STDOUT", cols.join(", "), temp(ON_GREEN))
}

/// Blue columns compared: those this mapping feeds on every write (not insert-only ones),
/// the key aside (rows are matched by it).
pub fn compared(plan: &TablePlan) -> Vec<usize> {
    let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    (0..plan.targets.len())
        .filter(|t| !plan.targets[*t].insert_only && !key.contains(t))
        .collect()
}

/// The page compared with what came back, by key: rows `lost` (no row came back with their
/// key), `new` (a row came back under a key the page lacks), and per column `changed`, with
/// blue's text and the text that came back.
pub fn compare(plan: &TablePlan) -> String {
    let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    let mut cols = key.clone();
    cols.extend(compared(plan));
    let m: Vec<String> = cols
        .iter()
        .map(|&t| format!("{} AS \"m{t}\"", statements::mapped_value(plan, t)))
        .collect();
    let o: Vec<String> = cols
        .iter()
        .map(|&t| format!("o.{} AS \"o{t}\"", ident(&plan.targets[t].blue_name)))
        .collect();
    let filter = plan.filter.as_ref().map_or(String::new(), |f| format!(" WHERE ({f})"));
    let on: Vec<String> = key.iter().map(|t| format!("o.\"o{t}\" = m.\"m{t}\"")).collect();
    let key_text = |side: &str| -> String {
        let parts: Vec<String> = key
            .iter()
            .map(|&t| {
                let c = format!("{side}.\"{}{t}\"", &side[..1]);
                format!(
                    "{} || coalesce({c}::text, 'NULL')",
                    literal(&format!("{}=", plan.targets[t].blue_name))
                )
            })
            .collect();
        format!("concat_ws(', ', {})", parts.join(", "))
    };
    // Byte equality of the text forms (COLLATE "C"), the key's too: never a column's
    // collation, which a VALUES list would give every column (a case-insensitive one hides
    // a value that came back in another case).
    let values: Vec<String> = key
        .iter()
        .chain(compared(plan).iter())
        .map(|&t| {
            format!(
                "({}, (o.\"o{t}\"::text) COLLATE \"C\", (m.\"m{t}\"::text) COLLATE \"C\")",
                literal(&plan.targets[t].blue_name)
            )
        })
        .collect();
    let changed = if values.is_empty() {
        String::new()
    } else {
        format!(
            " UNION ALL SELECT 'changed', {}, x.col, x.before, x.after FROM o JOIN m ON {on} \
             CROSS JOIN LATERAL (VALUES {}) AS x(col, before, after) WHERE x.before IS DISTINCT FROM x.after",
            key_text("o"),
            values.join(", "),
            on = on.join(" AND ")
        )
    };
    format!(
        "WITH m AS MATERIALIZED (SELECT true AS m_here, {} FROM {} AS g{filter}), \
         o AS MATERIALIZED (SELECT true AS o_here, {} FROM {} AS o) \
         SELECT * FROM (SELECT CASE WHEN m.m_here IS NULL THEN 'lost' ELSE 'new' END, \
           CASE WHEN m.m_here IS NULL THEN {} ELSE {} END, NULL::text, NULL::text, NULL::text \
           FROM o FULL JOIN m ON {on} WHERE o.o_here IS NULL OR m.m_here IS NULL{changed}) \
         AS d(kind, key, col, before, after) ORDER BY key, col",
        m.join(", "),
        typed_rows(plan, BACK_STAGE, None),
        o.join(", "),
        temp(ORIGINAL),
        key_text("o"),
        key_text("m"),
        on = on.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{KeyColumn, KeyPlan, Target, Value};

    fn plan(names: &[&str], blue: &[&str]) -> TablePlan {
        let green = crate::mapping::int_table(names);
        let targets = blue
            .iter()
            .enumerate()
            .map(|(g, name)| Target {
                blue_name: name.to_string(),
                blue_type: "\"pg_catalog\".\"int4\"".into(),
                stored_type: "integer".into(),
                value: Value::Green(g),
                depends: vec![g],
                insert_only: false,
                comparable: true,
                identity_always: false,
            })
            .collect();
        TablePlan {
            green,
            green_name: "public.t".into(),
            blue_name: "public.t".into(),
            blue_sql: "\"public\".\"t\"".into(),
            targets,
            key: KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }]),
            filter: None,
            overriding_system_value: false,
            blue_partitioned: false,
            file: None,
            partition_of: None,
            read: vec![true; names.len()],
        }
    }

    #[test]
    fn pages_follow_blue_key_order() {
        let p = plan(&["id", "qty"], &["id", "quantity"]);
        assert_eq!(
            next_page(&p, "", Some(&["41".to_string()]), 100),
            "INSERT INTO pg_temp.\"pgbridge_roundtrip_blue\" SELECT * FROM \"public\".\"t\" AS b \
             WHERE (b.\"id\") > (CAST('41' AS \"pg_catalog\".\"int4\")) ORDER BY b.\"id\" LIMIT 100"
        );
        assert_eq!(
            last_key(&p),
            "SELECT o.\"id\"::text FROM pg_temp.\"pgbridge_roundtrip_blue\" AS o ORDER BY o.\"id\" DESC LIMIT 1"
        );
    }

    #[test]
    fn columns_the_reverse_mapping_does_not_feed_come_back_null() {
        let forward = plan(&["id", "qty", "note"], &["id", "quantity", "note"]);
        let reverse = plan(&["id", "quantity"], &["id", "qty"]);
        assert_eq!(
            back_out(&forward, &reverse),
            "COPY (SELECT \"id\", \"qty\", NULL AS \"note\" FROM pg_temp.\"pgbridge_roundtrip_green\") TO STDOUT"
        );
        assert_eq!(
            page_out(&reverse),
            "COPY (SELECT \"id\", \"quantity\" FROM pg_temp.\"pgbridge_roundtrip_blue\") TO STDOUT"
        );
        assert!(map_on_green(&reverse).starts_with(
            "INSERT INTO pg_temp.\"pgbridge_roundtrip_green\" SELECT CAST(g.\"id\" AS integer) AS \"id\""
        ));
    }

    #[test]
    fn the_comparison_names_lost_new_and_changed_rows() {
        let p = plan(&["id", "qty"], &["id", "quantity"]);
        assert_eq!(compared(&p), vec![1]);
        let sql = compare(&p);
        assert!(sql.contains("FROM o FULL JOIN m ON o.\"o0\" = m.\"m0\""), "{sql}");
        assert!(
            // Guards: byte equality, never a column's (case-insensitive) collation; the key too.
            sql.contains(
                "(VALUES ('id', (o.\"o0\"::text) COLLATE \"C\", (m.\"m0\"::text) COLLATE \"C\"), \
                 ('quantity', (o.\"o1\"::text) COLLATE \"C\", (m.\"m1\"::text) COLLATE \"C\"))"
            ),
            "{sql}"
        );
        assert!(sql.contains("'id=' || coalesce(m.\"m0\"::text, 'NULL')"), "{sql}");
        let key_only = plan(&["id"], &["id"]);
        assert!(compare(&key_only).contains("(VALUES ('id', "));
    }
}
