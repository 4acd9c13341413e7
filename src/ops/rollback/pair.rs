//! SQL text for `check --roundtrip`: blue's rows a page at a time, through the reverse
//! mapping on green, back through this mapping on blue, compared by key. Pure.
//!
//! Each row carries blue's key as text ([`BLUE_KEY`]) all the way, so a row one of the
//! mappings cannot convert (a division by zero, a value the other side's type does not hold)
//! is named by its key: a page whose mapping statement fails is mapped again row by row by a
//! temporary function ([`ROWS_FN`], on the side that failed), which returns each refused
//! row's key and PostgreSQL's message, and the other rows go on.

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
/// What this mapping computes from them: blue's key and compared columns (on blue).
pub const MAPPED: &str = "pgbridge_roundtrip_mapped";
/// The column of the stages and of the tables in between holding blue's key as text.
pub const BLUE_KEY: &str = "pgbridge_blue_key";
/// The row-by-row function of each side, for a page its mapping statement refuses.
pub const ROWS_FN: &str = "pgbridge_roundtrip_rows";

/// Blue's key columns of `plan` (a unique key), quoted, prefixed.
fn key_columns(plan: &TablePlan, prefix: &str) -> Vec<String> {
    plan.key
        .columns()
        .iter()
        .map(|k| format!("{prefix}{}", ident(&plan.targets[k.target].blue_name)))
        .collect()
}

/// Blue side: the page table, the stage the rows come back into, the table of what this
/// mapping computes from them, and the row-by-row function.
pub fn blue_setup(plan: &TablePlan) -> String {
    format!(
        "CREATE TEMP TABLE {} AS SELECT * FROM {} WITH NO DATA; {}; CREATE TEMP TABLE {} AS {} WITH NO DATA; {}",
        ident(ORIGINAL),
        plan.blue_sql,
        keyed_stage(plan, BACK_STAGE),
        ident(MAPPED),
        mapped_select(plan, None),
        rows_function(BACK_STAGE, &fill_mapped(plan, Some(ONE_ROW)))
    )
}

/// Green side: the reverse mapping's stage, the table of what it computes, and the
/// row-by-row function.
pub fn green_setup(reverse: &TablePlan) -> String {
    format!(
        "{}; CREATE TEMP TABLE {} AS {} WITH NO DATA; {}",
        keyed_stage(reverse, REVERSE_STAGE),
        ident(ON_GREEN),
        reverse_select(reverse, None),
        rows_function(REVERSE_STAGE, &map_on_green(reverse, Some(ONE_ROW)))
    )
}

/// A text stage for `plan`, with [`BLUE_KEY`] last.
fn keyed_stage(plan: &TablePlan, name: &str) -> String {
    format!(
        "{}; ALTER TABLE {} ADD COLUMN {} text",
        super::stage::text_stage(plan, name),
        temp(name),
        ident(BLUE_KEY)
    )
}

/// [`typed_rows`] with the stage's [`BLUE_KEY`] first.
fn keyed_rows(plan: &TablePlan, stage: &str, condition: Option<&str>) -> String {
    let key = format!("(SELECT s.{0} AS {0}, ", ident(BLUE_KEY));
    typed_rows(plan, stage, condition).replacen("(SELECT ", &key, 1)
}

/// The stage row the row-by-row function is at.
const ONE_ROW: &str = "s.ctid = pgbridge_r.row_id";

/// What the reverse mapping computes from the stage (the rows `condition` selects): blue's
/// key, then each green column it feeds, as green stores it (its type with modifier), rows
/// outside its filter left out.
fn reverse_select(reverse: &TablePlan, condition: Option<&str>) -> String {
    let mut cols = vec![format!("g.{}", ident(BLUE_KEY))];
    cols.extend((0..reverse.targets.len()).map(|t| {
        format!(
            "{} AS {}",
            statements::mapped_value(reverse, t),
            ident(&reverse.targets[t].blue_name)
        )
    }));
    let filter = reverse
        .filter
        .as_ref()
        .map_or(String::new(), |f| format!(" WHERE ({f})"));
    format!(
        "SELECT {} FROM {} AS g{filter}",
        cols.join(", "),
        keyed_rows(reverse, REVERSE_STAGE, condition)
    )
}

