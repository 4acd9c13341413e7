//! What a rollback to blue would lose, read off the plan: green columns nothing on blue is
//! fed from, casts that narrow or whose effect cannot be told, values computed by
//! expressions (which only `check --roundtrip` can prove), and rows filters leave out.
//! Deliberate choices of the mapping's author, so `check` lists them without failing.
//! Pure: the plan, green's declared types (from green's catalog, in the plan) and blue's
//! (from the signature `check` computed) in, the losses out; except [`tables_not_carried`],
//! which asks green which of its user tables nothing carries at all.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mapping::lossy::{self, Cast};
use crate::mapping::{statements, TablePlan, Value};
use crate::ops::preflight::Report;
use tokio_postgres::Client;

/// One thing a rollback would lose, or might.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loss {
    /// A green column no blue column is fed from; `why`: ignored, read only by the filter, or
    /// not published.
    NotCarried { column: String, why: String },
    /// A green column copied into a blue column of a type that narrows it.
    Narrows {
        blue: String,
        green: String,
        from: String,
        to: String,
        why: String,
    },
    /// A cast whose effect the rules do not know.
    CannotTell {
        blue: String,
        green: String,
        from: String,
        to: String,
    },
    /// A blue column computed by an expression (`insert_only`: only when a row is inserted).
    Expression {
        blue: String,
        expr: String,
        insert_only: bool,
    },
    /// Rows a filter leaves out.
    Filtered { filter: String, by: &'static str },
    /// A blue enum column (or array of, or domain over, one) fed from a green enum column
    /// whose type has labels blue's lacks: rows holding them are refused (`run` stops or
    /// dead-letters them).
    EnumLabels {
        blue: String,
        green_type: String,
        blue_type: String,
        labels: Vec<String>,
    },
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::NotCarried { column, why } => write!(f, "green column {column} is not carried ({why})"),
            Loss::Narrows {
                blue,
                green,
                from,
                to,
                why,
            } => write!(f, "{blue} <- {green}: {from} -> {to} narrows: {why}"),
            Loss::CannotTell { blue, green, from, to } => {
                write!(
                    f,
                    "{blue} <- {green}: {from} -> {to}: cannot tell whether every value survives"
                )
            }
            Loss::Expression {
                blue,
                expr,
                insert_only: false,
            } => write!(
                f,
                "{blue} is computed by an expression ({expr}): prove with check --roundtrip"
            ),
            Loss::Expression { blue, expr, .. } => write!(
                f,
                "{blue} is set by an expression ({expr}) only when a row is inserted; an update on green \
                 does not change it, and check --roundtrip does not compare it"
            ),
            Loss::Filtered { filter, by } => write!(f, "rows outside `{filter}` are not carried ({by})"),
            Loss::EnumLabels {
                blue,
                green_type,
                blue_type,
                labels,
            } => write!(
                f,
                "{blue}: green's {green_type} has label(s) blue's {blue_type} lacks: {}; rows with them will be \
                 refused (check --data lists them); add them on blue (ALTER TYPE {blue_type} ADD VALUE ...)",
                labels.join(", ")
            ),
        }
    }
}

/// A table's losses, by blue and green table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLosses {
    pub green_table: String,
    pub blue_table: String,
    pub losses: Vec<Loss>,
}

/// Green's user tables no row of which reaches blue, one sentence each: those outside the
/// publication and not in `[mapping] exclude` ([`crate::drift::unpublished`], as `ready`
/// lists them; nothing before the publication exists), and UNLOGGED ones not excluded
/// (logical decoding never sees their rows, and no publication can list them).
pub async fn tables_not_carried(config: &Config, green: &Client, report: &Report) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let p = &config.publication;
    for crate::drift::NotCarried { table, unlogged } in crate::drift::not_carried(config, green).await? {
        if unlogged {
            out.push(format!(
                "green table {table} is not carried: it is UNLOGGED, so logical decoding never sees its rows; \
                 ALTER TABLE {table} SET LOGGED and add it to publication {p}, or list it in [mapping] exclude"
            ));
        } else if report.publication_exists {
            // Before `setup` creates the publication, every table not excluded will be in it.
            out.push(format!(
                "green table {table} is not carried: not in publication {p}; add it (ALTER PUBLICATION {p} ADD TABLE \
                 {table}, then `pgbridge setup --copy` for its rows) or list it in [mapping] exclude"
            ));
        }
    }
    Ok(out)
}

