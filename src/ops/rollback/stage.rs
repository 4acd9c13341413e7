//! SQL text for the rollback checks, generated from a [`TablePlan`]; pure, so it is
//! unit-tested without a server.
//!
//! Rows cross between the servers as COPY text into *text* stages (one `text` column per
//! green column the plan reads), and are typed inside the statement that maps them
//! (`s."c"::<green type>`), as the apply path binds text parameters: a value the type refuses
//! (an enum label blue lacks) then fails in the mapping statement, where a savepoint or the
//! row-by-row function catches it, not in the COPY. Every temporary object lives in `pg_temp`
//! and is named here; every identifier is quoted.

use crate::mapping::statements;
use crate::mapping::TablePlan;
use crate::sql::{ident, literal};

/// The text stage green's rows are loaded into on blue (`check --data`).
pub const STAGE: &str = "pgbridge_check_stage";
/// A copy of blue's table with its CHECK and NOT NULL constraints, without rows or indexes.
pub const TARGET: &str = "pgbridge_check_target";
/// A copy of blue's table without constraints: which column a value does not fit.
pub const PROBE: &str = "pgbridge_check_probe";
/// Only the columns of blue's other unique indexes, with those indexes.
pub const UNIQUE: &str = "pgbridge_check_unique";
/// The row-by-row function for a chunk that does not go in whole.
pub const ROWS_FN: &str = "pgbridge_check_rows";

/// A unique index of blue's table other than the conflict key, on plain columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    pub columns: Vec<String>,
    pub nulls_not_distinct: bool,
}

/// `pg_temp."name"`.
pub fn temp(name: &str) -> String {
    format!("pg_temp.{}", ident(name))
}

/// `CREATE TEMP TABLE` with one `text` column per green column `plan` reads.
pub fn text_stage(plan: &TablePlan, name: &str) -> String {
    let cols: Vec<String> = statements::needed_columns(plan)
        .iter()
        .map(|&g| format!("{} text", ident(&plan.green.columns[g].name)))
        .collect();
    format!("CREATE TEMP TABLE {} ({})", ident(name), cols.join(", "))
}

/// The text stage `stage` as green's row `g` would be: each column cast to green's type, as
/// the apply path casts its text parameters; `condition` over the stage alias `s`.
pub fn typed_rows(plan: &TablePlan, stage: &str, condition: Option<&str>) -> String {
    typed_columns(plan, &statements::needed_columns(plan), stage, condition)
}

/// [`typed_rows`] with only green columns `columns`: what one value reads, so that a value
/// another column does not fit is not blamed on it.
fn typed_columns(plan: &TablePlan, columns: &[usize], stage: &str, condition: Option<&str>) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|&g| {
            let c = &plan.green.columns[g];
            format!("s.{0}::{1} AS {0}", ident(&c.name), c.type_sql)
        })
        .collect();
    let cols = if cols.is_empty() {
        vec!["1 AS pgbridge_none".to_string()]
    } else {
        cols
    };
    let condition = condition.map_or(String::new(), |c| format!(" WHERE {c}"));
    format!("(SELECT {} FROM {} AS s{condition})", cols.join(", "), temp(stage))
}

/// A row's key as `blue_col=value, ...`, over the text stage alias `s` (green's text).
pub fn key_text(plan: &TablePlan) -> String {
    let parts: Vec<String> = plan
        .key
        .columns()
        .iter()
        .map(|k| {
            format!(
                "{} || coalesce(s.{}, 'NULL')",
                literal(&format!("{}=", plan.targets[k.target].blue_name)),
                ident(&plan.green.columns[k.green].name)
            )
        })
        .collect();
    format!("concat_ws(', ', {})", parts.join(", "))
}

