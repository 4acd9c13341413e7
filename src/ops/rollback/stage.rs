//! SQL text for the rollback checks, generated from a [`TablePlan`]; pure, so it is
//! unit-tested without a server.
//!
//! Rows cross between the servers as COPY text into *text* stages (one `text` column per
//! green column the plan reads), and are typed inside the statement that maps them
//! (`s."c"::<green type>`), as the apply path binds text parameters: a value the type refuses
//! (an enum label blue lacks) then fails in the mapping statement, where a savepoint or the
//! row-by-row function catches it, not in the COPY. Every temporary object lives in `pg_temp`
//! and is named here; every identifier is quoted.

use super::partitions::{self, Partition};
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

/// The column of the target copy and of the unique-key table holding the green row's key
/// (`key_text`): which green row a later one collides with.
pub const GREEN_KEY: &str = "pgbridge_green_key";
/// The column of the target copy naming, per row, the values blue would store changed
/// without an error (see [`changed`]).
pub const CHANGED: &str = "pgbridge_changed";

/// A unique index of blue's table (the conflict key too), recreated on the unique-key table
/// from its definition: collation, operator class, expressions, predicate, NULLS NOT DISTINCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    /// What follows `ON <table>` in `pg_get_indexdef`: ` USING btree (...) ... WHERE ...`.
    pub definition: String,
    /// Blue's columns the index reads (key and INCLUDE), or `None` when it has expressions
    /// or a predicate: the unique-key table then holds every column.
    pub columns: Option<Vec<String>>,
    /// Its columns are the conflict key: a second green row there is one blue keeps only one
    /// of (`run` upserts it over the first, or stops).
    pub conflict: bool,
}

/// A column of blue's table, as the temporary copies need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueColumn {
    pub name: String,
    pub not_null: bool,
    /// `format_type` of the column.
    pub type_sql: String,
    /// Its default draws from a sequence (`nextval`, identity): never evaluated by the check.
    pub sequence: bool,
    /// Its (base) type is numeric, so `1` stands in for the sequence's value.
    pub numeric: bool,
    /// `n` of a `varchar(n)` or `char(n)` column (a domain over one, an array of them):
    /// assignment cuts trailing blanks beyond `n` instead of refusing the value.
    pub bound: Option<i32>,
    /// The column is an array (of `bound`ed elements).
    pub array: bool,
}