/// Enum columns of the tables `$1` names (`rel`: how a name of `$1` becomes the table's
/// oid), with what a column's type is an enum through (itself, a domain over one, an array of
/// either): the table's name as given, column, the enum's name, its labels in order. One
/// query for every table, however many.
fn enum_columns_sql(rel: &str) -> String {
    format!(
        "SELECT r.name, a.attname::text, format_type(e.oid, NULL), \
       array(SELECT l.enumlabel::text FROM pg_catalog.pg_enum l WHERE l.enumtypid = e.oid ORDER BY l.enumsortorder) \
     FROM unnest($1::text[]) AS r(name) JOIN pg_catalog.pg_attribute a ON a.attrelid = {rel} \
       JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid \
       JOIN pg_catalog.pg_type t1 ON t1.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END \
       JOIN pg_catalog.pg_type t2 ON t2.oid = CASE WHEN t1.typcategory = 'A' AND t1.typelem <> 0 THEN t1.typelem ELSE t1.oid END \
       JOIN pg_catalog.pg_type e ON e.oid = CASE WHEN t2.typtype = 'd' THEN t2.typbasetype ELSE t2.oid END \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND e.typtype = 'e'"
    )
}

/// [`review`], with the enum labels green has and blue lacks for every blue enum column fed
/// by a plain copy (by name or `from`) of a green enum column, whatever the two types' names
/// (asks both catalogs).
pub async fn review_with_enums(green: &Client, blue: &Client, report: &Report) -> Result<Vec<TableLosses>> {
    let green_names: Vec<String> = report.tables.iter().map(|t| t.plan.green.oid.to_string()).collect();
    let blue_names: Vec<String> = report.tables.iter().map(|t| t.plan.blue_sql.clone()).collect();
    let green_enums = enum_columns(green, "r.name::oid", &green_names, "green").await?;
    let blue_enums = enum_columns(blue, "to_regclass(r.name)", &blue_names, "blue").await?;
    let mut out = review(report);
    for (t, (g, b)) in report.tables.iter().zip(green_names.iter().zip(&blue_names)) {
        let plan = &t.plan;
        let none = EnumColumns::new();
        let found = enum_labels(
            plan,
            green_enums.get(g).unwrap_or(&none),
            blue_enums.get(b).unwrap_or(&none),
        );
        if found.is_empty() {
            continue;
        }
        match out
            .iter_mut()
            .find(|l| l.green_table == *plan.green_name && l.blue_table == plan.blue_name)
        {
            Some(l) => l.losses.extend(found),
            None => out.push(TableLosses {
                green_table: plan.green_name.to_string(),
                blue_table: plan.blue_name.clone(),
                losses: found,
            }),
        }
    }
    Ok(out)
}

/// The enum columns of every table `names` lists on one side, by the name as given.
async fn enum_columns(
    client: &Client,
    rel: &str,
    names: &[String],
    side: &'static str,
) -> Result<BTreeMap<String, EnumColumns>> {
    // Type names as a fresh session prints them: `check`'s sessions set their own search_path.
    client
        .batch_execute("BEGIN; SET LOCAL search_path TO DEFAULT")
        .await
        .map_err(on(side))?;
    let rows = client
        .query(&enum_columns_sql(rel), &[&names])
        .await
        .map_err(on(side))?;
    client.batch_execute("COMMIT").await.map_err(on(side))?;
    let mut by_table: BTreeMap<String, EnumColumns> = BTreeMap::new();
    for r in rows {
        by_table
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), (r.get(2), r.get(3)));
    }
    Ok(by_table)
}

/// The error reading `side`'s enum columns.
fn on(side: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::postgres(format!("reading {side}'s enum columns"), &e)
}

/// By column: its enum type's name and labels.
type EnumColumns = BTreeMap<String, (String, Vec<String>)>;

/// The labels of each green enum column's type that the blue enum column it is copied into
/// lacks (plain copies only: an expression's result is for `check --data` to try).
fn enum_labels(plan: &TablePlan, green: &EnumColumns, blue: &EnumColumns) -> Vec<Loss> {
    plan.targets
        .iter()
        .filter_map(|t| {
            let Value::Green(g) = &t.value else { return None };
            let (green_type, green_labels) = green.get(&plan.green.columns[*g].name)?;
            let (blue_type, blue_labels) = blue.get(&t.blue_name)?;
            let labels: Vec<String> = green_labels
                .iter()
                .filter(|l| !blue_labels.contains(l))
                .map(|l| crate::sql::literal(l))
                .collect();
            (!labels.is_empty()).then(|| Loss::EnumLabels {
                blue: t.blue_name.clone(),
                green_type: green_type.clone(),
                blue_type: blue_type.clone(),
                labels,
            })
        })
        .collect()
}

/// The losses of every planned table of `report` that has any.
pub fn review(report: &Report) -> Vec<TableLosses> {
    report
        .tables
        .iter()
        .map(|t| {
            let plan = &t.plan;
            let blue_declared: BTreeMap<String, String> = report
                .current
                .signatures
                .iter()
                .find(|s| s.green_table == *plan.green_name && s.blue_table == plan.blue_name)
                .map(|s| {
                    s.columns
                        .iter()
                        .map(|(c, feed)| (c.clone(), feed.blue_type.clone()))
                        .collect()
                })
                .unwrap_or_default();
            TableLosses {
                green_table: plan.green_name.to_string(),
                blue_table: plan.blue_name.clone(),
                losses: losses(plan, &blue_declared),
            }
        })
        .filter(|t| !t.losses.is_empty())
        .collect()
}