/// ` TABLESAMPLE ... ` (goes right after the table) and ` LIMIT n` for a sample of `sample`
/// rows of a table of about `estimated` rows: a Bernoulli sample expected to hold `2n + 100`
/// rows (so it practically never falls short), cut at `n`; repeatable (seed 0). Without an
/// estimate (never analyzed) or when that is most of the table, the first rows, cut at `n`.
pub fn sample_clauses(estimated: u64, sample: Option<u64>) -> (String, String) {
    let Some(n) = sample else {
        return (String::new(), String::new());
    };
    let limit = format!(" LIMIT {n}");
    let expected = n.saturating_mul(2).saturating_add(100);
    if estimated == 0 || expected >= estimated {
        return (String::new(), limit);
    }
    let percent = (100.0 * expected as f64 / estimated as f64).max(0.000_001);
    (format!(" TABLESAMPLE BERNOULLI ({percent:.6}) REPEATABLE (0)"), limit)
}

/// `plan` writing into temporary table `name` instead of blue's table: the same statement
/// text in every other respect.
pub fn into_temp(plan: &TablePlan, name: &str) -> TablePlan {
    let mut p = plan.clone();
    p.blue_sql = temp(name);
    p
}

/// Creates the stage, the target copy of blue's table (its NOT NULL and CHECK constraints,
/// NOT NULL dropped from the columns the mapping does not feed: blue fills those, the bridge
/// never writes them), the probe, the unique-key table with `unique`'s indexes, and the
/// row-by-row function; `not_null`: blue's NOT NULL columns.
pub fn setup(plan: &TablePlan, not_null: &[String], unique: &[UniqueIndex]) -> String {
    let (target, probe, uniq) = (temp(TARGET), temp(PROBE), temp(UNIQUE));
    let mut sql = vec![
        text_stage(plan, STAGE),
        format!(
            "CREATE TEMP TABLE {} (LIKE {} INCLUDING CONSTRAINTS INCLUDING GENERATED)",
            ident(TARGET),
            plan.blue_sql
        ),
        format!("CREATE TEMP TABLE {} (LIKE {})", ident(PROBE), plan.blue_sql),
    ];
    let unfed: Vec<&String> = not_null
        .iter()
        .filter(|c| !plan.targets.iter().any(|t| &t.blue_name == *c))
        .collect();
    if !unfed.is_empty() {
        sql.push(drop_not_null(&target, &unfed));
    }
    if !not_null.is_empty() {
        sql.push(drop_not_null(&probe, &not_null.iter().collect::<Vec<_>>()));
    }
    let columns = unique_columns(unique);
    if !columns.is_empty() {
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        sql.push(format!(
            "CREATE TEMP TABLE {} AS SELECT {} FROM {target} WITH NO DATA",
            ident(UNIQUE),
            cols.join(", ")
        ));
        for u in unique {
            let cols: Vec<String> = u.columns.iter().map(|c| ident(c)).collect();
            sql.push(format!(
                "CREATE UNIQUE INDEX {} ON {uniq} ({}){}",
                ident(&u.name),
                cols.join(", "),
                if u.nulls_not_distinct {
                    " NULLS NOT DISTINCT"
                } else {
                    ""
                }
            ));
        }
    }
    sql.push(row_function(plan, unique));
    sql.join(";\n")
}

fn drop_not_null(table: &str, columns: &[&String]) -> String {
    let alters: Vec<String> = columns
        .iter()
        .map(|c| format!("ALTER COLUMN {} DROP NOT NULL", ident(c)))
        .collect();
    format!("ALTER TABLE {table} {}", alters.join(", "))
}