/// Over a mapped row `g`: a `text[]` of what blue would store changed without an error,
/// `column c cut to n characters (trailing blanks)` per `varchar(n)`/`char(n)` column (or
/// array of them) whose mapped value is longer than `n` only by trailing blanks, which
/// assignment drops instead of refusing. A value longer by anything else is refused by the
/// insert itself, so it is not counted twice.
pub fn changed(plan: &TablePlan, columns: &[BlueColumn]) -> String {
    let cases: Vec<String> = plan
        .targets
        .iter()
        .filter_map(|t| {
            let c = columns.iter().find(|c| c.name == t.blue_name)?;
            let n = c.bound?;
            let v = t.value.sql(&plan.green, Some("g"));
            let cut = |e: &str| format!("char_length({e}) > {n} AND char_length(rtrim({e}, ' ')) <= {n}");
            let when = if c.array {
                format!(
                    "EXISTS (SELECT 1 FROM unnest(CAST({v} AS text[])) AS pgbridge_e(v) WHERE {})",
                    cut("pgbridge_e.v")
                )
            } else {
                cut(&format!("CAST({v} AS text)"))
            };
            let what = format!(
                "column {} cut to {n} characters (trailing blanks){}",
                t.blue_name,
                if c.array { " in an element" } else { "" }
            );
            Some(format!("CASE WHEN {when} THEN {} END", literal(&what)))
        })
        .collect();
    if cases.is_empty() {
        "CAST(ARRAY[] AS text[])".into()
    } else {
        format!("array_remove(ARRAY[{}], NULL)", cases.join(", "))
    }
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

/// [`typed_rows`] with the row's green key (`key_text`) as column [`GREEN_KEY`].
fn typed_rows_with_key(plan: &TablePlan, stage: &str, condition: Option<&str>) -> String {
    let rows = typed_rows(plan, stage, condition);
    let key = format!("(SELECT {} AS {}, ", key_text(plan), ident(GREEN_KEY));
    rows.replacen("(SELECT ", &key, 1)
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
    statements::green_key_text(plan, |column| format!("s.{}", ident(column)))
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

/// [`into_temp`] into the target copy, also writing the green row's key into [`GREEN_KEY`]
/// and `changed` (see [`changed`]) into [`CHANGED`].
fn into_target(plan: &TablePlan, changed: &str) -> TablePlan {
    let mut p = into_temp(plan, TARGET);
    let extra = |name: &str, sql_type: &str, value: String| crate::mapping::Target {
        blue_name: name.into(),
        blue_type: sql_type.into(),
        stored_type: sql_type.into(),
        value: crate::mapping::Value::Expr(value),
        depends: Vec::new(),
        insert_only: false,
        comparable: true,
        identity_always: false,
    };
    p.targets
        .push(extra(GREEN_KEY, "text", format!("g.{}", ident(GREEN_KEY))));
    p.targets.push(extra(CHANGED, "text[]", changed.to_string()));
    p
}

/// Creates the stage; the target copy of blue's table (its NOT NULL and CHECK constraints
/// and its defaults, so a column the mapping does not feed is what blue's insert makes it;
/// a default drawing from a sequence is never evaluated: `1` stands in for a numeric one,
/// others are null with NOT NULL dropped; NOT NULL is dropped from unfed columns when
/// `filled_by_trigger`, as a BEFORE INSERT trigger may fill them), plus [`GREEN_KEY`]; the
/// probe; the unique-key table with `unique`'s indexes; and the row-by-row function. The
/// target copy is partitioned as blue's table is (`tree`, see [`super::partitions`]).
pub fn setup(
    plan: &TablePlan,
    columns: &[BlueColumn],
    unique: &[UniqueIndex],
    filled_by_trigger: bool,
    tree: &[Partition],
) -> String {
    let (target, probe, uniq) = (temp(TARGET), temp(PROBE), temp(UNIQUE));
    let mut sql = vec![
        text_stage(plan, STAGE),
        format!(
            "CREATE TEMP TABLE {} (LIKE {} INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING DEFAULTS){}",
            ident(TARGET),
            plan.blue_sql,
            partitions::root_clause(tree)
        ),
        format!(
            "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)",
            ident(PROBE),
            plan.blue_sql
        ),
    ];
    let fed = |c: &BlueColumn| plan.targets.iter().any(|t| t.blue_name == c.name);
    // PostgreSQL keeps NOT NULL on a range partition key (and no range partition takes NULL).
    let keyed = |c: &BlueColumn| partitions::root_key_columns(tree).contains(&c.name);
    let mut target_alters = Vec::new();
    let mut probe_alters = Vec::new();
    for c in columns {
        let name = ident(&c.name);
        if c.sequence {
            probe_alters.push(format!("ALTER COLUMN {name} DROP DEFAULT"));
            if fed(c) {
                target_alters.push(format!("ALTER COLUMN {name} DROP DEFAULT"));
            } else if c.numeric {
                target_alters.push(format!("ALTER COLUMN {name} SET DEFAULT CAST(1 AS {})", c.type_sql));
            } else {
                target_alters.push(format!("ALTER COLUMN {name} DROP DEFAULT"));
                if c.not_null && !keyed(c) {
                    target_alters.push(format!("ALTER COLUMN {name} DROP NOT NULL"));
                }
            }
        } else if c.not_null && filled_by_trigger && !fed(c) && !keyed(c) {
            target_alters.push(format!("ALTER COLUMN {name} DROP NOT NULL"));
        }
        if c.not_null {
            probe_alters.push(format!("ALTER COLUMN {name} DROP NOT NULL"));
        }
    }
    target_alters.push(format!("ADD COLUMN {} text", ident(GREEN_KEY)));
    target_alters.push(format!("ADD COLUMN {} text[]", ident(CHANGED)));
    sql.push(format!("ALTER TABLE {target} {}", target_alters.join(", ")));
    sql.extend(partitions::create(tree));
    if !probe_alters.is_empty() {
        sql.push(format!("ALTER TABLE {probe} {}", probe_alters.join(", ")));
    }
    if let Some(cols) = unique_columns(unique) {
        sql.push(format!(
            "CREATE TEMP TABLE {} AS SELECT {cols} FROM {target} WITH NO DATA",
            ident(UNIQUE),
        ));
        for u in unique {
            sql.push(format!(
                "CREATE UNIQUE INDEX {} ON {uniq}{}",
                ident(&u.name),
                u.definition
            ));
        }
    }
    sql.push(row_function(plan, unique, &changed(plan, columns)));
    sql.join(";\n")
}

/// The unique-key table's columns as a select list (`*` when an index has expressions or a
/// predicate), with [`GREEN_KEY`]; `None` without indexes.
fn unique_columns(unique: &[UniqueIndex]) -> Option<String> {
    if unique.is_empty() {
        return None;
    }
    if unique.iter().any(|u| u.columns.is_none()) {
        return Some("*".into());
    }
    let mut out: Vec<String> = Vec::new();
    for c in unique.iter().flat_map(|u| u.columns.iter().flatten()) {
        let c = ident(c);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.push(ident(GREEN_KEY));
    Some(out.join(", "))
}

/// Inserts the rows `condition` selects from the stage through the mapping into the target
/// (and their unique-index columns into the unique-key table): one statement.
/// `changed`: see [`changed`].
pub fn insert_checked(plan: &TablePlan, unique: &[UniqueIndex], changed: &str, condition: Option<&str>) -> String {
    let insert = statements::insert_from(
        &into_target(plan, changed),
        &typed_rows_with_key(plan, STAGE, condition),
        false,
    );
    let Some(cols) = unique_columns(unique) else {
        return insert;
    };
    let into = if cols == "*" {
        String::new()
    } else {
        format!(" ({cols})")
    };
    format!(
        "WITH inserted AS ({insert} RETURNING {cols}) INSERT INTO {}{into} SELECT {cols} FROM inserted",
        temp(UNIQUE)
    )
}

/// `pg_temp.pgbridge_check_rows()`: every stage row inserted on its own (a subtransaction
/// each), returning those refused with their key, PostgreSQL's message (and detail), the
/// constraint, and the column: the one PostgreSQL names, or else the first column whose value
/// alone does not fit the probe (a value too long, out of range, not a label of the enum).
pub fn row_function(plan: &TablePlan, unique: &[UniqueIndex], changed: &str) -> String {
    let one_row = "s.ctid = pgbridge_r.row_id";
    let insert = insert_checked(plan, unique, changed, Some(one_row));
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
    let collides = collides(plan, unique, changed, one_row);
    let body = format!(
        "#variable_conflict use_column\n\
         DECLARE pgbridge_r record; v_message text; v_detail text; v_constraint text; v_column text; v_earlier text;\n\
         BEGIN\n\
         FOR pgbridge_r IN SELECT s.ctid AS row_id, {key} AS row_key FROM {stage} AS s LOOP\n\
           BEGIN\n  {insert};\n\
           EXCEPTION WHEN OTHERS THEN\n\
             GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, \
               v_constraint = CONSTRAINT_NAME, v_column = COLUMN_NAME;\n\
             {collides}\
             IF coalesce(v_constraint, '') = '' THEN\n  {probes}\n  END IF;\n\
             refused_key := pgbridge_r.row_key;\n\
             refused_reason := {error_text};\n\
             refused_constraint := nullif(v_constraint, '');\n\
             refused_column := nullif(v_column, '');\n\
             RETURN NEXT;\n\
           END;\n\
         END LOOP;\n\
         END",
        key = key_text(plan),
        stage = temp(STAGE),
        probes = probes.join("\n  "),
        error_text = crate::sql::ERROR_TEXT,
    );
    format!(
        "CREATE FUNCTION {}() RETURNS TABLE (refused_key text, refused_reason text, refused_constraint text, \
         refused_column text) LANGUAGE plpgsql AS {}",
        temp(ROWS_FN),
        crate::sql::dollar_quoted(&body)
    )
}

/// In the row function, when the refused row broke the conflict key's index: the message
/// naming the earlier green row with the same blue key (nothing without such an index).
fn collides(plan: &TablePlan, unique: &[UniqueIndex], changed: &str, one_row: &str) -> String {
    let conflict: Vec<String> = unique.iter().filter(|u| u.conflict).map(|u| literal(&u.name)).collect();
    if conflict.is_empty() {
        String::new()
    } else {
        // The earlier green row: this row's blue key, found in the unique-key table under
        // the index's own equality (the column's collation), inside a block undone at once.
        let key: Vec<String> = plan
            .key
            .columns()
            .iter()
            .map(|k| ident(&plan.targets[k.target].blue_name))
            .collect();
        let on: Vec<String> = key.iter().map(|c| format!("u.{c} = n.{c}")).collect();
        format!(
            "IF v_constraint IN ({}) THEN\n\
               v_earlier := NULL;\n\
               BEGIN\n\
                 WITH n AS ({} RETURNING {}) SELECT string_agg(u.{gk}, '; ') INTO v_earlier FROM {} AS u JOIN n ON {};\n\
                 RAISE EXCEPTION 'pgbridge: undone';\n\
               EXCEPTION WHEN OTHERS THEN NULL;\n\
               END;\n\
               v_message := 'maps to the same blue key as green row ' || coalesce(v_earlier, '(an earlier one)') || \
                 ': blue would keep only one';\n\
             END IF;\n",
            conflict.join(", "),
            statements::insert_from(
                &into_target(plan, changed),
                &typed_rows_with_key(plan, STAGE, Some(one_row)),
                false
            ),
            key.join(", "),
            temp(UNIQUE),
            on.join(" AND "),
            gk = ident(GREEN_KEY),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Green's `id, qty, "Odd""Name"` into blue's `id, quantity`, filtered on qty.
    fn plan() -> TablePlan {
        let mut p = crate::mapping::int_plan(&["id", "qty", "Odd\"Name"]);
        p.targets.truncate(2);
        p.targets[1].blue_name = "quantity".into();
        p.filter = Some("qty > 0".into());
        p.read = vec![true, true, false];
        p
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
        let plain = insert_checked(&p, &[], "x", None);
        assert!(
            plain.starts_with(
                "INSERT INTO pg_temp.\"pgbridge_check_target\" (\"id\", \"quantity\", \"pgbridge_green_key\", \"pgbridge_changed\") SELECT"
            ),
            "{plain}"
        );
        assert!(plain.ends_with("AS g WHERE (qty > 0)"), "{plain}");
        let u = UniqueIndex {
            name: "t_quantity_key".into(),
            definition: " USING btree (quantity COLLATE \"C\")".into(),
            columns: Some(vec!["quantity".into()]),
            conflict: false,
        };
        let with = insert_checked(&p, std::slice::from_ref(&u), "x", None);
        assert!(with.starts_with("WITH inserted AS (INSERT INTO"), "{with}");
        assert!(
            with.ends_with(
                "RETURNING \"quantity\", \"pgbridge_green_key\") INSERT INTO pg_temp.\"pgbridge_check_unique\" \
                 (\"quantity\", \"pgbridge_green_key\") SELECT \"quantity\", \"pgbridge_green_key\" FROM inserted"
            ),
            "{with}"
        );
        let column = |name: &str, sequence: bool| BlueColumn {
            name: name.into(),
            not_null: true,
            type_sql: "bigint".into(),
            sequence,
            numeric: true,
            bound: None,
            array: false,
        };
        // Guards: defaults are blue's, but a sequence is never advanced; NOT NULL stays.
        let ddl = setup(
            &p,
            &[column("id", false), column("serial", true), column("note", false)],
            &[u],
            false,
            &[],
        );
        assert!(ddl.contains("INCLUDING DEFAULTS)"), "{ddl}");
        assert!(
            ddl.contains(
                "ALTER TABLE pg_temp.\"pgbridge_check_target\" ALTER COLUMN \"serial\" SET DEFAULT CAST(1 AS bigint), \
                          ADD COLUMN \"pgbridge_green_key\" text, \
                          ADD COLUMN \"pgbridge_changed\" text[];"
            ),
            "{ddl}"
        );
        // Guards: the index keeps its collation (pg_get_indexdef), not just its columns.
        assert!(
            ddl.contains("CREATE UNIQUE INDEX \"t_quantity_key\" ON pg_temp.\"pgbridge_check_unique\" USING btree (quantity COLLATE \"C\");"),
            "{ddl}"
        );
    }

    #[test]
    fn the_row_function_inserts_one_row_at_a_time_and_probes_columns() {
        let f = row_function(&plan(), &[], "x");
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
        assert_eq!(
            crate::sql::dollar_quoted("a $pgbridge$ b"),
            "$pgbridge_$a $pgbridge$ b$pgbridge_$"
        );
    }

    #[test]
    fn trailing_blanks_beyond_a_bound_are_named_as_changed() {
        // Guards: blue's varchar(n) cuts trailing blanks beyond n without an error.
        let column = |name: &str, bound: Option<i32>, array: bool| BlueColumn {
            name: name.into(),
            not_null: false,
            type_sql: "character varying(50)".into(),
            sequence: false,
            numeric: false,
            bound,
            array,
        };
        let p = plan();
        assert_eq!(changed(&p, &[column("id", None, false)]), "CAST(ARRAY[] AS text[])");
        let c = changed(&p, &[column("quantity", Some(50), false)]);
        assert_eq!(
            c,
            "array_remove(ARRAY[CASE WHEN char_length(CAST(g.\"qty\" AS text)) > 50 AND \
             char_length(rtrim(CAST(g.\"qty\" AS text), ' ')) <= 50 THEN \
             'column quantity cut to 50 characters (trailing blanks)' END], NULL)"
        );
        let a = changed(&p, &[column("quantity", Some(3), true)]);
        assert!(a.contains("unnest(CAST(g.\"qty\" AS text[]))"), "{a}");
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