/// What a rollback loses of `plan`'s table; `blue_declared`: blue's declared type (as
/// `format_type` prints it) by blue column.
pub fn losses(plan: &TablePlan, blue_declared: &BTreeMap<String, String>) -> Vec<Loss> {
    let mut out = not_carried(plan);
    let keyed: Vec<&str> = plan
        .key
        .columns()
        .iter()
        .map(|k| plan.targets[k.target].blue_name.as_str())
        .collect();
    for t in &plan.targets {
        match &t.value {
            Value::Expr(expr) => out.push(Loss::Expression {
                blue: t.blue_name.clone(),
                expr: expr.clone(),
                insert_only: t.insert_only,
            }),
            Value::Green(g) => {
                let green = &plan.green.columns[*g].name;
                let (Some(from), Some(to)) = (green_declared(plan, green), blue_declared.get(&t.blue_name)) else {
                    continue;
                };
                let (from, to) = (unqualified(from), unqualified(to));
                let (blue, green) = (t.blue_name.clone(), green.clone());
                match lossy::classify(&from, &to) {
                    Cast::Same | Cast::Widening => {}
                    Cast::Narrowing(why) => out.push(Loss::Narrows {
                        blue,
                        green,
                        from,
                        to,
                        why: if keyed.contains(&t.blue_name.as_str()) {
                            format!("{why}; it is part of blue's key, so distinct green rows can land on one blue row")
                        } else {
                            why
                        },
                    }),
                    Cast::Unknown => out.push(Loss::CannotTell { blue, green, from, to }),
                }
            }
        }
    }
    if let Some(f) = &plan.filter {
        out.push(Loss::Filtered {
            filter: f.clone(),
            by: "the mapping's filter",
        });
    }
    if let Some(f) = statements::published_rows(plan) {
        out.push(Loss::Filtered {
            filter: f,
            by: "the publication's row filter",
        });
    }
    out
}

/// A declared type without the schema `format_type` prints when the type's schema is not
/// on the session's search_path (`public.mood`): the two sides print with different paths.
fn unqualified(declared: &str) -> String {
    let head = declared.find(['(', ' ', '[']).unwrap_or(declared.len());
    match declared[..head].rfind('.') {
        Some(dot) => declared[dot + 1..].to_string(),
        None => declared.to_string(),
    }
}

/// Green's declared type of `column`, as green's catalog prints it.
fn green_declared<'a>(plan: &'a TablePlan, column: &str) -> Option<&'a str> {
    let facts = plan.green.facts.as_ref()?;
    facts
        .positions
        .iter()
        .find(|(name, _, _)| name == column)
        .map(|(_, _, declared)| declared.as_str())
}