/// What this mapping computes from the rows that came back (those `condition` selects):
/// blue's key as text, then the key and compared columns as `"m<target>"`.
fn mapped_select(plan: &TablePlan, condition: Option<&str>) -> String {
    let mut cols = vec![format!("g.{}", ident(BLUE_KEY))];
    cols.extend(
        compared_with_key(plan)
            .iter()
            .map(|&t| format!("{} AS \"m{t}\"", statements::mapped_value(plan, t))),
    );
    let filter = plan.filter.as_ref().map_or(String::new(), |f| format!(" WHERE ({f})"));
    format!(
        "SELECT {} FROM {} AS g{filter}",
        cols.join(", "),
        keyed_rows(plan, BACK_STAGE, condition)
    )
}

/// On blue: this mapping over the rows that came back, into [`MAPPED`].
pub fn fill_mapped(plan: &TablePlan, condition: Option<&str>) -> String {
    format!("INSERT INTO {} {}", temp(MAPPED), mapped_select(plan, condition))
}

/// `pg_temp.pgbridge_roundtrip_rows()`: `insert` (over [`ONE_ROW`]) for each row of `stage` on
/// its own (a subtransaction each), returning the rows refused with their [`BLUE_KEY`] and
/// PostgreSQL's message (and detail).
fn rows_function(stage: &str, insert: &str) -> String {
    let body = format!(
        "#variable_conflict use_column\n\
         DECLARE pgbridge_r record; v_message text; v_detail text;\n\
         BEGIN\n\
         FOR pgbridge_r IN SELECT s.ctid AS row_id, s.{key} AS row_key FROM {stage} AS s LOOP\n\
           BEGIN\n  {insert};\n\
           EXCEPTION WHEN OTHERS THEN\n\
             GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;\n\
             refused_key := pgbridge_r.row_key;\n\
             refused_reason := {error_text};\n\
             RETURN NEXT;\n\
           END;\n\
         END LOOP;\n\
         END",
        key = ident(BLUE_KEY),
        stage = temp(stage),
        error_text = crate::sql::ERROR_TEXT,
    );
    format!(
        "CREATE FUNCTION {}() RETURNS TABLE (refused_key text, refused_reason text) LANGUAGE plpgsql AS {}",
        temp(ROWS_FN),
        crate::sql::dollar_quoted(&body)
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

/// COPY of the page's columns the reverse mapping reads, and blue's key as text (as the
/// comparison writes it), out of blue.
pub fn page_out(plan: &TablePlan, reverse: &TablePlan) -> String {
    let mut cols: Vec<String> = statements::needed_columns(reverse)
        .iter()
        .map(|&g| format!("o.{}", ident(&reverse.green.columns[g].name)))
        .collect();
    let original: Vec<(usize, String)> = plan
        .key
        .columns()
        .iter()
        .map(|k| (k.target, format!("o.{}", ident(&plan.targets[k.target].blue_name))))
        .collect();
    cols.push(key_text(plan, &original));
    format!(
        "COPY (SELECT {} FROM {} AS o) TO STDOUT",
        cols.join(", "),
        temp(ORIGINAL)
    )
}

/// On green: the reverse mapping over the stage (the rows `condition` selects), into its
/// table.
pub fn map_on_green(reverse: &TablePlan, condition: Option<&str>) -> String {
    format!("INSERT INTO {} {}", temp(ON_GREEN), reverse_select(reverse, condition))
}

/// The rows a side's mapping refused, after its statement failed for the page.
pub fn refused_rows() -> String {
    format!("SELECT refused_key, refused_reason FROM {}()", temp(ROWS_FN))
}

/// A row's key as `blue_col=value, ...`; `columns`: each key target with its value there.
fn key_text(plan: &TablePlan, columns: &[(usize, String)]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(t, c)| {
            format!(
                "{} || coalesce({c}::text, 'NULL')",
                literal(&format!("{}=", plan.targets[*t].blue_name))
            )
        })
        .collect();
    format!("concat_ws(', ', {})", parts.join(", "))
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
    format!(
        "COPY (SELECT {}, {} FROM {}) TO STDOUT",
        cols.join(", "),
        ident(BLUE_KEY),
        temp(ON_GREEN)
    )
}

/// Blue columns compared: those this mapping feeds on every write (not insert-only ones),
/// the key aside (rows are matched by it).
pub fn compared(plan: &TablePlan) -> Vec<usize> {
    let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    (0..plan.targets.len())
        .filter(|t| !plan.targets[*t].insert_only && !key.contains(t))
        .collect()
}

/// The key's targets, then [`compared`].
fn compared_with_key(plan: &TablePlan) -> Vec<usize> {
    let mut cols: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    cols.extend(compared(plan));
    cols
}

/// `value` as its type's output function writes it (what COPY and the replication stream
/// carry), NULL kept NULL. Not `::text`: for xml that cast returns the text as stored, an
/// XML declaration included, which output (and so every trip between the servers) drops, so
/// identical documents would differ. `num_nulls`, not `IS NULL`: a composite whose fields
/// are all NULL is a value.
fn output_text(value: &str) -> String {
    format!("(CASE WHEN num_nulls({value}) = 0 THEN format('%s', {value}) END)")
}

/// The page compared with what came back, by key: rows `lost` (no row came back with their
/// key), `new` (a row came back under a key the page lacks), and per column `changed`, with
/// blue's text and the text that came back.
pub fn compare(plan: &TablePlan) -> String {
    let key: Vec<usize> = plan.key.columns().iter().map(|k| k.target).collect();
    let o: Vec<String> = compared_with_key(plan)
        .iter()
        .map(|&t| format!("o.{} AS \"o{t}\"", ident(&plan.targets[t].blue_name)))
        .collect();
    let on: Vec<String> = key.iter().map(|t| format!("o.\"o{t}\" = m.\"m{t}\"")).collect();
    let key_text = |side: &str| -> String {
        let columns: Vec<(usize, String)> = key
            .iter()
            .map(|&t| (t, format!("{side}.\"{}{t}\"", &side[..1])))
            .collect();
        key_text(plan, &columns)
    };
    // Byte equality of the text forms (COLLATE "C"), the key's too: never a column's
    // collation, which a VALUES list would give every column (a case-insensitive one hides
    // a value that came back in another case).
    let values: Vec<String> = key
        .iter()
        .chain(compared(plan).iter())
        .map(|&t| {
            format!(
                "({}, {} COLLATE \"C\", {} COLLATE \"C\")",
                literal(&plan.targets[t].blue_name),
                output_text(&format!("o.\"o{t}\"")),
                output_text(&format!("m.\"m{t}\""))
            )
        })
        .collect();
    // Ordered by the key's values, as pages are (`1, 2, 10`, not the text's `1, 10, 2`).
    let order: Vec<String> = key.iter().map(|t| format!("\"k{t}\"")).collect();
    let either: Vec<String> = key
        .iter()
        .map(|t| format!("coalesce(o.\"o{t}\", m.\"m{t}\")"))
        .collect();
    let original: Vec<String> = key.iter().map(|t| format!("o.\"o{t}\"")).collect();
    let changed = if values.is_empty() {
        String::new()
    } else {
        format!(
            " UNION ALL SELECT 'changed', {}, x.col, x.before, x.after, {} FROM o JOIN m ON {on} \
             CROSS JOIN LATERAL (VALUES {}) AS x(col, before, after) WHERE x.before IS DISTINCT FROM x.after",
            key_text("o"),
            original.join(", "),
            values.join(", "),
            on = on.join(" AND ")
        )
    };
    format!(
        "WITH m AS MATERIALIZED (SELECT true AS m_here, x.* FROM {} AS x), \
         o AS MATERIALIZED (SELECT true AS o_here, {} FROM {} AS o) \
         SELECT * FROM (SELECT CASE WHEN m.m_here IS NULL THEN 'lost' ELSE 'new' END, \
           CASE WHEN m.m_here IS NULL THEN {} ELSE {} END, NULL::text, NULL::text, NULL::text, {} \
           FROM o FULL JOIN m ON {on} WHERE o.o_here IS NULL OR m.m_here IS NULL{changed}) \
         AS d(kind, key, col, before, after, {}) ORDER BY {}, col",
        temp(MAPPED),
        o.join(", "),
        temp(ORIGINAL),
        key_text("o"),
        key_text("m"),
        either.join(", "),
        order.join(", "),
        order.join(", "),
        on = on.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Green's int4 columns `names` copied into blue's `blue` (as many), keyed on the first.
    fn plan(names: &[&str], blue: &[&str]) -> TablePlan {
        let mut p = crate::mapping::int_plan(names);
        for (target, name) in p.targets.iter_mut().zip(blue) {
            target.blue_name = name.to_string();
        }
        p
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
            "COPY (SELECT \"id\", \"qty\", NULL AS \"note\", \"pgbridge_blue_key\" FROM pg_temp.\"pgbridge_roundtrip_green\") TO STDOUT"
        );
        // Guards: blue's key travels with the row, so a row a mapping refuses is named.
        assert_eq!(
            page_out(&forward, &reverse),
            "COPY (SELECT o.\"id\", o.\"quantity\", concat_ws(', ', 'id=' || coalesce(o.\"id\"::text, 'NULL')) \
             FROM pg_temp.\"pgbridge_roundtrip_blue\" AS o) TO STDOUT"
        );
        assert!(map_on_green(&reverse, None).starts_with(
            "INSERT INTO pg_temp.\"pgbridge_roundtrip_green\" SELECT g.\"pgbridge_blue_key\", CAST(g.\"id\" AS integer) AS \"id\""
        ));
        // Guards: a page a mapping refuses is mapped again row by row, each refusal returned.
        let setup = green_setup(&reverse);
        assert!(
            setup.contains("FROM (SELECT s.\"pgbridge_blue_key\" AS \"pgbridge_blue_key\", s.\"id\"::"),
            "{setup}"
        );
        assert!(
            setup.contains("CREATE FUNCTION pg_temp.\"pgbridge_roundtrip_rows\"()")
                && setup.contains("WHERE s.ctid = pgbridge_r.row_id)"),
            "{setup}"
        );
        assert!(blue_setup(&forward)
            .contains("CREATE TEMP TABLE \"pgbridge_roundtrip_mapped\" AS SELECT g.\"pgbridge_blue_key\""));
    }

    #[test]
    fn the_comparison_names_lost_new_and_changed_rows() {
        let p = plan(&["id", "qty"], &["id", "quantity"]);
        assert_eq!(compared(&p), vec![1]);
        let sql = compare(&p);
        assert!(sql.contains("FROM o FULL JOIN m ON o.\"o0\" = m.\"m0\""), "{sql}");
        assert!(
            // Guards: byte equality, never a column's (case-insensitive) collation; the key too;
            // the output function's text, not `::text` (xml keeps its declaration there).
            sql.contains(
                "(VALUES ('id', (CASE WHEN num_nulls(o.\"o0\") = 0 THEN format('%s', o.\"o0\") END) COLLATE \"C\", \
                 (CASE WHEN num_nulls(m.\"m0\") = 0 THEN format('%s', m.\"m0\") END) COLLATE \"C\"), ('quantity', "
            ),
            "{sql}"
        );
        assert!(sql.contains("'id=' || coalesce(m.\"m0\"::text, 'NULL')"), "{sql}");
        // Guards: differences ordered by the key's values (1, 2, 10), not its text (1, 10, 2).
        assert!(
            sql.ends_with("AS d(kind, key, col, before, after, \"k0\") ORDER BY \"k0\", col"),
            "{sql}"
        );
        let key_only = plan(&["id"], &["id"]);
        assert!(compare(&key_only).contains("(VALUES ('id', "));
    }
}