/// The columns of every index in `unique`, each once, in order of appearance.
fn unique_columns(unique: &[UniqueIndex]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in unique.iter().flat_map(|u| &u.columns) {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Inserts the rows `condition` selects from the stage through the mapping into the target
/// (and their unique-index columns into the unique-key table): one statement.
pub fn insert_checked(plan: &TablePlan, unique: &[UniqueIndex], condition: Option<&str>) -> String {
    let insert = statements::insert_from(&into_temp(plan, TARGET), &typed_rows(plan, STAGE, condition), false);
    let columns = unique_columns(unique);
    if columns.is_empty() {
        return insert;
    }
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let cols = cols.join(", ");
    format!(
        "WITH inserted AS ({insert} RETURNING {cols}) INSERT INTO {} ({cols}) SELECT {cols} FROM inserted",
        temp(UNIQUE)
    )
}

/// `pg_temp.pgbridge_check_rows()`: every stage row inserted on its own (a subtransaction
/// each), returning those refused with their key, PostgreSQL's message (and detail), the
/// constraint, and the column: the one PostgreSQL names, or else the first column whose value
/// alone does not fit the probe (a value too long, out of range, not a label of the enum).
pub fn row_function(plan: &TablePlan, unique: &[UniqueIndex]) -> String {
    let one_row = "s.ctid = pgbridge_r.row_id";
    let insert = insert_checked(plan, unique, Some(one_row));
    let probes: Vec<String> = plan
        .targets
        .iter()
        .map(|t| {
            format!(
                "IF coalesce(v_column, '') = '' THEN BEGIN INSERT INTO {} ({}) SELECT {} FROM {} AS g; \
                 EXCEPTION WHEN OTHERS THEN v_column := {}; END; END IF;",
                temp(PROBE),
                ident(&t.blue_name),
                t.value.sql(&plan.green, Some("g")),
                typed_columns(plan, &t.depends, STAGE, Some(one_row)),
                literal(&t.blue_name)
            )
        })
        .collect();
    let body = format!(
        "#variable_conflict use_column\n\
         DECLARE pgbridge_r record; v_message text; v_detail text; v_constraint text; v_column text;\n\
         BEGIN\n\
         FOR pgbridge_r IN SELECT s.ctid AS row_id, {key} AS row_key FROM {stage} AS s LOOP\n\
           BEGIN\n  {insert};\n\
           EXCEPTION WHEN OTHERS THEN\n\
             GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, \
               v_constraint = CONSTRAINT_NAME, v_column = COLUMN_NAME;\n\
             IF coalesce(v_constraint, '') = '' THEN\n  {probes}\n  END IF;\n\
             refused_key := pgbridge_r.row_key;\n\
             refused_reason := v_message || CASE WHEN coalesce(v_detail, '') = '' THEN '' ELSE ' (' || v_detail || ')' END;\n\
             refused_constraint := nullif(v_constraint, '');\n\
             refused_column := nullif(v_column, '');\n\
             RETURN NEXT;\n\
           END;\n\
         END LOOP;\n\
         END",
        key = key_text(plan),
        stage = temp(STAGE),
        probes = probes.join("\n  "),
    );
    format!(
        "CREATE FUNCTION {}() RETURNS TABLE (refused_key text, refused_reason text, refused_constraint text, \
         refused_column text) LANGUAGE plpgsql AS {}",
        temp(ROWS_FN),
        dollar_quoted(&body)
    )
}

/// `body` between dollar quotes whose tag does not occur in it.
fn dollar_quoted(body: &str) -> String {
    let mut tag = "pgbridge".to_string();
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("${tag}${body}${tag}$")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{KeyColumn, KeyPlan, Target, Value};

    fn plan() -> TablePlan {
        let green = crate::mapping::int_table(&["id", "qty", "Odd\"Name"]);
        let target = |g: usize, name: &str| Target {
            blue_name: name.into(),
            blue_type: "\"pg_catalog\".\"int4\"".into(),
            stored_type: "integer".into(),
            value: Value::Green(g),
            depends: vec![g],
            insert_only: false,
            comparable: true,
            identity_always: false,
        };
        TablePlan {
            green,
            green_name: "public.t".into(),
            blue_name: "public.t".into(),
            blue_sql: "\"public\".\"t\"".into(),
            targets: vec![target(0, "id"), target(1, "quantity")],
            key: KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }]),
            filter: Some("qty > 0".into()),
            overriding_system_value: false,
            blue_partitioned: false,
            file: None,
            partition_of: None,
            read: vec![true, true, false],
        }
    }

    #[test]
    fn stages_hold_text_and_type_it_in_the_statement() {
        let p = plan();
        assert_eq!(
            text_stage(&p, STAGE),
            "CREATE TEMP TABLE \"pgbridge_check_stage\" (\"id\" text, \"qty\" text)"
        );
        assert_eq!(
            typed_rows(&p, STAGE, None),
            "(SELECT s.\"id\"::\"pg_catalog\".\"int4\" AS \"id\", s.\"qty\"::\"pg_catalog\".\"int4\" AS \"qty\" \
             FROM pg_temp.\"pgbridge_check_stage\" AS s)"
        );
        assert_eq!(key_text(&p), "concat_ws(', ', 'id=' || coalesce(s.\"id\", 'NULL'))");
    }

    #[test]
    fn the_checked_insert_writes_the_temporary_copy_and_the_unique_columns() {
        let p = plan();
        let plain = insert_checked(&p, &[], None);
        assert!(
            plain.starts_with("INSERT INTO pg_temp.\"pgbridge_check_target\" (\"id\", \"quantity\") SELECT"),
            "{plain}"
        );
        assert!(plain.ends_with("AS g WHERE (qty > 0)"), "{plain}");
        let u = UniqueIndex {
            name: "t_quantity_key".into(),
            columns: vec!["quantity".into()],
            nulls_not_distinct: false,
        };
        let with = insert_checked(&p, std::slice::from_ref(&u), None);
        assert!(with.starts_with("WITH inserted AS (INSERT INTO"), "{with}");
        assert!(
            with.ends_with(
                "RETURNING \"quantity\") INSERT INTO pg_temp.\"pgbridge_check_unique\" (\"quantity\") \
                 SELECT \"quantity\" FROM inserted"
            ),
            "{with}"
        );
        let ddl = setup(&p, &["id".into(), "note".into()], &[u]);
        assert!(
            ddl.contains("ALTER TABLE pg_temp.\"pgbridge_check_target\" ALTER COLUMN \"note\" DROP NOT NULL;"),
            "{ddl}"
        );
        assert!(
            ddl.contains("CREATE UNIQUE INDEX \"t_quantity_key\" ON pg_temp.\"pgbridge_check_unique\" (\"quantity\");"),
            "{ddl}"
        );
    }

    #[test]
    fn the_row_function_inserts_one_row_at_a_time_and_probes_columns() {
        let f = row_function(&plan(), &[]);
        assert!(
            f.starts_with("CREATE FUNCTION pg_temp.\"pgbridge_check_rows\"()"),
            "{f}"
        );
        assert!(
            f.contains("WHERE s.ctid = pgbridge_r.row_id) AS g WHERE (qty > 0);"),
            "{f}"
        );
        assert!(
            f.contains("INSERT INTO pg_temp.\"pgbridge_check_probe\" (\"quantity\") SELECT g.\"qty\""),
            "{f}"
        );
        assert!(f.contains("v_column := 'quantity';"), "{f}");
        assert_eq!(dollar_quoted("a $pgbridge$ b"), "$pgbridge_$a $pgbridge$ b$pgbridge_$");
    }

    #[test]
    fn samples_are_bernoulli_with_room_or_just_a_limit() {
        assert_eq!(sample_clauses(1_000_000, None), (String::new(), String::new()));
        assert_eq!(sample_clauses(0, Some(10)), (String::new(), " LIMIT 10".into()));
        assert_eq!(sample_clauses(120, Some(10)), (String::new(), " LIMIT 10".into()));
        assert_eq!(
            sample_clauses(1_000_000, Some(1000)),
            (
                " TABLESAMPLE BERNOULLI (0.210000) REPEATABLE (0)".into(),
                " LIMIT 1000".into()
            )
        );
    }
}