/// Green columns no blue column is fed from: streamed ones no target reads, and those the
/// stream does not carry at all.
fn not_carried(plan: &TablePlan) -> Vec<Loss> {
    let filter_reads: Vec<usize> = plan
        .filter
        .as_deref()
        .map(|f| crate::mapping::expression::columns(f, &plan.green))
        .unwrap_or_default();
    let mut out: Vec<Loss> = (0..plan.green.columns.len())
        .filter(|g| !plan.targets.iter().any(|t| t.depends.contains(g)))
        .map(|g| Loss::NotCarried {
            column: plan.green.columns[g].name.clone(),
            why: if filter_reads.contains(&g) {
                "read only by the filter".into()
            } else {
                "ignored".into()
            },
        })
        .collect();
    if let Some(facts) = &plan.green.facts {
        out.extend(facts.unpublished.iter().map(|(c, why)| Loss::NotCarried {
            column: c.name.clone(),
            why: match why {
                crate::mapping::green_catalog::Unpublished::Generated => "a generated column, not published".into(),
                crate::mapping::green_catalog::Unpublished::ColumnList => {
                    "left out by the publication's column list".into()
                }
            },
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_green_has_and_blue_lacks_are_named_whatever_the_types_names() {
        // Guards: a plain copy of an enum column into an enum blue lacks labels of.
        let p = plan();
        let enums = |column: &str, name: &str, labels: &[&str]| -> EnumColumns {
            [(
                column.to_string(),
                (name.to_string(), labels.iter().map(|l| l.to_string()).collect()),
            )]
            .into()
        };
        let green = enums("quantity", "order_status", &["new", "paid", "refunded", "it's"]);
        let found = enum_labels(&p, &green, &enums("quantity", "status_v1", &["new", "paid"]));
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["quantity: green's order_status has label(s) blue's status_v1 lacks: 'refunded', 'it''s'; rows with them \
              will be refused (check --data lists them); add them on blue (ALTER TYPE status_v1 ADD VALUE ...)"]
        );
        assert!(enum_labels(
            &p,
            &green,
            &enums("quantity", "s", &["refunded", "new", "paid", "it's"])
        )
        .is_empty());
    }
    use crate::mapping::green_catalog::CatalogFacts;
    use crate::mapping::{KeyColumn, KeyPlan, Target};
    use std::sync::Arc;

    fn target(name: &str, value: Value, depends: Vec<usize>) -> Target {
        Target {
            blue_name: name.into(),
            blue_type: String::new(),
            stored_type: String::new(),
            value,
            depends,
            insert_only: false,
            comparable: true,
            identity_always: false,
        }
    }

    /// The example's customers and jobs in one table: id, quantity numeric(10,2) into
    /// integer, location computed, preferences ignored, tenant read only by the filter.
    fn plan() -> TablePlan {
        let mut green = crate::mapping::int_table(&["id", "quantity", "location_structured", "preferences", "tenant"]);
        let declared = ["bigint", "numeric(10,2)", "jsonb", "jsonb", "integer"];
        green.facts = Some(Arc::new(CatalogFacts {
            positions: green
                .columns
                .iter()
                .zip(declared)
                .enumerate()
                .map(|(i, (c, d))| (c.name.clone(), i as i16 + 1, d.to_string()))
                .collect(),
            ..CatalogFacts::default()
        }));
        TablePlan {
            green,
            green_name: "public.t".into(),
            blue_name: "public.t".into(),
            blue_sql: "\"public\".\"t\"".into(),
            targets: vec![
                target("id", Value::Green(0), vec![0]),
                target("quantity", Value::Green(1), vec![1]),
                target(
                    "location",
                    Value::Expr("location_structured ->> 'city'".into()),
                    vec![2],
                ),
            ],
            key: KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }]),
            filter: Some("tenant = 42".into()),
            overriding_system_value: false,
            blue_partitioned: false,
            file: None,
            partition_of: None,
            read: vec![true, true, true, false, true],
        }
    }

    #[test]
    fn ignored_columns_narrowing_casts_expressions_and_filters_are_listed() {
        let blue: BTreeMap<String, String> = [("id", "bigint"), ("quantity", "integer"), ("location", "text")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let found: Vec<String> = losses(&plan(), &blue).iter().map(|l| l.to_string()).collect();
        assert_eq!(found[0], "green column preferences is not carried (ignored)");
        assert_eq!(found[1], "green column tenant is not carried (read only by the filter)");
        assert!(
            found[2].starts_with("quantity <- quantity: numeric(10,2) -> integer narrows: "),
            "{found:?}"
        );
        assert_eq!(
            found[3],
            "location is computed by an expression (location_structured ->> 'city'): prove with check --roundtrip"
        );
        assert_eq!(
            found[4],
            "rows outside `tenant = 42` are not carried (the mapping's filter)"
        );
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn unknown_casts_cannot_be_told_and_same_types_are_silent() {
        let blue: BTreeMap<String, String> = [("id", "bigint"), ("quantity", "public.money_amount")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let found = losses(&plan(), &blue);
        assert!(
            found
                .iter()
                .any(|l| matches!(l, Loss::CannotTell { blue, .. } if blue == "quantity")),
            "{found:?}"
        );
        assert!(!found.iter().any(|l| l.to_string().starts_with("id <-")), "{found:?}");
    }

    #[test]
    fn a_narrowing_key_and_an_insert_only_expression_say_what_they_do() {
        let blue: BTreeMap<String, String> = [("id", "integer"), ("quantity", "integer"), ("location", "text")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut plan = plan();
        plan.targets[2].insert_only = true;
        let found: Vec<String> = losses(&plan, &blue).iter().map(|l| l.to_string()).collect();
        assert!(
            found
                .iter()
                .any(|l| l.starts_with("id <- id: bigint -> integer narrows: ")
                    && l.ends_with("it is part of blue's key, so distinct green rows can land on one blue row")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|l| l.starts_with("location is set by an expression")
                && l.contains("only when a row is inserted")
                && l.ends_with("check --roundtrip does not compare it")),
            "{found:?}"
        );
    }

    #[test]
    fn types_compare_whatever_schema_the_sides_print() {
        assert_eq!(unqualified("public.mood"), "mood");
        assert_eq!(unqualified("public.mood[]"), "mood[]");
        assert_eq!(unqualified("numeric(10,2)"), "numeric(10,2)");
        assert_eq!(unqualified("character varying(5)"), "character varying(5)");
        assert_eq!(unqualified("extensions.vector(3)"), "vector(3)");
    }
}
